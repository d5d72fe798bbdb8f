/* Template builds (E2B's Template.build), run on this node: a build sandbox of the base template, each step
 * (RUN, COPY, ENV, WORKDIR, USER) run in it through its agent, and after each step that changes files the
 * sandbox's writable layer snapshotted as a cached layer, keyed by the step and everything before it. A
 * rebuild takes the cached layers up to its first changed step and runs from there. The template that comes
 * out is the base's rootfs with those layers stacked on it, the last user, workdir and environment.
 *
 * Files on the node: <data>/build-files/<hash> (COPY steps' uploaded tars, content-addressed by the SDK's
 * hash), <data>/build-cache/keys/<key>.json (a step's result: its layers, user, workdir, env) and
 * <data>/build-cache/layers/<build>-<step>/ (the layers; never removed while templates may stack them). */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#include "build_exec.h"
#include "fsutil.h"
#include "idmap.h"
#include "registry.h"
#include "cubelet_internal.h"
#include "hypervisor.pb-c.h"
#include "id.h"
#include "log.h"
#include "template_config.h"
#include "protoutil.h"
#include "rpc.h"
#include "start_cmd.h"
#include "timeutil.h"

#define BUILDS_AT_ONCE  2     /* build sandboxes at once on a node; later builds wait */
#define BUILDS_KEPT     64    /* finished builds whose status is still answered */
#define BUILD_LOGS_MAX  20000 /* log entries a build keeps */
#define BUILD_STEP_MS   (3600 * 1000)
#define BUILD_FILE_MAX  (1ull << 30)
#define STATUS_LOGS_MAX 2000 /* entries one status answer carries */
#define HOME_MARK       "__cube_home__="

typedef struct build_log {
    int64_t ts;
    char level[8];
    char step[12];
    char *msg;
} build_log;

typedef struct cl_build {
    char id[64], template_id[64];
    char state[12]; /* waiting | building | ready | error */
    build_log *logs;
    size_t nlogs, cap;
    char *reason;
    char reason_step[12];
    char *template_json;
    int cpus, memory_mb;
    int disk_mb; /* minFreeDiskMb: each sandbox's disk at least this (0: the base's) */
    char **tags; /* what it is tagged once ready (none: default) */
    size_t ntags;
    struct cl_build *next;
} cl_build;

/* What the steps so far have made: layers above the base's rootfs, and the sandbox's defaults. */
typedef struct build_state {
    char layers[8192];
    char user[64];
    char workdir[512];
    cJSON *env;
    bool workdir_set; /* a WORKDIR step ran: USER no longer moves the workdir to the user's home */
    unsigned char key[SHA256_DIGEST_LENGTH];
} build_state;

typedef struct build_run {
    cubelet *c;
    cl_build *b;
    cl_template *base, sandbox_tpl;
    cl_slot *slot; /* the build sandbox, once a step has to run */
    char start_layers[8192];
    char step[12];  /* the step under way, for its log lines */
    char home[512]; /* USER: the user's home, read from the step's output */
} build_run;

bool cl_valid_id(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max || s[0] == '.' || s[0] == '-') return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_' || *s == '.'))
            return false;
    return true;
}

static void blog(cl_build *b, cubelet *c, const char *level, const char *step, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void blog(cl_build *b, cubelet *c, const char *level, const char *step, const char *fmt, ...)
{
    char msg[4600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->builds_lock);
    if (b->nlogs < BUILD_LOGS_MAX) {
        if (b->nlogs == b->cap) {
            size_t nc = b->cap ? b->cap * 2 : 64;
            build_log *nl = realloc(b->logs, nc * sizeof(*nl));
            if (nl) {
                b->logs = nl;
                b->cap = nc;
            }
        }
        if (b->nlogs < b->cap) {
            build_log *l = &b->logs[b->nlogs];
            l->ts = cube_now_unix_ms();
            snprintf(l->level, sizeof(l->level), "%s", level);
            snprintf(l->step, sizeof(l->step), "%s", step ? step : "");
            l->msg = strdup(b->nlogs == BUILD_LOGS_MAX - 1 ? "(build log full: later lines dropped)" : msg);
            if (l->msg) b->nlogs++;
        }
    }
    pthread_mutex_unlock(&c->builds_lock);
}

static void set_state(cubelet *c, cl_build *b, const char *state)
{
    pthread_mutex_lock(&c->builds_lock);
    snprintf(b->state, sizeof(b->state), "%s", state);
    pthread_mutex_unlock(&c->builds_lock);
}

static void fail(build_run *r, const char *step, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(build_run *r, const char *step, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    blog(r->b, r->c, "error", step, "%s", msg);
    pthread_mutex_lock(&r->c->builds_lock);
    free(r->b->reason);
    r->b->reason = strdup(msg);
    snprintf(r->b->reason_step, sizeof(r->b->reason_step), "%s", step);
    pthread_mutex_unlock(&r->c->builds_lock);
}

static void free_build(cl_build *b)
{
    for (size_t i = 0; i < b->nlogs; i++) free(b->logs[i].msg);
    free(b->logs);
    free(b->reason);
    free(b->template_json);
    for (size_t i = 0; i < b->ntags; i++) free(b->tags[i]);
    free(b->tags);
    free(b);
}

/* ---- cache ---- */

static void hex(const unsigned char *k, char out[2 * SHA256_DIGEST_LENGTH + 1])
{
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) snprintf(out + 2 * i, 3, "%02x", k[i]);
}

/* A step's key: the key before it and what the step is (type, args, the files' hash). */
static void step_key(build_state *st, const cJSON *step)
{
    cJSON *k = cJSON_CreateObject();
    cJSON_AddItemToObject(k, "type", cJSON_Duplicate(cJSON_GetObjectItem(step, "type"), 1));
    cJSON_AddItemToObject(k, "args", cJSON_Duplicate(cJSON_GetObjectItem(step, "args"), 1));
    const cJSON *fh = cJSON_GetObjectItem(step, "filesHash");
    if (fh) cJSON_AddItemToObject(k, "filesHash", cJSON_Duplicate(fh, 1));
    char *text = cJSON_PrintUnformatted(k);
    cJSON_Delete(k);
    char h[2 * SHA256_DIGEST_LENGTH + 1], *in = NULL;
    hex(st->key, h);
    int n = asprintf(&in, "%s\n%s", h, text ? text : "");
    if (n > 0) SHA256((const unsigned char *)in, (size_t)n, st->key);
    free(in);
    free(text);
}

static int cache_load(cubelet *c, build_state *st)
{
    char h[2 * SHA256_DIGEST_LENGTH + 1], p[4400];
    hex(st->key, h);
    snprintf(p, sizeof(p), "%s/build-cache/keys/%s.json", c->cfg.data_dir, h);
    FILE *f = fopen(p, "re");
    if (!f) return -1;
    char *buf = malloc(1 << 16);
    size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (!buf) return -1;
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    const char *layers = cJSON_GetStringValue(cJSON_GetObjectItem(j, "layers"));
    const char *user = cJSON_GetStringValue(cJSON_GetObjectItem(j, "user"));
    const char *wd = cJSON_GetStringValue(cJSON_GetObjectItem(j, "workdir"));
    cJSON *env = cJSON_GetObjectItem(j, "env");
    int rc = -1;
    if (layers && user && wd && cJSON_IsObject(env)) {
        /* every layer still there (a cache whose files were removed is not a cache) */
        char copy[8192];
        snprintf(copy, sizeof(copy), "%s", layers);
        bool ok = true;
        for (char *save = NULL, *l = strtok_r(copy, ":", &save); l && ok; l = strtok_r(NULL, ":", &save))
            ok = access(l, F_OK) == 0;
        if (ok) {
            snprintf(st->layers, sizeof(st->layers), "%s", layers);
            snprintf(st->user, sizeof(st->user), "%s", user);
            snprintf(st->workdir, sizeof(st->workdir), "%s", wd);
            cJSON_Delete(st->env);
            st->env = cJSON_Duplicate(env, 1);
            st->workdir_set = cJSON_IsTrue(cJSON_GetObjectItem(j, "workdirSet"));
            rc = 0;
        }
    }
    cJSON_Delete(j);
    return rc;
}

static void cache_save(cubelet *c, const build_state *st, const char *build_id)
{
    char h[2 * SHA256_DIGEST_LENGTH + 1], p[4400], tmp[4500];
    hex(st->key, h);
    snprintf(p, sizeof(p), "%s/build-cache/keys/%s.json", c->cfg.data_dir, h);
    snprintf(tmp, sizeof(tmp), "%s.%s.tmp", p, build_id);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "layers", st->layers);
    cJSON_AddStringToObject(j, "user", st->user);
    cJSON_AddStringToObject(j, "workdir", st->workdir);
    cJSON_AddItemToObject(j, "env", cJSON_Duplicate(st->env, 1));
    cJSON_AddBoolToObject(j, "workdirSet", st->workdir_set);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    FILE *f = fopen(tmp, "we");
    bool ok = f && text && fputs(text, f) >= 0;
    if (f) ok = fclose(f) == 0 && ok;
    free(text);
    if (!ok || rename(tmp, p) < 0) unlink(tmp); /* a cache entry lost costs a rerun, nothing else */
}

