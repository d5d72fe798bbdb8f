#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "children.h"
#include "connect.h"
#include "log.h"
#include "timeutil.h"
#include "users.h"

typedef struct event {
    char *json;
    int is_end;
    struct event *next;
} event;

typedef struct proc proc;

struct proc_sub {
    proc *p;
    event *head, *tail;
    size_t queued; /* bytes of the events waiting in it */
    int done;
    proc_sub *next;
};

/* Output waits for its readers: past SUB_QUEUED_MAX bytes queued for a stream, the reader stops reading the
 * process's output until that stream has taken half of it, so the process blocks on its full pipe as it
 * would on a slow terminal. Unbounded, a command writing faster than its client reads (cat of a big file,
 * a fast build log) queued it all in the agent, PID 1 of the sandbox: past the sandbox's memory the OOM
 * killer ended the agent and the sandbox with it. A stream that goes away takes its queue with it. */
#define SUB_QUEUED_MAX (4u << 20)

struct proc {
    proc_table *table;
    pid_t pid;
    char *tag;
    cJSON *config;
    int out_fd, err_fd, pty_fd, stdin_fd;
    int exit_efd;
    int64_t
        deadline_ms; /* monotonic; 0: none, or passed and acted on (proc_spec.timeout_ms; reader thread) */
    int wstatus, exited;
    int group_killed; /* atomic: SIGKILL went to its whole group (nothing of it can fork after that) */
    int refs;         /* atomic: table entry, reaper, reader thread, each stream */
    proc_sub *subs;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    proc *next;
};

/* A process that ended may leave the processes it started behind, in its process group (`cmd &`, a fork bomb
 * whose first shell returned at once). The last ones are remembered so that a kill through the SDK still
 * takes that group, as it would have while its first process ran. */
#define ENDED_GROUPS 256

typedef struct ended_group {
    pid_t pgid;
    bool killed; /* SIGKILL went to the group already: what is left of it is dying */
    char tag[64];
} ended_group;

struct proc_table {
    pthread_mutex_t lock;
    proc *head;
    ended_group ended[ENDED_GROUPS];
    unsigned ended_next;
};

proc_table *proc_table_new(void)
{
    proc_table *t = calloc(1, sizeof(*t));
    if (t) pthread_mutex_init(&t->lock, NULL);
    return t;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

static void proc_unref(proc *p)
{
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    close_fd(&p->out_fd);
    close_fd(&p->err_fd);
    close_fd(&p->pty_fd);
    close_fd(&p->stdin_fd);
    close_fd(&p->exit_efd);
    cJSON_Delete(p->config);
    free(p->tag);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

/* With p->lock held: queue json for every stream (ownership of json stays with the caller). */
static void broadcast(proc *p, const char *json, int is_end)
{
    for (proc_sub *s = p->subs; s; s = s->next) {
        event *e = malloc(sizeof(*e));
        if (!e) continue;
        e->json = strdup(json);
        e->is_end = is_end;
        e->next = NULL;
        if (!e->json) {
            free(e);
            continue;
        }
        if (s->tail)
            s->tail->next = e;
        else
            s->head = e;
        s->tail = e;
        s->queued += strlen(json);
    }
    pthread_cond_broadcast(&p->cond);
}

/* With p->lock: whether a stream has more output waiting than it may (SUB_QUEUED_MAX). */
static int sub_full(const proc *p)
{
    for (const proc_sub *s = p->subs; s; s = s->next)
        if (s->queued > SUB_QUEUED_MAX) return 1;
    return 0;
}

static char *event_json(const char *kind, cJSON *body)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, kind, body);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static char *start_event(pid_t pid)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddNumberToObject(b, "pid", pid);
    return event_json("start", b);
}

static proc_sub *attach(proc *p)
{
    proc_sub *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->p = p;
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_lock(&p->lock);
    s->next = p->subs;
    p->subs = s;
    pthread_mutex_unlock(&p->lock);
    return s;
}

