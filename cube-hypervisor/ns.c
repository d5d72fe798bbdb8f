/* The ns backend: a hardened namespace jail. Root inside is root of the sandbox's own user namespace only
 * (mapped to an unprivileged host uid); the template rootfs is the read-only lower layer of an overlay whose
 * writable layer is a size-limited ext4 on the node's disk (disk.h; a tmpfs without a disk template); cgroups
 * bound cpu, memory and pids; no_new_privs and a seccomp filter close what namespaces do not. PID 1 dies with
 * this process (PDEATHSIG), and a janitor process removes the cgroups and mounts even when this process is
 * killed with SIGKILL. */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <net/if.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include "disk.h"
#include "fsutil.h"
#include "hv.h"
#include "idmap.h"
#include "janitor.h"
#include "log.h"
#include "oci.h"
#include "proc_title.h"
#include "sandbox_seccomp.h"
#include "uid_range.h"

/* how long a new sandbox's agent may take to listen (a cold start takes tens of ms; a loaded host more) */
#define AGENT_READY_TIMEOUT_MS 10000
/* how long a teardown waits for a killed sandbox's processes to be gone before removing its cgroups anyway */
#define INIT_EXIT_WAIT_MS 5000
/* the ptys one sandbox may hold (a VM's kernel allows 4,096 by default; the E2B SDK's terminals take one
 * each) */
#define SANDBOX_PTYS_MAX "1024"
/* pids kept for the agent's own threads and processes out of the sandbox's limit */
#define AGENT_PIDS_RESERVE 64

int (*hv_builtin_agent)(int argc, char **argv);

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
static char *const default_env[] = {DEFAULT_PATH, "HOME=/root", NULL};
/* the same, as /proc/1/environ shows it */
static const char default_env_block[] = DEFAULT_PATH "\0HOME=/root";

struct hv_sandbox {
    char id[64];
    char state[4096];
    char root[4200]; /* <state>/root: the overlay's mount point */
    char rw[4200];   /* <state>/rw: the writable layer holding upper/ and work/ */
    pid_t init;
    pid_t janitor;
    int lifeline;  /* write end; the janitor cleans up when it closes */
    int disk_keep; /* a clone of the disk's mount for the node (disk_keep_fd), or -1 */
    cgroup cg;
    bool cg_made, rw_mounted;
    /* root inside is this host uid: a range of the sandbox's own (uid_range.h), its files seen through
     * idmap_ns (a user namespace mapping the template's range onto it); or, where the host cannot idmap the
     * layers' filesystems, the template's range itself, shared (idmap_ns -1) */
    uid_t uid_host;
    int idmap_ns, uid_lock;
};

static int ns_available(cube_err *err)
{
    if (access("/proc/self/ns/user", F_OK) < 0) return cube_err_set(err, ENOTSUP, "no user namespaces");
    if (geteuid() != 0) return cube_err_set(err, EPERM, "the ns backend needs root (it maps uid ranges)");
    return 0;
}

/* ---- in the child, between clone and exec: report failures through errfd and exit ---- */

static void child_fail(int errfd, const char *what)
{
    char msg[512];
    int n = snprintf(msg, sizeof(msg), "%s: %s", what, strerror(errno));
    if (write(errfd, msg, (size_t)n) < 0) {
    }
    _exit(127);
}

static void bind_dev(int errfd, const char *root, const char *name)
{
    char dst[4400], src[64];
    snprintf(dst, sizeof(dst), "%s/dev/%s", root, name);
    snprintf(src, sizeof(src), "/dev/%s", name);
    int fd = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
    if (fd < 0) child_fail(errfd, "create /dev node");
    close(fd);
    if (mount(src, dst, NULL, MS_BIND, NULL) < 0) child_fail(errfd, src);
}

static void setup_dev(int errfd, const char *root)
{
    char p[4400];
    snprintf(p, sizeof(p), "%s/dev", root);
    mkdir(p, 0755);
    if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NOEXEC | MS_STRICTATIME, "mode=755,size=65536k") < 0)
        child_fail(errfd, "mount /dev");
    static const char *const nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) bind_dev(errfd, root, nodes[i]);
    snprintf(p, sizeof(p), "%s/dev/pts", root);
    mkdir(p, 0755);
    /* max: the ptys of every sandbox come from one node-wide count (kernel.pty.max less pty.reserve, 3,072
     * by default; cubelet raises it): uncapped, one sandbox opening them all left every other sandbox
     * without a terminal */
    if (mount("devpts", p, "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620,max=" SANDBOX_PTYS_MAX) < 0)
        child_fail(errfd, "mount /dev/pts");
    snprintf(p, sizeof(p), "%s/dev/shm", root);
    mkdir(p, 01777);
    if (mount("shm", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k") < 0)
        child_fail(errfd, "mount /dev/shm");
    static const char *const links[][2] = {{"pts/ptmx", "ptmx"},
                                           {"/proc/self/fd", "fd"},
                                           {"/proc/self/fd/0", "stdin"},
                                           {"/proc/self/fd/1", "stdout"},
                                           {"/proc/self/fd/2", "stderr"}};
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
        snprintf(p, sizeof(p), "%s/dev/%s", root, links[i][1]);
        if (symlink(links[i][0], p) < 0) child_fail(errfd, "symlink in /dev");
    }
}

static void loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return;
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP;
        ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    close(s);
}

