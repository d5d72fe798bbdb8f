/* The janitor: a process of its own, started for each sandbox, that outlives a SIGKILLed hypervisor. When
 * the hypervisor's lifeline (a pipe's write end, open only in the hypervisor) closes — a normal stop or a
 * crash — it removes what the sandbox left on the host: its cgroups (killing anything still in them), the
 * writable layer's mount and the mount point directories. It is the small cube-janitor program beside
 * cube-hypervisor, so that a waiting janitor costs ~0.1 MB; where that is missing, the fork does the job. */
#ifndef CUBE_HV_JANITOR_H
#define CUBE_HV_JANITOR_H

#include <stddef.h>
#include <sys/types.h>

#include "err.h"

/* cgroup: "cube/<id>" or "" for none; rw, root: a mount and directories, or "" for none. Returns the
 * janitor's pid and the lifeline in *lifeline; 0 when cube-zygote took the job (below): no process to wait
 * for. */
pid_t hv_janitor_start(const char *cgroup, const char *rw, const char *root, int *lifeline, cube_err *err);

/* In a child of cube-zygote: a socket to the zygote, which then does the janitor's job for this process (no
 * janitor process per sandbox: its exec and exit were a tenth of a sandbox's CPU). The lifeline is one end
 * of a socket pair whose other end the zygote holds, with the paths to clean queued in it unread: when this
 * end closes (a stop, or this process killed) the zygote reads them and cleans. -1 elsewhere. */
extern int hv_janitor_sock;
/* The lifeline the zygote holds the other end of, or -1. It hangs up only if the zygote dies first: then
 * hv_janitor_orphaned starts a janitor process in its place, behind the same descriptor number (which the
 * backend keeps and closes as before). */
int hv_janitor_watch_fd(void);
void hv_janitor_orphaned(void);
/* The zygote's side: what a lifeline's peer queued (cgroup, rw, root: NUL-terminated, in that order),
 * cleaned. len is what was read; a malformed record is ignored. */
void hv_janitor_clean_record(const char *rec, size_t len);
/* A sandbox's own disk (a loop-backed ext4 at mountpoint, see disk.h) is about to go with everything on it:
 * stops it without writing back what its page cache holds (a sandbox that wrote a gigabyte and is killed
 * would otherwise have it flushed to a file deleted right after), when it holds more than a megabyte not yet
 * written; less is left for the unmount to write. Anything else at mountpoint is left alone. */
void hv_disk_forget(const char *mountpoint);
/* What the janitor does once the lifeline closes. */
void hv_janitor_clean(const char *cgroup, const char *rw, const char *root);

#endif
