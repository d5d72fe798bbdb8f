/* process.Process: Start, Connect (streams) and List, SendInput, SendSignal, CloseStdin, Update (unary). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envd_rpc.h"
#include "fsutil.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* The process stream's messages wrap a ProcessEvent: {"event": {...}}. */
static int sub_next(void *ctx, int timeout_ms, char **json)
{
    char *ev = NULL;
    int rc = proc_sub_next(ctx, timeout_ms, &ev);
    if (rc != 1) return rc;
    int n = asprintf(json, "{\"event\":%s}", ev);
    free(ev);
    return n < 0 ? -1 : 1;
}

static void sub_free(void *ctx)
{
    proc_sub_free(ctx);
}

static void stream_sub(http_req *req, proc_sub *sub)
{
    envd_rpc_stream(req, (envd_stream){sub, sub_next, sub_free, "{\"event\":{\"keepalive\":{}}}"});
}

typedef struct strv {
    char **v;
    size_t n, cap;
} strv;

static int strv_push(strv *s, char *str)
{
    if (!str) return -1;
    if (s->n + 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        char **nv = realloc(s->v, cap * sizeof(char *));
        if (!nv) {
            free(str);
            return -1;
        }
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = str;
    s->v[s->n] = NULL;
    return 0;
}

static void strv_free(strv *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
}

/* NAME=value, replacing an earlier NAME: later sources win (defaults < /init < request). */
static int env_set(strv *env, const char *name, const char *value)
{
    size_t nl = strlen(name);
    char *kv;
    if (asprintf(&kv, "%s=%s", name, value) < 0) return -1;
    for (size_t i = 0; i < env->n; i++) {
        if (strncmp(env->v[i], name, nl) == 0 && env->v[i][nl] == '=') {
            free(env->v[i]);
            env->v[i] = kv;
            return 0;
        }
    }
    return strv_push(env, kv);
}

static int env_merge(strv *env, const cJSON *obj)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        if (cJSON_IsString(it) && it->string && *it->string && !strchr(it->string, '='))
            if (env_set(env, it->string, it->valuestring) < 0) return -1;
    }
    return 0;
}

/* The kernel takes no single argument over MAX_ARG_STRLEN (32 pages), and the SDK sends a command as one:
 * `bash -l -c CMD`. A longer CMD (a script or a file's text in a heredoc) was "Argument list too long". Bash
 * reads it from a memfd instead: `-c '. /proc/self/fd/N'`, the script's first line closing N again (`.`
 * reads its whole file before running any of it), so nothing the command starts inherits it. */
#define ARG_STRLEN_MAX (32 * 4096 - 1)
static int long_script(strv *argv, int *fd_out, cube_err *err)
{
    const char *base = strrchr(argv->v[0], '/');
    base = base ? base + 1 : argv->v[0];
    if (strcmp(base, "bash") != 0) return 0;
    /* bash -c: the command string is the first argument that is not an option */
    bool dash_c = false;
    size_t i = 1;
    for (; i < argv->n && argv->v[i] && argv->v[i][0] == '-'; i++) {
        if (strcmp(argv->v[i], "--") == 0) {
            i++;
            break;
        }
        if (argv->v[i][1] != '-' && strchr(argv->v[i], 'c')) dash_c = true;
    }
    if (!dash_c || i >= argv->n || !argv->v[i]) return 0;
    char *script = argv->v[i];
    size_t len = strlen(script);
    if (len <= ARG_STRLEN_MAX) return 0;
    int fd = memfd_create("command", MFD_CLOEXEC);
    if (fd < 0) return cube_err_sys(err, errno, "command of %zu bytes: memfd", len);
    char head[64], *ref = NULL;
    int hn = snprintf(head, sizeof(head), "exec %d<&-\n", fd);
    if (cube_write_all(fd, head, (size_t)hn) < 0 || cube_write_all(fd, script, len) < 0 ||
        asprintf(&ref, ". /proc/self/fd/%d", fd) < 0) {
        int e = errno;
        close(fd);
        return cube_err_sys(err, e, "command of %zu bytes: write its script", len);
    }
    free(script);
    argv->v[i] = ref;
    *fd_out = fd;
    return 0;
}