/* ---- the build sandbox ---- */

static bool build_cancelled(void *arg)
{
    build_run *r = arg;
    pthread_mutex_lock(&r->c->lock);
    bool stop = r->c->stopping;
    pthread_mutex_unlock(&r->c->lock);
    return stop;
}

static int start_sandbox(build_run *r, const build_state *st, cube_err *err)
{
    r->sandbox_tpl = *r->base; /* the base, at the size the build asked for */
    r->sandbox_tpl.next = NULL;
    r->sandbox_tpl.cpus = r->b->cpus;
    r->sandbox_tpl.memory_mb = r->b->memory_mb;
    r->sandbox_tpl.start_cmd = r->sandbox_tpl.ready_cmd = NULL; /* the base's server is not the build's */
    if (r->b->disk_mb > r->sandbox_tpl.disk_mb) { /* the steps get the disk the template's sandboxes will */
        if (cl_disk_template(r->c, r->b->disk_mb, r->sandbox_tpl.disk_template,
                             sizeof(r->sandbox_tpl.disk_template), err) < 0)
            return cube_err_prefix(err, "the build sandbox's disk");
        r->sandbox_tpl.disk_mb = r->b->disk_mb;
    }
    snprintf(r->start_layers, sizeof(r->start_layers), "%s", st->layers);
    int64_t t0 = cube_now_mono_ms();
    if (cl_spawn_slot(r->c, &r->sandbox_tpl, st->layers, -1, NULL, &r->slot, err) < 0) {
        r->slot = NULL;
        return cube_err_prefix(err, "start the build sandbox");
    }
    blog(r->b, r->c, "info", "base", "Build sandbox started from '%s' in %lld ms", r->base->name,
         (long long)(cube_now_mono_ms() - t0));
    return 0;
}

/* The sandbox's writable layer so far becomes a layer of the cache; the state's layers stack it on the
 * layers the sandbox started from. */
static int snapshot_layer(build_run *r, build_state *st, int step, cube_err *err)
{
    char dir[4400];
    snprintf(dir, sizeof(dir), "%s/build-cache/layers/%s-%d", r->c->cfg.data_dir, r->b->id, step);
    if (cl_room_for_copy(r->c, r->slot->control, "the build sandbox", err) < 0) return -1;
    Cube__HvSnapshotRequest sr = CUBE__HV_SNAPSHOT_REQUEST__INIT;
    sr.dir = dir;
    ProtobufCMessage *resp = NULL;
    if (cube_rpc_call_once(r->slot->control, "/cube.Hypervisor/Snapshot", &sr.base,
                           &cube__hv_snapshot_response__descriptor, &resp, 600000, err) < 0)
        return cube_err_prefix(err, "snapshot the build sandbox");
    protobuf_c_message_free_unpacked(resp, NULL);
    chmod(dir, 0755);
    char layers[8192];
    int n = snprintf(layers, sizeof(layers), "%s%s%s", dir, *r->start_layers ? ":" : "", r->start_layers);
    if (n >= (int)sizeof(layers)) return cube_err_set(err, E2BIG, "too many layers");
    snprintf(st->layers, sizeof(st->layers), "%s", layers);
    return 0;
}

static void on_line(void *arg, const char *stream, const char *line)
{
    build_run *r = arg;
    if (strncmp(line, HOME_MARK, strlen(HOME_MARK)) == 0) {
        snprintf(r->home, sizeof(r->home), "%s", line + strlen(HOME_MARK));
        return;
    }
    blog(r->b, r->c, strcmp(stream, "stderr") == 0 ? "warn" : "info", r->step, "%s", line);
}

