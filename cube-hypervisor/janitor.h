/* The janitor: a process of its own, started for each sandbox, that outlives a SIGKILLed hypervisor. When
 * the hypervisor's lifeline (a pipe's write end, open only in the hypervisor) closes — a normal stop or a
 * crash — it removes what the sandbox left on the host: its cgroups (killing anything still in them), the
 * writable layer's mount and the mount point directories. It is the small cube-janitor program beside
 * cube-hypervisor, so that a waiting janitor costs ~0.1 MB; where that is missing, the fork does the job. */
#ifndef CUBE_HV_JANITOR_H
#define CUBE_HV_JANITOR_H

#include <sys/types.h>

#include "err.h"

/* cgroup: "cube/<id>" or "" for none; rw, root: a mount and directories, or "" for none. Returns the
 * janitor's pid and the lifeline in *lifeline. */
pid_t hv_janitor_start(const char *cgroup, const char *rw, const char *root, int *lifeline, cube_err *err);
/* A sandbox's own disk (a loop-backed ext4 at mountpoint, see disk.h) is about to go with everything on it:
 * stops it without writing back what its page cache holds (a sandbox that wrote a gigabyte and is killed
 * would otherwise have it flushed to a file deleted right after). Anything else at mountpoint is left alone.
 */
void hv_disk_forget(const char *mountpoint);
/* What the janitor does once the lifeline closes. */
void hv_janitor_clean(const char *cgroup, const char *rw, const char *root);

#endif
