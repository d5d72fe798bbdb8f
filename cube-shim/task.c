/* The containerd task service over cube-hypervisor (see shim.h). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <grp.h>

#include "fsutil.h"
#include "hypervisor.pb-c.h"
#include "common.pb-c.h"
#include "log.h"
#include "oci.h"
#include "rpc.h"
#include "sandbox_seccomp.h"
#include "shim.h"
#include "shim.pb-c.h"
#include "spawn.h"

#define TASK_SERVICE "containerd.task.v2.Task"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static Cubeshim__Timestamp *stamp(ttrpc_ctx *ctx, int64_t ns)
{
    Cubeshim__Timestamp *t = ctx ? ttrpc_alloc(ctx, sizeof(*t)) : calloc(1, sizeof(*t));
    if (!t) return NULL;
    cubeshim__timestamp__init(t);
    t->seconds = ns / 1000000000;
    t->nanos = (int32_t)(ns % 1000000000);
    return t;
}

void shim_init(shim *s, const char *ns, const char *ttrpc_address, const char *hv_bin)
{
    memset(s, 0, sizeof(*s));
    s->ns = ns;
    s->ttrpc = ttrpc_address;
    s->hv_bin = hv_bin;
    s->start_w = -1;
    snprintf(s->state_root, sizeof(s->state_root), "/run/cube-shim");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
}

void shim_sandbox_id(const char *ns, const char *id, char out[32])
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a over namespace/id */
    for (const char *p = ns; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
    h = (h ^ '/') * 1099511628211ull;
    for (const char *p = id; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
    snprintf(out, 32, "ctr-%016llx", (unsigned long long)h);
}

/* Events go to containerd's events service; a failure is logged, never fatal to the call. */
static void publish(shim *s, const char *topic, const char *type, const ProtobufCMessage *ev)
{
    cube_err err = {0};
    if (!s->ttrpc || !*s->ttrpc) return;
    size_t len = protobuf_c_message_get_packed_size(ev);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return;
    protobuf_c_message_pack(ev, buf);
    Cubeshim__Any any = CUBESHIM__ANY__INIT;
    any.type_url = (char *)type;
    any.value.data = buf;
    any.value.len = len;
    Cubeshim__Envelope env = CUBESHIM__ENVELOPE__INIT;
    Cubeshim__Timestamp *ts = stamp(NULL, now_ns());
    env.timestamp = ts;
    env.namespace_ = (char *)s->ns;
    env.topic = (char *)topic;
    env.event = &any;
    Cubeshim__ForwardRequest fr = CUBESHIM__FORWARD_REQUEST__INIT;
    fr.envelope = &env;
    pthread_mutex_lock(&s->lock);
    if (!s->events) s->events = ttrpc_client_connect(s->ttrpc, &err);
    ttrpc_client *c = s->events;
    ProtobufCMessage *resp = NULL;
    int rc = c ? ttrpc_client_call(c, "containerd.services.events.ttrpc.v1.Events", "Forward", &fr.base,
                                   &cubeshim__empty__descriptor, &resp, &err)
               : -1;
    if (rc < 0 && c) { /* reconnect next time */
        ttrpc_client_free(c);
        s->events = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    if (rc < 0) cube_log_warn("event not published", "topic=%s err=\"%s\"", topic, err.msg);
    free(ts);
    free(buf);
}

static shim_proc *find_proc(shim *s, const char *id, const char *exec_id, cube_err *err)
{
    if (!s->created || s->deleted || strcmp(id ? id : "", s->id) != 0) {
        cube_err_set(err, ENOENT, "container %s not found", id ? id : "");
        return NULL;
    }
    if (!exec_id || !*exec_id) return &s->init;
    for (shim_proc *p = s->execs; p; p = p->next)
        if (strcmp(p->exec_id, exec_id) == 0) return p;
    cube_err_set(err, ENOENT, "exec %s not found in %s", exec_id, id);
    return NULL;
}

static void *exit_event(shim *s, const shim_proc *p)
{
    Cubeshim__TaskExit ev = CUBESHIM__TASK_EXIT__INIT;
    ev.container_id = s->id;
    ev.id = (char *)(*p->exec_id ? p->exec_id : s->id);
    ev.pid = (uint32_t)p->pid;
    ev.exit_status = (uint32_t)p->exit_status;
    Cubeshim__Timestamp *ts = stamp(NULL, p->exited_at_ns);
    ev.exited_at = ts;
    publish(s, "/tasks/exit", "containerd.events.TaskExit", &ev.base);
    free(ts);
    return NULL;
}

void *shim_reaper(void *arg)
{
    shim *s = arg;
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, 0);
        if (pid < 0) {
            if (errno == ECHILD) {
                pthread_mutex_lock(&s->lock);
                while (s->children == 0) pthread_cond_wait(&s->changed, &s->lock);
                pthread_mutex_unlock(&s->lock);
            }
            continue;
        }
        pthread_mutex_lock(&s->lock);
        s->children--;
        shim_proc *hit = s->init.waited == pid ? &s->init : NULL;
        for (shim_proc *p = s->execs; p && !hit; p = p->next)
            if (p->waited == pid) hit = p;
        shim_proc copy;
        if (hit) {
            hit->exited = true;
            hit->exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
            hit->exited_at_ns = now_ns();
            copy = *hit;
        }
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->lock);
        if (hit && copy.started) exit_event(s, &copy);
    }
    return NULL;
}