/* Runs script in the build sandbox: as user, in cwd, with the state's env. */
static int run_script(build_run *r, const build_state *st, const char *user, const char *cwd,
                      const char *script, int *code, cube_err *err)
{
    build_cmd cmd = {.netns = r->slot->netns,
                     .user = user,
                     .cwd = cwd,
                     .env = st->env,
                     .script = script,
                     .timeout_ms = BUILD_STEP_MS,
                     .on_line = on_line,
                     .cancelled = build_cancelled,
                     .arg = r};
    return build_exec(&cmd, code, err);
}

/* 'text' quoted for sh. */
static char *sh_quote(const char *s)
{
    size_t n = 2;
    for (const char *p = s; *p; p++) n += *p == '\'' ? 4 : 1;
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    *o++ = '\'';
    for (const char *p = s; *p; p++) {
        if (*p == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else {
            *o++ = *p;
        }
    }
    *o++ = '\'';
    *o = '\0';
    return out;
}

/* A path of the step against the workdir. */
static void resolve(const build_state *st, const char *p, char *out, size_t cap)
{
    if (p[0] == '/')
        snprintf(out, cap, "%s", p);
    else
        snprintf(out, cap, "%s%s%s", st->workdir, st->workdir[strlen(st->workdir) - 1] == '/' ? "" : "/", p);
}

/* The COPY step's tar into the sandbox's /tmp, from the host: opened beneath the sandbox's root
 * (RESOLVE_IN_ROOT), so no link inside it leads the node's write elsewhere. */
static int place_tar(build_run *r, const char *hash, const char *name, cube_err *err)
{
    char src[4400], root[64];
    snprintf(src, sizeof(src), "%s/build-files/%s", r->c->cfg.data_dir, hash);
    snprintf(root, sizeof(root), "/proc/%d/root", r->slot->init);
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return cube_err_sys(err, errno, "the COPY step's files (%s) were not uploaded", hash);
    int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        close(in);
        return cube_err_sys(err, errno, "open the build sandbox's root");
    }
    struct open_how how = {.flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                           .mode = 0644,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    char path[128];
    snprintf(path, sizeof(path), "/tmp/%s", name);
    /* created as the sandbox's root (the node's root has no uid in the sandbox's user namespace, so its
     * filesystem could not own the file): the host uid its user namespace maps 0 to, a range of the
     * sandbox's own; fsuid and fsgid are this thread's own, and restored */
    uid_t sandbox_root;
    if (cube_userns_root_uid(r->slot->init, &sandbox_root, err) < 0) {
        close(in);
        close(rootfd);
        return -1;
    }
    setfsgid(sandbox_root);
    setfsuid(sandbox_root);
    int out = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
    int e = errno;
    setfsuid(0);
    setfsgid(0);
    close(rootfd);
    if (out < 0) {
        close(in);
        return cube_err_sys(err, e, "create %s in the build sandbox", path);
    }
    char buf[1 << 16];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n) {
            rc = cube_err_sys(err, errno ? errno : EIO, "write %s in the build sandbox", path);
            break;
        }
    if (n < 0) rc = cube_err_sys(err, errno, "read %s", src);
    close(in);
    if (close(out) < 0 && rc == 0) rc = cube_err_sys(err, errno, "write %s in the build sandbox", path);
    return rc;
}

static const char *arg_at(const cJSON *args, int i)
{
    const char *s = cJSON_GetStringValue(cJSON_GetArrayItem(args, i));
    return s ? s : "";
}

