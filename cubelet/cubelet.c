#include "cubelet.h"
#include "cubelet_internal.h"
#include "disk.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/mount.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.pb-c.h"
#include "cubelet.pb-c.h"
#include "hypervisor.pb-c.h"
#include "id.h"
#include "fsutil.h"
#include "log.h"
#include "metrics.h"
#include "master.pb-c.h"
#include "netclient.h"
#include "netns.h"
#include "pool_sched.h"
#include "start_cmd.h"
#include "protoutil.h"
#include "timeutil.h"

/* A create waits at most this long (or until its caller's deadline) for a pooled sandbox or its turn to start
 * one; then the node answers "busy" (EAGAIN, a 503 to the user) instead of starting yet another sandbox on
 * CPUs already full: past what the node can start, more concurrent starts only make every one of them late.
 */
#define CREATE_WAIT_MAX_MS 10000
/* Creates that may wait at once: the RPC server's threads less a reserve, so that kills (which free the CPU
 * and memory the waiting creates need) and other calls always find a thread. */
#define CREATES_WAITING_MAX (CUBELET_RPC_THREADS - 32)

static void adopt_running(cubelet *c);
static int spawn_slot(cubelet *c, const cl_template *tpl, const char *layers, int disk_fd,
                      const cl_lease *ahead, cl_slot **out, cube_err *err);

int cubelet_init(cubelet *c, const cubelet_config *cfg, cube_err *err)
{
    memset(c, 0, sizeof(*c));
    c->cfg = *cfg;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->templates_lock, NULL);
    pthread_mutex_init(&c->volumes_lock, NULL);
    cl_builds_init(c);
    pthread_cond_init(&c->refill, NULL);
    pthread_cond_init(&c->tick, NULL);
    pthread_cond_init(&c->reap, NULL);
    pthread_cond_init(&c->slot_idle, NULL);
    pthread_cond_init(&c->slot_ready, NULL);
    fair_init(&c->create_line);
    cl_raise_node_limits();
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c->cold_max = COLD_PER_CPU * (int)(ncpu > 0 ? ncpu : 1);
    snprintf(c->sandboxes_dir, sizeof(c->sandboxes_dir), "%s/sandboxes", cfg->data_dir);
    if (mkdir(c->sandboxes_dir, 0711) < 0 && errno != EEXIST)
        return cube_err_sys(err, errno, "mkdir %s", c->sandboxes_dir);
    if (cfg->sandboxes_tmpfs) {
        /* outlives a restart of cubelet (which adopts what is in it); a disk-sized file is never put in it
         * (a sandbox's disk is a copy beside the disk template) */
        int rc = cube_tmpfs_over_empty_dir(c->sandboxes_dir, "cube-sandboxes", "mode=0711,size=10%", err);
        if (rc < 0) { /* slower, not wrong */
            cube_log_warn("sandboxes' state directories stay on the node's disk", "err=\"%s\"", err->msg);
            cube_err_clear(err);
        }
        c->sandboxes_tmpfs = rc > 0;
    }
    if (cl_load_templates(c, err) < 0) return -1;
    /* made once per node and size, here at start: never on a create's path (it runs mkfs) */
    snprintf(c->disk_mb, sizeof(c->disk_mb), "%d", cl_node_disk_mb(c));
    if (cl_disk_template(c, cl_node_disk_mb(c), c->disk_template, sizeof(c->disk_template), err) < 0)
        return cube_err_prefix(err, "sandbox disks");
    cl_sweep_disk_copies(c);
    if (cfg->volume_mb > 0 &&
        cl_disk_template(c, cfg->volume_mb, c->volume_template, sizeof(c->volume_template), err) < 0)
        return cube_err_prefix(err, "volume disks");
    adopt_running(c);
    if (cfg->net && *cfg->net) {
        c->net = cube_rpc_client_new(cfg->net, err);
        if (!c->net) return -1;
        cl_net_reconcile(c);
    }
    if (cube_rpc_failover_init(&c->masters, cfg->master, err) < 0) return -1;
    char dp[4200];
    snprintf(dp, sizeof(dp), "%s/draining", cfg->data_dir);
    c->draining = access(dp, F_OK) == 0;
    c->zygote.sock = -1;
    if (cfg->zygote_bin && cube_zygote_start(&c->zygote, cfg->zygote_bin, err) < 0) {
        cube_log_warn("no zygote: cube-hypervisor is exec'd for each sandbox", "err=\"%s\"", err->msg);
        cube_err_clear(err);
    }
    return 0;
}

/* Starts a hypervisor for tpl and waits for its "ready" line. Not on the hot path of a pooled create. */
/* The last non-empty line of a small log file into out ("" when there is none). */
static void last_line(const char *path, char *out, size_t cap)
{
    *out = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[2048];
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    close(fd);
    if (n <= 0) return;
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
    char *nl = strrchr(buf, '\n');
    snprintf(out, cap, "%s", nl ? nl + 1 : buf);
}

int cl_spawn_slot(cubelet *c, const cl_template *tpl, const char *layers, int disk_fd, const cl_lease *ahead,
                  cl_slot **out, cube_err *err)
{
    int rc = spawn_slot(c, tpl, layers, disk_fd, ahead, out, err);
    if (disk_fd >= 0) close(disk_fd); /* the hypervisor has its own copy, or it was never started */
    return rc;
}

/* Runs a hypervisor: forked by the zygote when there is one (no exec, the agent built in), else exec'd. Its
 * stdout is out (the "ready" line), its stderr logfd (the sandbox's log), disk_fd its fd 3. s->hv is -1
 * when neither worked. */
static void start_hv(cubelet *c, cl_slot *s, char **argv, int out, int logfd, int disk_fd, int netns_fd)
{
    s->hv_pidfd = -1;
    if (c->zygote.sock >= 0) {
        int fds[4] = {out}, targets[4] = {1}, nfds = 1;
        if (logfd >= 0) fds[nfds] = logfd, targets[nfds++] = 2;
        if (disk_fd >= 0) fds[nfds] = disk_fd, targets[nfds++] = 3;
        if (netns_fd >= 0) fds[nfds] = netns_fd, targets[nfds++] = 4;
        char *hv0 = argv[0];
        argv[0] = "cube-hypervisor";
        cube_err err = {0};
        int rc = cube_zygote_spawn(&c->zygote, argv, fds, targets, nfds, &s->hv, &s->hv_pidfd, &err);
        argv[0] = hv0;
        if (rc == 0) return;
        cube_log_warn("sandbox not forked by the zygote: exec'ing cube-hypervisor", "err=\"%s\"", err.msg);
    }
    /* posix_spawn (clone with CLONE_VM|CLONE_VFORK), not fork: fork would copy this multithreaded process's
     * page tables and make every other thread (RPCs being answered) take copy-on-write faults until exec */
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_adddup2(&fa, out, 1);
    /* (dup2 onto itself keeps CLOEXEC: one already at its target is moved out of the way first) */
    int ahead = disk_fd == 3 || disk_fd == 4 ? fcntl(disk_fd, F_DUPFD_CLOEXEC, 5) : disk_fd;
    int ns = netns_fd == 3 || netns_fd == 4 ? fcntl(netns_fd, F_DUPFD_CLOEXEC, 5) : netns_fd;
    if (ahead >= 0) posix_spawn_file_actions_adddup2(&fa, ahead, 3);
    if (ns >= 0) posix_spawn_file_actions_adddup2(&fa, ns, 4);
    if (logfd >= 0)
        posix_spawn_file_actions_adddup2(&fa, logfd, 2); /* hypervisor and agent log: GET .../logs */
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none);
    /* its own group: a signal to the cubelet's group does not reach sandboxes directly */
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
    int sprc = posix_spawn(&s->hv, argv[0], &fa, &at, argv, environ);
    if (ahead >= 0 && ahead != disk_fd) close(ahead);
    if (ns >= 0 && ns != netns_fd) close(ns);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (sprc != 0) {
        cube_log_error("cannot start cube-hypervisor", "bin=%s errno=%d", argv[0], sprc);
        s->hv = -1;
    }
}