static void queue_one(proc_sub *s, char *json)
{
    proc *p = s->p;
    event *e = malloc(sizeof(*e));
    if (!e) {
        free(json);
        return;
    }
    *e = (event){json, 0, NULL};
    pthread_mutex_lock(&p->lock);
    e->next = s->head; /* the start event goes first, ahead of anything already queued */
    s->head = e;
    if (!s->tail) s->tail = e;
    s->queued += strlen(json);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* Its timeout passed: the whole group goes, as a kill of it would; its end is reported as usual. On the
 * reader thread. */
static void time_out(proc *p)
{
    if (kill(-p->pid, SIGKILL) == 0) __atomic_store_n(&p->group_killed, 1, __ATOMIC_RELEASE);
    cube_log_info("process timed out", "pid=%d", p->pid);
    p->deadline_ms = 0;
}

static void emit_data(proc *p, const char *field, const unsigned char *buf, size_t n)
{
    char *b64 = b64_encode(buf, n);
    if (!b64) return;
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, field, b64);
    free(b64);
    char *json = event_json("data", data);
    if (!json) return;
    pthread_mutex_lock(&p->lock);
    broadcast(p, json, 0);
    /* its readers catch up (see SUB_QUEUED_MAX); a client that stops reading does not keep the command past
     * its deadline (p->cond is on the monotonic clock) */
    while (sub_full(p)) {
        if (!p->deadline_ms) {
            pthread_cond_wait(&p->cond, &p->lock);
            continue;
        }
        struct timespec at = {p->deadline_ms / 1000, (long)(p->deadline_ms % 1000) * 1000000};
        if (pthread_cond_timedwait(&p->cond, &p->lock, &at) == ETIMEDOUT && sub_full(p)) time_out(p);
    }
    pthread_mutex_unlock(&p->lock);
    free(json);
}

/* Reads what fd has now; returns 0 at EOF (or EIO from a PTY whose other side closed), 1 otherwise. */
static int pump(proc *p, int fd, const char *field)
{
    unsigned char buf[32768];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
        emit_data(p, field, buf, (size_t)n);
        return 1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 1;
    return 0;
}

static void drain(proc *p, int fd, const char *field)
{
    if (fd < 0) return;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    unsigned char buf[32768];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) emit_data(p, field, buf, (size_t)n);
}