/* One step; its output goes to the log. 0, or -1 with the reason in err (a command's own failure too). */
static int run_step(build_run *r, build_state *st, const cJSON *step, int idx, cube_err *err)
{
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(step, "type"));
    const cJSON *args = cJSON_GetObjectItem(step, "args");
    int code = 0;
    char *script = NULL;
    int rc = 0;
    if (strcmp(type, "ENV") == 0) {
        for (int i = 0; i + 1 < cJSON_GetArraySize(args); i += 2) {
            cJSON_DeleteItemFromObjectCaseSensitive(st->env, arg_at(args, i));
            cJSON_AddStringToObject(st->env, arg_at(args, i), arg_at(args, i + 1));
        }
        return 0;
    }
    if (strcmp(type, "RUN") == 0) {
        const char *user = *arg_at(args, 1) ? arg_at(args, 1) : st->user;
        rc = run_script(r, st, user, st->workdir, arg_at(args, 0), &code, err);
        if (rc == 0 && code != 0) rc = cube_err_set(err, EIO, "RUN exited with code %d", code);
        return rc;
    }
    if (strcmp(type, "WORKDIR") == 0) {
        char dir[1024];
        resolve(st, arg_at(args, 0), dir, sizeof(dir));
        char *qd = sh_quote(dir), *qu = sh_quote(st->user);
        if (qd && qu &&
            asprintf(&script, "[ -d %s ] || { mkdir -p %s && chown %s: %s; }", qd, qd, qu, qd) < 0)
            script = NULL;
        free(qd);
        free(qu);
        if (!script) return cube_err_set(err, ENOMEM, "out of memory");
        rc = run_script(r, st, "root", "/", script, &code, err);
        free(script);
        if (rc == 0 && code != 0)
            return cube_err_set(err, EIO, "WORKDIR %s could not be made (exit %d)", dir, code);
        if (rc == 0) {
            snprintf(st->workdir, sizeof(st->workdir), "%s", dir);
            st->workdir_set = true;
        }
        return rc;
    }
    if (strcmp(type, "USER") == 0) {
        const char *name = arg_at(args, 0);
        char *qn = sh_quote(name);
        /* E2B creates a user that the image lacks */
        if (qn &&
            asprintf(&script,
                     "id -u %s >/dev/null 2>&1 || useradd -m -s /bin/bash %s || adduser -D %s || exit 1\n"
                     "echo " HOME_MARK "$(getent passwd %s | cut -d: -f6)",
                     qn, qn, qn, qn) < 0)
            script = NULL;
        free(qn);
        if (!script) return cube_err_set(err, ENOMEM, "out of memory");
        r->home[0] = '\0';
        rc = run_script(r, st, "root", "/", script, &code, err);
        free(script);
        if (rc == 0 && code != 0)
            return cube_err_set(err, EIO, "USER %s could not be made (exit %d)", name, code);
        if (rc == 0) {
            snprintf(st->user, sizeof(st->user), "%s", name);
            if (!st->workdir_set && *r->home) snprintf(st->workdir, sizeof(st->workdir), "%s", r->home);
        }
        return rc;
    }
    if (strcmp(type, "COPY") == 0) {
        const char *hash = cJSON_GetStringValue(cJSON_GetObjectItem(step, "filesHash"));
        char src[1024], dest[1024], tarname[128];
        snprintf(src, sizeof(src), "%s", arg_at(args, 0));
        while (strncmp(src, "./", 2) == 0) memmove(src, src + 2, strlen(src + 2) + 1);
        for (size_t n = strlen(src); n > 1 && src[n - 1] == '/'; n--) src[n - 1] = '\0';
        resolve(st, arg_at(args, 1), dest, sizeof(dest));
        const char *owner = *arg_at(args, 2) ? arg_at(args, 2) : st->user, *mode = arg_at(args, 3);
        snprintf(tarname, sizeof(tarname), ".cube-copy-%s-%d.tar", r->b->id, idx);
        if (!hash || place_tar(r, hash, tarname, err) < 0) {
            if (!hash) cube_err_set(err, EINVAL, "COPY without filesHash");
            return -1;
        }
        char *qs = sh_quote(src), *qdst = sh_quote(dest), *qo = sh_quote(owner), *qm = sh_quote(mode);
        /* like Docker's COPY: a directory's contents go into dest; a file goes into dest when dest is a
         * directory (or ends with '/'), else becomes dest; links are copied as links */
        if (qs && qdst && qo && qm &&
            asprintf(
                &script,
                "set -e\nsrc=%s; dest=%s; owner=%s; mode=%s; tar=/tmp/%s\n"
                "t=$(mktemp -d /tmp/.cube-copy.XXXXXX); tar -xf \"$tar\" -C \"$t\"; rm -f \"$tar\"\n"
                "cd \"$t\"; n=0\n"
                "for s in $src; do\n"
                "  [ -e \"$s\" ] || [ -L \"$s\" ] || continue; n=$((n+1))\n"
                "  if [ -d \"$s\" ] && [ ! -L \"$s\" ]; then mkdir -p \"$dest\"; cp -a \"$s\"/. \"$dest\"/; "
                "tgt=\"$dest\"\n"
                "  else case \"$dest\" in */) mkdir -p \"$dest\"; cp -a \"$s\" \"$dest\"; "
                "tgt=\"$dest$(basename \"$s\")\";;\n"
                "    *) if [ -d \"$dest\" ]; then cp -a \"$s\" \"$dest\"/; tgt=\"$dest/$(basename \"$s\")\"; "
                "else mkdir -p \"$(dirname \"$dest\")\"; cp -a \"$s\" \"$dest\"; tgt=\"$dest\"; fi;; esac; "
                "fi\n"
                "  chown -hR \"$owner\": \"$tgt\"\n"
                "  [ -z \"$mode\" ] || find \"$tgt\" -type f -exec chmod \"$mode\" {} +\n"
                "done\ncd /; rm -rf \"$t\"\n"
                "[ \"$n\" -gt 0 ] || { echo \"COPY: nothing in the uploaded files matches '$src'\" >&2; exit "
                "1; }\n",
                qs, qdst, qo, qm, tarname) < 0)
            script = NULL;
        free(qs);
        free(qdst);
        free(qo);
        free(qm);
        if (!script) return cube_err_set(err, ENOMEM, "out of memory");
        rc = run_script(r, st, "root", "/", script, &code, err);
        free(script);
        if (rc == 0 && code != 0) rc = cube_err_set(err, EIO, "COPY %s %s failed (exit %d)", src, dest, code);
        return rc;
    }
    return cube_err_set(err, EINVAL, "unknown step type '%s'", type);
}

static void step_label(const cJSON *step, char *out, size_t cap)
{
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(step, "type"));
    const cJSON *args = cJSON_GetObjectItem(step, "args"), *a;
    size_t n = (size_t)snprintf(out, cap, "%s", type ? type : "?");
    int i = 0;
    cJSON_ArrayForEach(a, args)
    {
        /* COPY's user and mode, RUN's user: shown only when given */
        if (n >= cap || (i >= 2 && !*(cJSON_GetStringValue(a) ? cJSON_GetStringValue(a) : ""))) break;
        if (i == 1 && strcmp(type, "RUN") == 0 && !*(cJSON_GetStringValue(a) ? cJSON_GetStringValue(a) : ""))
            break;
        n +=
            (size_t)snprintf(out + n, cap - n, " %s", cJSON_GetStringValue(a) ? cJSON_GetStringValue(a) : "");
        i++;
    }
}

/* <data>/templates/<name>/<build>/config.json, then its tags (current -> <build> for the default) moved to
 * it, each atomically. */
static int publish(build_run *r, const build_state *st, const char *start, const char *ready, cube_err *err)
{
    cubelet *c = r->c;
    char dir[4400], cfgp[4500];
    snprintf(dir, sizeof(dir), "%s/templates/%s", c->cfg.data_dir, r->b->template_id);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", dir);
    snprintf(dir, sizeof(dir), "%s/templates/%s/%s", c->cfg.data_dir, r->b->template_id, r->b->id);
    if (mkdir(dir, 0755) < 0) return cube_err_sys(err, errno, "mkdir %s", dir);
    snprintf(cfgp, sizeof(cfgp), "%s/config.json", dir);
    cube_tpl_config cfg;
    cube_tpl_config_init(&cfg);
    snprintf(cfg.name, sizeof(cfg.name), "%s", r->b->template_id);
    snprintf(cfg.id, sizeof(cfg.id), "%s", r->b->id);
    snprintf(cfg.from_template, sizeof(cfg.from_template), "%s", r->base->name);
    snprintf(cfg.from_build, sizeof(cfg.from_build), "%s", r->base->build_id);
    cfg.created_at_ms = cube_now_unix_ms();
    snprintf(cfg.rootfs, sizeof(cfg.rootfs), "%s", r->base->rootfs);
    snprintf(cfg.layers, sizeof(cfg.layers), "%s", st->layers);
    snprintf(cfg.user, sizeof(cfg.user), "%s", st->user);
    snprintf(cfg.workdir, sizeof(cfg.workdir), "%s", st->workdir);
    cfg.env_json = cJSON_PrintUnformatted(st->env);
    cfg.uid_base = r->base->uid_base;
    cfg.cpu = r->b->cpus;
    cfg.memory_mb = r->b->memory_mb;
    /* the disk asked for, else the base's own when it has one larger than the node's */
    cfg.disk_mb = r->b->disk_mb > 0 ? r->b->disk_mb : *r->base->disk_template ? r->base->disk_mb : 0;
    cfg.start_cmd = start && *start ? strdup(start) : NULL;
    cfg.ready_cmd = start && *start && ready && *ready ? strdup(ready) : NULL;
    int rc = cube_tpl_config_write(cfgp, &cfg, err);
    cube_tpl_config_free(&cfg);
    if (rc < 0) return -1;
    return cl_tags_link(c, r->b->template_id, r->b->id, r->b->tags, r->b->ntags, true, err);
}

