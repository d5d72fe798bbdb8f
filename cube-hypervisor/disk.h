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

#include <stdint.h>
#include <sys/types.h>

#include "err.h"

/* Makes (once; kept for later sandboxes) an empty ext4 image of size_mb in dir: its path into out. Not for a
 * create's path: it runs mkfs.ext4. */
int hv_disk_template(const char *dir, uint64_t size_mb, char *out, size_t cap, cube_err *err);

/* Mounts a copy of template at mountpoint (nosuid, nodev, discard: deleted files give the space back to the
 * node), its root directory owned by uid:uid. scratch is where the copy is made (removed before returning).
 */
int hv_disk_attach(const char *template_img, const char *scratch, const char *mountpoint, uid_t uid,
                   cube_err *err);

/* The same in two steps, so that the first can happen ahead of a create (cubelet keeps a few for cold
 * starts): prepare returns a detached mount of a fresh copy (an fd: closed unplaced, the mount, the device
 * and the copy go), place attaches it at mountpoint. */
int hv_disk_prepare(const char *template_img, const char *scratch, cube_err *err);
int hv_disk_place(int mount_fd, const char *mountpoint, uid_t uid, cube_err *err);

#endif