static void *reader(void *arg)
{
    proc *p = arg;
    int out = p->pty_fd >= 0 ? p->pty_fd : p->out_fd;
    int err = p->pty_fd >= 0 ? -1 : p->err_fd;
    const char *out_field = p->pty_fd >= 0 ? "pty" : "stdout";
    for (;;) {
        /* both closed (out, err < 0): only the exit itself is waited for */
        struct pollfd fds[3] = {{p->exit_efd, POLLIN, 0}, {out, POLLIN, 0}, {err, POLLIN, 0}};
        int nf = err >= 0 ? 3 : out >= 0 ? 2 : 1;
        int64_t deadline = p->deadline_ms, left = deadline ? deadline - cube_now_mono_ms() : -1;
        int n = poll(fds, (nfds_t)nf, left < 0 ? (deadline ? 0 : -1) : left > INT_MAX ? INT_MAX : (int)left);
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (n == 0 && deadline && cube_now_mono_ms() >= deadline) {
            time_out(p);
            continue;
        }
        if (fds[0].revents) break; /* exited: what it wrote is in the pipes, drained below */
        if (out >= 0 && fds[1].revents && !pump(p, out, out_field)) out = -1;
        if (err >= 0 && nf == 3 && fds[2].revents && !pump(p, err, "stderr")) err = -1;
    }
    /* Output written before the exit is in the pipe buffers; take it without waiting for grandchildren
     * that may hold the pipes open. */
    drain(p, p->pty_fd >= 0 ? p->pty_fd : p->out_fd, out_field);
    if (p->pty_fd < 0) drain(p, p->err_fd, "stderr");

    pthread_mutex_lock(&p->lock);
    int st = p->wstatus;
    pthread_mutex_unlock(&p->lock);
    cJSON *end = cJSON_CreateObject();
    char status[64];
    if (WIFEXITED(st)) {
        cJSON_AddNumberToObject(end, "exitCode", WEXITSTATUS(st));
        cJSON_AddBoolToObject(end, "exited", 1);
        snprintf(status, sizeof(status), "exit status %d", WEXITSTATUS(st));
    } else {
        cJSON_AddNumberToObject(end, "exitCode", -1);
        cJSON_AddBoolToObject(end, "exited", 0);
        /* Go's wording, which envd reports: "signal: killed", "signal: terminated" */
        snprintf(status, sizeof(status), "signal: %s", WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "unknown");
        if (status[8] >= 'A' && status[8] <= 'Z') status[8] = (char)(status[8] + 32);
    }
    cJSON_AddStringToObject(end, "status", status);
    cube_log_info("process ended", "pid=%d status=\"%s\"", p->pid, status);
    char *json = event_json("end", end);

    /* leave the table first so that nothing new attaches to a finished process */
    proc_table *t = p->table;
    pthread_mutex_lock(&t->lock);
    for (proc **pp = &t->head; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    ended_group *g = &t->ended[t->ended_next++ % ENDED_GROUPS];
    g->pgid = p->pid;
    g->killed = __atomic_load_n(&p->group_killed, __ATOMIC_ACQUIRE);
    snprintf(g->tag, sizeof(g->tag), "%s", p->tag ? p->tag : "");
    pthread_mutex_unlock(&t->lock);
    pthread_mutex_lock(&p->lock);
    broadcast(p, json, 1);
    close_fd(&p->stdin_fd);
    pthread_mutex_unlock(&p->lock);
    free(json);
    proc_unref(p); /* the table's reference */
    proc_unref(p); /* the reader's */
    return NULL;
}

static void on_exit_status(void *arg, pid_t pid, int wstatus)
{
    (void)pid;
    proc *p = arg;
    pthread_mutex_lock(&p->lock);
    p->wstatus = wstatus;
    p->exited = 1;
    pthread_mutex_unlock(&p->lock);
    uint64_t one = 1;
    if (write(p->exit_efd, &one, sizeof(one)) < 0) {
    }
    proc_unref(p); /* the reaper's reference */
}

/* In the child, between vfork and exec: only async-signal-safe calls, and none that writes to memory the
 * agent's threads use (the child borrows it; its credentials: children_become). Reports errno through
 * errpipe. */
static _Noreturn void child_exec(const proc_spec *spec, int in_fd, int out_fd, int err_fd, int pty_slave,
                                 int errpipe, const gid_t *groups, int ngroups)
{
    int e = 0;
    children_confine();
    if (setsid() < 0) goto fail;
    if (pty_slave >= 0) {
        if (ioctl(pty_slave, TIOCSCTTY, 0) < 0) goto fail;
        in_fd = out_fd = err_fd = pty_slave;
    }
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) goto fail;
    if (getuid() == 0 && children_become(spec->uid, spec->gid, groups, ngroups) < 0) goto fail;
    if (spec->cwd && chdir(spec->cwd) < 0) goto fail;
    /* nothing of the agent's may leak into user processes; errpipe stays until exec closes it (CLOEXEC), the
     * script's descriptor until the shell has read it (it closes it first thing) */
    int keep[2] = {errpipe, spec->script_fd >= 0 ? spec->script_fd : errpipe};
    if (keep[1] < keep[0]) keep[0] = keep[1], keep[1] = errpipe;
    if (keep[0] > 3) close_range(3, (unsigned)keep[0] - 1, 0);
    if (keep[1] > keep[0] + 1) close_range((unsigned)keep[0] + 1, (unsigned)keep[1] - 1, 0);
    close_range((unsigned)keep[1] + 1, ~0U, 0);
    if (spec->script_fd >= 0 && fcntl(spec->script_fd, F_SETFD, 0) < 0) goto fail;
    execve(spec->cmd, spec->argv, spec->envp);
fail:
    e = errno;
    if (write(errpipe, &e, sizeof(e)) < 0) {
    }
    _exit(127);
}