static const char *base_name(const cJSON *t, char *buf, size_t cap)
{
    const char *from = cJSON_GetStringValue(cJSON_GetObjectItem(t, "fromTemplate"));
    if (from) {
        snprintf(buf, cap, "%s", from);
        char *colon = strchr(buf, ':'); /* name:tag is that tag's build; name:default is name's */
        if (colon && strcmp(colon + 1, "default") == 0) *colon = '\0';
        return buf;
    }
    /* fromBaseImage(): E2B's base image is cube's base template */
    const char *img = cJSON_GetStringValue(cJSON_GetObjectItem(t, "fromImage"));
    if (img && (strcmp(img, "e2bdev/base") == 0 || strcmp(img, "e2bdev/base:latest") == 0)) return "base";
    return NULL;
}

static bool pull_cancelled(void *arg)
{
    return build_cancelled(arg);
}

static void pull_log(void *arg, const char *line)
{
    build_run *r = arg;
    blog(r->b, r->c, "info", "base", "%s", line);
}

/* cube-template (beside cube-hypervisor) makes the template from the pulled layout; its words go to the log.
 */
static int import_image(build_run *r, const char *name, const char *layout, cube_err *err)
{
    char tool[4200], uid[16];
    snprintf(tool, sizeof(tool), "%s", r->c->cfg.hypervisor_bin);
    char *slash = strrchr(tool, '/');
    size_t at = slash ? (size_t)(slash + 1 - tool) : 0;
    snprintf(tool + at, sizeof(tool) - at, "cube-template");
    snprintf(uid, sizeof(uid), "%d", 100000);
    char *argv[] = {tool,    "import",       (char *)name, "--data", (char *)r->c->cfg.data_dir,
                    "--oci", (char *)layout, "--uid-base", uid,      NULL};
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) return cube_err_sys(err, errno, "pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    pid_t pid;
    int rc = posix_spawn(&pid, tool, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (rc != 0) {
        close(pipefd[0]);
        return cube_err_sys(err, rc, "run %s", tool);
    }
    FILE *f = fdopen(pipefd[0], "r");
    char line[1024];
    while (f && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        blog(r->b, r->c, "info", "base", "%s", line);
    }
    if (f)
        fclose(f);
    else
        close(pipefd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return cube_err_set(err, EIO, "importing the image failed");
    return 0;
}

/* fromImage: the image's manifest resolved to its digest; the template "image-<digest>" made from it the
 * first time (pulled, imported), found by later builds of any template from the same image. */
static cl_template *image_base(build_run *r, const cJSON *t, cube_err *err)
{
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(t, "fromImage"));
    const cJSON *creds = cJSON_GetObjectItem(t, "fromImageRegistry");
    reg_image img;
    if (reg_parse(name, &img, err) < 0) return NULL;
    reg_pull p = {.username = cJSON_GetStringValue(cJSON_GetObjectItem(creds, "username")),
                  .password = cJSON_GetStringValue(cJSON_GetObjectItem(creds, "password")),
                  .log = pull_log,
                  .cancelled = pull_cancelled,
                  .arg = r};
    char digest[80], tname[64], layout[4400];
    blog(r->b, r->c, "info", "base", "Resolving image %s (%s/%s:%s)", name, img.host, img.repo, img.ref);
    if (reg_resolve(&img, &p, digest, err) < 0) return NULL;
    snprintf(tname, sizeof(tname), "image-%.16s", digest + 7);
    cl_template *found = (cl_template *)cl_find_template(r->c, tname);
    if (found) {
        blog(r->b, r->c, "info", "base", "Image %s is %s: already on this node", name, digest);
        return found;
    }
    blog(r->b, r->c, "info", "base", "Pulling %s (%s)", name, digest);
    snprintf(layout, sizeof(layout), "%s/build-cache/pull-%s", r->c->cfg.data_dir, r->b->id);
    cube_rm_rf(layout);
    int rc = reg_fetch(&img, &p, digest, layout, err);
    if (rc == 0) rc = import_image(r, tname, layout, err);
    cube_rm_rf(layout);
    if (rc < 0) return NULL;
    if (cl_load_templates(r->c, err) < 0) return NULL;
    found = (cl_template *)cl_find_template(r->c, tname);
    if (!found) cube_err_set(err, EIO, "the image's template did not appear");
    return found;
}

static void run_build(build_run *r)
{
    cubelet *c = r->c;
    cl_build *b = r->b;
    int64_t t0 = cube_now_mono_ms();
    cJSON *t = cJSON_Parse(b->template_json);
    const cJSON *steps = cJSON_GetObjectItem(t, "steps");
    char bn[128];
    const char *bname = base_name(t, bn, sizeof(bn));
    build_state st = {0};
    cube_err err = {0};
    if (!bname) { /* an image from a registry */
        if (!(r->base = image_base(r, t, &err))) {
            fail(r, "base", "fromImage: %s", err.msg);
            goto out;
        }
    } else if (!(r->base = (cl_template *)cl_find_template(c, bname))) {
        fail(r, "base", "base template '%s' is not on this node", bname);
        goto out;
    }
    bool force = cJSON_IsTrue(cJSON_GetObjectItem(t, "force"));
    snprintf(st.layers, sizeof(st.layers), "%s", r->base->layers);
    snprintf(st.user, sizeof(st.user), "%s", r->base->user);
    snprintf(st.workdir, sizeof(st.workdir), "%s", r->base->workdir);
    st.env = r->base->env_json ? cJSON_Parse(r->base->env_json) : NULL;
    if (!cJSON_IsObject(st.env)) {
        cJSON_Delete(st.env);
        st.env = cJSON_CreateObject();
    }
    char *base_id = NULL; /* the base as built: a rebuilt base is a new start for the cache */
    int bl = asprintf(&base_id, "base\n%s\n%s\n%s\n%s", r->base->name, r->base->build_id, r->base->rootfs,
                      r->base->layers);
    if (bl > 0) SHA256((const unsigned char *)base_id, (size_t)bl, st.key);
    free(base_id);
    blog(b, c, "info", "base", "Building template '%s' (build %s) from '%s'%s", b->template_id, b->id,
         r->base->name, force ? ", without the cache" : "");
    int n = cJSON_GetArraySize(steps), cached = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *step = cJSON_GetArrayItem(steps, i);
        step_key(&st, step);
        char label[600];
        step_label(step, label, sizeof(label));
        snprintf(r->step, sizeof(r->step), "%d", i + 1);
        bool step_force = force || cJSON_IsTrue(cJSON_GetObjectItem(step, "force"));
        if (!r->slot && !step_force && cache_load(c, &st) == 0) {
            blog(b, c, "info", r->step, "CACHED [%d/%d] %s", i + 1, n, label);
            cached++;
            continue;
        }
        if (build_cancelled(r)) {
            fail(r, r->step, "the node stopped during the build");
            goto out;
        }
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(step, "type"));
        bool changes_files = strcmp(type, "ENV") != 0; /* ENV is the template's config alone */
        if (changes_files && !r->slot && start_sandbox(r, &st, &err) < 0) {
            fail(r, r->step, "%s", err.msg);
            goto out;
        }
        blog(b, c, "info", r->step, "[%d/%d] %s", i + 1, n, label);
        int64_t ts = cube_now_mono_ms();
        if (run_step(r, &st, step, i + 1, &err) < 0) {
            fail(r, r->step, "step %d (%s) failed: %s", i + 1, label, err.msg);
            goto out;
        }
        if (changes_files && snapshot_layer(r, &st, i + 1, &err) < 0) {
            fail(r, r->step, "step %d: %s", i + 1, err.msg);
            goto out;
        }
        cache_save(c, &st, b->id);
        blog(b, c, "debug", r->step, "step %d done in %.2f s", i + 1,
             (double)(cube_now_mono_ms() - ts) / 1e3);
    }
    const char *start = cJSON_GetStringValue(cJSON_GetObjectItem(t, "startCmd"));
    const char *ready = cJSON_GetStringValue(cJSON_GetObjectItem(t, "readyCmd"));
    if (start && *start) { /* shown to work once here; every sandbox of the template runs it */
        snprintf(r->step, sizeof(r->step), "finalize");
        if (!r->slot && start_sandbox(r, &st, &err) < 0) {
            fail(r, "finalize", "%s", err.msg);
            goto out;
        }
        cl_template run = r->sandbox_tpl;
        snprintf(run.user, sizeof(run.user), "%s", st.user);
        snprintf(run.workdir, sizeof(run.workdir), "%s", st.workdir);
        run.env_json = cJSON_PrintUnformatted(st.env);
        run.start_cmd = (char *)start;
        run.ready_cmd = ready && *ready ? (char *)ready : NULL;
        blog(b, c, "info", "finalize", "Start command: %s; waiting for: %s", start,
             run.ready_cmd ? run.ready_cmd : "(nothing)");
        int64_t ts = cube_now_mono_ms();
        int rc = cl_start_cmd(&run, r->slot->netns, on_line, build_cancelled, r, &err);
        free(run.env_json);
        if (rc < 0) {
            fail(r, "finalize", "%s", err.msg);
            goto out;
        }
        blog(b, c, "info", "finalize", "Start command ready in %.2f s",
             (double)(cube_now_mono_ms() - ts) / 1e3);
    }
    if (publish(r, &st, start, ready, &err) < 0) {
        fail(r, "finalize", "%s", err.msg);
        goto out;
    }
    blog(b, c, "info", "finalize",
         "Template '%s' built in %.2f s (%d of %d steps cached); user %s, workdir %s", b->template_id,
         (double)(cube_now_mono_ms() - t0) / 1e3, cached, n, st.user, st.workdir);
    cl_send_heartbeat(c); /* ready: every master knows the template, a create from it can follow at once */
    cube_log_info("template built", "template=%s build=%s steps=%d cached=%d ms=%lld", b->template_id, b->id,
                  n, cached, (long long)(cube_now_mono_ms() - t0));
    set_state(c, b, "ready");