/* The rest of exec's work when PID 1 goes on in this image (hv_builtin_agent): handled signals back to their
 * defaults (ignored ones and the blocked mask stay, as across exec), the new environment, the name ps shows,
 * dumpable again. */
static void exec_in_place(char *const *envp)
{
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN) {
            sa.sa_handler = SIG_DFL;
            sa.sa_flags = 0;
            sigaction(sig, &sa, NULL);
        }
    }
    /* the node's environment (the zygote's) is not the sandbox's to read, in /proc/1/environ or memory */
    extern char **environ;
    for (char **e = environ; e && *e; e++) explicit_bzero(*e, strlen(*e));
    environ = (char **)envp;
    prctl(PR_SET_NAME, "cube-agent");
    /* becoming the namespace's root made this process undumpable (exec would have undone that): its /proc
     * files would belong to the host's root, out of the agent's reach (its children's oom_score_adj) */
    prctl(PR_SET_DUMPABLE, 1);
}

typedef struct child_args {
    const hv_spec *spec;
    hv_sandbox *sb;
    int sysfs;    /* a detached sysfs mount made for the joined network namespace, or -1 */
    int agent;    /* a detached bind mount of the agent (binary or bundle), or -1 */
    int syncfd;   /* read: a byte once the parent has written uid_map, another once it has placed us in the
                   * sandbox's cgroups (made meanwhile: our mounts and its cgroups are set up at once) */
    int errfd;    /* write: an error message; closed by exec on success */
    int readyfd;  /* write, for the agent: a byte once it listens (--ready-fd); -1 for another process */
    bool builtin; /* the agent runs from this image (hv_builtin_agent) */
    /* detached idmapped clones of the layers and the writable layer, each attached over its own path */
    const int *idmapped;
    const char *const *idmapped_at;
    int n_idmapped;
} child_args;

