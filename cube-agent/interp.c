#include "interp.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "children.h"
#include "id.h"
#include "json.h"
#include "log.h"
#include "users.h"

extern const char interp_worker_py[];
extern const char interp_worker_js[];

/* The languages a context runs (E2B's names and their aliases): python runs the code itself; bash is a shell
 * the Python worker keeps (as Jupyter's bash kernel); javascript and typescript a Node.js worker. */
enum { LANG_PYTHON, LANG_BASH, LANG_JAVASCRIPT, LANG_TYPESCRIPT, LANG_COUNT };
static const struct {
    const char *name, *alias;
} languages[LANG_COUNT] = {
    [LANG_PYTHON] = {"python", "python3"},
    [LANG_BASH] = {"bash", "sh"},
    [LANG_JAVASCRIPT] = {"javascript", "js"},
    [LANG_TYPESCRIPT] = {"typescript", "ts"},
};

typedef struct ctx {
    char id[40];
    int lang; /* LANG_* */
    char cwd[4096];
    pid_t pid; /* 0: no worker running */
    int in_fd, ev_fd;
    int busy; /* an execution is streaming */
    int refs; /* interp table + each execution in flight; guarded by interp lock */
    int removed;
    pthread_cond_t idle;
    struct ctx *next;
} ctx;

struct interp {
    const char *python, *node;
    agent *a;
    pthread_mutex_t lock;
    ctx *head;
    ctx *default_ctx[LANG_COUNT]; /* each language's, made at its first runCode without a context */
};

interp *interp_new(const char *python, const char *node, agent *a)
{
    interp *ip = calloc(1, sizeof(*ip));
    if (!ip) return NULL;
    ip->python = python;
    ip->node = node;
    ip->a = a;
    pthread_mutex_init(&ip->lock, NULL);
    return ip;
}

static void on_worker_exit(void *arg, pid_t pid, int st)
{
    (void)arg;
    (void)st;
    cube_log_debug("interpreter worker exited", "pid=%d", pid);
}

/* With ip->lock held. Kills the worker and closes its pipes. */
static void stop_worker(ctx *c)
{
    if (c->pid > 0) kill(c->pid, SIGKILL);
    c->pid = 0;
    if (c->in_fd >= 0) close(c->in_fd);
    if (c->ev_fd >= 0) close(c->ev_fd);
    c->in_fd = c->ev_fd = -1;
}

static void ctx_unref(interp *ip, ctx *c)
{
    (void)ip;
    if (--c->refs > 0) return;
    stop_worker(c);
    pthread_cond_destroy(&c->idle);
    free(c);
}

/* vfork, as the agent starts commands (proc.c): nothing of the agent's memory is copied. Its own function,
 * so that no variable of the caller lives across the vfork. */
static __attribute__((noinline)) pid_t spawn_worker(char *const argv[], char *const envp[], int in_fd,
                                                    int null_fd, int ev_fd, const agent_user *u,
                                                    const gid_t *groups, int ng, const char *cwd)
{
    pid_t pid = vfork();
    if (pid == 0) {
        children_confine(); /* signals as a fresh process has them: the SIGINT below must reach it */
        setsid();           /* SIGINT to the worker alone interrupts the running code */
        /* stdout and stderr: /dev/null, not the agent's own (its stderr is the node's log of the sandbox: the
         * code's raw writes there, os.write(2, ...) or a subprocess's, would fill the node's disk). stdin
         * too: the requests come on fd 4, which nothing the code reads by default (input(), a child
         * inheriting stdin) would take from the next execution. */
        if (dup2(null_fd, 0) < 0 || dup2(null_fd, 1) < 0 || dup2(null_fd, 2) < 0 || dup2(ev_fd, 3) < 0 ||
            dup2(in_fd, 4) < 0)
            _exit(127);
        if (getuid() == 0 && children_become(u->uid, u->gid, groups, ng) < 0) _exit(126);
        if (chdir(cwd) < 0 && chdir(u->home) < 0) _exit(125);
        close_range(5, ~0U, 0);
        execvpe(argv[0], argv, envp);
        _exit(127);
    }
    return pid;
}