out:
    if (strcmp(b->state, "ready") != 0) {
        set_state(c, b, "error");
        cube_log_warn("template build failed", "template=%s build=%s reason=\"%s\"", b->template_id, b->id,
                      b->reason ? b->reason : "");
    }
    if (r->slot) cl_destroy_slot(c, r->slot);
    cJSON_Delete(st.env);
    cJSON_Delete(t);
}

static void *build_thread(void *arg)
{
    build_run *r = arg;
    cubelet *c = r->c;
    pthread_mutex_lock(&c->builds_lock);
    while (c->builds_active >= BUILDS_AT_ONCE && !c->stopping)
        pthread_cond_wait(&c->builds_changed, &c->builds_lock);
    c->builds_active++;
    snprintf(r->b->state, sizeof(r->b->state), "building");
    pthread_mutex_unlock(&c->builds_lock);
    run_build(r);
    pthread_mutex_lock(&c->builds_lock);
    c->builds_active--;
    c->builds_running--;
    pthread_cond_broadcast(&c->builds_changed);
    pthread_mutex_unlock(&c->builds_lock);
    free(r);
    return NULL;
}

/* ---- RPCs ---- */

void cl_builds_init(cubelet *c)
{
    curl_global_init(CURL_GLOBAL_DEFAULT); /* once, while the process has one thread */
    pthread_mutex_init(&c->builds_lock, NULL);
    pthread_cond_init(&c->builds_changed, NULL);
}

void cl_builds_stop(cubelet *c)
{
    pthread_mutex_lock(&c->builds_lock);
    pthread_cond_broadcast(&c->builds_changed); /* waiting builds see stopping */
    while (c->builds_running > 0) pthread_cond_wait(&c->builds_changed, &c->builds_lock);
    cl_build *all = c->builds;
    c->builds = NULL;
    pthread_mutex_unlock(&c->builds_lock);
    while (all) {
        cl_build *n = all->next;
        free_build(all);
        all = n;
    }
}