/* Waits for a slot's hypervisor to exit: our child is reaped, another's (the zygote's, an adopted one)
 * watched through its pidfd. */
static void wait_hv(cl_slot *s)
{
    if (s->hv_pidfd < 0) {
        if (s->adopted) /* no pidfd: watched by polling (teardown path only) */
            for (int i = 0; i < 1000 && kill(s->hv, 0) == 0; i++)
                nanosleep(&(struct timespec){0, 10000000}, NULL);
        else if (waitpid(s->hv, NULL, 0) < 0)
            kill(s->hv, SIGKILL);
        return;
    }
    struct pollfd p = {s->hv_pidfd, POLLIN, 0};
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
}

static void kill_hv(cl_slot *s, int sig)
{
    if (s->hv_pidfd >= 0)
        syscall(SYS_pidfd_send_signal, s->hv_pidfd, sig, NULL, 0);
    else
        kill(s->hv, sig);
}

/* A new slot id: "s" and 12 random characters. */
static int new_slot_id(char *out, size_t len, cube_err *err)
{
    char rnd[16];
    if (cube_id_new(0, rnd, 12, err) < 0) return -1;
    snprintf(out, len, "s%s", rnd);
    return 0;
}

int cl_lease_ahead(cubelet *c, cl_lease *out, cube_err *err)
{
    if (new_slot_id(out->slot_id, sizeof(out->slot_id), err) < 0) return -1;
    return cl_net_lease(c, out->slot_id, out->net_path, sizeof(out->net_path), err);
}

static int spawn_slot(cubelet *c, const cl_template *tpl, const char *layers, int disk_fd,
                      const cl_lease *ahead, cl_slot **out, cube_err *err)
{
    cl_slot *s = calloc(1, sizeof(*s));
    if (!s) return cube_err_set(err, ENOMEM, "out of memory");
    s->agent_fd = -1;
    s->hv_pidfd = s->init_pidfd = -1;
    s->disk_kept = s->hv_keep_fd = -1;
    if (ahead) {
        snprintf(s->slot_id, sizeof(s->slot_id), "%s", ahead->slot_id);
    } else if (new_slot_id(s->slot_id, sizeof(s->slot_id), err) < 0) {
        free(s);
        return -1;
    }
    s->tpl = tpl;
    snprintf(s->layers, sizeof(s->layers), "%s", layers ? layers : tpl->layers);
    s->state = SLOT_STARTING;
    snprintf(s->state_dir, sizeof(s->state_dir), "%s/%s", c->sandboxes_dir, s->slot_id);
    snprintf(s->control, sizeof(s->control), "unix:%s/control.sock", s->state_dir);
    int out_pipe[2];
    bool made = mkdir(s->state_dir, 0711) == 0;
    if (!made || pipe2(out_pipe, O_CLOEXEC) < 0) {
        if (made) {
            cube_err_sys(err, errno, "pipe");
            rmdir(s->state_dir);
        } else {
            cube_err_sys(err, errno, "mkdir %s", s->state_dir);
        }
        if (ahead) cl_net_release(c, s->slot_id, false); /* the slot was this start's */
        free(s);
        return -1;
    }
    int64_t t0 = cube_now_mono_ns();
    if (ahead) {
        snprintf(s->net_path, sizeof(s->net_path), "%s", ahead->net_path);
    } else if (cl_net_lease(c, s->slot_id, s->net_path, sizeof(s->net_path), err) < 0) {
        close(out_pipe[0]);
        close(out_pipe[1]);
        rmdir(s->state_dir);
        free(s);
        return -1;
    } else if (__atomic_exchange_n(&c->leases_failed, false, __ATOMIC_RELAXED)) {
        /* cube-net answers again: wake the refill thread to lease ahead again */
        pthread_mutex_lock(&c->lock);
        pthread_cond_signal(&c->refill);
        pthread_mutex_unlock(&c->lock);
    }
    char uid_base[16], cpus[16], memory_mb[16];
    snprintf(uid_base, sizeof(uid_base), "%u", tpl->uid_base);
    snprintf(cpus, sizeof(cpus), "%d", tpl->cpus);
    snprintf(memory_mb, sizeof(memory_mb), "%d", tpl->memory_mb);
    char *argv[32];
    int a = 0;
    argv[a++] = (char *)c->cfg.hypervisor_bin;
    argv[a++] = "--id";
    argv[a++] = s->slot_id;
    argv[a++] = "--rootfs";
    argv[a++] = (char *)tpl->rootfs;
    argv[a++] = "--state";
    argv[a++] = s->state_dir;
    argv[a++] = "--uid-base";
    argv[a++] = uid_base;
    argv[a++] = "--cpus";
    argv[a++] = cpus;
    argv[a++] = "--memory-mb";
    argv[a++] = memory_mb;
    if (c->cfg.lxcfs) {
        argv[a++] = "--lxcfs";
        argv[a++] = (char *)c->cfg.lxcfs;
    }
    char disk_mb[16];
    snprintf(disk_mb, sizeof(disk_mb), "%d", tpl->disk_mb);
    argv[a++] = "--disk-mb";
    argv[a++] = *tpl->disk_template ? disk_mb : c->disk_mb;
    argv[a++] = "--disk-template";
    argv[a++] = *tpl->disk_template ? (char *)tpl->disk_template : c->disk_template;
    if (disk_fd >= 0) {
        argv[a++] = "--disk-fd";
        argv[a++] = "3";
    }
    argv[a++] = c->cfg.agent_bundle ? "--agent-bundle" : "--agent";
    argv[a++] = (char *)(c->cfg.agent_bundle ? c->cfg.agent_bundle : c->cfg.agent_bin);
    /* the template's own sandboxes (pooled or cold) stand on its egress CA layer, topmost: no /init brings
     * the CA and no sandbox copies the system bundle up; builds and forks (layers of their own) get it at
     * /init */
    char stack[sizeof(s->layers) + 4400];
    const char *ca = layers ? NULL : cl_egress_ca(c);
    if (ca && cl_ca_layer(c, (cl_template *)tpl, ca, stack, sizeof(stack) - sizeof(s->layers)) == 0) {
        s->ca_layer = s->ca_trusted = true;
        if (*s->layers) snprintf(stack + strlen(stack), sizeof(stack) - strlen(stack), ":%s", s->layers);
        argv[a++] = "--layers";
        argv[a++] = stack;
    } else if (*s->layers) {
        argv[a++] = "--layers";
        argv[a++] = s->layers;
    }
    /* the namespace goes as a descriptor too: the hypervisor's mount namespace (the zygote's) does not have
     * cube-net's mounts of them */
    int netns_fd = *s->net_path ? open(s->net_path, O_RDONLY | O_CLOEXEC) : -1;
    if (*s->net_path) {
        argv[a++] = "--netns";
        argv[a++] = s->net_path;
    }
    if (netns_fd >= 0) {
        argv[a++] = "--netns-fd";
        argv[a++] = "4";
    }
    argv[a] = NULL;
    char logp[4400];
    snprintf(logp, sizeof(logp), "%s/sandbox.log", s->state_dir);
    int logfd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    int64_t t1 = cube_now_mono_ns();
    start_hv(c, s, argv, out_pipe[1], logfd, disk_fd, netns_fd);
    close(out_pipe[1]);
    if (logfd >= 0) close(logfd);
    if (netns_fd >= 0) close(netns_fd);
    char line[128] = {0};
    ssize_t n = s->hv > 0 ? read(out_pipe[0], line, sizeof(line) - 1) : -1;
    close(out_pipe[0]);
    const char *keep = n > 0 ? strstr(line, " keep-fd=") : NULL;
    if (keep) s->hv_keep_fd = atoi(keep + 9);
    if (n <= 0 || sscanf(line, "ready %d", &s->init) != 1) {
        if (s->hv > 0) {
            kill_hv(s, SIGKILL);
            wait_hv(s);
        }
        if (s->hv_pidfd >= 0) close(s->hv_pidfd);
        /* its log goes with its state directory: what it said last comes along in the error */
        char why[512] = "", logp[4400];
        snprintf(logp, sizeof(logp), "%s/sandbox.log", s->state_dir);
        last_line(logp, why, sizeof(why));
        cube_rm_rf(s->state_dir);
        cl_net_release(c, s->slot_id, false);
        free(s);
        return cube_err_set(err, EIO, "cube-hypervisor for template %s did not start%s%s", tpl->name,
                            *why ? ": " : "", why);
    }
    snprintf(s->netns, sizeof(s->netns), "/proc/%d/ns/net", s->init);
    cl_slot_watch_init(s);
    /* "ready" comes once the agent listens (the hypervisor waits for its word): no polling here. The
     * connection the claim will use is made now, on the pool's time */
    cube_err cerr = {0};
    int64_t t2 = cube_now_mono_ns();
    s->agent_fd = cube_netns_connect(s->netns, ENVD_PORT, &cerr);
    s->lease_ms = (float)(t1 - t0) / 1e6f;
    s->hv_ms = (float)(t2 - t1) / 1e6f;
    s->connect_ms = (float)(cube_now_mono_ns() - t2) / 1e6f;
    s->state = SLOT_READY;
    *out = s;
    return 0;
}

