#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <libgen.h>
#include <sys/stat.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

void cube_sibling_path(const char *name, const char *build_rel, char *out, size_t cap)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = '\0';
    char *dir = dirname(self);
    snprintf(out, cap, "%s/%s", dir, name);
    if (access(out, X_OK) == 0) return;
    snprintf(out, cap, "%s/%s", dir, build_rel);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    /* keep going past an entry that will not go: the caller learns from the top directory still being there
     */
    remove(path);
    return 0;
}

int cube_rm_rf(const char *path)
{
    /* in process (no fork of a large multithreaded service: its page tables would be copied and every thread
     * would take copy-on-write faults until the child exec'd); depth first, not following links, and
     * FTW_MOUNT keeps it on the top directory's filesystem like rm --one-file-system */
    struct stat st;
    if (lstat(path, &st) < 0) return errno == ENOENT ? 0 : -1;
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0) return -1;
    return lstat(path, &st) < 0 && errno == ENOENT ? 0 : -1;
}

/* One of cube_rm_rf_at's steps: name in parent and everything under it. */
static int rm_tree(int parent, const char *name, int depth)
{
    if (unlinkat(parent, name, 0) == 0 || errno == ENOENT) return 0;
    if (errno != EISDIR && errno != EPERM) return -1;
    if (depth > CUBE_RM_RF_MAX_DEPTH) return errno = ELOOP, -1;
    struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS};
    int fd = (int)syscall(SYS_openat2, parent, name, &how, sizeof(how));
    if (fd < 0) return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            rc = rm_tree(dirfd(d), de->d_name, depth + 1);
    closedir(d);
    if (rc == 0 && unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT) rc = -1;
    return rc;
}

int cube_rm_rf_at(int dir, const char *name)
{
    return rm_tree(dir, name, 0);
}

int cube_fd_at(int fd, int target)
{
    if (fd == target) return fcntl(fd, F_SETFD, 0);
    return dup2(fd, target) == target ? 0 : -1;
}

ssize_t cube_send_with_fd(int sock, const void *buf, size_t len, int fd)
{
    struct iovec iov = {(void *)buf, len};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&u, 0, sizeof(u));
        m.msg_control = u.buf;
        m.msg_controllen = sizeof(u.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    return sendmsg(sock, &m, MSG_NOSIGNAL);
}

int cube_dir_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    bool empty = true;
    for (struct dirent *de; empty && (de = readdir(d));)
        empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
    closedir(d);
    return empty;
}

int cube_tmpfs_over_empty_dir(const char *dir, const char *source, const char *opts, cube_err *err)
{
    struct statfs fs;
    if (statfs(dir, &fs) < 0) return cube_err_sys(err, errno, "statfs %s", dir);
    if (fs.f_type == TMPFS_MAGIC) return 0;
    int empty = cube_dir_empty(dir);
    if (empty < 0) return cube_err_sys(err, errno, "open %s", dir);
    if (!empty) return 0;
    if (mount(source, dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0)
        return cube_err_sys(err, errno, "mount a tmpfs at %s", dir);
    return 1;
}

int cube_umount_empty_dir(const char *dir)
{
    if (cube_dir_empty(dir) != 1) return -1;
    return umount2(dir, MNT_DETACH);
}

int cube_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

long long cube_meminfo_kb(const char *field)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f) return -1;
    char line[128];
    long long kb = -1;
    size_t n = strlen(field);
    while (kb < 0 && fgets(line, sizeof(line), f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') kb = strtoll(line + n + 1, NULL, 10);
    fclose(f);
    return kb;
}

int cube_write_string(const char *path, const char *value, cube_err *err)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return cube_err_sys(err, errno, "open %s", path);
    ssize_t n = write(fd, value, strlen(value));
    int e = errno;
    close(fd);
    if (n != (ssize_t)strlen(value)) return cube_err_sys(err, n < 0 ? e : EIO, "write %s", path);
    return 0;
}