static void child_main(const child_args *c)
{
    const hv_spec *spec = c->spec;
    hv_sandbox *sb = c->sb;
    int errfd = c->errfd;
    /* PID 1 must not outlive the hypervisor: its death takes the whole pid namespace with it. (getppid() is 0
     * in a new pid namespace; a parent that died before this line closed the sync pipe, so the read fails.)
     */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) _exit(126);
    char go;
    if (read(c->syncfd, &go, 1) != 1) _exit(126);
    if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
        child_fail(errfd, "become root of the user namespace");
    const char *hn = spec->hostname ? spec->hostname : spec->id;
    if (sethostname(hn, strlen(hn)) < 0) child_fail(errfd, "sethostname");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) child_fail(errfd, "make mounts private");
    /* the sandbox's files are the template's host uids on disk, its own uids in here (idmap.h) */
    for (int i = 0; i < c->n_idmapped; i++) {
        if (syscall(SYS_move_mount, c->idmapped[i], "", AT_FDCWD, c->idmapped_at[i],
                    MOVE_MOUNT_F_EMPTY_PATH) < 0)
            child_fail(errfd, "attach an idmapped layer");
        close(c->idmapped[i]);
    }

    char opts[12288];
    /* volatile: the writable layer lives and dies with the sandbox, so nothing in it is ever synced (no
     * fsync stall for a pip install, and the sandbox's death does not flush what it wrote to a disk that is
     * deleted next) */
    snprintf(opts, sizeof(opts), "lowerdir=%s%s%s,upperdir=%s/upper,workdir=%s/work,userxattr,volatile",
             spec->layers ? spec->layers : "", spec->layers ? ":" : "", spec->rootfs, sb->rw, sb->rw);
    if (mount("overlay", sb->root, "overlay", 0, opts) < 0) child_fail(errfd, "mount overlay rootfs");

    char p[4400];
    snprintf(p, sizeof(p), "%s/proc", sb->root);
    mkdir(p, 0555);
    if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        child_fail(errfd, "mount /proc");
    if (spec->lxcfs) {
        /* what programs size themselves by (free, top, nproc's cousins, the JVM, Node, pandas) shows the
         * sandbox's own memory and CPUs: lxcfs answers each read for the reader's cgroups */
        static const char *const files[] = {"meminfo", "cpuinfo", "stat",     "uptime",
                                            "loadavg", "swaps",   "diskstats"};
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
            char src[4400], dst[4400];
            /* diskstats: empty. lxcfs builds the host's whole list of block devices for every lookup of it
             * (one loop device per sandbox: the node's busiest CPU cost in a churn of creates), and that list
             * would show every other sandbox's disk; a sandbox has no blkio group to report anyway */
            if (strcmp(files[i], "diskstats") == 0)
                snprintf(src, sizeof(src), "/dev/null");
            else
                snprintf(src, sizeof(src), "%s/proc/%s", spec->lxcfs, files[i]);
            snprintf(dst, sizeof(dst), "%s/proc/%s", sb->root, files[i]);
            if (mount(src, dst, NULL, MS_BIND, NULL) == 0) continue;
            if (i > 0) child_fail(errfd, src);
            /* an lxcfs that died (its mount answers ENOTCONN), or one started again after the zygote's mount
             * namespace was made: the sandbox starts with the kernel's own figures rather than not at all */
            fprintf(stderr,
                    "cube-hypervisor: lxcfs does not answer (%s: %s): the sandbox shows the node's "
                    "/proc figures\n",
                    src, strerror(errno));
            break;
        }
    }
    snprintf(p, sizeof(p), "%s/sys", sb->root);
    mkdir(p, 0555);
    if (c->sysfs >= 0) {
        if (syscall(SYS_move_mount, c->sysfs, "", AT_FDCWD, p, MOVE_MOUNT_F_EMPTY_PATH) < 0)
            child_fail(errfd, "attach /sys");
        close(c->sysfs);
    } else if (mount("sysfs", p, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
        child_fail(errfd, "mount /sys read-only");
    }
    setup_dev(errfd, sb->root);
    snprintf(p, sizeof(p), "%s/tmp", sb->root);
    mkdir(p, 01777);

    if (c->agent >= 0) {
        snprintf(p, sizeof(p), "%s/.cube", sb->root);
        mkdir(p, 0755);
        if (!spec->agent_bundle) {
            snprintf(p, sizeof(p), "%s/.cube/cube-agent", sb->root);
            int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0755);
            if (fd < 0) child_fail(errfd, "create /.cube/cube-agent");
            close(fd);
        }
        if (syscall(SYS_move_mount, c->agent, "", AT_FDCWD, p, MOVE_MOUNT_F_EMPTY_PATH) < 0)
            child_fail(errfd, "attach the agent");
        close(c->agent);
        if (mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
            child_fail(errfd, "agent read-only");
    }

    /* nothing of the sandbox's own runs before it is in its cgroups, and its cgroup namespace is rooted at
     * them: the parent's word (end of file: it failed, and says why) */
    if (read(c->syncfd, &go, 1) != 1) _exit(126);
    close(c->syncfd);
    if (unshare(CLONE_NEWCGROUP) < 0) child_fail(errfd, "cgroup namespace");

    /* the host's filesystem leaves the view: only the sandbox root remains */
    if (chdir(sb->root) < 0) child_fail(errfd, "chdir rootfs");
    if (syscall(SYS_pivot_root, ".", ".") < 0) child_fail(errfd, "pivot_root");
    if (umount2(".", MNT_DETACH) < 0) child_fail(errfd, "detach the old root");
    if (chdir("/") < 0) child_fail(errfd, "chdir /");
    loopback_up();
    if (spec->cwd && chdir(spec->cwd) < 0) child_fail(errfd, "chdir to the process's cwd");

    /* Last privilege steps: no_new_privs (no setuid gains), then the seccomp filter, then exec. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) child_fail(errfd, "no_new_privs");
    cube_err err = {0};
    if (sandbox_seccomp_load(&err) < 0) {
        if (write(errfd, err.msg, strlen(err.msg)) < 0) {
        }
        _exit(127);
    }
    for (int i = 0; spec->has_stdio && i < 3; i++)
        if (cube_fd_at(spec->stdio_fds[i], i) < 0) child_fail(errfd, "stdio");
    for (int i = 0; spec->has_stdio && i < 3; i++)
        if (spec->stdio_fds[i] > 2) close(spec->stdio_fds[i]);
    if (spec->has_user && (setgroups(0, NULL) < 0 || setresgid(spec->gid, spec->gid, spec->gid) < 0 ||
                           setresuid(spec->uid, spec->uid, spec->uid) < 0))
        child_fail(errfd, "switch to the process's user");
    if (spec->has_start) {
        /* set up: the hypervisor reports ready now (it waits for errfd to close), the process runs when the
         * gate opens */
        close(errfd);
        char go;
        if (read(spec->start_fd, &go, 1) != 1) _exit(0);
        close(spec->start_fd);
    }
    /* the agent tells the hypervisor when it listens (the descriptor stays open across exec); what it runs
     * may hold the sandbox's pids limit less a reserve: a fork bomb leaves the agent the threads to serve
     * the kill that ends it */
    char ready_arg[32], procs_arg[40];
    int readyfd = c->readyfd;
    /* A built-in agent is this image, not an exec: /proc/1/cmdline and environ would show the hypervisor's
     * command line and the node's environment, so they are pointed at the agent's. Where that cannot be
     * done, the agent is exec'd as without a zygote. */
    bool builtin = c->builtin;
    uint32_t pids = spec->limits.pids;
    snprintf(procs_arg, sizeof(procs_arg), "--user-procs=%u",
             pids > 2 * AGENT_PIDS_RESERVE ? pids - AGENT_PIDS_RESERVE : 0);
    if (builtin) {
        char title[96];
        int n = snprintf(title, sizeof(title), "/.cube/cube-agent%c--ready-fd=3%c%s", 0, 0, procs_arg);
        builtin = proc_title_set(title, (size_t)n + 1, default_env_block, sizeof(default_env_block)) == 0;
    }
    if (builtin) {
        /* what exec would do, less the loading: only stdio and the ready pipe (as fd 3) stay open; errfd's
         * close tells the hypervisor that set-up went well */
        if (cube_fd_at(readyfd, 3) < 0) child_fail(errfd, "agent ready pipe");
        readyfd = 3;
        close_range(4, ~0U, 0);
    }
    snprintf(ready_arg, sizeof(ready_arg), "--ready-fd=%d", readyfd);
    if (readyfd >= 0 && fcntl(readyfd, F_SETFD, 0) < 0) child_fail(errfd, "agent ready pipe");
    char *const agent_argv[] = {"/.cube/cube-agent", ready_arg, procs_arg, NULL};
    char *const bundle_argv[] = {"/.cube/ld.so", "--library-path", "/.cube/lib", "/.cube/cube-agent",
                                 ready_arg,      procs_arg,        NULL};
    char *const *argv = spec->argv && spec->argv[0] ? spec->argv
                        : spec->agent_bundle        ? bundle_argv
                                                    : agent_argv;
    char *const *envp = spec->envp ? spec->envp : default_env;
    if (builtin) {
        char *builtin_argv[] = {"cube-agent", ready_arg, procs_arg, NULL};
        exec_in_place(envp);
        _exit(hv_builtin_agent(3, builtin_argv));
    }
    char found[4096];
    const char *prog = oci_find_program(argv[0], envp, found, sizeof(found));
    execve(prog, argv, envp);
    child_fail(errfd, argv[0]);
}