/* Validates what the build will read, so that a malformed template is the caller's error (EINVAL), not the
 * build's. */
static int check_template(const cJSON *t, cube_err *err)
{
    if (!cJSON_IsObject(t)) return cube_err_set(err, EINVAL, "template: not a JSON object");
    char bn[128];
    if (!base_name(t, bn, sizeof(bn))) {
        const char *img = cJSON_GetStringValue(cJSON_GetObjectItem(t, "fromImage"));
        reg_image ri;
        if (!img) return cube_err_set(err, EINVAL, "fromTemplate or fromImage is required");
        if (reg_parse(img, &ri, err) < 0) return -1;
        const cJSON *reg = cJSON_GetObjectItem(t, "fromImageRegistry");
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(reg, "type"));
        if (reg && !cJSON_IsNull(reg) && (!type || strcmp(type, "registry") != 0))
            return cube_err_set(err, EINVAL,
                                "fromImageRegistry.type: only 'registry' (username and password) on "
                                "cube; AWS and GCP registries are not supported yet");
        if (reg && !cJSON_IsNull(reg) &&
            (!cJSON_GetStringValue(cJSON_GetObjectItem(reg, "username")) ||
             !cJSON_GetStringValue(cJSON_GetObjectItem(reg, "password"))))
            return cube_err_set(err, EINVAL, "fromImageRegistry: username and password are required");
    }
    const cJSON *steps = cJSON_GetObjectItem(t, "steps"), *s;
    if (steps && !cJSON_IsArray(steps)) return cube_err_set(err, EINVAL, "steps: not an array");
    int i = 0;
    cJSON_ArrayForEach(s, steps)
    {
        i++;
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(s, "type"));
        const cJSON *args = cJSON_GetObjectItem(s, "args"), *a;
        if (!type || (strcmp(type, "RUN") && strcmp(type, "COPY") && strcmp(type, "ENV") &&
                      strcmp(type, "WORKDIR") && strcmp(type, "USER")))
            return cube_err_set(err, EINVAL, "steps[%d].type: one of RUN, COPY, ENV, WORKDIR, USER", i - 1);
        if (!cJSON_IsArray(args)) return cube_err_set(err, EINVAL, "steps[%d].args: not an array", i - 1);
        cJSON_ArrayForEach(a, args) if (!cJSON_IsString(a)) return cube_err_set(
            err, EINVAL, "steps[%d].args: strings only", i - 1);
        int n = cJSON_GetArraySize(args);
        const char *first = arg_at(args, 0);
        if ((strcmp(type, "ENV") == 0 && (n == 0 || n % 2)) || (strcmp(type, "COPY") == 0 && n < 2) ||
            (strcmp(type, "ENV") != 0 && !*first))
            return cube_err_set(err, EINVAL, "steps[%d].args: wrong arguments for %s", i - 1, type);
        if (strcmp(type, "USER") == 0 && !cl_valid_id(first, 32))
            return cube_err_set(err, EINVAL, "steps[%d].args: bad user name '%s'", i - 1, first);
        if (strcmp(type, "COPY") == 0 &&
            !cl_valid_id(cJSON_GetStringValue(cJSON_GetObjectItem(s, "filesHash")), 128))
            return cube_err_set(err, EINVAL, "steps[%d].filesHash: required for COPY", i - 1);
        if (strcmp(type, "COPY") == 0 && (strstr(first, "..") || first[0] == '/'))
            return cube_err_set(err, EINVAL,
                                "steps[%d].args: COPY's source must be relative, inside the context", i - 1);
    }
    const cJSON *start = cJSON_GetObjectItem(t, "startCmd"), *ready = cJSON_GetObjectItem(t, "readyCmd");
    if (start && !cJSON_IsNull(start) && !cJSON_IsString(start))
        return cube_err_set(err, EINVAL, "startCmd: a string");
    if (ready && !cJSON_IsNull(ready) && !cJSON_IsString(ready))
        return cube_err_set(err, EINVAL, "readyCmd: a string");
    if (cJSON_IsString(ready) && *ready->valuestring && !(cJSON_IsString(start) && *start->valuestring))
        return cube_err_set(err, EINVAL, "readyCmd: given without a startCmd");
    return 0;
}

