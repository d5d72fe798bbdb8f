/* Idmapped mounts (idmap.h). */
#include "idmap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fsutil.h"

/* The namespace's only process: it shares the caller's memory and thread-local storage (CLONE_VM, no page
 * tables copied, as cheap in a threaded process as in any), so it runs no instrumented code and only waits
 * for the word to go, in raw system calls. */
__attribute__((no_sanitize("address", "thread", "undefined"))) static int hold_namespace(void *arg)
{
    int fd = *(int *)arg;
    char b;
    syscall(SYS_read, fd, &b, 1);
    syscall(SYS_exit, 0);
    return 0;
}

int cube_idmap_userns(uid_t from, uid_t to, uint32_t count, cube_err *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return cube_err_sys(err, errno, "pipe");
    enum { STACK = 16384 };
    char *stack = malloc(STACK);
    if (!stack) {
        close(p[0]);
        close(p[1]);
        return cube_err_set(err, ENOMEM, "out of memory");
    }
    int ns = -1;
    pid_t pid = clone(hold_namespace, stack + STACK, CLONE_NEWUSER | CLONE_VM | SIGCHLD, &p[0]);
    if (pid < 0) {
        cube_err_sys(err, errno, "clone a user namespace for an idmapped mount");
        goto out;
    }
    char path[64], map[80];
    snprintf(map, sizeof(map), "%u %u %u\n", (unsigned)from, (unsigned)to, count);
    snprintf(path, sizeof(path), "/proc/%d/uid_map", pid);
    if (cube_write_string(path, map, err) < 0) goto out;
    snprintf(path, sizeof(path), "/proc/%d/gid_map", pid);
    if (cube_write_string(path, map, err) < 0) goto out;
    snprintf(path, sizeof(path), "/proc/%d/ns/user", pid);
    ns = open(path, O_RDONLY | O_CLOEXEC);
    if (ns < 0) cube_err_sys(err, errno, "open %s", path);
out:
    if (pid > 0) {
        if (write(p[1], "x", 1) != 1) kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    close(p[0]);
    close(p[1]);
    free(stack); /* (the child is gone: its stack with it) */
    return ns;
}

int cube_idmapped_tree(const char *path, int userns_fd, int recursive, cube_err *err)
{
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path,
                          OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0));
    if (fd < 0) return cube_err_sys(err, errno, "clone the mount of %s", path);
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns_fd};
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr,
                sizeof(attr)) < 0) {
        int e = errno;
        close(fd);
        return cube_err_sys(err, e, "idmap the mount of %s", path);
    }
    return fd;
}

int cube_userns_root_uid(pid_t pid, uid_t *out, cube_err *err)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/uid_map", pid);
    FILE *f = fopen(path, "re");
    if (!f) return cube_err_sys(err, errno, "open %s", path);
    unsigned inside, host, count;
    int n = fscanf(f, "%u %u %u", &inside, &host, &count);
    fclose(f);
    if (n != 3 || inside != 0) return cube_err_set(err, EINVAL, "%s maps no uid 0", path);
    *out = host;
    return 0;
}