/* SIGKILL to PID 1 ends its pid namespace: the kernel kills every other process in it. A frozen sandbox is
 * thawed after, or the kill would wait for a resume. */
static void ns_terminate(hv_sandbox *sb)
{
    if (sb->init <= 0) return;
    kill(sb->init, SIGKILL);
    cube_err err = {0};
    if (sb->cg_made) sb->cg.ops->freeze(&sb->cg, false, &err); /* (a start that failed before its cgroups) */
}

/* PID 1 killed and its exit waited for. The kernel ends every other process of the pid namespace before PID
 * 1's own exit completes, so the cgroups are empty once it has: their removal then finds no process to kill
 * and no rmdir to retry, where it would otherwise poll cgroup.procs (a mass kill of 200 sandboxes cost ~3 ms
 * of CPU each in those polls). One that has not died within INIT_EXIT_WAIT_MS (a task stuck in a filesystem)
 * is left to the cgroup teardown's retries. */
static void end_init(hv_sandbox *sb)
{
    if (sb->init <= 0) return;
    pid_t r = waitpid(sb->init, NULL, WNOHANG);
    if (r == sb->init || (r < 0 && errno == ECHILD)) { /* gone already (reaped by the signal loop) */
        sb->init = -1;
        return;
    }
    int pidfd = (int)syscall(SYS_pidfd_open, sb->init, 0);
    ns_terminate(sb);
    if (pidfd >= 0) {
        struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
        while (poll(&pfd, 1, INIT_EXIT_WAIT_MS) < 0 && errno == EINTR) {
        }
        close(pidfd);
    }
    if (waitpid(sb->init, NULL, WNOHANG) == sb->init) sb->init = -1;
}

/* Removes everything the sandbox left on the host, in the hypervisor (stop); the janitor does the same after
 * a crash. */
static void cleanup(hv_sandbox *sb)
{
    end_init(sb);
    if (sb->cg_made) sb->cg.ops->destroy(&sb->cg);
    if (sb->disk_keep >= 0) close(sb->disk_keep); /* the node took its own (or none) */
    sb->disk_keep = -1;
    if (sb->rw_mounted) {
        hv_disk_forget(sb->rw);
        umount2(sb->rw, MNT_DETACH);
    }
    rmdir(sb->root);
    rmdir(sb->rw);
}

/* Moves this thread into the network namespace at path (the current one goes to *saved) and makes a read-only
 * sysfs mount there, detached, for the sandbox to attach. */
static int join_netns(const char *path, int given, int *saved, int *sysfs, cube_err *err)
{
    int fd = given > 2 ? fcntl(given, F_DUPFD_CLOEXEC, 3) : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cube_err_sys(err, errno, "open network namespace %s", path ? path : "(descriptor)");
    *saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (*saved < 0 || setns(fd, CLONE_NEWNET) < 0) {
        int e = errno;
        close(fd);
        if (*saved >= 0) close(*saved);
        *saved = -1;
        return cube_err_sys(err, e, "join network namespace %s", path ? path : "(descriptor)");
    }
    close(fd);
    int fs = (int)syscall(SYS_fsopen, "sysfs", FSOPEN_CLOEXEC);
    if (fs < 0) return cube_err_sys(err, errno, "fsopen sysfs");
    if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
        int e = errno;
        close(fs);
        return cube_err_sys(err, e, "create sysfs");
    }
    *sysfs = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC,
                          MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    int e = errno;
    close(fs);
    if (*sysfs < 0) return cube_err_sys(err, e, "mount sysfs");
    return 0;
}

/* The sandbox's user namespace is owned by a host uid of its own, not root: the kernel charges what the
 * namespace's processes hold of per-user limits (inotify instances, 128 by default; inotify watches;
 * fanotify groups) to the namespace's owner as well. Owned by root, one sandbox that took every inotify
 * instance left none to every other sandbox (their agents' watchDir) and to the host's own root (systemd).
 * The uid is NS_OWNER_BASE + the hypervisor's pid: unique among live sandboxes, above the ranges container
 * tools allocate (systemd's end below 0x70000000), and no host process runs as it (a process of the owner's
 * uid in the parent namespace would hold every capability in the sandbox's). */
#define NS_OWNER_BASE 0x71000000u

/* clone3 with this thread's effective uid the owner's for the call (a raw setresuid: glibc's changes every
 * thread); the parent is root again after it. A host that refuses user namespaces to unprivileged uids
 * (AppArmor's restrict_unprivileged_userns, a sysctl) gets them owned by root, said once. */