/* With ip->lock held. Starts the Python worker as the default user, in c->cwd. */
static int start_worker(interp *ip, ctx *c, cube_err *err)
{
    agent_user u;
    pthread_mutex_lock(&ip->a->lock);
    char user[64];
    snprintf(user, sizeof(user), "%s", ip->a->default_user);
    char *envs = cJSON_PrintUnformatted(ip->a->env_vars);
    pthread_mutex_unlock(&ip->a->lock);
    cJSON *vars = envs ? cJSON_Parse(envs) : NULL;
    free(envs);
    if (agent_lookup_user(user, &u, err) < 0) {
        cJSON_Delete(vars);
        return -1;
    }
    char *envp[256];
    int n = 0;
    const char *path = getenv("PATH");
    if (asprintf(&envp[n++], "PATH=%s", path ? path : "/usr/local/bin:/usr/bin:/bin") < 0 ||
        asprintf(&envp[n++], "HOME=%s", u.home) < 0 || asprintf(&envp[n++], "USER=%s", u.name) < 0 ||
        asprintf(&envp[n++], "MPLBACKEND=Agg") < 0 || asprintf(&envp[n++], "PYTHONUNBUFFERED=1") < 0) {
        cJSON_Delete(vars);
        return cube_err_set(err, ENOMEM, "out of memory");
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, vars)
    {
        if (n < 250 && cJSON_IsString(it) && asprintf(&envp[n], "%s=%s", it->string, it->valuestring) >= 0)
            n++;
    }
    envp[n] = NULL;
    cJSON_Delete(vars);

    int in[2], ev[2];
    if (pipe2(in, O_CLOEXEC) < 0) return cube_err_sys(err, errno, "pipe");
    if (pipe2(ev, O_CLOEXEC) < 0) {
        close(in[0]);
        close(in[1]);
        return cube_err_sys(err, errno, "pipe");
    }
    gid_t groups[64];
    int ng = users_groups(USERS_GROUP, u.name, u.gid, groups, 64);
    /* python runs the code itself, or keeps a bash that runs it; node runs javascript and typescript */
    const char *lang = languages[c->lang].name;
    char *py_argv[] = {(char *)ip->python, "-u", "-c", (char *)interp_worker_py, (char *)lang, NULL};
    /* --no-warnings: Node's notes on its own experimental features (fetch) are not the code's output;
     * --expose-internals: the REPL's top-level await transform (interp_worker.js) */
    char *js_argv[] = {(char *)ip->node,
                       "--no-warnings",
                       "--expose-internals",
                       "-e",
                       (char *)interp_worker_js,
                       (char *)lang,
                       NULL};
    char **argv = c->lang == LANG_JAVASCRIPT || c->lang == LANG_TYPESCRIPT ? js_argv : py_argv;
    if (access(argv[0], X_OK) < 0) {
        /* EINVAL: the request's language is what this sandbox cannot run (400, as an unknown one) */
        int e = errno;
        for (int i = 0; i < n; i++) free(envp[i]);
        close(in[0]), close(in[1]), close(ev[0]), close(ev[1]);
        return cube_err_set(err, EINVAL, "%s needs %s, which this sandbox's template lacks (%s)", lang,
                            argv[0], strerror(e));
    }
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    children_lock();
    pid_t pid = null_fd < 0 ? -1 : spawn_worker(argv, envp, in[0], null_fd, ev[1], &u, groups, ng, c->cwd);
    if (pid > 0) children_add(pid, on_worker_exit, NULL);
    children_unlock();
    for (int i = 0; i < n; i++) free(envp[i]);
    if (null_fd >= 0) close(null_fd);
    close(in[0]);
    close(ev[1]);
    if (pid < 0) {
        close(in[1]);
        close(ev[0]);
        return cube_err_sys(err, errno, "fork %s worker", argv[0]);
    }
    c->pid = pid;
    c->in_fd = in[1];
    c->ev_fd = ev[0];
    return 0;
}

/* The LANG_ of a language's name or alias; "" or none is python. -1 for others, with err naming those there
 * are.
 */
static int language_of(const char *language, cube_err *err)
{
    if (!language || !*language) return LANG_PYTHON;
    for (int i = 0; i < LANG_COUNT; i++)
        if (strcasecmp(language, languages[i].name) == 0 || strcasecmp(language, languages[i].alias) == 0)
            return i;
    return cube_err_set(
        err, EINVAL, "language '%s' is not available (python, bash, javascript or js, typescript or ts are)",
        language);
}

