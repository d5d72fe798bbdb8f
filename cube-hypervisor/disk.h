/* A sandbox's writable layer on the node's disk: an ext4 filesystem of its own size on a loop device, so a
 * full disk is ENOSPC to the writer (not memory the OOM killer collects, as with the tmpfs it replaces).
 *
 * The filesystem is never made on the create path: the node makes one empty, sparse image per size once
 * (hv_disk_template, which runs mkfs.ext4), and each sandbox gets a sparse copy of it (only its few hundred
 * KB of metadata are written), bound to a free loop device and mounted. The copy is unlinked as soon as it is
 * mounted and the loop device clears itself when the mount goes (LO_FLAGS_AUTOCLEAR): whatever way the
 * sandbox ends, the kernel frees the device and the space, and nothing is left to sweep. */
#ifndef CUBE_HV_DISK_H
#define CUBE_HV_DISK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "err.h"

/* Makes (once; kept for later sandboxes) an empty ext4 image of size_mb in dir: its path into out. Not for a
 * create's path: it runs mkfs.ext4. */
int hv_disk_template(const char *dir, uint64_t size_mb, char *out, size_t cap, cube_err *err);

/* Mounts a copy of template at mountpoint (nosuid, nodev), its root directory owned by uid:uid. scratch is
 * where the copy is made: in its directory, with no name (O_TMPFILE: nothing is left if the process dies
 * while copying), or under that name (removed before returning) where the filesystem has no O_TMPFILE. Not
 * mounted with discard: on an ext4 without a journal
 * each freed extent is discarded on the spot, through the loop device to the node's disk, and the deleting
 * call waits for it (rm -rf in a sandbox, and the emptying of a disk for reuse). A sandbox's disk takes the
 * node's disk space its writes peaked at; the space goes back when the disk goes, or when it is emptied for
 * reuse (hv_disk_renew trims it). */
int hv_disk_attach(const char *template_img, const char *scratch, const char *mountpoint, uid_t uid,
                   cube_err *err);

/* The same in two steps, so that the first can happen ahead of a create (cubelet keeps a few for cold
 * starts): prepare returns a detached mount of a fresh copy (an fd: closed unplaced, the mount, the device
 * and the copy go), place attaches it at mountpoint. */
int hv_disk_prepare(const char *template_img, const char *scratch, cube_err *err);
/* A disk kept under its name (a volume's): a detached mount of image, made first as a copy of template_img
 * when there is none; the file stays when the mount goes. */
int hv_disk_open_kept(const char *template_img, const char *image, cube_err *err);
int hv_disk_place(int mount_fd, const char *mountpoint, uid_t uid, cube_err *err);

/* A disk outlives its sandbox and serves the next one, instead of a new copy for each: the hypervisor, whose
 * own mount namespace alone has the disk mounted, holds a clone of the mount (hv_disk_keep) at the
 * descriptor its "ready" line names (keep-fd=); at a stop the node takes it (pidfd_getfd) before the
 * hypervisor's teardown unmounts the disk, and once the sandbox's processes are all gone hv_disk_renew
 * empties it back to what hv_disk_prepare makes, for hv_disk_place. A new copy costs the node's disk a copy,
 * a flush when the loop device switches to direct I/O, and at the end a flush, a truncate and (on a node
 * mounted with discard) a discard that the teardown waits for; an emptied disk costs the removal of what the
 * sandbox wrote. What a sandbox deleted is never seen by the next one: ext4 hands out blocks that read as
 * zeros until written (and a trim punches them out of the image). A disk holding more than
 * HV_DISK_RENEW_MAX_FILES files is let go: removing them file by file would cost more than a new copy. */
#define HV_DISK_RENEW_MAX_FILES 1024

/* A sandbox's disk takes the node's space as it is written, so the node's filesystem can fill before the
 * sandboxes' own do; past that point a sandbox's writes find room in its filesystem but not behind it and are
 * lost (the writer is not told: its fsync may succeed). So the node bounds what each may still write while
 * its own free space is short: ext4's reserved clusters (which no writer may take, root included) are raised
 * until the disk mounted at mountpoint has writable_bytes free, and a writer gets ENOSPC past them, as on a
 * full disk of its own. Not limited: the reservation goes back to ext4's own (as a renewed disk's does).
 * ENOTSUP where no sandbox disk is mounted there. */
int hv_disk_set_room(const char *mountpoint, bool limited, uint64_t writable_bytes, cube_err *err);
/* What the disk mounted at mountpoint holds written but not yet allocated (ext4's delayed allocation), in
 * bytes: what the node's disk is still to take for writes already made; 0 where none is mounted there. */
uint64_t hv_disk_pending(const char *mountpoint);
#define HV_LOOP_MAJOR 7
/* Whether a sandbox disk (a loop-backed ext4) is mounted right at mountpoint (not the filesystem under it);
 * st: its stat. */
bool hv_disk_mounted_at(const char *mountpoint, struct stat *st);
/* A detached clone of the disk mounted at mountpoint (an fd holding the filesystem and its device), or -1
 * when none is mounted there. */
int hv_disk_keep(const char *mountpoint);
/* Empties a kept disk whose sandbox is gone; 0 when it is ready for hv_disk_place, else -1 with err (the
 * caller closes it: the disk goes as it would have). */
int hv_disk_renew(int mount_fd, cube_err *err);

#endif