static long clone_owned(struct clone_args *ca)
{
    static int refused; /* the host refused an owned namespace once: root owns them from then on */
    if (!__atomic_load_n(&refused, __ATOMIC_RELAXED)) {
        uid_t owner = NS_OWNER_BASE + (uid_t)getpid();
        if (syscall(SYS_setresuid, -1, owner, -1) == 0) {
            long pid = syscall(SYS_clone3, ca, sizeof(*ca));
            if (pid == 0) return 0; /* the child: its namespace's root once uid_map is written */
            int e = errno;
            if (syscall(SYS_setresuid, -1, 0, -1) < 0) abort(); /* never go on without root */
            if (pid > 0 || (e != EPERM && e != EACCES && e != ENOSPC && e != EUSERS)) {
                errno = e;
                return pid;
            }
            __atomic_store_n(&refused, 1, __ATOMIC_RELAXED);
            fprintf(stderr,
                    "cube-hypervisor: this host refuses user namespaces owned by an unprivileged uid (%s): "
                    "sandboxes' namespaces are owned by root and share its per-user limits (inotify)\n",
                    strerror(e));
        }
    }
    return syscall(SYS_clone3, ca, sizeof(*ca));
}

static void release_uids(hv_sandbox *sb)
{
    if (sb->idmap_ns >= 0) close(sb->idmap_ns);
    if (sb->uid_lock >= 0) close(sb->uid_lock); /* (after the sandbox's processes are gone) */
    sb->idmap_ns = sb->uid_lock = -1;
}

/* The layers of a sandbox (spec's list, the rootfs) and its writable layer, each a detached clone seen
 * through the sandbox's own uids, for its PID 1 to attach over the same paths. None when it shares the
 * template's uids. */
typedef struct idmapped_set {
    int *fds;
    const char **at; /* into copy, spec and sb */
    int n;
    char *copy;
} idmapped_set;

static void idmapped_free(idmapped_set *set)
{
    for (int i = 0; i < set->n; i++) close(set->fds[i]);
    free(set->fds);
    free(set->at);
    free(set->copy);
    memset(set, 0, sizeof(*set));
}

static int idmapped_add(idmapped_set *set, int userns, const char *path, cube_err *err)
{
    int fd = cube_idmapped_tree(path, userns, 0, err);
    if (fd < 0) return -1;
    set->fds[set->n] = fd;
    set->at[set->n++] = path;
    return 0;
}

static int idmapped_make(const hv_spec *spec, const hv_sandbox *sb, idmapped_set *set, cube_err *err)
{
    memset(set, 0, sizeof(*set));
    if (sb->idmap_ns < 0) return 0;
    size_t max = 2;
    for (const char *l = spec->layers; l && *l; l++) max += *l == ':';
    set->copy = strdup(spec->layers ? spec->layers : "");
    set->fds = calloc(max + 1, sizeof(*set->fds));
    set->at = calloc(max + 1, sizeof(*set->at));
    if (!set->copy || !set->fds || !set->at) {
        idmapped_free(set);
        return cube_err_set(err, ENOMEM, "out of memory");
    }
    char *save = NULL;
    for (char *l = strtok_r(set->copy, ":", &save); l; l = strtok_r(NULL, ":", &save))
        if (idmapped_add(set, sb->idmap_ns, l, err) < 0) goto fail;
    if (idmapped_add(set, sb->idmap_ns, spec->rootfs, err) < 0 ||
        idmapped_add(set, sb->idmap_ns, sb->rw, err) < 0)
        goto fail;
    return 0;
fail:
    idmapped_free(set);
    return -1;
}

/* Starts the sandbox's PID 1 in new namespaces (the slot's network namespace joined when there is one) over
 * the writable layer and cgroups already made, and waits for the agent to listen. builtin: the agent may run
 * from this image (only while this process is single-threaded: a clone of a threaded process could inherit a
 * lock another thread held, so later starts exec the agent). idmapped: the layers as PID 1 attaches them
 * (idmapped_make; the caller's, closed by it). On failure nothing of it is left: sb->init is -1. */