int cl_start_build(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    cubelet *c = svc;
    const Cube__BuildStartRequest *req = reqp;
    if (!cl_valid_id(req->build_id, 63)) return cube_err_set(err, EINVAL, "bad build id");
    if (!cl_valid_id(req->template_id, 63)) return cube_err_set(err, EINVAL, "bad template id");
    cJSON *t = cJSON_Parse(req->template_json ? req->template_json : "");
    int rc = check_template(t, err);
    char bn[128];
    const char *base = rc == 0 ? base_name(t, bn, sizeof(bn)) : NULL;
    if (base && !cl_find_template(c, base))
        rc = cube_err_set(err, EINVAL, "fromTemplate: template '%s' is not on the node that builds", base);
    cJSON_Delete(t);
    if (rc < 0) return -1;
    char d[4400];
    const char *dirs[] = {"build-cache", "build-cache/keys", "build-cache/layers", "build-files",
                          "templates"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        snprintf(d, sizeof(d), "%s/%s", c->cfg.data_dir, dirs[i]);
        if (mkdir(d, 0755) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", d);
    }
    cl_build *b = calloc(1, sizeof(*b));
    build_run *r = calloc(1, sizeof(*r));
    if (!b || !r || !(b->template_json = strdup(req->template_json))) {
        if (b) free_build(b);
        free(r);
        return cube_err_set(err, ENOMEM, "out of memory");
    }
    snprintf(b->id, sizeof(b->id), "%s", req->build_id);
    snprintf(b->template_id, sizeof(b->template_id), "%s", req->template_id);
    snprintf(b->state, sizeof(b->state), "waiting");
    b->cpus =
        req->resources && req->resources->cpu_count ? (int)req->resources->cpu_count : TEMPLATE_CPUS_DEFAULT;
    b->memory_mb = req->resources && req->resources->memory_mb ? (int)req->resources->memory_mb
                                                               : TEMPLATE_MEMORY_MB_DEFAULT;
    b->disk_mb =
        req->resources && req->resources->disk_mb <= TEMPLATE_DISK_MB_MAX ? (int)req->resources->disk_mb : 0;
    if (req->n_tags > 64 || !(b->tags = calloc(req->n_tags + 1, sizeof(*b->tags)))) {
        free_build(b);
        free(r);
        return cube_err_set(err, EINVAL, "tags: at most 64");
    }
    for (size_t i = 0; i < req->n_tags; i++) {
        if (!cl_valid_id(req->tags[i], 63) || !(b->tags[b->ntags++] = strdup(req->tags[i]))) {
            free_build(b);
            free(r);
            return cube_err_set(err, EINVAL, "tags: '%s' is not 1-63 characters of [a-z0-9._-]",
                                req->tags[i]);
        }
    }
    r->c = c;
    r->b = b;
    pthread_mutex_lock(&c->builds_lock);
    for (cl_build *x = c->builds; x; x = x->next)
        if (strcmp(x->id, b->id) == 0) {
            pthread_mutex_unlock(&c->builds_lock);
            free_build(b);
            free(r);
            return cube_err_set(err, EEXIST, "build '%s' was started already", req->build_id);
        }
    /* finished builds past BUILDS_KEPT go (their templates stay) */
    int kept = 0;
    for (cl_build **pp = &c->builds; *pp;) {
        cl_build *x = *pp;
        bool done = strcmp(x->state, "ready") == 0 || strcmp(x->state, "error") == 0;
        if (done && ++kept > BUILDS_KEPT) {
            *pp = x->next;
            free_build(x);
        } else {
            pp = &x->next;
        }
    }
    b->next = c->builds;
    c->builds = b;
    c->builds_running++;
    pthread_mutex_unlock(&c->builds_lock);
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &at, build_thread, r) != 0) {
        pthread_attr_destroy(&at);
        pthread_mutex_lock(&c->builds_lock);
        c->builds_running--;
        snprintf(b->state, sizeof(b->state), "error");
        b->reason = strdup("the node could not start a build thread");
        pthread_cond_broadcast(&c->builds_changed);
        pthread_mutex_unlock(&c->builds_lock);
        free(r);
        return cube_err_set(err, EAGAIN, "the node could not start a build thread");
    }
    pthread_attr_destroy(&at);
    cube_log_info("template build started", "template=%s build=%s", b->template_id, b->id);
    return 0;
}

int cl_build_status(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    cubelet *c = svc;
    const Cube__BuildStatusRequest *req = reqp;
    Cube__BuildStatus *out = respp;
    pthread_mutex_lock(&c->builds_lock);
    cl_build *b = c->builds;
    while (b && strcmp(b->id, req->build_id ? req->build_id : "") != 0) b = b->next;
    if (!b) {
        pthread_mutex_unlock(&c->builds_lock);
        return cube_err_set(err, ENOENT, "build '%s' is not on this node (it may have restarted)",
                            req->build_id ? req->build_id : "");
    }
    out->state = cube_rpc_strdup(ctx, b->state);
    out->logs_total = (uint32_t)b->nlogs;
    size_t from = req->logs_offset < b->nlogs ? req->logs_offset : b->nlogs;
    size_t n = b->nlogs - from > STATUS_LOGS_MAX ? STATUS_LOGS_MAX : b->nlogs - from;
    out->logs = cube_rpc_alloc(ctx, (n ? n : 1) * sizeof(*out->logs));
    for (size_t i = 0; i < n; i++) {
        const build_log *l = &b->logs[from + i];
        Cube__BuildLogEntry *e = cube_rpc_alloc(ctx, sizeof(*e));
        cube__build_log_entry__init(e);
        e->timestamp_ms = l->ts;
        e->level = cube_rpc_strdup(ctx, l->level);
        e->message = cube_rpc_strdup(ctx, l->msg);
        e->step = cube_rpc_strdup(ctx, l->step);
        out->logs[out->n_logs++] = e;
    }
    if (b->reason) out->reason = cube_rpc_strdup(ctx, b->reason);
    if (*b->reason_step) out->reason_step = cube_rpc_strdup(ctx, b->reason_step);
    pthread_mutex_unlock(&c->builds_lock);
    return 0;
}

int cl_get_build_file(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    cubelet *c = svc;
    const Cube__BuildFileRef *req = reqp;
    Cube__BuildFileState *out = respp;
    if (!cl_valid_id(req->hash, 128)) return cube_err_set(err, EINVAL, "bad files hash");
    char p[4400];
    snprintf(p, sizeof(p), "%s/build-files/%s", c->cfg.data_dir, req->hash);
    out->present = access(p, F_OK) == 0;
    return 0;
}

/* Chunks in order: offset 0 starts the file over; the last one publishes it under its hash. */
int cl_put_build_file(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    cubelet *c = svc;
    const Cube__BuildFileChunk *req = reqp;
    if (!cl_valid_id(req->hash, 128)) return cube_err_set(err, EINVAL, "bad files hash");
    if (req->offset + req->data.len > BUILD_FILE_MAX)
        return cube_err_set(err, EFBIG, "files for one COPY step may be at most %llu MiB",
                            (unsigned long long)(BUILD_FILE_MAX >> 20));
    char dir[4200], part[4400], final[4400];
    snprintf(dir, sizeof(dir), "%s/build-files", c->cfg.data_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", dir);
    snprintf(part, sizeof(part), "%s/.%s.part", dir, req->hash);
    snprintf(final, sizeof(final), "%s/%s", dir, req->hash);
    int fd = open(part, O_WRONLY | O_CREAT | O_CLOEXEC | (req->offset == 0 ? O_TRUNC : 0), 0600);
    if (fd < 0) return cube_err_sys(err, errno, "open %s", part);
    struct stat sb;
    int rc = 0;
    if (fstat(fd, &sb) < 0 || (uint64_t)sb.st_size != req->offset)
        rc = cube_err_set(err, EINVAL, "chunk at %llu does not follow the %lld bytes received",
                          (unsigned long long)req->offset, (long long)sb.st_size);
    else if (req->data.len &&
             pwrite(fd, req->data.data, req->data.len, (off_t)req->offset) != (ssize_t)req->data.len)
        rc = cube_err_sys(err, errno ? errno : ENOSPC, "write %s", part);
    if (close(fd) < 0 && rc == 0) rc = cube_err_sys(err, errno, "write %s", part);
    if (rc == 0 && req->last && rename(part, final) < 0) rc = cube_err_sys(err, errno, "publish %s", final);
    return rc;
}