/* Mounts containerd's rootfs mounts (the snapshot) on bundle/rootfs. */
static int mount_rootfs(shim *s, const Cubeshim__CreateTaskRequest *req, cube_err *err)
{
    char target[4200];
    snprintf(target, sizeof(target), "%s/rootfs", s->bundle);
    for (size_t i = 0; i < req->n_rootfs; i++) {
        const Cubeshim__Mount *m = req->rootfs[i];
        static const struct {
            const char *name;
            unsigned long flag;
        } known[] = {
            {"ro", MS_RDONLY},     {"rw", 0},           {"bind", MS_BIND},     {"rbind", MS_BIND | MS_REC},
            {"nosuid", MS_NOSUID}, {"nodev", MS_NODEV}, {"noexec", MS_NOEXEC}, {"relatime", MS_RELATIME}};
        unsigned long flags = 0;
        char data[8192] = "";
        for (size_t o = 0; o < m->n_options; o++) {
            bool flag = false;
            for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
                if (strcmp(m->options[o], known[k].name) == 0) {
                    flags |= known[k].flag;
                    flag = true;
                }
            if (!flag) {
                size_t used = strlen(data);
                snprintf(data + used, sizeof(data) - used, "%s%s", used ? "," : "", m->options[o]);
            }
        }
        const char *type = m->type && *m->type ? m->type : "none";
        if (mount(m->source, target, type, flags & ~MS_RDONLY, *data ? data : NULL) < 0)
            return cube_err_sys(err, errno, "mount %s (%s) on %s", m->source, type, target);
        s->rootfs_mounted = true;
        if ((flags & MS_BIND) && (flags & MS_RDONLY) &&
            mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
            return cube_err_sys(err, errno, "read-only %s", target);
    }
    return 0;
}

static int handle_create(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    shim *s = svc;
    const Cubeshim__CreateTaskRequest *req = reqp;
    Cubeshim__CreateTaskResponse *out = respp;
    if (!req->id || !*req->id || !req->bundle || req->bundle[0] != '/')
        return cube_err_set(err, EINVAL, "create needs an id and an absolute bundle path");
    if (req->terminal) return cube_err_set(err, ENOTSUP, "cube-shim does not run containers with a tty yet");
    if (req->checkpoint && *req->checkpoint)
        return cube_err_set(err, ENOTSUP, "cube-shim cannot restore checkpoints");
    pthread_mutex_lock(&s->lock);
    bool taken = s->created;
    if (!taken) {
        s->created = true;
        snprintf(s->id, sizeof(s->id), "%s", req->id);
        snprintf(s->bundle, sizeof(s->bundle), "%s", req->bundle);
    }
    pthread_mutex_unlock(&s->lock);
    if (taken) return cube_err_set(err, EEXIST, "this shim already runs container %s", s->id);
    shim_sandbox_id(s->ns, s->id, s->sandbox_id);
    snprintf(s->state_dir, sizeof(s->state_dir), "%s/%s", s->state_root, s->sandbox_id);
    snprintf(s->control, sizeof(s->control), "unix:%s/control.sock", s->state_dir);
    snprintf(s->init.stdin_path, sizeof(s->init.stdin_path), "%s", req->stdin ? req->stdin : "");
    snprintf(s->init.stdout_path, sizeof(s->init.stdout_path), "%s", req->stdout ? req->stdout : "");
    snprintf(s->init.stderr_path, sizeof(s->init.stderr_path), "%s", req->stderr ? req->stderr : "");
    mkdir(s->state_root, 0711);
    if ((mkdir(s->state_dir, 0711) < 0 && errno != EEXIST) || mount_rootfs(s, req, err) < 0 ||
        spawn_init(s, err) < 0) {
        if (!err->code) cube_err_sys(err, errno, "mkdir %s", s->state_dir);
        if (s->rootfs_mounted) {
            char target[4200];
            snprintf(target, sizeof(target), "%s/rootfs", s->bundle);
            umount2(target, MNT_DETACH);
            s->rootfs_mounted = false;
        }
        cube_rm_rf(s->state_dir);
        pthread_mutex_lock(&s->lock);
        s->created = false;
        pthread_mutex_unlock(&s->lock);
        return -1;
    }
    out->pid = (uint32_t)s->init.pid;
    Cubeshim__TaskCreate ev = CUBESHIM__TASK_CREATE__INIT;
    Cubeshim__TaskIO io = CUBESHIM__TASK_IO__INIT;
    io.stdin = s->init.stdin_path;
    io.stdout = s->init.stdout_path;
    io.stderr = s->init.stderr_path;
    ev.container_id = s->id;
    ev.bundle = s->bundle;
    ev.n_rootfs = req->n_rootfs;
    ev.rootfs = req->rootfs;
    ev.io = &io;
    ev.pid = out->pid;
    publish(s, "/tasks/create", "containerd.events.TaskCreate", &ev.base);
    cube_log_info("container created", "id=%s sandbox=%s pid=%d", s->id, s->sandbox_id, s->init.pid);
    return 0;
}

static int handle_start(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    shim *s = svc;
    const Cubeshim__StartRequest *req = reqp;
    Cubeshim__StartResponse *out = respp;
    pthread_mutex_lock(&s->lock);
    shim_proc *p = find_proc(s, req->id, req->exec_id, err);
    int rc = p ? 0 : -1;
    if (p && p->started) rc = cube_err_set(err, EEXIST, "already started");
    if (rc == 0 && p == &s->init) {
        if (s->init.exited) {
            rc = cube_err_set(err, EBUSY, "container %s exited before it was started", s->id);
        } else if (write(s->start_w, "g", 1) != 1) {
            rc = cube_err_sys(err, errno, "open the start gate");
        } else {
            close(s->start_w);
            s->start_w = -1;
            p->started = true;
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (rc == 0 && p != &s->init) rc = spawn_exec(s, p, err);
    if (rc < 0) return -1;
    out->pid = (uint32_t)p->pid;
    if (p == &s->init) {
        Cubeshim__TaskStart ev = CUBESHIM__TASK_START__INIT;
        ev.container_id = s->id;
        ev.pid = out->pid;
        publish(s, "/tasks/start", "containerd.events.TaskStart", &ev.base);
    } else {
        Cubeshim__TaskExecStarted ev = CUBESHIM__TASK_EXEC_STARTED__INIT;
        ev.container_id = s->id;
        ev.exec_id = p->exec_id;
        ev.pid = out->pid;
        publish(s, "/tasks/exec-started", "containerd.events.TaskExecStarted", &ev.base);
    }
    return 0;
}

static int handle_exec(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    shim *s = svc;
    const Cubeshim__ExecProcessRequest *req = reqp;
    if (req->terminal) return cube_err_set(err, ENOTSUP, "cube-shim does not exec with a tty yet");
    if (!req->exec_id || !*req->exec_id || strlen(req->exec_id) >= sizeof(s->init.exec_id))
        return cube_err_set(err, EINVAL, "exec needs an exec_id");
    if (!req->spec || !req->spec->value.len) return cube_err_set(err, EINVAL, "exec needs a process spec");
    pthread_mutex_lock(&s->lock);
    cube_err e2 = {0};
    int rc = find_proc(s, req->id, NULL, err) ? 0 : -1;
    if (rc == 0 && find_proc(s, req->id, req->exec_id, &e2))
        rc = cube_err_set(err, EEXIST, "exec %s exists", req->exec_id);
    if (rc == 0 && s->init.exited) rc = cube_err_set(err, EBUSY, "container %s is not running", s->id);
    shim_proc *p = rc == 0 ? calloc(1, sizeof(*p)) : NULL;
    if (rc == 0 && p) {
        snprintf(p->exec_id, sizeof(p->exec_id), "%s", req->exec_id);
        snprintf(p->stdin_path, sizeof(p->stdin_path), "%s", req->stdin ? req->stdin : "");
        snprintf(p->stdout_path, sizeof(p->stdout_path), "%s", req->stdout ? req->stdout : "");
        snprintf(p->stderr_path, sizeof(p->stderr_path), "%s", req->stderr ? req->stderr : "");
        p->spec_json = strndup((const char *)req->spec->value.data, req->spec->value.len);
        p->next = s->execs;
        s->execs = p;
    } else if (rc == 0) {
        rc = cube_err_set(err, ENOMEM, "out of memory");
    }
    pthread_mutex_unlock(&s->lock);
    if (rc < 0) return -1;
    Cubeshim__TaskExecAdded ev = CUBESHIM__TASK_EXEC_ADDED__INIT;
    ev.container_id = s->id;
    ev.exec_id = p->exec_id;
    publish(s, "/tasks/exec-added", "containerd.events.TaskExecAdded", &ev.base);
    return 0;
}

static int handle_wait(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    shim *s = svc;
    const Cubeshim__WaitRequest *req = reqp;
    Cubeshim__WaitResponse *out = respp;
    pthread_mutex_lock(&s->lock);
    shim_proc *p = find_proc(s, req->id, req->exec_id, err);
    while (p && !p->exited) {
        pthread_cond_wait(&s->changed, &s->lock);
        p = find_proc(s, req->id, req->exec_id, err); /* deleted meanwhile */
    }
    if (p) {
        out->exit_status = (uint32_t)p->exit_status;
        out->exited_at = stamp(ctx, p->exited_at_ns);
    }
    pthread_mutex_unlock(&s->lock);
    return p ? 0 : -1;
}

static int handle_kill(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    shim *s = svc;
    const Cubeshim__KillRequest *req = reqp;
    if (req->signal == 0 || req->signal > 64) return cube_err_set(err, EINVAL, "bad signal %u", req->signal);
    pthread_mutex_lock(&s->lock);
    shim_proc *p = find_proc(s, req->id, req->exec_id, err);
    int rc = p ? 0 : -1;
    if (p && (p->exited || p->pid <= 0)) rc = cube_err_set(err, ENOENT, "process already finished");
    if (rc == 0 && kill(p->pid, (int)req->signal) < 0) rc = cube_err_sys(err, errno, "kill %d", p->pid);
    if (rc == 0 && p == &s->init && req->all)
        for (shim_proc *x = s->execs; x; x = x->next)
            if (x->pid > 0 && !x->exited) kill(x->pid, (int)req->signal);
    if (rc == 0 && p == &s->init && !p->started && s->start_w >= 0) { /* never started: let it go */
        close(s->start_w);
        s->start_w = -1;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int handle_delete(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    shim *s = svc;
    const Cubeshim__DeleteRequest *req = reqp;
    Cubeshim__DeleteResponse *out = respp;
    pthread_mutex_lock(&s->lock);
    shim_proc *p = find_proc(s, req->id, req->exec_id, err);
    int rc = p ? 0 : -1;
    if (p && p->started && !p->exited) rc = cube_err_set(err, EBUSY, "process %d is still running", p->pid);
    if (rc == 0 && p == &s->init && !p->started && s->start_w >= 0) {
        close(s->start_w); /* created, never started: PID 1 leaves at the closed gate */
        s->start_w = -1;
    }
    while (rc == 0 && p == &s->init && !p->exited && p->waited > 0) pthread_cond_wait(&s->changed, &s->lock);
    if (rc == 0) {
        out->pid = (uint32_t)p->pid;
        out->exit_status = (uint32_t)p->exit_status;
        out->exited_at = stamp(ctx, p->exited_at_ns ? p->exited_at_ns : now_ns());
        if (p != &s->init) {
            for (shim_proc **pp = &s->execs; *pp; pp = &(*pp)->next)
                if (*pp == p) {
                    *pp = p->next;
                    break;
                }
            free(p->spec_json);
            free(p);
            p = NULL;
        } else {
            s->deleted = true;
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (rc < 0) return -1;
    if (!p) return 0;
    if (s->rootfs_mounted) {
        char target[4200];
        snprintf(target, sizeof(target), "%s/rootfs", s->bundle);
        if (umount2(target, MNT_DETACH) < 0)
            cube_log_warn("rootfs not unmounted", "path=%s errno=%d", target, errno);
        s->rootfs_mounted = false;
    }
    cube_rm_rf(s->state_dir);
    Cubeshim__TaskDelete ev = CUBESHIM__TASK_DELETE__INIT;
    ev.container_id = s->id;
    ev.pid = out->pid;
    ev.exit_status = out->exit_status;
    ev.exited_at = out->exited_at;
    publish(s, "/tasks/delete", "containerd.events.TaskDelete", &ev.base);
    cube_log_info("container deleted", "id=%s exit_status=%u", s->id, out->exit_status);
    return 0;
}

static int handle_state(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    shim *s = svc;
    const Cubeshim__StateRequest *req = reqp;
    Cubeshim__StateResponse *out = respp;
    pthread_mutex_lock(&s->lock);
    shim_proc *p = find_proc(s, req->id, req->exec_id, err);
    if (p) {
        out->id = ttrpc_strdup(ctx, s->id);
        out->exec_id = ttrpc_strdup(ctx, p->exec_id);
        out->bundle = ttrpc_strdup(ctx, s->bundle);
        out->pid = (uint32_t)(p->pid > 0 ? p->pid : 0);
        out->stdin = ttrpc_strdup(ctx, p->stdin_path);
        out->stdout = ttrpc_strdup(ctx, p->stdout_path);
        out->stderr = ttrpc_strdup(ctx, p->stderr_path);
        out->status = p->exited     ? CUBESHIM__TASK_STATUS__STOPPED
                      : !p->started ? CUBESHIM__TASK_STATUS__CREATED
                      : s->paused   ? CUBESHIM__TASK_STATUS__PAUSED
                                    : CUBESHIM__TASK_STATUS__RUNNING;
        out->exit_status = (uint32_t)p->exit_status;
        if (p->exited) out->exited_at = stamp(ctx, p->exited_at_ns);
    }
    pthread_mutex_unlock(&s->lock);
    return p ? 0 : -1;
}

static int handle_pids(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    shim *s = svc;
    const Cubeshim__PidsRequest *req = reqp;
    Cubeshim__PidsResponse *out = respp;
    pthread_mutex_lock(&s->lock);
    int rc = find_proc(s, req->id, NULL, err) ? 0 : -1;
    /* every process of the sandbox, from its cgroup (the host's view of pids) */
    char path[512];
    FILE *f = NULL;
    static const char *const tries[] = {"/sys/fs/cgroup/pids/cube/%s/cgroup.procs",
                                        "/sys/fs/cgroup/cube/%s/cgroup.procs"};
    for (size_t i = 0; rc == 0 && !f && i < 2; i++) {
        snprintf(path, sizeof(path), tries[i], s->sandbox_id);
        f = fopen(path, "re");
    }
    size_t cap = 64;
    out->processes = rc == 0 ? ttrpc_alloc(ctx, cap * sizeof(*out->processes)) : NULL;
    int pid;
    while (f && out->processes && out->n_processes < cap && fscanf(f, "%d", &pid) == 1) {
        Cubeshim__ProcessInfo *pi = ttrpc_alloc(ctx, sizeof(*pi));
        if (!pi) break;
        cubeshim__process_info__init(pi);
        pi->pid = (uint32_t)pid;
        out->processes[out->n_processes++] = pi;
    }
    if (f) fclose(f);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int hv_call(shim *s, const char *method, cube_err *err)
{
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    int rc = cube_rpc_call_once(s->control, method, &e.base, &cube__empty__descriptor, &resp, 15000, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int pause_resume(shim *s, const char *id, bool pause, cube_err *err)
{
    pthread_mutex_lock(&s->lock);
    shim_proc *p = find_proc(s, id, NULL, err);
    int rc = p ? 0 : -1;
    if (p && p->exited) rc = cube_err_set(err, EBUSY, "container %s is not running", s->id);
    pthread_mutex_unlock(&s->lock);
    if (rc == 0) rc = hv_call(s, pause ? "/cube.Hypervisor/Pause" : "/cube.Hypervisor/Resume", err);
    if (rc < 0) return -1;
    pthread_mutex_lock(&s->lock);
    s->paused = pause;
    pthread_mutex_unlock(&s->lock);
    Cubeshim__TaskPaused ev = CUBESHIM__TASK_PAUSED__INIT; /* TaskResumed has the same shape */
    ev.container_id = s->id;
    publish(s, pause ? "/tasks/paused" : "/tasks/resumed",
            pause ? "containerd.events.TaskPaused" : "containerd.events.TaskResumed", &ev.base);
    return 0;
}

static int handle_pause(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    return pause_resume(svc, ((const Cubeshim__PauseRequest *)reqp)->id, true, err);
}

static int handle_resume(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    return pause_resume(svc, ((const Cubeshim__ResumeRequest *)reqp)->id, false, err);
}

static int handle_connect(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)reqp;
    (void)err;
    shim *s = svc;
    Cubeshim__ConnectResponse *out = respp;
    out->shim_pid = (uint32_t)getpid();
    pthread_mutex_lock(&s->lock);
    out->task_pid = (uint32_t)(s->init.pid > 0 ? s->init.pid : 0);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static int handle_shutdown(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    (void)err;
    shim *s = svc;
    const Cubeshim__ShutdownRequest *req = reqp;
    pthread_mutex_lock(&s->lock);
    if (req->now || !s->created || s->deleted) s->stop = true; /* exits once this reply is sent */
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static int handle_closeio(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    shim *s = svc;
    const Cubeshim__CloseIORequest *req = reqp;
    /* the process holds its stdin fifo for reading: it sees EOF once containerd's writer closes */
    pthread_mutex_lock(&s->lock);
    int rc = find_proc(s, req->id, req->exec_id, err) ? 0 : -1;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int unsupported(cube_err *err, const char *what)
{
    return cube_err_set(err, ENOTSUP, "%s is not supported by cube-shim", what);
}

static int handle_resize(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx, (void)reqp, (void)respp;
    return unsupported(err, "ResizePty (containers have no tty)");
}

static int handle_update(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx, (void)reqp, (void)respp;
    return unsupported(err, "Update (resources are fixed when the sandbox starts)");
}

static int handle_checkpoint(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx, (void)reqp, (void)respp;
    return unsupported(err, "Checkpoint");
}

/* The sandbox's cgroup figures, as containerd's cgroups v1 Metrics (what `ctr task metrics` decodes). */
static int handle_stats(void *svc, ttrpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    shim *s = svc;
    const Cubeshim__StatsRequest *req = reqp;
    Cubeshim__StatsResponse *out = respp;
    pthread_mutex_lock(&s->lock);
    shim_proc *p = find_proc(s, req->id, NULL, err);
    int rc = p ? 0 : -1;
    if (p && p->exited) rc = cube_err_set(err, ENOENT, "container %s is not running", s->id);
    pthread_mutex_unlock(&s->lock);
    if (rc < 0) return -1;
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    if (cube_rpc_call_once(s->control, "/cube.Hypervisor/Stats", &e.base, &cube__hv_stats__descriptor, &resp,
                           15000, err) < 0)
        return -1;
    const Cube__HvStats *hs = (const Cube__HvStats *)resp;
    Cubeshim__CgMetrics m = CUBESHIM__CG_METRICS__INIT;
    Cubeshim__CgPidsStat pids = CUBESHIM__CG_PIDS_STAT__INIT;
    Cubeshim__CgCPUStat cpu = CUBESHIM__CG_CPUSTAT__INIT;
    Cubeshim__CgCPUUsage usage = CUBESHIM__CG_CPUUSAGE__INIT;
    Cubeshim__CgMemoryStat mem = CUBESHIM__CG_MEMORY_STAT__INIT;
    Cubeshim__CgMemoryEntry mu = CUBESHIM__CG_MEMORY_ENTRY__INIT;
    pids.current = hs->pids;
    usage.total = hs->cpu_usage_ns;
    cpu.usage = &usage;
    mu.usage = hs->mem_used;
    mu.limit = hs->mem_total;
    mem.cache = hs->mem_cache;
    mem.usage = &mu;
    m.pids = &pids;
    m.cpu = &cpu;
    m.memory = &mem;
    protobuf_c_message_free_unpacked(resp, NULL);
    Cubeshim__Any *any = ttrpc_alloc(ctx, sizeof(*any));
    size_t len = cubeshim__cg_metrics__get_packed_size(&m);
    uint8_t *buf = ttrpc_alloc(ctx, len ? len : 1);
    if (!any || !buf) return cube_err_set(err, ENOMEM, "out of memory");
    cubeshim__any__init(any);
    cubeshim__cg_metrics__pack(&m, buf);
    any->type_url = ttrpc_strdup(ctx, "io.containerd.cgroups.v1.Metrics");
    any->value.data = buf;
    any->value.len = len;
    out->stats = any;
    return 0;
}

#define T(name, fn, req, resp)                                                                               \
    {                                                                                                        \
        TASK_SERVICE, name, &req##__descriptor, &resp##__descriptor, fn                                      \
    }
const ttrpc_method shim_methods[] = {
    T("State", handle_state, cubeshim__state_request, cubeshim__state_response),
    T("Create", handle_create, cubeshim__create_task_request, cubeshim__create_task_response),
    T("Start", handle_start, cubeshim__start_request, cubeshim__start_response),
    T("Delete", handle_delete, cubeshim__delete_request, cubeshim__delete_response),
    T("Pids", handle_pids, cubeshim__pids_request, cubeshim__pids_response),
    T("Pause", handle_pause, cubeshim__pause_request, cubeshim__empty),
    T("Resume", handle_resume, cubeshim__resume_request, cubeshim__empty),
    T("Checkpoint", handle_checkpoint, cubeshim__checkpoint_task_request, cubeshim__empty),
    T("Kill", handle_kill, cubeshim__kill_request, cubeshim__empty),
    T("Exec", handle_exec, cubeshim__exec_process_request, cubeshim__empty),
    T("ResizePty", handle_resize, cubeshim__resize_pty_request, cubeshim__empty),
    T("CloseIO", handle_closeio, cubeshim__close_iorequest, cubeshim__empty),
    T("Update", handle_update, cubeshim__update_task_request, cubeshim__empty),
    T("Wait", handle_wait, cubeshim__wait_request, cubeshim__wait_response),
    T("Stats", handle_stats, cubeshim__stats_request, cubeshim__stats_response),
    T("Connect", handle_connect, cubeshim__connect_request, cubeshim__connect_response),
    T("Shutdown", handle_shutdown, cubeshim__shutdown_request, cubeshim__empty),
    {0},
};