static int spawn_init(const hv_spec *spec, hv_sandbox *sb, bool builtin, const idmapped_set *idmapped,
                      cube_err *err)
{
    int syncp[2] = {-1, -1}, errp[2] = {-1, -1}, readyp[2] = {-1, -1}, host_ns = -1;
    bool agent = !(spec->argv && spec->argv[0]);
    char buf[4400];
    /* sync: a socket, so that a word to a child that died is an error, not SIGPIPE */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, syncp) < 0 || pipe2(errp, O_CLOEXEC) < 0 ||
        (agent && pipe2(readyp, O_CLOEXEC) < 0)) {
        cube_err_sys(err, errno, "pipes");
        goto fail;
    }
    struct clone_args ca = {
        .flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC,
        .exit_signal = SIGCHLD,
    };
    child_args cargs = {spec, sb, -1, -1, syncp[0], errp[1], readyp[1], false, NULL, NULL, 0};
    cargs.idmapped = idmapped->fds;
    cargs.idmapped_at = idmapped->at;
    cargs.n_idmapped = idmapped->n;
    const char *agent_src = spec->agent_bundle ? spec->agent_bundle : spec->agent_bin;
    if (agent_src) {
        /* taken here, as host root: the sandbox's root (an unprivileged host uid) may not be able to reach
         * it (a build tree under a 0700 home) */
        cargs.agent =
            (int)syscall(SYS_open_tree, AT_FDCWD, agent_src,
                         OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (spec->agent_bundle ? AT_RECURSIVE : 0));
        if (cargs.agent < 0) {
            cube_err_sys(err, errno, "bind the agent %s", agent_src);
            goto fail;
        }
    }
    if (spec->netns || spec->netns_fd > 2) {
        /* join the slot's namespace for the clone (this thread only, and back after it); a sandbox's root
         * cannot mount sysfs for a namespace it does not own, so the mount is made here and handed over */
        if (join_netns(spec->netns, spec->netns_fd, &host_ns, &cargs.sysfs, err) < 0) {
            if (cargs.agent >= 0) close(cargs.agent);
            goto fail;
        }
        ca.flags &= ~(uint64_t)CLONE_NEWNET;
    }
    cargs.builtin = agent && builtin && hv_builtin_agent;
    long pid = clone_owned(&ca);
    if (pid == 0) child_main(&cargs);
    if (host_ns >= 0) {
        if (setns(host_ns, CLONE_NEWNET) < 0) abort(); /* never stay in the sandbox's namespace */
        close(host_ns);
        host_ns = -1;
    }
    if (cargs.sysfs >= 0) close(cargs.sysfs);
    if (cargs.agent >= 0) close(cargs.agent);
    if (pid < 0) {
        cube_err_sys(err, errno, "clone3 into new namespaces");
        goto fail;
    }
    sb->init = (pid_t)pid;
    close(syncp[0]);
    syncp[0] = -1;
    close(errp[1]);
    errp[1] = -1;

    char path[64], map[64];
    snprintf(map, sizeof(map), "0 %u %u\n", sb->uid_host, spec->uid_count);
    snprintf(path, sizeof(path), "/proc/%d/uid_map", sb->init);
    if (cube_write_string(path, map, err) < 0) goto fail;
    snprintf(path, sizeof(path), "/proc/%d/gid_map", sb->init);
    if (cube_write_string(path, map, err) < 0) goto fail;
    /* the child mounts the sandbox's filesystems while its cgroups are made here (a first start); one that
     * died meanwhile has said why on errfd, read below */
    if (send(syncp[1], "g", 1, MSG_NOSIGNAL) == 1) {
        if (!sb->cg_made) {
            sb->cg_made = true; /* also when partly made: destroy removes what exists */
            if (sb->cg.ops->create(&sb->cg, &spec->limits, err) < 0) goto fail;
        }
        if (sb->cg.ops->add(&sb->cg, sb->init, err) < 0) goto fail;
        /* The agent outlives what it runs: every process it starts raises its own OOM score (agent side),
         * and where this host lets root lower one (CAP_SYS_RESOURCE, which some container hosts withhold) the
         * agent's is also set to -1000 here, from outside: the OOM killer never picks it, and a sandbox
         * cannot undo it. A container's own PID 1 (cube-shim) is the workload: it keeps the default. */
        snprintf(path, sizeof(path), "/proc/%d/oom_score_adj", sb->init);
        if (agent) {
            /* refused: the children's raised scores alone keep the agent out of the OOM killer's way (checked
             * without formatting an error: on such hosts it is refused for every sandbox) */
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            if ((fd < 0 || write(fd, "-1000", 5) != 5) && errno != EACCES && errno != EPERM) {
                cube_err_sys(err, errno, "write %s", path);
                if (fd >= 0) close(fd);
                goto fail;
            }
            if (fd >= 0) close(fd);
        }
        send(syncp[1], "g", 1, MSG_NOSIGNAL); /* in its cgroups: it may go on */
    }
    close(syncp[1]);
    syncp[1] = -1;
    ssize_t n = read(errp[0], buf, sizeof(buf) - 1);
    close(errp[0]);
    errp[0] = -1;
    if (n > 0) {
        buf[n] = '\0';
        cube_err_set(err, EIO, "sandbox setup: %s", buf);
        goto fail;
    }
    if (agent) {
        /* ready when the agent listens: whoever asked for the sandbox can use it at once. End of file: the
         * agent died first (its log says why). */
        close(readyp[1]);
        readyp[1] = -1;
        struct pollfd pr = {.fd = readyp[0], .events = POLLIN};
        char b;
        int rc = poll(&pr, 1, AGENT_READY_TIMEOUT_MS);
        if (rc <= 0 || read(readyp[0], &b, 1) != 1) {
            cube_err_set(err, ETIMEDOUT,
                         rc == 0 ? "the agent did not listen within %d ms"
                                 : "the agent exited before it listened (see the sandbox log)",
                         AGENT_READY_TIMEOUT_MS);
            goto fail;
        }
        close(readyp[0]);
        readyp[0] = -1;
    }
    return 0;

fail:
    if (host_ns >= 0) {
        if (setns(host_ns, CLONE_NEWNET) < 0) abort();
        close(host_ns);
    }
    for (int i = 0; i < 2; i++) {
        if (syncp[i] >= 0) close(syncp[i]);
        if (errp[i] >= 0) close(errp[i]);
        if (readyp[i] >= 0) close(readyp[i]);
    }
    if (sb->init > 0) {
        kill(sb->init, SIGKILL);
        waitpid(sb->init, NULL, 0);
        sb->init = -1;
    }
    return -1;
}

/* Gives the sandbox a host uid range of its own (uid_range.h). A container's sandbox (uid_base 0: its files
 * are the host's own, unshifted) keeps the host's uids. Where the host cannot idmap the template's or the
 * writable layer's filesystem, the sandbox shares the template's range, and says so. The layers, idmapped
 * for the first PID 1, in *idmapped (none when shared). */