/* vfork: the child borrows the agent's memory until its exec, so nothing of it is copied. A fork copied the
 * page tables of the agent (a few MB, several threads) and left both sides write-protected: a command's
 * start cost ~5 ms more on a PVM guest. Its own function, so that no variable of the caller lives across
 * the vfork. */
static __attribute__((noinline)) pid_t spawn_child(const proc_spec *spec, int in_fd, int out_fd, int err_fd,
                                                   int pty_slave, int errpipe, const gid_t *groups,
                                                   int ngroups)
{
    pid_t pid = vfork();
    if (pid == 0) child_exec(spec, in_fd, out_fd, err_fd, pty_slave, errpipe, groups, ngroups);
    return pid;
}

int proc_start(proc_table *t, const proc_spec *spec, proc_sub **sub, uint32_t *pid_out, cube_err *err)
{
    int pipes_out[2] = {-1, -1}, pipes_err[2] = {-1, -1}, pipes_in[2] = {-1, -1}, errpipe[2] = {-1, -1};
    int master = -1, slave = -1;
    gid_t groups[64];
    int ngroups = users_groups(USERS_GROUP, spec->user ? spec->user : "root", spec->gid, groups, 64);

    proc *p = calloc(1, sizeof(*p));
    if (!p) return cube_err_set(err, ENOMEM, "out of memory");
    p->table = t;
    p->out_fd = p->err_fd = p->pty_fd = p->stdin_fd = -1;
    p->exit_efd = eventfd(0, EFD_CLOEXEC);
    pthread_mutex_init(&p->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    p->refs = 3; /* table, reaper, reader */
    p->tag = spec->tag ? strdup(spec->tag) : NULL;
    p->config = spec->config ? cJSON_Duplicate(spec->config, 1) : cJSON_CreateObject();

    if (pipe2(errpipe, O_CLOEXEC) < 0) goto sys_fail;
    if (spec->pty) {
        struct winsize ws = {.ws_row = spec->rows ? spec->rows : 24, .ws_col = spec->cols ? spec->cols : 80};
        if (openpty(&master, &slave, NULL, NULL, &ws) < 0) goto sys_fail;
        fcntl(master, F_SETFD, FD_CLOEXEC);
        fcntl(slave, F_SETFD, FD_CLOEXEC);
    } else {
        if (pipe2(pipes_out, O_CLOEXEC) < 0 || pipe2(pipes_err, O_CLOEXEC) < 0) goto sys_fail;
        if (spec->stdin_open) {
            if (pipe2(pipes_in, O_CLOEXEC) < 0) goto sys_fail;
        } else {
            pipes_in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (pipes_in[0] < 0) goto sys_fail;
        }
    }

    *sub = attach(p);
    if (!*sub) goto sys_fail;

    children_lock();
    pid_t pid =
        spawn_child(spec, pipes_in[0], pipes_out[1], pipes_err[1], slave, errpipe[1], groups, ngroups);
    if (pid > 0) children_add(pid, on_exit_status, p);
    children_unlock();
    if (pid < 0) goto sys_fail;
    p->pid = pid;
    if (spec->timeout_ms > 0) p->deadline_ms = cube_now_mono_ms() + spec->timeout_ms;

    close_fd(&errpipe[1]);
    close_fd(&slave);
    close_fd(&pipes_out[1]);
    close_fd(&pipes_err[1]);
    close_fd(&pipes_in[0]);
    int child_errno = 0;
    ssize_t n;
    do n = read(errpipe[0], &child_errno, sizeof(child_errno));
    while (n < 0 && errno == EINTR);
    close_fd(&errpipe[0]);
    if (n == sizeof(child_errno)) {
        /* exec failed: the reaper collects the child; report like envd does */
        proc_sub_free(*sub);
        *sub = NULL;
        close_fd(&master);
        close_fd(&pipes_out[0]);
        close_fd(&pipes_err[0]);
        close_fd(&pipes_in[1]);
        proc_unref(p); /* no table entry */
        proc_unref(p); /* no reader; the reaper's reference frees p */
        return cube_err_sys(err, child_errno, "start %s", spec->cmd);
    }
    p->pty_fd = master;
    p->out_fd = pipes_out[0];
    p->err_fd = pipes_err[0];
    p->stdin_fd = spec->pty ? dup(master) : pipes_in[1];
    if (p->stdin_fd >= 0) fcntl(p->stdin_fd, F_SETFD, FD_CLOEXEC);

    pthread_mutex_lock(&t->lock);
    p->next = t->head;
    t->head = p;
    pthread_mutex_unlock(&t->lock);

    queue_one(*sub, start_event(pid));
    cube_log_info("process started", "pid=%d cmd=%s tag=%s user=%s", pid, spec->cmd,
                  spec->tag ? spec->tag : "", spec->user ? spec->user : "");
    pthread_t th;
    if (pthread_create(&th, NULL, reader, p) != 0) {
        /* cannot watch it: it does not run unseen, and what the reader would have released goes here (the
         * reaper's reference stays until it collects the killed child) */
        kill(-pid, SIGKILL);
        pthread_mutex_lock(&t->lock);
        for (proc **pp = &t->head; *pp; pp = &(*pp)->next)
            if (*pp == p) {
                *pp = p->next;
                break;
            }
        pthread_mutex_unlock(&t->lock);
        proc_sub_free(*sub);
        *sub = NULL;
        pthread_mutex_lock(&p->lock);
        close_fd(&p->out_fd);
        close_fd(&p->err_fd);
        close_fd(&p->pty_fd);
        close_fd(&p->stdin_fd);
        pthread_mutex_unlock(&p->lock);
        proc_unref(p); /* the table's */
        proc_unref(p); /* the reader's, which never ran */
        return cube_err_set(err, EAGAIN, "start %s: no thread for its output", spec->cmd);
    }
    pthread_detach(th);
    *pid_out = (uint32_t)pid;
    return 0;

sys_fail : {
    int e = errno;
    if (*sub) proc_sub_free(*sub);
    *sub = NULL;
    int fds[] = {pipes_out[0], pipes_out[1], pipes_err[0], pipes_err[1], pipes_in[0],
                 pipes_in[1],  errpipe[0],   errpipe[1],   master,       slave};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (fds[i] >= 0) close(fds[i]);
    p->refs = 1;
    proc_unref(p);
    return cube_err_sys(err, e, "start %s", spec->cmd);
}
}

/* With t->lock held. */
static proc *find(proc_table *t, const proc_selector *sel)
{
    for (proc *p = t->head; p; p = p->next) {
        if (sel->pid && (uint32_t)p->pid == sel->pid) return p;
        if (!sel->pid && sel->tag && p->tag && strcmp(p->tag, sel->tag) == 0) return p;
    }
    return NULL;
}

static proc *lookup(proc_table *t, const proc_selector *sel, cube_err *err)
{
    pthread_mutex_lock(&t->lock);
    proc *p = find(t, sel);
    if (p) __atomic_add_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_unlock(&t->lock);
    if (!p) {
        if (sel->pid)
            cube_err_set(err, ENOENT, "process with pid %u not found", sel->pid);
        else
            cube_err_set(err, ENOENT, "process with tag '%s' not found", sel->tag ? sel->tag : "");
    }
    return p;
}

int proc_connect(proc_table *t, const proc_selector *sel, proc_sub **sub, cube_err *err)
{
    proc *p = lookup(t, sel, err);
    if (!p) return -1;
    *sub = attach(p);
    proc_unref(p);
    if (!*sub) return cube_err_set(err, ENOMEM, "out of memory");
    queue_one(*sub, start_event(p->pid));
    return 0;
}

int proc_sub_next(proc_sub *sub, int timeout_ms, char **json)
{
    proc *p = sub->p;
    if (sub->done) return -1;
    struct timespec dl = cube_timespec_after_ms(CLOCK_MONOTONIC, timeout_ms); /* p->cond's clock */
    pthread_mutex_lock(&p->lock);
    while (!sub->head) {
        if (pthread_cond_timedwait(&p->cond, &p->lock, &dl) == ETIMEDOUT) break;
    }
    event *e = sub->head;
    if (e) {
        sub->head = e->next;
        if (!sub->head) sub->tail = NULL;
        size_t was = sub->queued, len = strlen(e->json);
        sub->queued = was > len ? was - len : 0;
        /* the reader waits for half of it to go: woken once, not at every event */
        if (was > SUB_QUEUED_MAX / 2 && sub->queued <= SUB_QUEUED_MAX / 2) pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    if (!e) return 0;
    *json = e->json;
    if (e->is_end) sub->done = 1;
    free(e);
    return 1;
}

void proc_sub_free(proc_sub *sub)
{
    if (!sub) return;
    proc *p = sub->p;
    pthread_mutex_lock(&p->lock);
    for (proc_sub **pp = &p->subs; *pp; pp = &(*pp)->next) {
        if (*pp == sub) {
            *pp = sub->next;
            break;
        }
    }
    pthread_cond_broadcast(&p->cond); /* a reader waiting for this stream to catch up goes on */
    pthread_mutex_unlock(&p->lock);
    for (event *e = sub->head, *n; e; e = n) {
        n = e->next;
        free(e->json);
        free(e);
    }
    free(sub);
    proc_unref(p);
}

/* A duplicate of the process's input fd, so writing never holds the lock (a full pipe would stall output). */
static int input_fd(proc *p, cube_err *err)
{
    pthread_mutex_lock(&p->lock);
    int fd = p->stdin_fd >= 0 ? fcntl(p->stdin_fd, F_DUPFD_CLOEXEC, 3) : -1;
    pthread_mutex_unlock(&p->lock);
    if (fd < 0)
        cube_err_set(err, EINVAL, "process %d has no open stdin (start it with stdin enabled)", p->pid);
    return fd;
}

int proc_send_input(proc_table *t, const proc_selector *sel, const void *data, size_t len, bool pty,
                    cube_err *err)
{
    proc *p = lookup(t, sel, err);
    if (!p) return -1;
    int rc = 0;
    if (pty != (p->pty_fd >= 0)) {
        rc = cube_err_set(err, EINVAL,
                          pty ? "process %d has no pty" : "process %d runs in a pty: send pty input", p->pid);
    } else {
        int fd = input_fd(p, err);
        if (fd < 0) {
            rc = -1;
        } else {
            const char *b = data;
            while (len > 0) {
                ssize_t n = write(fd, b, len);
                if (n < 0) {
                    if (errno == EINTR) continue;
                    rc = cube_err_sys(err, errno, "write to process %d", p->pid);
                    break;
                }
                b += n;
                len -= (size_t)n;
            }
            close(fd);
        }
    }
    proc_unref(p);
    return rc;
}

/* Whether a process of group pgid still runs (zombies waiting to be reaped do not count). */
static bool group_runs(pid_t pgid)
{
    DIR *d = opendir("/proc");
    if (!d) return false;
    bool runs = false;
    struct dirent *de;
    while (!runs && (de = readdir(d))) {
        if (de->d_name[0] < '1' || de->d_name[0] > '9') continue;
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0) continue;
        buf[n] = '\0';
        /* "pid (comm) state ppid pgrp ...": comm may hold anything, so parse from its closing parenthesis */
        const char *rp = strrchr(buf, ')');
        char state;
        int ppid, pgrp;
        if (rp && sscanf(rp + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 && pgrp == pgid && state != 'Z')
            runs = true;
    }
    closedir(d);
    return runs;
}

/* The group of an ended process that sel names: whatever is left of it is signalled, whatever a scan of /proc
 * says (a scan while a fork bomb churns can miss every member, and a group that a scan called empty went on
 * forking; a group's id is not reused while any member holds it). The answer is whether the scan saw one of
 * them running: zombies alone, waiting for their reaper, are nothing left to kill. */
static int signal_ended_group(proc_table *t, const proc_selector *sel, int sig)
{
    pid_t pgid = 0;
    bool killed = false;
    pthread_mutex_lock(&t->lock);
    for (unsigned i = 0; i < ENDED_GROUPS && !pgid; i++) {
        ended_group *g = &t->ended[(t->ended_next - 1 - i) % ENDED_GROUPS];
        if (g->pgid &&
            (sel->pid ? (uint32_t)g->pgid == sel->pid : sel->tag && strcmp(g->tag, sel->tag) == 0)) {
            pgid = g->pgid;
            killed = g->killed;
            if (sig == SIGKILL) g->killed = true;
        }
    }
    pthread_mutex_unlock(&t->lock);
    if (!pgid) return -1;
    /* a group SIGKILLed before: its members are on their way out (a kill reaches every member at once, and
     * none can fork after it), so nothing is left to kill, whatever a scan still sees exiting */
    bool runs = !killed && group_runs(pgid);
    return kill(-pgid, sig) == 0 && runs ? 0 : -1;
}

int proc_signal(proc_table *t, const proc_selector *sel, int sig, cube_err *err)
{
    proc *p = lookup(t, sel, err);
    if (!p && err->code == ENOENT && signal_ended_group(t, sel, sig) == 0) {
        cube_err_clear(err);
        return 0;
    }
    if (!p) return -1;
    /* the whole process group: `bash -c` children must not outlive a kill */
    int rc = 0;
    if (kill(-p->pid, sig) == 0) {
        if (sig == SIGKILL) __atomic_store_n(&p->group_killed, 1, __ATOMIC_RELEASE);
    } else if (kill(p->pid, sig) < 0) {
        rc = cube_err_sys(err, errno, "signal process %d", p->pid);
    }
    proc_unref(p);
    return rc;
}

int proc_close_stdin(proc_table *t, const proc_selector *sel, cube_err *err)
{
    proc *p = lookup(t, sel, err);
    if (!p) return -1;
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    if (p->pty_fd >= 0)
        rc = cube_err_set(err, EINVAL, "process %d runs in a pty: stdin cannot be closed", p->pid);
    else
        close_fd(&p->stdin_fd);
    pthread_mutex_unlock(&p->lock);
    proc_unref(p);
    return rc;
}

int proc_resize(proc_table *t, const proc_selector *sel, uint16_t cols, uint16_t rows, cube_err *err)
{
    proc *p = lookup(t, sel, err);
    if (!p) return -1;
    int rc = 0;
    struct winsize ws = {.ws_row = rows, .ws_col = cols};
    pthread_mutex_lock(&p->lock);
    if (p->pty_fd < 0)
        rc = cube_err_set(err, EINVAL, "process %d has no pty to resize", p->pid);
    else if (ioctl(p->pty_fd, TIOCSWINSZ, &ws) < 0)
        rc = cube_err_sys(err, errno, "resize pty of process %d", p->pid);
    pthread_mutex_unlock(&p->lock);
    proc_unref(p);
    return rc;
}

void proc_kill_all(proc_table *t)
{
    pthread_mutex_lock(&t->lock);
    for (proc *p = t->head; p; p = p->next) kill(-p->pid, SIGKILL);
    pthread_mutex_unlock(&t->lock);
}

cJSON *proc_list(proc_table *t)
{
    cJSON *arr = cJSON_CreateArray();
    pthread_mutex_lock(&t->lock);
    for (proc *p = t->head; p; p = p->next) {
        cJSON *info = cJSON_CreateObject();
        cJSON_AddItemToObject(info, "config", cJSON_Duplicate(p->config, 1));
        cJSON_AddNumberToObject(info, "pid", p->pid);
        if (p->tag) cJSON_AddStringToObject(info, "tag", p->tag);
        cJSON_AddItemToArray(arr, info);
    }
    pthread_mutex_unlock(&t->lock);
    return arr;
}