/* With ip->lock held. */
static ctx *new_ctx(interp *ip, const char *language, const char *cwd, cube_err *err)
{
    int lang = language_of(language, err);
    if (lang < 0) return NULL;
    ctx *c = calloc(1, sizeof(*c));
    if (!c) return cube_err_set(err, ENOMEM, "out of memory"), NULL;
    c->in_fd = c->ev_fd = -1;
    c->refs = 1;
    pthread_cond_init(&c->idle, NULL);
    c->lang = lang;
    if (cwd && *cwd) {
        snprintf(c->cwd, sizeof(c->cwd), "%s", cwd);
    } else {
        struct stat st;
        agent_user u;
        cube_err ignored;
        const char *home = stat("/home/user", &st) == 0 ? "/home/user" : NULL;
        if (!home && agent_lookup_user(ip->a->default_user, &u, &ignored) == 0) home = u.home;
        snprintf(c->cwd, sizeof(c->cwd), "%s", home ? home : "/");
    }
    if (cube_id_new(0, c->id, 36, err) < 0 || start_worker(ip, c, err) < 0) {
        ctx_unref(ip, c);
        return NULL;
    }
    c->next = ip->head;
    ip->head = c;
    return c;
}

static cJSON *ctx_json(const ctx *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", c->id);
    cJSON_AddStringToObject(o, "language", languages[c->lang].name);
    cJSON_AddStringToObject(o, "cwd", c->cwd);
    return o;
}

static ctx *find_ctx(interp *ip, const char *id)
{
    for (ctx *c = ip->head; c; c = c->next)
        if (strcmp(c->id, id) == 0) return c;
    return NULL;
}