static int private_uids(const hv_spec *spec, hv_sandbox *sb, idmapped_set *idmapped, cube_err *err)
{
    memset(idmapped, 0, sizeof(*idmapped));
    if (spec->uid_base == 0) return 0;
    uid_t first;
    sb->uid_lock = hv_uid_range_claim(&first, err);
    if (sb->uid_lock < 0) return -1;
    sb->idmap_ns = cube_idmap_userns(spec->uid_base, first, spec->uid_count, err);
    if (sb->idmap_ns < 0) return -1;
    if (idmapped_make(spec, sb, idmapped, err) == 0) {
        sb->uid_host = first;
        return 0;
    }
    if (err->code != EINVAL && err->code != EPERM && err->code != EOPNOTSUPP && err->code != ENOSYS)
        return -1;
    fprintf(stderr, "cube-hypervisor: %s: the sandbox shares its template's host uids with other sandboxes\n",
            err->msg);
    cube_err_clear(err);
    release_uids(sb);
    return 0;
}

static int ns_create(const hv_spec *spec, hv_sandbox **out, cube_err *err)
{
    hv_sandbox *sb = calloc(1, sizeof(*sb));
    if (!sb) return cube_err_set(err, ENOMEM, "out of memory");
    sb->init = sb->janitor = -1;
    sb->lifeline = sb->disk_keep = -1;
    sb->idmap_ns = sb->uid_lock = -1;
    sb->uid_host = spec->uid_base;
    snprintf(sb->id, sizeof(sb->id), "%s", spec->id);
    snprintf(sb->state, sizeof(sb->state), "%s", spec->state_dir);
    snprintf(sb->root, sizeof(sb->root), "%s/root", spec->state_dir);
    snprintf(sb->rw, sizeof(sb->rw), "%s/rw", spec->state_dir);
    char buf[4400];

    /* compiled here (or once in the zygote this was forked from): PID 1 only installs it */
    if (sandbox_seccomp_prepare(err) < 0) goto fail;
    if (cgroup_init(&sb->cg, spec->id, err) < 0) goto fail;
    /* the sandbox's root (an unprivileged host uid) mounts the overlay from inside: it must be able to pass
     * through the state directory, though not to list it */
    if (chmod(sb->state, 0711) < 0) {
        cube_err_sys(err, errno, "chmod %s", sb->state);
        goto fail;
    }
    if (mkdir(sb->root, 0755) < 0 && errno != EEXIST) {
        cube_err_sys(err, errno, "mkdir %s", sb->root);
        goto fail;
    }
    if (mkdir(sb->rw, 0700) < 0 && errno != EEXIST) {
        cube_err_sys(err, errno, "mkdir %s", sb->rw);
        goto fail;
    }
    /* the writable layer, owned by the sandbox's root so overlay copy-up works inside: its own ext4 on the
     * node's disk when the node gave a disk template (see disk.h), else a tmpfs of disk_mb (whose pages are
     * memory, charged to the sandbox's memory limit) */
    if (spec->disk_fd > 2) { /* prepared ahead by the node (a cold start: the copy and mount are done) */
        int rc = hv_disk_place(spec->disk_fd, sb->rw, spec->uid_base, err);
        close(spec->disk_fd);
        if (rc < 0) goto fail;
    } else if (spec->disk_template) {
        /* the copy is the sandbox's disk: beside the template, on the node's disk (the state directory may
         * be a tmpfs); its name goes as soon as the loop device holds it */
        snprintf(buf, sizeof(buf), "%s.%s", spec->disk_template, spec->id);
        if (hv_disk_attach(spec->disk_template, buf, sb->rw, spec->uid_base, err) < 0) goto fail;
    } else {
        snprintf(buf, sizeof(buf), "size=%llum,mode=0755,uid=%u,gid=%u",
                 (unsigned long long)(spec->disk_mb ? spec->disk_mb : 1024), spec->uid_base, spec->uid_base);
        if (mount("cube-rw", sb->rw, "tmpfs", MS_NOSUID | MS_NODEV, buf) < 0) {
            cube_err_sys(err, errno, "mount writable layer at %s", sb->rw);
            goto fail;
        }
    }
    sb->rw_mounted = true;
    /* the node may reuse the disk once this sandbox is gone: it can only take a clone made here, as the disk
     * is mounted in this process's mount namespace alone (a disk mounted in the node's, one per sandbox,
     * made every sandbox's start copy all of them) */
    if (spec->disk_fd > 2 || spec->disk_template) sb->disk_keep = hv_disk_keep(sb->rw);
    /* (a disk prepared ahead has them already) */
    for (int i = 0; i < 2; i++) {
        snprintf(buf, sizeof(buf), "%s/%s", sb->rw, i ? "work" : "upper");
        if ((mkdir(buf, 0755) < 0 && errno != EEXIST) || chown(buf, spec->uid_base, spec->uid_base) < 0) {
            cube_err_sys(err, errno, "prepare %s", buf);
            goto fail;
        }
    }
    /* (the cgroups are made by spawn_init, beside the sandbox's mounts; the janitor removes what exists) */
    sb->janitor = hv_janitor_start(sb->cg.name, sb->rw, sb->root, &sb->lifeline, err);
    if (sb->janitor < 0) goto fail;

    idmapped_set idmapped = {0};
    int rc = private_uids(spec, sb, &idmapped, err) < 0 ? -1 : spawn_init(spec, sb, true, &idmapped, err);
    idmapped_free(&idmapped);
    if (rc < 0) goto fail;
    *out = sb;
    return 0;

fail:
    cleanup(sb);
    release_uids(sb);
    if (sb->lifeline >= 0) close(sb->lifeline);
    if (sb->janitor > 0) waitpid(sb->janitor, NULL, 0);
    free(sb);
    return -1;
}

static pid_t ns_init_pid(hv_sandbox *sb)
{
    return sb->init;
}

