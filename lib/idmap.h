/* Idmapped mounts: a sandbox's files stay owned on disk by its template's host uid range, while its processes
 * run as a host uid range of their own. The kernel keeps some per-user counts by host uid, whatever the user
 * namespace (file descriptors in flight over Unix sockets, pipe pages, epoll watches): sandboxes sharing one
 * range shared those counts, and one sandbox could use up another's. */
#ifndef CUBE_IDMAP_H
#define CUBE_IDMAP_H

#include <stdint.h>
#include <sys/types.h>

#include "err.h"

/* A user namespace (an open descriptor) whose ids from..from+count-1 are the host's to..to+count-1, uids
 * and gids alike: what an idmapped mount translates through. Needs root. A descriptor, or -1 with err. */
int cube_idmap_userns(uid_t from, uid_t to, uint32_t count, cube_err *err);

/* A detached clone of the mount at path (the tree below it when recursive), its owners seen through the
 * user namespace userns_fd: a file of host uid from+k shows as to+k. A descriptor to attach with move_mount,
 * or -1 with err (EINVAL: the filesystem cannot be idmapped). */
int cube_idmapped_tree(const char *path, int userns_fd, int recursive, cube_err *err);

/* The host uid that uid 0 of the user namespace of process pid is (its uid_map's first line). 0, or -1 with
 * err. */
int cube_userns_root_uid(pid_t pid, uid_t *out, cube_err *err);

#endif
