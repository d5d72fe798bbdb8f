/* File-tree chores of teardown paths (never a request's hot path), and the descriptor chores of spawning. */
#ifndef CUBE_FSUTIL_H
#define CUBE_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* rm -rf that stays on one filesystem (a mount left inside is not descended into). 0 when the tree is gone.
 */
int cube_rm_rf(const char *path);

/* A program that ships with the running one: <own dir>/name when it is there (installed side by side), else
 * <own dir>/build_rel (the build tree's layout). */
void cube_sibling_path(const char *name, const char *build_rel, char *out, size_t cap);

/* Makes target the descriptor fd is, open across exec (for a child between fork and exec: async-signal-safe).
 * dup2 onto itself would leave close-on-exec set, so when fd already is target the flag is cleared instead.
 * 0, or -1 with errno. */
int cube_fd_at(int fd, int target);
/* Sends len bytes on a Unix socket with descriptor fd attached (SCM_RIGHTS; none when fd < 0), without
 * SIGPIPE. sendmsg's return. */
ssize_t cube_send_with_fd(int sock, const void *buf, size_t len, int fd);

#endif
