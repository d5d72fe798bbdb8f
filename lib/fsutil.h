/* File-tree chores of teardown paths (never a request's hot path), and the descriptor chores of spawning. */
#ifndef CUBE_FSUTIL_H
#define CUBE_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "err.h"

/* Writes value to the existing file path in one write(2): a kernel setting (/proc/sys, /proc/PID/uid_map).
 * 0, or -1 with err naming the file. */
int cube_write_string(const char *path, const char *value, cube_err *err);

/* A field of /proc/meminfo ("MemAvailable", "MemTotal"), in kB; -1 where it cannot be read. */
long long cube_meminfo_kb(const char *field);
/* Writes all n bytes of p to fd (short writes and EINTR retried). 0, or -1 with errno. */
int cube_write_all(int fd, const void *p, size_t n);

/* rm -rf that stays on one filesystem (a mount left inside is not descended into). 0 when the tree is gone.
 */
int cube_rm_rf(const char *path);

/* The same for name under the directory dir (which may be an O_PATH descriptor, a detached mount's), through
 * descriptors (a tree renamed meanwhile cannot point it elsewhere): no link followed, no other filesystem
 * entered, at most CUBE_RM_RF_MAX_DEPTH directories deep (ELOOP past that); stops at the first entry that
 * will not go. 0 when name is gone (or was not there), -1 with errno. */
#define CUBE_RM_RF_MAX_DEPTH 256
int cube_rm_rf_at(int dir, const char *name);

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

/* 1 when dir holds no entry, 0 when it holds some, -1 with errno. */
int cube_dir_empty(const char *dir);
/* A tmpfs (source names it in the mount table, opts its options) over dir, for small files that come and go
 * with every sandbox: on an ext4 without a journal each new inode is searched for past the recently deleted
 * ones (recently_deleted(): a minute or more), a cost that grows with the rate of creates. Mounted only when
 * dir is empty and not a tmpfs already: a directory holding files of an earlier run keeps them where they are
 * (and a later start, with it emptied, mounts). 1 when it mounted, 0 when dir was left as it was, -1 with
 * err. */
int cube_tmpfs_over_empty_dir(const char *dir, const char *source, const char *opts, cube_err *err);
/* The mount at dir detached, when dir holds nothing (what is still in use keeps its mount). 0 when done. */
int cube_umount_empty_dir(const char *dir);

#endif