int cl_slot_start_cmd(cubelet *c, cl_slot *s, const cl_template *tpl, cube_err *err)
{
    if (!tpl->start_cmd || cl_start_cmd(tpl, s->netns, NULL, NULL, NULL, err) == 0) return 0;
    cube_err_prefix(err, "template %s", tpl->name);
    cl_destroy_slot(c, s);
    return -1;
}

static int hv_call(cl_slot *s, const char *method, const ProtobufCMessageDescriptor *rd, cube_err *err)
{
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    int rc = cube_rpc_call_once(s->control, method, &e.base, rd, &resp, 15000, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* Stops the sandbox and removes its state; the slot is already out of the list. */
/* Stop answers once the sandbox's processes are killed; a hypervisor that cannot answer gets SIGTERM. */
static void stop_hv(cl_slot *s)
{
    if (s->hv <= 0 || s->stopped) return;
    cube_err err = {0};
    if (hv_call(s, "/cube.Hypervisor/Stop", &cube__empty__descriptor, &err) < 0) kill_hv(s, SIGTERM);
    s->stopped = true;
}

void cl_slot_watch_init(cl_slot *s)
{
    if (s->init_pidfd >= 0) close(s->init_pidfd);
    s->init_pidfd = s->init > 0 ? (int)syscall(SYS_pidfd_open, s->init, 0) : -1;
}

/* Whether no process of s's sandbox is left: its PID 1's pidfd reads as exited only once the kernel has
 * ended its PID namespace, every other process in it gone first (a PID 1 exits last). Nothing else of the
 * sandbox runs in its network namespace. */
static bool sandbox_vacated(const cl_slot *s)
{
    struct pollfd p = {s->init_pidfd, POLLIN, 0};
    return s->init_pidfd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

void cl_destroy_slot(cubelet *c, cl_slot *s)
{
    if (s->hv > 0) {
        cl_disk_keep(c, s);
        stop_hv(s);
        wait_hv(s); /* its teardown done */
    }
    cl_disk_reuse(c, s);
    if (s->hv_pidfd >= 0) close(s->hv_pidfd);
    cube_rm_rf(s->state_dir);
    /* after the hypervisor is gone: nothing uses the slot any more; one its sandbox vacated may be reused */
    cl_net_release(c, s->slot_id, sandbox_vacated(s));
    if (s->init_pidfd >= 0) close(s->init_pidfd);
    if (s->agent_fd >= 0) close(s->agent_fd);
    free(s->history);
    free(s);
}

/* A kill: once Stop answered the caller can say the sandbox is gone; the hypervisor's own teardown (unmounts,
 * cgroups, its exit), the state files and the network slot are left to the reaper thread, and the hypervisor
 * does that teardown at the lowest priority, out of the next create's way. */
static void retire_slot(cubelet *c, cl_slot *s)
{
    cl_disk_keep(c, s);
    stop_hv(s);
    pthread_mutex_lock(&c->lock);
    bool behind = c->nretiring >= RETIRE_BEHIND;
    pthread_mutex_unlock(&c->lock);
    if (s->hv > 0 && !behind) cl_sched_background_process(s->hv);
    pthread_mutex_lock(&c->lock);
    /* last in the line: the reaper takes them in the order they were killed, the oldest (the likeliest done
     * with its teardown) first */
    cl_slot **end = &c->retiring;
    while (*end) end = &(*end)->next;
    s->next = NULL;
    *end = s;
    c->nretiring++;
    pthread_cond_signal(&c->reap);
    pthread_mutex_unlock(&c->lock);
}

static void *reaper_loop(void *arg)
{
    cubelet *c = arg;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        cl_slot *s = c->retiring;
        if (!s) {
            if (c->stopping) break;
            pthread_cond_wait(&c->reap, &c->lock);
            continue;
        }
        c->retiring = s->next;
        pthread_mutex_unlock(&c->lock);
        cl_destroy_slot(c, s);
        pthread_mutex_lock(&c->lock);
        if (--c->nretiring >= RETIRE_BEHIND) {
            /* still behind: a create waiting for its turn may start one sandbox for this one gone */
            if (c->retire_credits < c->cold_max) c->retire_credits++;
            pthread_cond_broadcast(&c->slot_ready);     /* for the first in line (fair_line.h) */
        } else if (c->nretiring == RETIRE_BEHIND - 1) { /* caught up: starts may go on */
            c->retire_credits = 0;
            pthread_cond_broadcast(&c->slot_ready);
            pthread_cond_signal(&c->refill);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

void cl_running_sandbox(cube_rpc_ctx *ctx, const cl_slot *s, Cube__NodeSandbox *out)
{
    char addr[96];
    out->sandbox_id = cube_rpc_strdup(ctx, s->sandbox_id);
    out->state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
    snprintf(addr, sizeof(addr), "netns:%s:%d", s->netns, ENVD_PORT);
    out->agent_address = cube_rpc_strdup(ctx, addr);
    snprintf(addr, sizeof(addr), "netns:%s:%d", s->netns, INTERP_PORT);
    out->interpreter_address = cube_rpc_strdup(ctx, addr);
}

/* With the lock: a handed-out sandbox's slot, unless a kill has it (dying). */
cl_slot *cl_find_by_sandbox(cubelet *c, const char *sandbox_id)
{
    for (cl_slot *s = c->slots; s; s = s->next)
        if (s->state >= SLOT_CLAIMED && !s->dying && strcmp(s->sandbox_id, sandbox_id) == 0) return s;
    return NULL;
}

/* With the lock: one user fewer (see cl_slot.users). */
void cl_slot_release(cubelet *c, cl_slot *s)
{
    if (--s->users == 0) pthread_cond_broadcast(&c->slot_idle);
}

/* With the lock: takes s off the list. */
void cl_unlink_slot(cubelet *c, cl_slot *s)
{
    for (cl_slot **pp = &c->slots; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            return;
        }
}

/* A create that failed after its claim: the slot goes, unless a kill has it already (which waits for this
 * create to let go, then retires it). */
static void create_failed(cubelet *c, cl_slot *s)
{
    pthread_mutex_lock(&c->lock);
    bool killed = s->dying;
    if (!killed) cl_unlink_slot(c, s);
    cl_slot_release(c, s);
    pthread_mutex_unlock(&c->lock);
    if (!killed) cl_destroy_slot(c, s);
}

/* Which sandbox and template a slot serves, on disk beside it, so that a restarted cubelet can adopt it; and
 * the request that handed it out (claim.pb, root's only: it holds the access token and env vars), which a
 * rollback sets the sandbox up with again. */
static void record_claim(const cl_slot *s, const Cube__NodeCreateRequest *req)
{
    char p[4300];
    snprintf(p, sizeof(p), "%s/claim", s->state_dir);
    FILE *f = fopen(p, "we");
    if (!f) return;
    fprintf(f, "%s %s\n", s->sandbox_id, s->tpl->name);
    fclose(f);
    size_t len = protobuf_c_message_get_packed_size(&req->base);
    uint8_t *buf = malloc(len ? len : 1);
    snprintf(p, sizeof(p), "%s/claim.pb", s->state_dir);
    int fd = buf ? open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    if (fd >= 0) {
        protobuf_c_message_pack(&req->base, buf);
        if (write(fd, buf, len) != (ssize_t)len) unlink(p);
        close(fd);
    }
    free(buf);
}

/* At start: sandboxes whose hypervisors outlived a previous cubelet (crash, kill -9) are taken back; a state
 * directory whose hypervisor is gone is removed. */
static void adopt_running(cubelet *c)
{
    DIR *d = opendir(c->sandboxes_dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        cl_slot *s = calloc(1, sizeof(*s));
        if (!s) break;
        s->agent_fd = -1;
        s->hv_pidfd = s->init_pidfd = -1;
        s->disk_kept = -1;
        snprintf(s->slot_id, sizeof(s->slot_id), "%s", de->d_name);
        snprintf(s->state_dir, sizeof(s->state_dir), "%s/%s", c->sandboxes_dir, de->d_name);
        snprintf(s->control, sizeof(s->control), "unix:%s/control.sock", s->state_dir);
        Cube__Empty e = CUBE__EMPTY__INIT;
        ProtobufCMessage *resp = NULL;
        cube_err err = {0};
        char claim[4300], sid[64] = "", tname[64] = "";
        snprintf(claim, sizeof(claim), "%s/claim", s->state_dir);
        FILE *f = fopen(claim, "re");
        if (f) {
            if (fscanf(f, "%63s %63s", sid, tname) != 2) sid[0] = tname[0] = '\0';
            fclose(f);
        }
        const cl_template *tpl = *tname ? cl_find_template(c, tname) : NULL;
        if (!tpl || cube_rpc_call_once(s->control, "/cube.Hypervisor/Info", &e.base,
                                       &cube__hv_info__descriptor, &resp, 2000, &err) < 0) {
            /* unclaimed pool slot or dead hypervisor: not worth keeping */
            if (resp) protobuf_c_message_free_unpacked(resp, NULL);
            s->hv = 0;
            if (cube_rpc_call_once(s->control, "/cube.Hypervisor/Stop", &e.base, &cube__empty__descriptor,
                                   &resp, 2000, &err) == 0)
                protobuf_c_message_free_unpacked(resp, NULL);
            cube_rm_rf(s->state_dir);
            free(s);
            continue;
        }
        Cube__HvInfo *info = (Cube__HvInfo *)resp;
        s->hv = info->hv_pid;
        s->hv_pidfd = (int)syscall(SYS_pidfd_open, s->hv, 0);
        s->init = info->init_pid;
        cl_slot_watch_init(s);
        s->adopted = true;
        s->disk_bounded = true; /* unknown: the cubelet before may have bounded it (lifted at the first round
                                   that finds the node's disk with room) */
        s->claimed_ms = cube_now_mono_ms();
        s->tpl = tpl;
        s->state = SLOT_CLAIMED;
        snprintf(s->sandbox_id, sizeof(s->sandbox_id), "%s", sid);
        snprintf(s->netns, sizeof(s->netns), "/proc/%d/ns/net", s->init);
        protobuf_c_message_free_unpacked(resp, NULL);
        { /* a paused sandbox stays paused */
            ProtobufCMessage *st = NULL;
            if (cube_rpc_call_once(s->control, "/cube.Hypervisor/Stats", &e.base, &cube__hv_stats__descriptor,
                                   &st, 2000, &err) == 0) {
                if (((Cube__HvStats *)st)->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED)
                    s->state = SLOT_PAUSED;
                protobuf_c_message_free_unpacked(st, NULL);
            }
        }
        s->next = c->slots;
        c->slots = s;
        cube_log_info("sandbox adopted", "sandbox=%s slot=%s hv_pid=%d", s->sandbox_id, s->slot_id, s->hv);
    }
    closedir(d);
}

/* A claim's refill starts when the create is answered, not at the claim: on a small node the refill's start
 * (a network slot, the zygote's fork) took the CPU from the claim's own steps (the agent's /init, the
 * answer). The refill thread sees the claimed slot whenever it next looks; this wakes it. */
static void refill_after_claim(cubelet *c, int from_pool)
{
    if (from_pool) pthread_cond_signal(&c->refill);
}

/* With the lock: a create leaves the line (served, refused or given up). The others wake to see whether
 * the next turn is theirs now: what they waited for may be free, kept for one first in line. */
static void leave_line(cubelet *c, fair_entry *me, bool waiting)
{
    if (waiting) c->creates_waiting--;
    fair_leave(&c->create_line, me);
    if (!c->create_line.head) return;
    bool free_now = c->cold_running < c->cold_max && (c->nretiring < RETIRE_BEHIND || c->retire_credits > 0);
    for (cl_slot *x = c->slots; x && !free_now; x = x->next)
        if (x->state == SLOT_READY)
            for (const fair_entry *w = c->create_line.head; w && !free_now; w = w->next)
                free_now = w->group == x->tpl;
    if (free_now) pthread_cond_broadcast(&c->slot_ready);
}

static int create_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    cubelet *c = svc;
    const Cube__NodeCreateRequest *req = reqp;
    Cube__NodeSandbox *out = respp;
    if (!req->sandbox_id || !*req->sandbox_id) return cube_err_set(err, EINVAL, "sandbox_id is required");
    int64_t t0 = cube_now_mono_ns();
    const cl_template *tpl = cl_find_template(c, req->template_id ? req->template_id : "");
    if (!tpl)
        return cube_err_set(err, ENOENT, "template '%s' not found", req->template_id ? req->template_id : "");
    if (cl_room_admit(c, tpl, 1, err) < 0) return -1;
    pthread_mutex_lock(&c->lock);
    pool_demand_note(&((cl_template *)tpl)->demand, cube_now_mono_ms()); /* the pool follows creates */
    /* A pooled sandbox if there is one; else a cold start of our own, but no more of them at once than
     * COLD_PER_CPU per CPU: on a burst, starts sharing the CPUs all finish late together, while a create that
     * waits here takes the first sandbox to become ready (a refill's, or its own turn to start one), so
     * creates finish in about the order they came. */
    cl_slot *s = NULL;
    int from_pool = 0, disk_fd = -1;
    cl_lease ahead;
    bool leased = false;
    int64_t wait_ms = CREATE_WAIT_MAX_MS, left = ctx ? cube_rpc_deadline_left_ms(ctx) : INT64_MAX;
    if (left - 500 < wait_ms)
        wait_ms = left > 1000 ? left - 500 : left / 2; /* answer before the caller gives up */
    int64_t wait_until = cube_now_mono_ms() + wait_ms;
    bool waiting = false;
    /* in line with the other creates under way: when sandboxes are short, turns go round the keys that
     * asked (fair_line.h) */
    fair_entry me;
    fair_join(&c->create_line, &me, req->api_key_id, tpl);
    for (;;) {
        for (cl_slot *x = c->slots; x; x = x->next)
            if (x->tpl == tpl && x->state == SLOT_READY) {
                s = x;
                break;
            }
        if (s && !fair_first(&c->create_line, &me, true)) s = NULL; /* another's turn first */
        if (s) {
            from_pool = 1;
            s->state = SLOT_CLAIMED;
            s->claimed_ms = cube_now_mono_ms();
            c->last_claim_ms = s->claimed_ms;
            s->users = 1; /* this create's, until the sandbox is set up */
            snprintf(s->sandbox_id, sizeof(s->sandbox_id), "%s", req->sandbox_id);
            break; /* the refill is told once this create is answered (refill_after_claim) */
        }
        if (c->stopping) {
            leave_line(c, &me, waiting);
            pthread_mutex_unlock(&c->lock);
            return cube_err_set(err, EAGAIN, "node is stopping");
        }
        if (__atomic_load_n(&tpl->gone, __ATOMIC_ACQUIRE)) { /* deleted meanwhile: no sandbox will come */
            leave_line(c, &me, waiting);
            pthread_mutex_unlock(&c->lock);
            return cube_err_set(err, ENOENT, "template '%s' was deleted", tpl->name);
        }
        int64_t now = cube_now_mono_ms();
        bool behind = c->nretiring >= RETIRE_BEHIND;
        if (c->cold_running < c->cold_max && (!behind || c->retire_credits > 0) &&
            fair_first(&c->create_line, &me, false)) {
            /* while behind, one teardown finished for each start: the line does not grow */
            if (behind) c->retire_credits--;
            c->cold_running++;
            /* a writable layer made ahead saves this start the template's copy and mount */
            if (c->nready_disks > 0 && !*tpl->disk_template) disk_fd = c->ready_disks[--c->nready_disks];
            /* and a network slot leased ahead, the round trip to cube-net */
            if ((leased = c->nready_leases > 0)) ahead = c->ready_leases[--c->nready_leases];
            pthread_cond_signal(&c->refill);
            break;
        }
        int busy = 0;
        if (ctx && cube_rpc_cancelled(ctx))
            busy = ECANCELED;
        else if (now >= wait_until || (!waiting && c->creates_waiting >= CREATES_WAITING_MAX))
            busy = EAGAIN;
        if (busy) {
            int n = c->creates_waiting, starting = c->cold_running;
            leave_line(c, &me, waiting);
            pthread_mutex_unlock(&c->lock);
            if (busy == ECANCELED)
                return cube_err_set(err, ECANCELED, "the create was abandoned by its caller");
            cube_metric_add("cube_node_creates_refused_total{reason=\"busy\"}",
                            "Creates a node answered busy: no sandbox for them in time", 1);
            return cube_err_set(
                err, EAGAIN,
                "node is busy: no sandbox became free for this create within %lld ms (%d creates "
                "waiting, %d starting); try again",
                (long long)wait_ms, n, starting);
        }
        if (!waiting) {
            waiting = true;
            c->creates_waiting++;
        }
        pthread_cond_signal(&c->refill); /* the pool is short: the refill thread may be asleep */
        struct timespec dl = cube_timespec_after_ms(CLOCK_REALTIME, wait_until - now);
        pthread_cond_timedwait(&c->slot_ready, &c->lock, &dl);
    }
    fair_served(&c->create_line, &me);
    leave_line(c, &me, waiting);
    pthread_mutex_unlock(&c->lock);
    if (!s) { /* cold: the pool is empty */
        int rc = cl_spawn_slot(c, tpl, NULL, disk_fd, leased ? &ahead : NULL, &s, err);
        if (rc == 0) rc = cl_slot_start_cmd(c, s, tpl, err);
        pthread_mutex_lock(&c->lock);
        c->cold_running--;
        pthread_cond_broadcast(&c->slot_ready); /* a waiting create may start its own now */
        if (rc < 0) {
            pthread_mutex_unlock(&c->lock);
            return -1;
        }
        s->state = SLOT_CLAIMED;
        s->claimed_ms = cube_now_mono_ms();
        s->users = 1;
        snprintf(s->sandbox_id, sizeof(s->sandbox_id), "%s", req->sandbox_id);
        s->next = c->slots;
        c->slots = s;
        pthread_mutex_unlock(&c->lock);
    }
    record_claim(s, req);
    for (size_t i = 0; i < req->n_volume_mounts; i++) {
        if (cl_mount_volume(c, s, req->volume_mounts[i], err) < 0) {
            create_failed(c, s);
            refill_after_claim(c, from_pool);
            return -1;
        }
    }
    /* the slot was leased with the default policy: only another one costs a call to cube-net */
    if (!cl_net_policy_is_default(req->network) && cl_net_policy(c, s->slot_id, req->network, err) < 0) {
        create_failed(c, s);
        refill_after_claim(c, from_pool);
        return -1;
    }
    /* pool sandboxes were made at low priority: the user's sandbox runs at normal priority */
    if (from_pool) cl_sched_foreground(s->hv, tpl->start_cmd != NULL);
    int64_t t_init = cube_now_mono_ns();
    if (cl_init_agent(c, s, req, err) < 0) {
        create_failed(c, s);
        refill_after_claim(c, from_pool);
        return -1;
    }
    cl_running_sandbox(ctx, s, out);
    out->from_pool = from_pool;
    Cube__Resources *res = cube_rpc_alloc(ctx, sizeof(*res));
    cube__resources__init(res);
    res->cpu_count = (uint32_t)tpl->cpus;
    res->memory_mb = (uint64_t)tpl->memory_mb;
    res->disk_mb = (uint64_t)tpl->disk_mb;
    out->resources = res;
    int64_t t_end = cube_now_mono_ns();
    if (from_pool)
        cube_log_info("sandbox created", "sandbox=%s slot=%s template=%s pooled=1 claim_ms=%.2f init_ms=%.2f",
                      req->sandbox_id, s->slot_id, tpl->name, (double)(t_init - t0) / 1e6,
                      (double)(t_end - t_init) / 1e6);
    else /* a cold start: where it went */
        cube_log_info("sandbox created",
                      "sandbox=%s slot=%s template=%s pooled=0 claim_ms=%.2f init_ms=%.2f lease_ms=%.2f "
                      "hv_ms=%.2f connect_ms=%.2f",
                      req->sandbox_id, s->slot_id, tpl->name, (double)(t_init - t0) / 1e6,
                      (double)(t_end - t_init) / 1e6, s->lease_ms, s->hv_ms, s->connect_ms);
    pthread_mutex_lock(&c->lock);
    cl_slot_release(c, s); /* a kill that came meanwhile may take it now */
    pthread_mutex_unlock(&c->lock);
    refill_after_claim(c, from_pool);
    return 0;
}

static int kill_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    const Cube__NodeSandboxRef *req = reqp;
    return cl_kill_sandbox(svc, req->sandbox_id ? req->sandbox_id : "", err);
}

int cl_kill_sandbox(cubelet *c, const char *sandbox_id, cube_err *err)
{
    pthread_mutex_lock(&c->lock);
    cl_slot *s = cl_find_by_sandbox(c, sandbox_id);
    if (s) {
        /* a create still setting it up, a pause or resume under way: they finish first (nobody new starts) */
        s->dying = true;
        while (s->users > 0) pthread_cond_wait(&c->slot_idle, &c->lock);
        cl_unlink_slot(c, s);
    }
    pthread_mutex_unlock(&c->lock);
    if (!s) return cube_err_set(err, ENOENT, "sandbox '%s' is not on this node", sandbox_id);
    retire_slot(c, s);
    return 0;
}

static int pause_resume(cubelet *c, const char *id, bool pause, cube_err *err)
{
    pthread_mutex_lock(&c->lock);
    cl_slot *s = cl_find_by_sandbox(c, id ? id : "");
    char control[sizeof(s->control)];
    bool rolling = s && s->rolling_back;
    if (s && !rolling) {
        snprintf(control, sizeof(control), "%s", s->control);
        s->users++; /* a kill waits for the hypervisor's answer */
    }
    pthread_mutex_unlock(&c->lock);
    if (!s) return cube_err_set(err, ENOENT, "sandbox '%s' is not on this node", id);
    if (rolling) return cube_err_set(err, EBUSY, "sandbox '%s' is being rolled back: try again", id);
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    int rc = cube_rpc_call_once(control, pause ? "/cube.Hypervisor/Pause" : "/cube.Hypervisor/Resume",
                                &e.base, &cube__empty__descriptor, &resp, 15000, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    pthread_mutex_lock(&c->lock);
    if (rc == 0 && !s->dying) s->state = pause ? SLOT_PAUSED : SLOT_CLAIMED;
    if (rc == 0 && s->dying)
        rc = cube_err_set(err, ENOENT, "sandbox '%s' was killed while it was being %s", id,
                          pause ? "paused" : "resumed");
    cl_slot_release(c, s);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int pause_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    return pause_resume(svc, ((const Cube__NodeSandboxRef *)reqp)->sandbox_id, true, err);
}

static int resume_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    const Cube__NodeSandboxRef *req = reqp;
    Cube__NodeSandbox *out = respp;
    if (pause_resume(svc, req->sandbox_id, false, err) < 0) return -1;
    out->sandbox_id = cube_rpc_strdup(ctx, req->sandbox_id);
    out->state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
    return 0;
}

/* Fork: snapshot the parent's writable layer once, then start each child cold on top of it (stacked above the
 * parent's own layers), and hand it out like a create. Snapshots stay until the node stops. */
static int fork_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    cubelet *c = svc;
    const Cube__NodeForkRequest *req = reqp;
    Cube__NodeForkResponse *out = respp;
    pthread_mutex_lock(&c->lock);
    cl_slot *p = cl_find_by_sandbox(c, req->parent_id ? req->parent_id : "");
    char control[sizeof(p->control)], layers[sizeof(p->layers)], slot[sizeof(p->slot_id)],
        pstate[sizeof(p->state_dir)];
    const cl_template *tpl = p ? p->tpl : NULL;
    if (p) {
        snprintf(control, sizeof(control), "%s", p->control);
        snprintf(layers, sizeof(layers), "%s", p->layers);
        snprintf(slot, sizeof(slot), "%s", p->slot_id);
        snprintf(pstate, sizeof(pstate), "%s", p->state_dir);
    }
    pthread_mutex_unlock(&c->lock);
    if (!p) return cube_err_set(err, ENOENT, "sandbox '%s' is not on this node", req->parent_id);
    if (cl_room_admit(c, tpl, (unsigned)req->n_children, err) < 0 ||
        cl_room_for_copy(c, control, "the sandbox to fork", err) < 0)
        return -1;
    char snaps[4200], snap[4400], rnd[16];
    snprintf(snaps, sizeof(snaps), "%s/snapshots", c->cfg.data_dir);
    mkdir(snaps, 0711);
    if (cube_id_new(0, rnd, 8, err) < 0) return -1;
    snprintf(snap, sizeof(snap), "%s/%s-%s", snaps, slot, rnd);
    Cube__HvSnapshotRequest sr = CUBE__HV_SNAPSHOT_REQUEST__INIT;
    sr.dir = snap;
    ProtobufCMessage *resp = NULL;
    int rc = cube_rpc_call_once(control, "/cube.Hypervisor/Snapshot", &sr.base,
                                &cube__hv_snapshot_response__descriptor, &resp, 120000, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    if (rc < 0) return cube_err_prefix(err, "snapshot %s", req->parent_id);
    chmod(snap, 0755);
    char child_layers[sizeof(layers) + 4400];
    snprintf(child_layers, sizeof(child_layers), "%s%s%s", snap, *layers ? ":" : "", layers);

    /* the children are the parent's copies: its env vars too (the parent's create request, kept beside it) */
    cube_err perr = {0};
    Cube__NodeCreateRequest *parent = cl_claim_request(pstate, &perr);
    out->sandboxes =
        cube_rpc_alloc(ctx, (req->n_children ? req->n_children : 1) * sizeof(Cube__NodeSandbox *));
    out->errors = cube_rpc_alloc(ctx, (req->n_children ? req->n_children : 1) * sizeof(char *));
    for (size_t i = 0; i < req->n_children; i++) {
        const Cube__NodeCreateRequest *child = req->children[i];
        cl_slot *s = NULL;
        cube_err cerr = {0};
        if (cl_spawn_slot(c, tpl, child_layers, -1, NULL, &s, &cerr) == 0 &&
            cl_slot_start_cmd(c, s, tpl, &cerr) == 0) {
            s->state = SLOT_CLAIMED;
            s->claimed_ms = cube_now_mono_ms();
            s->users = 1; /* this fork's, until the child is set up */
            snprintf(s->sandbox_id, sizeof(s->sandbox_id), "%s", child->sandbox_id);
            pthread_mutex_lock(&c->lock);
            s->next = c->slots;
            c->slots = s;
            pthread_mutex_unlock(&c->lock);
            Cube__NodeCreateRequest kid = *child;
            if (parent && !kid.n_env_vars) {
                kid.n_env_vars = parent->n_env_vars;
                kid.env_vars = parent->env_vars;
            }
            record_claim(s, &kid);
            if (cl_net_policy(c, s->slot_id, child->network, &cerr) < 0 ||
                cl_init_agent(c, s, &kid, &cerr) < 0) {
                create_failed(c, s);
                s = NULL;
            }
        }
        if (!s) {
            char msg[1200];
            snprintf(msg, sizeof(msg), "%s: %s", child->sandbox_id, cerr.msg);
            out->errors[out->n_errors++] = cube_rpc_strdup(ctx, msg);
            continue;
        }
        Cube__NodeSandbox *ns = cube_rpc_alloc(ctx, sizeof(*ns));
        cube__node_sandbox__init(ns);
        cl_running_sandbox(ctx, s, ns);
        out->sandboxes[out->n_sandboxes++] = ns;
        cube_log_info("sandbox forked", "parent=%s sandbox=%s slot=%s snapshot=%s", req->parent_id,
                      child->sandbox_id, s->slot_id, snap);
        pthread_mutex_lock(&c->lock);
        cl_slot_release(c, s);
        pthread_mutex_unlock(&c->lock);
    }
    if (parent) cube__node_create_request__free_unpacked(parent, NULL);
    return 0;
}

/* The last lines of the sandbox's log (at most 1000 lines, 256 KiB). */
static int sandbox_logs(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    cubelet *c = svc;
    const Cube__NodeSandboxRef *req = reqp;
    Cube__LogLines *out = respp;
    pthread_mutex_lock(&c->lock);
    cl_slot *s = cl_find_by_sandbox(c, req->sandbox_id ? req->sandbox_id : "");
    char path[4400];
    if (s) snprintf(path, sizeof(path), "%s/sandbox.log", s->state_dir);
    pthread_mutex_unlock(&c->lock);
    if (!s) return cube_err_set(err, ENOENT, "sandbox '%s' is not on this node", req->sandbox_id);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0; /* nothing logged yet */
    enum { CAP = 256 * 1024 };
    char *buf = cube_rpc_alloc(ctx, CAP + 1);
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > CAP ? size - CAP : 0;
    ssize_t n = buf ? pread(fd, buf, CAP, from) : -1;
    close(fd);
    if (n < 0) return cube_err_sys(err, errno, "read %s", path);
    buf[n] = '\0';
    char *start = buf;
    if (from > 0 && (start = strchr(buf, '\n'))) start++; /* skip a partial first line */
    size_t count = 0;
    for (char *p = start; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) count++;
    size_t skip = count > 1000 ? count - 1000 : 0;
    out->lines = cube_rpc_alloc(ctx, (count ? count : 1) * sizeof(char *));
    char *save = NULL;
    for (char *l = start ? strtok_r(start, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save)) {
        if (skip) {
            skip--;
            continue;
        }
        out->lines[out->n_lines++] = l;
    }
    return 0;
}

/* The hypervisor's figures for one sandbox (E2B's metrics). */
static int sandbox_stats(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    cubelet *c = svc;
    const Cube__NodeSandboxRef *req = reqp;
    Cube__HvStats *out = respp;
    pthread_mutex_lock(&c->lock);
    cl_slot *s = cl_find_by_sandbox(c, req->sandbox_id ? req->sandbox_id : "");
    char control[sizeof(s->control)];
    if (s) snprintf(control, sizeof(control), "%s", s->control);
    pthread_mutex_unlock(&c->lock);
    if (!s) return cube_err_set(err, ENOENT, "sandbox '%s' is not on this node", req->sandbox_id);
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    if (cube_rpc_call_once(control, "/cube.Hypervisor/Stats", &e.base, &cube__hv_stats__descriptor, &resp,
                           5000, err) < 0)
        return -1;
    cube_hv_stats_copy(out, (const Cube__HvStats *)resp);
    protobuf_c_message_free_unpacked(resp, NULL);
    (void)ctx;
    return 0;
}

static int list_sandboxes(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)reqp;
    (void)err;
    cubelet *c = svc;
    Cube__NodeListResponse *out = respp;
    pthread_mutex_lock(&c->lock);
    size_t n = 0;
    for (cl_slot *s = c->slots; s; s = s->next) n++;
    out->sandboxes = cube_rpc_alloc(ctx, (n ? n : 1) * sizeof(*out->sandboxes));
    for (cl_slot *s = c->slots; s; s = s->next) {
        if (s->state < SLOT_CLAIMED) continue;
        Cube__NodeSandbox *x = cube_rpc_alloc(ctx, sizeof(*x));
        cube__node_sandbox__init(x);
        x->sandbox_id = cube_rpc_strdup(ctx, s->sandbox_id);
        x->state = s->state == SLOT_PAUSED ? CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED
                                           : CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
        x->held_ms = s->claimed_ms ? cube_now_mono_ms() - s->claimed_ms : 0;
        out->sandboxes[out->n_sandboxes++] = x;
    }
    pthread_mutex_unlock(&c->lock);
    return 0;
}

void cubelet_start(cubelet *c)
{
    pthread_create(&c->refill_thread, NULL, cl_refill_loop, c);
    pthread_create(&c->heartbeat_thread, NULL, cl_heartbeat_loop, c);
    pthread_create(&c->reaper_thread, NULL, reaper_loop, c);
    pthread_create(&c->sampler_thread, NULL, cl_sampler_loop, c);
}

void cubelet_stop(cubelet *c)
{
    pthread_mutex_lock(&c->lock);
    c->stopping = 1;
    pthread_cond_broadcast(&c->refill);
    pthread_cond_broadcast(&c->slot_ready);
    pthread_cond_broadcast(&c->tick);
    pthread_cond_broadcast(&c->reap);
    pthread_mutex_unlock(&c->lock);
    cl_builds_stop(c); /* their build sandboxes gone before the node's own teardown */
    if (c->refill_thread) pthread_join(c->refill_thread, NULL);
    if (c->heartbeat_thread) pthread_join(c->heartbeat_thread, NULL);
    if (c->reaper_thread) pthread_join(c->reaper_thread, NULL); /* it finishes what was retired first */
    if (c->sampler_thread) pthread_join(c->sampler_thread, NULL);
    pthread_mutex_lock(&c->lock);
    cl_slot *all = c->slots;
    c->slots = NULL;
    pthread_mutex_unlock(&c->lock);
    while (all) {
        cl_slot *next = all->next;
        cl_destroy_slot(c, all);
        all = next;
    }
    while (c->nready_disks > 0) close(c->ready_disks[--c->nready_disks]); /* their mounts and devices go */
    while (c->nready_leases > 0) cl_net_release(c, c->ready_leases[--c->nready_leases].slot_id, false);
    if (c->sandboxes_tmpfs && cube_umount_empty_dir(c->sandboxes_dir) == 0) c->sandboxes_tmpfs = false;
    cube_zygote_stop(&c->zygote);
    cube_rpc_failover_free(&c->masters);
    cube_rpc_client_free(c->net);
    c->net = NULL;
    free(c->egress_ca_pem);
    c->egress_ca_pem = NULL;
    cl_free_templates(c);
}

static int update_network(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    cubelet *c = svc;
    const Cube__NodeNetworkRequest *req = reqp;
    pthread_mutex_lock(&c->lock);
    cl_slot *s = cl_find_by_sandbox(c, req->sandbox_id ? req->sandbox_id : "");
    char slot[sizeof(s->slot_id)];
    if (s) snprintf(slot, sizeof(slot), "%s", s->slot_id);
    pthread_mutex_unlock(&c->lock);
    if (!s) return cube_err_set(err, ENOENT, "sandbox '%s' is not on this node", req->sandbox_id);
    if (!c->net) return cube_err_set(err, ENOSYS, "this node runs no cube-net: sandboxes have no network");
    return cl_net_policy(c, slot, req->network, err);
}

/* Drain: no new sandboxes here (the running ones stay); remembered across restarts. */
static int drain(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    cubelet *c = svc;
    const Cube__NodeDrainRequest *req = reqp;
    char dp[4200];
    snprintf(dp, sizeof(dp), "%s/draining", c->cfg.data_dir);
    if (req->drain) {
        FILE *f = fopen(dp, "we");
        if (!f) return cube_err_sys(err, errno, "write %s", dp);
        fclose(f);
    } else if (unlink(dp) < 0 && errno != ENOENT) {
        return cube_err_sys(err, errno, "remove %s", dp);
    }
    __atomic_store_n(&c->draining, req->drain ? 1 : 0, __ATOMIC_RELEASE);
    cube_log_info(req->drain ? "node draining" : "node takes sandboxes again", "node=%s", c->cfg.node_id);
    pthread_mutex_lock(&c->lock);
    pthread_cond_broadcast(&c->tick); /* report it now */
    pthread_mutex_unlock(&c->lock);
    return 0;
}

#define M(name, fn, req, resp) CUBE_RPC_METHOD("cube.Cubelet", name, fn, req, resp)
const cube_rpc_method cubelet_methods[] = {
    M("CreateSandbox", create_sandbox, cube__node_create_request, cube__node_sandbox),
    M("KillSandbox", kill_sandbox, cube__node_sandbox_ref, cube__empty),
    M("PauseSandbox", pause_sandbox, cube__node_sandbox_ref, cube__empty),
    M("ResumeSandbox", resume_sandbox, cube__node_sandbox_ref, cube__node_sandbox),
    M("ListSandboxes", list_sandboxes, cube__empty, cube__node_list_response),
    M("SandboxStats", sandbox_stats, cube__node_sandbox_ref, cube__hv_stats),
    M("SandboxStatsHistory", cl_sandbox_stats_history, cube__node_sandbox_ref, cube__hv_stats_history),
    M("ForkSandbox", fork_sandbox, cube__node_fork_request, cube__node_fork_response),
    M("SnapshotSandbox", cl_snapshot_sandbox, cube__node_snapshot_request, cube__empty),
    M("RollbackSandbox", cl_rollback_sandbox, cube__node_rollback_request, cube__node_sandbox),
    M("SandboxLogs", sandbox_logs, cube__node_sandbox_ref, cube__log_lines),
    M("UpdateNetwork", update_network, cube__node_network_request, cube__empty),
    M("Drain", drain, cube__node_drain_request, cube__empty),
    M("StartBuild", cl_start_build, cube__build_start_request, cube__empty),
    M("GetBuildStatus", cl_build_status, cube__build_status_request, cube__build_status),
    M("GetBuildFile", cl_get_build_file, cube__build_file_ref, cube__build_file_state),
    M("PutBuildFile", cl_put_build_file, cube__build_file_chunk, cube__empty),
    M("VolumeFiles", cl_volume_files, cube__volume_file_request, cube__volume_file_response),
    M("TemplateTags", cl_template_tags, cube__template_tags_request, cube__template_tags_response),
    M("DeleteTemplate", cl_delete_template, cube__template_ref, cube__empty),
    M("ExportTemplate", cl_export_template, cube__template_export_request, cube__template_chunk),
    M("ImportTemplate", cl_import_template, cube__template_chunk, cube__empty),
    {0},
};
