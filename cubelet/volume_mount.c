/* A volume mounted into a running sandbox (CreateSandbox's volume mounts). */
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cubelet_internal.h"
#include "idmap.h"

/* Mounts a volume's directory into a running sandbox at path: the directory is cloned as a detached mount
 * here, then a child that joins the sandbox's mount namespace (it must be single-threaded to) attaches it. */
int cl_mount_volume(cubelet *c, const cl_slot *s, const Cube__VolumeMount *vm, cube_err *err)
{
    if (!vm->path || vm->path[0] != '/' || strstr(vm->path, ".."))
        return cube_err_set(err, EINVAL, "bad volume mount '%s' at '%s'", vm->name ? vm->name : "",
                            vm->path ? vm->path : "");
    char host[4400];
    if (cl_volume_dir(c, vm->volume_id, s->tpl->uid_base, host, sizeof(host), err) < 0) return -1;
    /* the volume's files are the template's host uids on disk (as other sandboxes mounting it see them);
     * this sandbox runs as a host uid range of its own (cube-hypervisor's uid_range.h): the mount shows them
     * as its own */
    uid_t root;
    if (cube_userns_root_uid(s->init, &root, err) < 0) return -1;
    int tree;
    if (root == s->tpl->uid_base) {
        tree = (int)syscall(SYS_open_tree, AT_FDCWD, host, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (tree < 0) return cube_err_sys(err, errno, "clone the mount of %s", host);
    } else {
        int idmap = cube_idmap_userns(s->tpl->uid_base, root, 65536, err);
        if (idmap < 0) return -1;
        tree = cube_idmapped_tree(host, idmap, 0, err);
        close(idmap);
        if (tree < 0) return -1;
    }
    char ns[64];
    snprintf(ns, sizeof(ns), "/proc/%d/ns/mnt", s->init);
    int nsfd = open(ns, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) {
        close(tree);
        return cube_err_sys(err, errno, "open %s", ns);
    }
    /* the namespace's own root is not the sandbox's root after its pivot_root: take the root from PID 1 */
    snprintf(ns, sizeof(ns), "/proc/%d/root", s->init);
    int rootfd = open(ns, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        close(tree);
        close(nsfd);
        return cube_err_sys(err, errno, "open %s", ns);
    }
    char userns[64];
    snprintf(userns, sizeof(userns), "/proc/%d/ns/user", s->init);
    int userfd = open(userns, O_RDONLY | O_CLOEXEC);
    pid_t pid = userfd < 0 ? -1 : fork();
    if (pid == 0) {
        /* become the sandbox's root (its user namespace), so that what is created there is owned inside */
        if (setns(userfd, CLONE_NEWUSER) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0) _exit(9);
        if (setns(nsfd, CLONE_NEWNS) < 0 || fchdir(rootfd) < 0 || chroot(".") < 0 || chdir("/") < 0)
            _exit(10);
        char path[4096];
        snprintf(path, sizeof(path), "%s", vm->path);
        for (char *p = path + 1;; p++) { /* mkdir -p, owned by root inside */
            if (*p != '/' && *p) continue;
            char ch = *p;
            *p = '\0';
            if (mkdir(path, 0755) < 0 && errno != EEXIST) _exit(11);
            *p = ch;
            if (!ch) break;
        }
        if (syscall(SYS_move_mount, tree, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH) < 0)
            _exit(100 + (errno & 127));
        _exit(0);
    }
    close(nsfd);
    close(rootfd);
    if (userfd >= 0) close(userfd);
    close(tree);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return cube_err_set(
            err, EIO, "mount volume %s at %s failed: %s", vm->name, vm->path,
            WIFEXITED(st) && WEXITSTATUS(st) >= 100  ? strerror(WEXITSTATUS(st) - 100)
            : WIFEXITED(st) && WEXITSTATUS(st) == 9  ? "cannot join the sandbox's user namespace"
            : WIFEXITED(st) && WEXITSTATUS(st) == 10 ? "cannot join the sandbox's mount namespace"
            : WIFEXITED(st) && WEXITSTATUS(st) == 11 ? "cannot create the mount point"
                                                     : "helper died");
    return 0;
}
