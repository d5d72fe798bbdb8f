/* cube-hypervisor's life from its command line: creates one sandbox, answers its control socket, and tears
 * it down on Stop, SIGTERM/SIGINT, or when the sandbox's PID 1 exits. Prints "ready <init pid> <backend>
 * keep-fd=<n>" once running. cube-hypervisor's main calls it; so does each child of cube-zygote (already
 * loaded, no exec).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "fsutil.h"
#include "hv_main.h"
#include "janitor.h"
#include "log.h"
#include "oci.h"

static const cube_config_flag flags[] = {
    {"id", "hv.id", true, "sandbox id (hostname, cgroup name)"},
    {"rootfs", "hv.rootfs", true, "template rootfs directory (read-only lower layer)"},
    {"layers", "hv.layers", true, "extra read-only layers above the rootfs, dirA:dirB (restore/fork)"},
    {"state", "hv.state", true, "per-sandbox state directory"},
    {"agent", "hv.agent", true, "cube-agent binary to run as PID 1 (default: beside this binary)"},
    {"agent-bundle", "hv.agent_bundle", true,
     "self-contained agent directory (cube-agent, lib/, ld.so) instead"},
    {"oci-config", "hv.oci_config", true,
     "an OCI runtime config.json: PID 1 is its process (args, env, cwd, user) with its hostname"},
    {"stdio-fds", "hv.stdio_fds", true, "IN,OUT,ERR: inherited fds that become PID 1's stdio"},
    {"start-fd", "hv.start_fd", true, "inherited fd: PID 1 execs when a byte arrives (EOF: it exits)"},
    {"netns", "hv.netns", true, "network namespace to join (cube-net's slot); default: a new, empty one"},
    {"netns-fd", "hv.netns_fd", true, "the same, as an inherited descriptor (it wins over --netns)"},
    {"backend", "hv.backend", true,
     "auto | ns | kvm (default auto: kvm when /dev/kvm works and a guest is given)"},
    {"kernel", "hv.kernel", true, "kvm: the guest kernel (bzImage or vmlinux)"},
    {"disk", "hv.disk", true, "kvm: the template's root disk image (ext4), shared read-only"},
    {"restore", "hv.restore", true, "kvm: a snapshot directory to clone from instead of booting"},
    {"kernel-args", "hv.kernel_args", true,
     "kvm: parameters appended to the guest kernel's command line (e.g. earlyprintk=serial nokaslr)"},
    {"control", "hv.control", true, "control socket path (default <state>/control.sock)"},
    {"cpus", "hv.cpus", true, "cpu limit in cores (default 2)"},
    {"memory-mb", "hv.memory_mb", true, "memory limit (default 512)"},
    {"disk-mb", "hv.disk_mb", true, "writable layer size (default 1024)"},
    {"lxcfs", "hv.lxcfs", true,
     "ns: an lxcfs mount: the sandbox's /proc/meminfo, cpuinfo, stat, uptime... show its own limits"},
    {"disk-fd", "hv.disk_fd", true,
     "a disk prepared ahead, as a detached mount at this descriptor (cubelet)"},
    {"disk-template", "hv.disk_template", true,
     "ns: an empty ext4 image of --disk-mb (cubelet makes it): the writable layer is a copy on a loop device "
     "(default: a tmpfs, whose pages count as memory)"},
    {"pids", "hv.pids", true, "process limit (default 1024)"},
    {"uid-base", "hv.uid_base", true, "host uid of root inside (default 100000)"},
    {"help", "hv.help", false, "this text"},
    {0},
};

static void usage(void)
{
    fprintf(stderr, "usage: cube-hypervisor --id ID --rootfs DIR --state DIR [flags] [-- init argv]\n");
    for (const cube_config_flag *f = flags; f->name; f++) fprintf(stderr, "  --%-10s %s\n", f->name, f->help);
}

static int valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) return 0;
    return 1;
}

static int run(cube_config *cfg, int argc, char **argv)
{
    cube_err err = {0};
    int first = 0;
    if (cube_config_parse_args(cfg, argc, argv, flags, &first, &err) < 0) {
        fprintf(stderr, "cube-hypervisor: %s\n", err.msg);
        usage();
        return 2;
    }
    bool help = false;
    cube_config_get_bool(cfg, "hv.help", false, &help, NULL);
    if (help) {
        usage();
        return 0;
    }
    const char *id = cube_config_get(cfg, "hv.id", NULL), *rootfs = cube_config_get(cfg, "hv.rootfs", NULL),
               *state = cube_config_get(cfg, "hv.state", NULL);
    if (!id || !rootfs || !state) {
        fprintf(stderr, "cube-hypervisor: --id, --rootfs and --state are required\n");
        usage();
        return 2;
    }
    if (!valid_id(id)) {
        fprintf(stderr, "cube-hypervisor: --id '%s' must be 1-63 chars of [a-z0-9-]\n", id);
        return 2;
    }
    long long cpus, mem, disk, disk_fd, netns_fd, pids, uid_base;
    if (cube_config_get_int(cfg, "hv.cpus", 2, 0, 1024, &cpus, &err) < 0 ||
        cube_config_get_int(cfg, "hv.memory_mb", 512, 0, 1 << 22, &mem, &err) < 0 ||
        cube_config_get_int(cfg, "hv.disk_mb", 1024, 1, 1 << 22, &disk, &err) < 0 ||
        cube_config_get_int(cfg, "hv.disk_fd", -1, -1, 1 << 20, &disk_fd, &err) < 0 ||
        cube_config_get_int(cfg, "hv.netns_fd", -1, -1, 1 << 20, &netns_fd, &err) < 0 ||
        cube_config_get_int(cfg, "hv.pids", 1024, 0, 1 << 22, &pids, &err) < 0 ||
        cube_config_get_int(cfg, "hv.uid_base", 100000, 0, (1LL << 32) - 65537, &uid_base, &err) < 0) {
        fprintf(stderr, "cube-hypervisor: %s\n", err.msg);
        return 2;
    }
    char rootfs_abs[PATH_MAX], state_abs[PATH_MAX], agent[PATH_MAX];
    if (!realpath(rootfs, rootfs_abs) || !realpath(state, state_abs)) {
        fprintf(stderr, "cube-hypervisor: %s: %s\n", realpath(rootfs, rootfs_abs) ? state : rootfs,
                strerror(errno));
        return 2;
    }
    const char *agent_flag = cube_config_get(cfg, "hv.agent", NULL);
    if (agent_flag)
        snprintf(agent, sizeof(agent), "%s", agent_flag);
    else
        cube_sibling_path("cube-agent", "../cube-agent/cube-agent", agent, sizeof(agent));
    char agent_abs[PATH_MAX], bundle_abs[PATH_MAX];
    const char *bundle = cube_config_get(cfg, "hv.agent_bundle", NULL);
    if (bundle) {
        char probe[PATH_MAX + 32];
        snprintf(probe, sizeof(probe), "%s/cube-agent", bundle);
        if (!realpath(bundle, bundle_abs) || access(probe, X_OK) < 0) {
            fprintf(stderr, "cube-hypervisor: --agent-bundle %s has no cube-agent\n", bundle);
            return 2;
        }
        snprintf(agent, sizeof(agent), "%s", probe);
    }
    const char *kernel = cube_config_get(cfg, "hv.kernel", NULL),
               *disk_image = cube_config_get(cfg, "hv.disk", NULL),
               *restore = cube_config_get(cfg, "hv.restore", NULL);
    const hv_ops *ops =
        hv_backend_pick(cube_config_get(cfg, "hv.backend", "auto"), (kernel || restore) && disk_image, &err);
    if (!ops) {
        fprintf(stderr, "cube-hypervisor: %s\n", err.msg);
        return 1;
    }
    /* a container's own process (--oci-config) needs no agent from the node, nor does a microVM (its agent is
     * in its disk image) */
    bool need_agent = cube_config_get(cfg, "hv.oci_config", NULL) == NULL && strcmp(ops->name, "kvm") != 0;
    if (need_agent && (!realpath(agent, agent_abs) || access(agent_abs, X_OK) < 0)) {
        fprintf(stderr, "cube-hypervisor: cube-agent not found at %s (use --agent)\n", agent);
        return 2;
    }

    if (netns_fd > 2 && fcntl((int)netns_fd, F_SETFD, FD_CLOEXEC) < 0) {
        fprintf(stderr, "cube-hypervisor: --netns-fd %lld: %s\n", netns_fd, strerror(errno));
        return 2;
    }
    /* The ns backend's mounts (the sandbox's disk) go in a mount namespace of this process's own, private:
     * in the node's they would be one more for every sandbox the node holds, and every new sandbox's mount
     * namespace starts as a copy of its hypervisor's (the kernel copies each mount, and drops each again at
     * the sandbox's pivot_root). Forked by cube-zygote, this copies the zygote's small namespace. Where it
     * cannot be done (no CAP_SYS_ADMIN), mounts go where they always went. */
    if (strcmp(ops->name, "ns") == 0 && unshare(CLONE_NEWNS) == 0 &&
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        fprintf(stderr, "cube-hypervisor: make its mounts private: %s\n", strerror(errno));
        return 1;
    }
    /* SIGCHLD tells us PID 1 exited; SIGTERM/SIGINT stop us. All arrive on a signalfd. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);

    hv_spec spec = {
        .id = id,
        .rootfs = rootfs_abs,
        .layers = cube_config_get(cfg, "hv.layers", NULL),
        .state_dir = state_abs,
        .agent_bin = need_agent ? agent_abs : NULL,
        .agent_bundle = need_agent && bundle ? bundle_abs : NULL,
        .netns = cube_config_get(cfg, "hv.netns", NULL),
        .netns_fd = (int)netns_fd,
        .argv = first < argc ? argv + first : NULL,
        .limits = {(uint32_t)cpus, (uint64_t)mem, (uint32_t)pids},
        .disk_mb = (uint64_t)disk,
        .disk_template = cube_config_get(cfg, "hv.disk_template", NULL),
        .disk_fd = (int)disk_fd,
        .lxcfs = cube_config_get(cfg, "hv.lxcfs", NULL),
        .kernel = kernel,
        .disk_image = disk_image,
        .restore = restore,
        .kernel_args = cube_config_get(cfg, "hv.kernel_args", NULL),
        .uid_base = (uid_t)uid_base,
        .uid_count = 65536,
    };
    const char *stdio = cube_config_get(cfg, "hv.stdio_fds", NULL);
    if (stdio && sscanf(stdio, "%d,%d,%d", &spec.stdio_fds[0], &spec.stdio_fds[1], &spec.stdio_fds[2]) != 3) {
        fprintf(stderr, "cube-hypervisor: --stdio-fds wants IN,OUT,ERR\n");
        return 2;
    }
    spec.has_stdio = stdio != NULL;
    long long start_fd;
    if (cube_config_get_int(cfg, "hv.start_fd", -1, -1, 1 << 20, &start_fd, &err) < 0) {
        fprintf(stderr, "cube-hypervisor: %s\n", err.msg);
        return 2;
    }
    spec.start_fd = (int)start_fd;
    spec.has_start = start_fd >= 0;
    oci_process oci = {0};
    const char *oci_path = cube_config_get(cfg, "hv.oci_config", NULL);
    if (oci_path) {
        if (oci_process_load(oci_path, &oci, &err) < 0) {
            fprintf(stderr, "cube-hypervisor: %s\n", err.msg);
            return 2;
        }
        spec.argv = oci.argv;
        spec.envp = oci.envp;
        spec.cwd = oci.cwd;
        spec.hostname = oci.hostname;
        spec.has_user = true;
        spec.uid = oci.uid;
        spec.gid = oci.gid;
    }
    hv_control ctl = {.ops = ops, .lock = PTHREAD_MUTEX_INITIALIZER};
    snprintf(ctl.id, sizeof(ctl.id), "%s", id);
    ctl.stop_fd = eventfd(0, EFD_CLOEXEC);
    if (ops->create(&spec, &ctl.sb, &err) < 0) {
        fprintf(stderr, "cube-hypervisor: create sandbox %s: %s\n", id, err.msg);
        return 1;
    }
    ctl.init_pid = ops->init_pid(ctl.sb);
    ctl.spec = &spec;
    char control[PATH_MAX + 32];
    const char *control_flag = cube_config_get(cfg, "hv.control", NULL);
    snprintf(control, sizeof(control), "%s", control_flag ? control_flag : "");
    if (!control_flag) snprintf(control, sizeof(control), "unix:%s/control.sock", state_abs);
    /* listening now, served once "ready" is out: a call that comes first waits in the socket's queue */
    cube_rpc_local *srv = cube_rpc_local_start(control, hv_control_methods, &ctl, 0, &err);
    if (!srv) {
        fprintf(stderr, "cube-hypervisor: control socket: %s\n", err.msg);
        ops->destroy(ctl.sb);
        return 1;
    }
    if (ops->jail && ops->jail(ctl.sb, &err) < 0) {
        fprintf(stderr, "cube-hypervisor: jail: %s\n", err.msg);
        cube_rpc_local_stop(srv);
        ops->destroy(ctl.sb);
        return 1;
    }
    pid_t init = ctl.init_pid; /* (no control thread runs yet) */
    /* keep-fd: where the node finds a clone of the sandbox's disk (hv_ops.disk_keep_fd) */
    int keep = ops->disk_keep_fd ? ops->disk_keep_fd(ctl.sb) : -1;
    printf("ready %d %s keep-fd=%d\n", init, ops->name, keep);
    fflush(stdout);
    if (cube_rpc_local_serve(srv, 2, &err) < 0) {
        fprintf(stderr, "cube-hypervisor: control socket: %s\n", err.msg);
        cube_rpc_local_stop(srv);
        ops->destroy(ctl.sb);
        return 1;
    }
    cube_log_info("sandbox running", "id=%s backend=%s init_pid=%d control=%s", id, ops->name, init, control);

    int rc = 0;
    bool init_exited = false;
    int guest_fd = ops->exit_fd ? ops->exit_fd(ctl.sb) : -1;
    for (;;) {
        /* the lifeline the zygote holds the other end of hangs up only if the zygote died first */
        struct pollfd fds[4] = {
            {sfd, POLLIN, 0}, {ctl.stop_fd, POLLIN, 0}, {guest_fd, POLLIN, 0}, {hv_janitor_watch_fd(), 0, 0}};
        if (poll(fds, 4, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (fds[3].revents) {
            hv_janitor_orphaned();
            continue;
        }
        if (fds[1].revents) break; /* Stop RPC */
        if (fds[2].revents) {      /* the microVM's guest shut down */
            rc = ops->exit_status ? ops->exit_status(ctl.sb) : 0;
            init_exited = true;
            break;
        }
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof(si)) != sizeof(si)) continue;
        if (si.ssi_signo != SIGCHLD) break;
        /* only PID 1: other children (the janitor, a snapshot's copy) are waited for by their owners. PID 1
         * changes only under the lock (a rollback reaps the one it ends) */
        int st;
        pthread_mutex_lock(&ctl.lock);
        init = ops->init_pid(ctl.sb);
        bool ended = init > 0 && waitpid(init, &st, WNOHANG) == init;
        pthread_mutex_unlock(&ctl.lock);
        if (ended) {
            /* our exit status is PID 1's, as a shell reports it (the shim reports it to containerd) */
            rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
            init_exited = true;
            break;
        }
    }
    pthread_mutex_lock(&ctl.lock);
    bool asked = ctl.stopping; /* Stop killed PID 1 before we saw its exit: not the sandbox's own doing */
    ctl.stopping = 1;
    pthread_mutex_unlock(&ctl.lock);
    if (asked)
        rc = 0;
    else if (init_exited)
        cube_log_warn("sandbox init exited", "id=%s status=%d", id, rc);
    cube_rpc_local_stop(srv);
    ops->destroy(ctl.sb);
    cube_log_info("sandbox stopped", "id=%s", id);
    oci_process_free(&oci);
    return rc;
}

int hv_main(int argc, char **argv)
{
    cube_log_init("cube-hypervisor", -1);
    cube_config *cfg = cube_config_new();
    int rc = run(cfg, argc, argv);
    cube_config_free(cfg);
    return rc;
}