static int ns_disk_keep_fd(hv_sandbox *sb)
{
    return sb->disk_keep;
}

static int ns_pause(hv_sandbox *sb, cube_err *err)
{
    return sb->cg.ops->freeze(&sb->cg, true, err);
}

static int ns_resume(hv_sandbox *sb, cube_err *err)
{
    return sb->cg.ops->freeze(&sb->cg, false, err);
}

static int ns_stats(hv_sandbox *sb, hv_stats *st, cube_err *err)
{
    memset(st, 0, sizeof(*st));
    if (sb->cg.ops->stats(&sb->cg, &st->cg, err) < 0) return -1;
    struct statfs sf;
    if (statfs(sb->rw, &sf) == 0) {
        st->disk_total = (uint64_t)sf.f_blocks * (uint64_t)sf.f_bsize;
        st->disk_used = st->disk_total - (uint64_t)sf.f_bfree * (uint64_t)sf.f_bsize;
        st->disk_pending = hv_disk_pending(sb->rw);
    }
    return 0;
}

static int ns_disk_room(hv_sandbox *sb, bool limited, uint64_t writable_bytes, cube_err *err)
{
    return hv_disk_set_room(sb->rw, limited, writable_bytes, err);
}

/* Files only: the writable layer, copied while the sandbox is frozen so that it is consistent. Process state
 * would need CRIU, which this backend does not drive yet; the caller is told so. */
static int ns_snapshot(hv_sandbox *sb, const char *dir, bool *process_state, cube_err *err)
{
    *process_state = false;
    cube_err_clear(err);
    cg_stats st;
    if (sb->cg.ops->stats(&sb->cg, &st, err) < 0) return -1;
    bool was_frozen = st.frozen;
    if (!was_frozen && ns_pause(sb, err) < 0) return -1;
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        cube_err_sys(err, errno, "mkdir %s", dir);
        goto out;
    }
    pid_t pid = fork();
    if (pid == 0) {
        char src[4300];
        snprintf(src, sizeof(src), "%s/upper/.", sb->rw);
        execl("/bin/cp", "cp", "-a", "--", src, dir, (char *)NULL); /* snapshot is not the hot path */
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        cube_err_set(err, EIO, "copy the writable layer to %s failed", dir);
out:
    if (!was_frozen) ns_resume(sb, NULL);
    return err->code ? -1 : 0;
}

/* Back to a snapshot in place: every process of the sandbox ends, its writable layer starts empty again over
 * `layers` (a snapshot's files over the layers the sandbox stood on), and a new PID 1 starts in the same
 * network namespace, cgroups and disk, so the sandbox keeps its id, address, policy and limits. Files only,
 * as this backend's snapshots are. Runs on a control thread: the new PID 1 dies with this process as the
 * first did (the control threads live as long as it serves). */
static int ns_rollback(hv_sandbox *sb, const hv_spec *spec, const char *layers, cube_err *err)
{
    if (spec->argv && spec->argv[0])
        return cube_err_set(err, ENOTSUP, "a container's sandbox cannot be rolled back");
    if (sb->init > 0) {
        ns_terminate(sb);
        waitpid(sb->init, NULL, 0);
        sb->init = -1;
    }
    /* the old layer goes aside, whole: new upper and work directories, as overlayfs marks the old ones in use
     * by a mount that the ended mount namespace may still hold a moment */
    char old[4300], from[4300], to[4400];
    snprintf(old, sizeof(old), "%s/rolled-back", sb->rw);
    cube_rm_rf(old);
    if (mkdir(old, 0700) < 0) return cube_err_sys(err, errno, "mkdir %s", old);
    for (int i = 0; i < 2; i++) {
        const char *name = i ? "work" : "upper";
        snprintf(from, sizeof(from), "%s/%s", sb->rw, name);
        snprintf(to, sizeof(to), "%s/%s", old, name);
        if (rename(from, to) < 0 && errno != ENOENT) return cube_err_sys(err, errno, "move %s aside", from);
        if (mkdir(from, 0755) < 0 || chown(from, spec->uid_base, spec->uid_base) < 0)
            return cube_err_sys(err, errno, "prepare %s", from);
    }
    hv_spec again = *spec;
    again.layers = layers && *layers ? layers : NULL;
    again.disk_fd = -1;
    idmapped_set idmapped;
    int rc =
        idmapped_make(&again, sb, &idmapped, err) < 0 ? -1 : spawn_init(&again, sb, false, &idmapped, err);
    idmapped_free(&idmapped);
    cube_rm_rf(old);
    return rc;
}

static void ns_destroy(hv_sandbox *sb)
{
    if (!sb) return;
    cleanup(sb);
    if (sb->init > 0) waitpid(sb->init, NULL, 0);
    release_uids(sb);
    if (sb->lifeline >= 0) close(sb->lifeline); /* the janitor finds nothing left and exits */
    if (sb->janitor > 0) waitpid(sb->janitor, NULL, 0);
    free(sb);
}

const hv_ops hv_ns_ops = {
    .name = "ns",
    .available = ns_available,
    .create = ns_create,
    .init_pid = ns_init_pid,
    .pause = ns_pause,
    .resume = ns_resume,
    .snapshot = ns_snapshot,
    .rollback = ns_rollback,
    .stats = ns_stats,
    .disk_room = ns_disk_room,
    .terminate = ns_terminate,
    .disk_keep_fd = ns_disk_keep_fd,
    .destroy = ns_destroy,
};