void envd_process_start(agent *a, http_req *req)
{
    cJSON *in;
    if (envd_rpc_begin(a, req, 1, &in) < 0) return;
    cube_err err = {0};
    strv argv = {0}, env = {0};
    const cJSON *pc = pj_get(in, "process", NULL);
    const char *cmd = pj_string(pc, "cmd", NULL);
    const cJSON *pty = pj_get(in, "pty", NULL);
    const cJSON *size = pj_get(pty, "size", NULL);
    agent_user u;
    char cwd[4096];
    if (!cJSON_IsObject(pc) || !cmd || !*cmd) {
        envd_rpc_error(req, 1, CONNECT_INVALID_ARGUMENT, "process.cmd is required");
        goto out;
    }
    if (agent_request_user(a, req, &u, &err) < 0) {
        envd_rpc_error_err(req, 1, &err);
        goto out;
    }
    strv_push(&argv, strdup(cmd));
    const cJSON *args = pj_get(pc, "args", NULL), *it;
    cJSON_ArrayForEach(it, args)
    {
        if (!cJSON_IsString(it)) {
            envd_rpc_error(req, 1, CONNECT_INVALID_ARGUMENT, "process.args must be strings");
            goto out;
        }
        strv_push(&argv, strdup(it->valuestring));
    }
    const char *path = getenv("PATH");
    env_set(&env, "PATH", path && *path ? path : DEFAULT_PATH);
    env_set(&env, "HOME", u.home);
    env_set(&env, "USER", u.name);
    env_set(&env, "LOGNAME", u.name);
    if (cJSON_IsObject(size)) env_set(&env, "TERM", "xterm-256color");
    pthread_mutex_lock(&a->lock);
    env_merge(&env, a->env_vars);
    const char *wd = a->default_workdir;
    char *workdir = wd ? strdup(wd) : NULL;
    pthread_mutex_unlock(&a->lock);
    env_merge(&env, pj_get(pc, "envs", NULL));

    const char *req_cwd = pj_string(pc, "cwd", NULL);
    int explicit_cwd = req_cwd && *req_cwd;
    int rc = agent_resolve_path(&u,
                                explicit_cwd ? req_cwd
                                : workdir    ? workdir
                                             : u.home,
                                cwd, sizeof(cwd), &err);
    free(workdir);
    struct stat st;
    int usable = rc == 0 && stat(cwd, &st) == 0 && S_ISDIR(st.st_mode);
    if (!usable && explicit_cwd) {
        char msg[4200];
        snprintf(msg, sizeof(msg), "cwd '%s' does not exist or is not a directory", cwd);
        envd_rpc_error(req, 1, CONNECT_INVALID_ARGUMENT, msg);
        goto out;
    }
    if (!usable) snprintf(cwd, sizeof(cwd), "/"); /* a user without a home (nobody) starts at the root */
    /* the caller's deadline (the SDK's timeoutMs, 60 s unless given; 0: none) ends the command, as envd does
     */
    const char *tmo = http_header(req, "Connect-Timeout-Ms");
    char *tend = NULL;
    long long timeout_ms = tmo ? strtoll(tmo, &tend, 10) : 0;
    if (tmo && (tend == tmo || *tend || timeout_ms < 0)) {
        envd_rpc_error(req, 1, CONNECT_INVALID_ARGUMENT,
                       "Connect-Timeout-Ms must be a number of milliseconds");
        goto out;
    }
    int script_fd = -1;
    if (long_script(&argv, &script_fd, &err) < 0) {
        envd_rpc_error_err(req, 1, &err);
        goto out;
    }
    proc_spec spec = {
        .timeout_ms = timeout_ms,
        .script_fd = script_fd,
        .cmd = cmd,
        .argv = argv.v,
        .envp = env.v,
        .cwd = cwd,
        .uid = u.uid,
        .gid = u.gid,
        .user = u.name,
        .pty = cJSON_IsObject(size),
        .cols = (uint16_t)pj_int(size, "cols", NULL, 80),
        .rows = (uint16_t)pj_int(size, "rows", NULL, 24),
        .stdin_open = pj_bool(in, "stdin", NULL),
        .tag = pj_string(in, "tag", NULL),
        .config = pc,
    };
    proc_sub *sub;
    uint32_t pid;
    int started = proc_start(a->procs, &spec, &sub, &pid, &err);
    if (script_fd >= 0) close(script_fd);
    if (started < 0) {
        envd_rpc_error_err(req, 1, &err);
        goto out;
    }
    stream_sub(req, sub);
out:
    strv_free(&argv);
    strv_free(&env);
    cJSON_Delete(in);
}