static void unlink_ctx(interp *ip, ctx *c)
{
    for (ctx **pp = &ip->head; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    for (int i = 0; i < LANG_COUNT; i++)
        if (ip->default_ctx[i] == c) ip->default_ctx[i] = NULL;
    c->removed = 1;
}

typedef struct exec_stream {
    interp *ip;
    ctx *c;
    char buf[65536];
    size_t len;  /* bytes in buf */
    size_t sent; /* of buf, already handed to MHD */
    int done;
    int client_fd; /* the caller's connection (not ours to close), or -1 */
} exec_stream;

/* Hands out complete lines only; notices the end_of_execution line. On worker death, reports it as an error.
 */
static ssize_t exec_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    exec_stream *es = cls;
    for (;;) {
        if (es->sent < es->len) {
            char *nl = memchr(es->buf + es->sent, '\n', es->len - es->sent);
            if (nl) {
                size_t line = (size_t)(nl - (es->buf + es->sent)) + 1;
                size_t n = line < max ? line : max;
                if (line <= max &&
                    strstr(es->buf + es->sent, "\"type\": \"end_of_execution\"") == es->buf + es->sent + 1)
                    es->done = 1;
                memcpy(out, es->buf + es->sent, n);
                es->sent += n;
                return (ssize_t)n;
            }
        }
        if (es->done) return MHD_CONTENT_READER_END_OF_STREAM;
        /* compact, then read more */
        memmove(es->buf, es->buf + es->sent, es->len - es->sent);
        es->len -= es->sent;
        es->sent = 0;
        if (es->len == sizeof(es->buf)) { /* a line longer than the buffer: pass it through as is */
            size_t n = es->len < max ? es->len : max;
            memcpy(out, es->buf, n);
            memmove(es->buf, es->buf + n, es->len - n);
            es->len -= n;
            return (ssize_t)n;
        }
        /* while the code runs silently, watch the caller too: one that hung up (a client's timeout, through
         * cube-proxy) ends the stream now, and exec_free interrupts the code, instead of the next execution
         * waiting for this one to finish on its own. A FIN counts as hung up, as in nginx's 499. */
        struct pollfd pf[2] = {{es->c->ev_fd, POLLIN, 0}, {es->client_fd, POLLRDHUP, 0}};
        if (poll(pf, es->client_fd >= 0 ? 2 : 1, -1) < 0 && errno != EINTR)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (pf[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        ssize_t n = read(es->c->ev_fd, es->buf + es->len, sizeof(es->buf) - es->len);
        if (n > 0) {
            es->len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        /* the worker died mid-execution */
        const char *died =
            "{\"type\": \"error\", \"name\": \"KernelDied\", \"value\": \"the interpreter process of this "
            "context exited\", \"traceback\": \"\"}\n{\"type\": \"end_of_execution\"}\n";
        size_t dl = strlen(died);
        memcpy(es->buf, died, dl);
        es->len = dl;
        es->sent = 0;
        pthread_mutex_lock(&es->ip->lock);
        stop_worker(es->c);
        pthread_mutex_unlock(&es->ip->lock);
    }
}

/* After the client went away mid-execution: interrupt the code and wait (bounded) for the worker to finish
 * the execution, so the next one starts clean; a worker that does not answer is replaced. */
static void exec_abort(exec_stream *es)
{
    ctx *c = es->c;
    if (c->pid > 0) kill(c->pid, SIGINT);
    for (int waited = 0; waited < 3000 && c->ev_fd >= 0;) {
        struct pollfd p = {c->ev_fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) {
            waited += 100;
            continue;
        }
        char tmp[4096];
        ssize_t n = read(c->ev_fd, tmp, sizeof(tmp) - 1);
        if (n <= 0) break;
        tmp[n] = '\0';
        if (strstr(tmp, "end_of_execution")) return;
    }
    pthread_mutex_lock(&es->ip->lock);
    stop_worker(c);
    pthread_mutex_unlock(&es->ip->lock);
}

static void exec_free(void *cls)
{
    exec_stream *es = cls;
    if (!es->done) exec_abort(es);
    pthread_mutex_lock(&es->ip->lock);
    es->c->busy = 0;
    pthread_cond_broadcast(&es->c->idle);
    ctx_unref(es->ip, es->c);
    pthread_mutex_unlock(&es->ip->lock);
    free(es);
}

static void execute(void *svc, http_req *req)
{
    interp *ip = svc;
    if (!agent_token_ok(ip->a, req)) return http_reply_error(req, 401, "missing or invalid access token");
    cube_err err = {0};
    cJSON *in = cube_json_parse(req->body, req->body_len, &err);
    const char *code = NULL, *ctx_id = NULL, *lang = NULL;
    const cJSON *envs = NULL;
    if (!in || cube_json_get_string(in, "code", true, &code, &err) < 0 ||
        cube_json_get_string(in, "context_id", false, &ctx_id, &err) < 0 ||
        cube_json_get_string(in, "language", false, &lang, &err) < 0 ||
        cube_json_get_object(in, "env_vars", false, &envs, &err) < 0 ||
        (envs && cube_json_check_string_map(envs, "env_vars", &err) < 0)) {
        cJSON_Delete(in);
        return http_reply_error(req, 400, "%s", err.msg);
    }
    if (ctx_id && lang) {
        cJSON_Delete(in);
        return http_reply_error(req, 400, "give context_id or language, not both");
    }
    pthread_mutex_lock(&ip->lock);
    ctx *c = NULL;
    if (ctx_id) {
        c = find_ctx(ip, ctx_id);
        if (!c)
            err = (cube_err){ENOENT, ""},
            snprintf(err.msg, sizeof(err.msg), "context '%s' not found", ctx_id);
    } else {
        int li = language_of(lang, &err); /* -1: err says which there are */
        if (li >= 0 && !ip->default_ctx[li]) ip->default_ctx[li] = new_ctx(ip, lang, NULL, &err);
        c = li >= 0 ? ip->default_ctx[li] : NULL;
    }
    if (c) {
        c->refs++;
        while (c->busy)
            pthread_cond_wait(&c->idle, &ip->lock); /* one execution at a time, in arrival order */
        c->busy = 1;
        if (c->pid == 0 && start_worker(ip, c, &err) < 0) {
            c->busy = 0;
            pthread_cond_broadcast(&c->idle);
            ctx_unref(ip, c);
            c = NULL;
        }
    }
    pthread_mutex_unlock(&ip->lock);
    if (!c) {
        cJSON_Delete(in);
        return http_reply_error(req,
                                err.code == ENOENT   ? 404
                                : err.code == EINVAL ? 400
                                                     : 500,
                                "%s", err.msg);
    }
    cJSON *job = cJSON_CreateObject();
    cJSON_AddStringToObject(job, "code", code);
    if (envs) cJSON_AddItemToObject(job, "env_vars", cJSON_Duplicate(envs, 1));
    char *line = cJSON_PrintUnformatted(job);
    cJSON_Delete(job);
    cJSON_Delete(in);
    exec_stream *es = calloc(1, sizeof(*es));
    es->ip = ip;
    es->c = c;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    es->client_fd = ci ? ci->connect_fd : -1;
    size_t ll = strlen(line);
    line[ll] = '\n'; /* cJSON's output has no newline inside: one request per line */
    ssize_t w = write(c->in_fd, line, ll + 1);
    free(line);
    if (w != (ssize_t)(ll + 1)) es->len = 0; /* the worker is gone: exec_read reports it */
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 65536, exec_read, es, exec_free);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-ndjson");
    http_reply(req, 200, r);
}

static void contexts_create(void *svc, http_req *req)
{
    interp *ip = svc;
    cube_err err = {0};
    cJSON *in = req->body_len ? cube_json_parse(req->body, req->body_len, &err) : cJSON_CreateObject();
    const char *lang = NULL, *cwd = NULL;
    if (!in || cube_json_get_string(in, "language", false, &lang, &err) < 0 ||
        cube_json_get_string(in, "cwd", false, &cwd, &err) < 0) {
        cJSON_Delete(in);
        return http_reply_error(req, 400, "%s", err.msg);
    }
    pthread_mutex_lock(&ip->lock);
    ctx *c = new_ctx(ip, lang, cwd, &err);
    cJSON *out = c ? ctx_json(c) : NULL;
    pthread_mutex_unlock(&ip->lock);
    cJSON_Delete(in);
    if (!out) return http_reply_error(req, err.code == EINVAL ? 400 : 500, "%s", err.msg);
    http_reply_cjson(req, 200, out);
}

static void contexts_list(void *svc, http_req *req)
{
    interp *ip = svc;
    cJSON *arr = cJSON_CreateArray();
    pthread_mutex_lock(&ip->lock);
    for (ctx *c = ip->head; c; c = c->next) cJSON_AddItemToArray(arr, ctx_json(c));
    pthread_mutex_unlock(&ip->lock);
    http_reply_cjson(req, 200, arr);
}

/* DELETE /contexts/{id} and POST /contexts/{id}/restart */
static void context_op(void *svc, http_req *req)
{
    interp *ip = svc;
    char id[64];
    const char *rest = req->url + strlen("/contexts/");
    const char *slash = strchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
    int restart = slash && strcmp(slash, "/restart") == 0 && strcmp(req->method, "POST") == 0;
    if (n == 0 || n >= sizeof(id) || (slash && !restart) || (!slash && strcmp(req->method, "DELETE") != 0))
        return http_reply_error(req, 404, "no such endpoint: %s %s", req->method, req->url);
    memcpy(id, rest, n);
    id[n] = '\0';
    cube_err err = {0};
    pthread_mutex_lock(&ip->lock);
    ctx *c = find_ctx(ip, id);
    int rc = 0;
    if (c && restart) {
        stop_worker(c); /* a running execution sees the worker die and reports it */
        rc = start_worker(ip, c, &err);
    } else if (c) {
        unlink_ctx(ip, c);
        stop_worker(c);
        ctx_unref(ip, c);
    }
    pthread_mutex_unlock(&ip->lock);
    if (!c) return http_reply_error(req, 404, "context '%s' not found", id);
    if (rc < 0) return http_reply_error(req, 500, "%s", err.msg);
    http_reply_empty(req, 204);
}

static void health(void *svc, http_req *req)
{
    (void)svc;
    http_reply_json(req, 200, "\"OK\"");
}

void interp_free(interp *ip)
{
    if (!ip) return;
    pthread_mutex_lock(&ip->lock);
    while (ip->head) {
        ctx *c = ip->head;
        unlink_ctx(ip, c);
        stop_worker(c);
        ctx_unref(ip, c);
    }
    pthread_mutex_unlock(&ip->lock);
    free(ip);
}

const http_route interp_routes[] = {
    {"GET", "/health", health, NULL},
    {"POST", "/execute", execute, NULL},
    {"POST", "/contexts", contexts_create, NULL},
    {"GET", "/contexts", contexts_list, NULL},
    {"DELETE", "/contexts/", context_op, NULL},
    {"POST", "/contexts/", context_op, NULL},
    {0},
};