/* ProcessSelector{oneof selector{uint32 pid; string tag}} */
static int selector(const cJSON *in, proc_selector *sel)
{
    const cJSON *s = pj_get(in, "process", NULL);
    sel->pid = (uint32_t)pj_int(s, "pid", NULL, 0);
    sel->tag = pj_string(s, "tag", NULL);
    return sel->pid || sel->tag ? 0 : -1;
}

void envd_process_connect(agent *a, http_req *req)
{
    cJSON *in;
    if (envd_rpc_begin(a, req, 1, &in) < 0) return;
    proc_selector sel;
    cube_err err = {0};
    proc_sub *sub;
    if (selector(in, &sel) < 0)
        envd_rpc_error(req, 1, CONNECT_INVALID_ARGUMENT, "process selector (pid or tag) is required");
    else if (proc_connect(a->procs, &sel, &sub, &err) < 0)
        envd_rpc_error_err(req, 1, &err);
    else
        stream_sub(req, sub);
    cJSON_Delete(in);
}

static int signal_from(const cJSON *v)
{
    if (cJSON_IsNumber(v)) return (int)v->valuedouble;
    if (!cJSON_IsString(v)) return 0;
    if (strcmp(v->valuestring, "SIGNAL_SIGKILL") == 0) return SIGKILL;
    if (strcmp(v->valuestring, "SIGNAL_SIGTERM") == 0) return SIGTERM;
    return 0;
}

void envd_process_unary(agent *a, http_req *req)
{
    const char *method = strrchr(req->url, '/') + 1;
    cJSON *in;
    if (envd_rpc_begin(a, req, 0, &in) < 0) return;
    cube_err err = {0};
    proc_selector sel = {0};
    int rc = 0;
    if (strcmp(method, "List") == 0) {
        cJSON *out = cJSON_CreateObject();
        cJSON_AddItemToObject(out, "processes", proc_list(a->procs));
        envd_rpc_reply(req, out);
        cJSON_Delete(in);
        return;
    }
    if (selector(in, &sel) < 0) {
        envd_rpc_error(req, 0, CONNECT_INVALID_ARGUMENT, "process selector (pid or tag) is required");
        cJSON_Delete(in);
        return;
    }
    if (strcmp(method, "SendInput") == 0) {
        const cJSON *input = pj_get(in, "input", NULL);
        const char *data = pj_string(input, "stdin", NULL);
        int pty = 0;
        if (!data) {
            data = pj_string(input, "pty", NULL);
            pty = data != NULL;
        }
        size_t len = 0;
        unsigned char *bytes = data ? b64_decode(data, &len) : NULL;
        if (!bytes)
            rc = cube_err_set(&err, EINVAL, "input.stdin or input.pty must be base64 bytes");
        else
            rc = proc_send_input(a->procs, &sel, bytes, len, pty, &err);
        free(bytes);
    } else if (strcmp(method, "SendSignal") == 0) {
        int sig = signal_from(pj_get(in, "signal", NULL));
        if (sig != SIGKILL && sig != SIGTERM)
            rc = cube_err_set(&err, EINVAL, "signal must be SIGNAL_SIGKILL or SIGNAL_SIGTERM");
        else
            rc = proc_signal(a->procs, &sel, sig, &err);
    } else if (strcmp(method, "CloseStdin") == 0) {
        rc = proc_close_stdin(a->procs, &sel, &err);
    } else if (strcmp(method, "Update") == 0) {
        const cJSON *size = pj_get(pj_get(in, "pty", NULL), "size", NULL);
        if (!cJSON_IsObject(size))
            rc = cube_err_set(&err, EINVAL, "pty.size is required");
        else
            rc = proc_resize(a->procs, &sel, (uint16_t)pj_int(size, "cols", NULL, 80),
                             (uint16_t)pj_int(size, "rows", NULL, 24), &err);
    } else {
        rc = cube_err_set(&err, ENOSYS, "process.Process/%s is not implemented", method);
    }
    cJSON_Delete(in);
    if (rc < 0)
        envd_rpc_error_err(req, 0, &err);
    else
        envd_rpc_reply(req, cJSON_CreateObject());
}
