/* filesystem.Filesystem: Stat, MakeDir, Move, ListDir, Remove, CreateWatcher, GetWatcherEvents, RemoveWatcher
 * (unary) and WatchDir (stream). Every operation runs with the request user's filesystem identity. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envd_rpc.h"
#include "watch.h"

/* A ListDir answer is built whole in the agent, PID 1 of the sandbox, within the sandbox's memory: a deep one
 * of a big tree (files.list('/', {depth: 100}) with a node_modules or /sys in it) took hundreds of MB and
 * the OOM killer ended the agent and the sandbox with it. Past LIST_MAX_ENTRIES it is refused, by name. */
#define LIST_MAX_ENTRIES 50000

/* 0, or -1 with err: a directory that cannot be read (the first one), or more entries than LIST_MAX_ENTRIES
 */
static int list_dir(const char *abs, int depth, cJSON *out, int *n, cube_err *err)
{
    DIR *d = opendir(abs);
    if (!d) return *n ? 0 : cube_err_sys(err, errno, "read directory '%s'", abs); /* below: skipped */
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (++*n > LIST_MAX_ENTRIES) {
            rc = cube_err_set(err, EINVAL,
                              "more than %d entries: list a smaller depth or a directory further down",
                              LIST_MAX_ENTRIES);
            break;
        }
        char child[PATH_MAX];
        snprintf(child, sizeof(child), "%s%s%s", abs, strcmp(abs, "/") == 0 ? "" : "/", de->d_name);
        cube_err ignored = {0};
        cJSON *info = entry_info(child, &ignored);
        if (!info) continue; /* vanished meanwhile */
        cJSON_AddItemToArray(out, info);
        struct stat st;
        if (depth > 1 && lstat(child, &st) == 0 && S_ISDIR(st.st_mode))
            rc = list_dir(child, depth - 1, out, n, err);
    }
    closedir(d);
    return rc;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

static int make_dirs(char *path, cube_err *err)
{
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return cube_err_set(err, EEXIST, "directory '%s' already exists", path);
        return cube_err_set(err, EEXIST, "path '%s' already exists and is not a directory", path);
    }
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        int rc = mkdir(path, 0755);
        int e = errno;
        *p = c;
        if (rc < 0 && e != EEXIST) return cube_err_sys(err, e, "create directory '%s'", path);
        if (c == '\0') break;
    }
    return 0;
}

static int parents_of(const char *path, cube_err *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = '\0';
    struct stat st;
    if (stat(dir, &st) == 0) return 0;
    return make_dirs(dir, err);
}

static int get_watcher_events(watcher *w, void *arg)
{
    watcher_read(w, 0, arg);
    return 0;
}

/* One unary call with the user's fs identity already in place. Returns 0 with *out, or -1 with err. */
static int fs_call(agent *a, const char *method, const cJSON *in, const agent_user *u, cJSON **out,
                   cube_err *err)
{
    char path[PATH_MAX], dest[PATH_MAX];
    const char *p = pj_string(in, "path", NULL);
    *out = cJSON_CreateObject();
    if (strcmp(method, "Stat") == 0 || strcmp(method, "ListDir") == 0 || strcmp(method, "MakeDir") == 0 ||
        strcmp(method, "Remove") == 0 || strcmp(method, "CreateWatcher") == 0) {
        if (agent_resolve_path(u, p, path, sizeof(path), err) < 0) return -1;
    }
    if (strcmp(method, "Stat") == 0) {
        cJSON *info = entry_info(path, err);
        if (!info) return -1;
        cJSON_AddItemToObject(*out, "entry", info);
    } else if (strcmp(method, "ListDir") == 0) {
        int64_t depth = pj_int(in, "depth", NULL, 1);
        if (depth < 1) depth = 1;
        struct stat st;
        if (stat(path, &st) < 0) return cube_err_set(err, ENOENT, "path '%s' does not exist", path);
        if (!S_ISDIR(st.st_mode)) return cube_err_set(err, ENOTDIR, "path '%s' is not a directory", path);
        cJSON *entries = cJSON_AddArrayToObject(*out, "entries");
        int n = 0;
        if (list_dir(path, depth > 1 << 20 ? 1 << 20 : (int)depth, entries, &n, err) < 0) return -1;
    } else if (strcmp(method, "MakeDir") == 0) {
        if (make_dirs(path, err) < 0) return -1;
        cJSON *info = entry_info(path, err);
        if (!info) return -1;
        cJSON_AddItemToObject(*out, "entry", info);
    } else if (strcmp(method, "Move") == 0) {
        if (agent_resolve_path(u, pj_string(in, "source", NULL), path, sizeof(path), err) < 0 ||
            agent_resolve_path(u, pj_string(in, "destination", NULL), dest, sizeof(dest), err) < 0)
            return -1;
        struct stat st;
        if (lstat(path, &st) < 0) return cube_err_set(err, ENOENT, "path '%s' does not exist", path);
        if (parents_of(dest, err) < 0) return -1;
        if (rename(path, dest) < 0) return cube_err_sys(err, errno, "move '%s' to '%s'", path, dest);
        cJSON *info = entry_info(dest, err);
        if (!info) return -1;
        cJSON_AddItemToObject(*out, "entry", info);
    } else if (strcmp(method, "Remove") == 0) {
        struct stat st;
        if (lstat(path, &st) < 0) return cube_err_set(err, ENOENT, "path '%s' does not exist", path);
        if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS) < 0)
            return cube_err_sys(err, errno, "remove '%s'", path);
    } else if (strcmp(method, "CreateWatcher") == 0) {
        watcher *w = watcher_new(path, pj_bool(in, "recursive", NULL),
                                 pj_bool(in, "includeEntry", "include_entry"), err);
        if (!w) return -1;
        char id[40];
        if (watch_table_add(a->watches, w, id, sizeof(id)) < 0) {
            watcher_free(w);
            return cube_err_set(err, ENOMEM, "out of memory");
        }
        cJSON_AddStringToObject(*out, "watcherId", id);
    } else if (strcmp(method, "GetWatcherEvents") == 0) {
        const char *id = pj_string(in, "watcherId", "watcher_id");
        cJSON *events = cJSON_AddArrayToObject(*out, "events");
        if (!id || watch_table_with(a->watches, id, get_watcher_events, events) < 0)
            return cube_err_set(err, ENOENT, "watcher '%s' not found", id ? id : "");
    } else if (strcmp(method, "RemoveWatcher") == 0) {
        const char *id = pj_string(in, "watcherId", "watcher_id");
        if (!id || watch_table_remove(a->watches, id) < 0)
            return cube_err_set(err, ENOENT, "watcher '%s' not found", id ? id : "");
    } else {
        return cube_err_set(err, ENOSYS, "filesystem.Filesystem/%s is not implemented", method);
    }
    return 0;
}

void envd_fs_unary(agent *a, http_req *req)
{
    const char *method = strrchr(req->url, '/') + 1;
    cJSON *in;
    if (envd_rpc_begin(a, req, 0, &in) < 0) return;
    cube_err err = {0};
    agent_user u;
    cJSON *out = NULL;
    if (agent_request_user(a, req, &u, &err) < 0) {
        envd_rpc_error_err(req, 0, &err);
    } else {
        uid_t ou;
        gid_t og;
        agent_fs_become(&u, &ou, &og);
        int rc = fs_call(a, method, in, &u, &out, &err);
        agent_fs_restore(ou, og);
        if (rc < 0) {
            envd_rpc_error_err(req, 0, &err);
        } else {
            envd_rpc_reply(req, out); /* it takes the answer */
            out = NULL;
        }
    }
    cJSON_Delete(out);
    cJSON_Delete(in);
    /* a listing of tens of thousands of entries was freed in this thread's arena: its memory goes back to
     * the sandbox rather than staying with the agent (71 MB after one of 50,000) */
    if (strcmp(method, "ListDir") == 0) malloc_trim(0);
}

typedef struct watch_stream {
    watcher *w;
    int started;
    cJSON *pending; /* events read but not yet sent */
} watch_stream;

static int watch_next(void *ctx, int timeout_ms, char **json)
{
    watch_stream *ws = ctx;
    if (!ws->started) {
        ws->started = 1;
        *json = strdup("{\"start\":{}}");
        return 1;
    }
    if (cJSON_GetArraySize(ws->pending) == 0 && watcher_read(ws->w, timeout_ms, ws->pending) == 0) return 0;
    cJSON *ev = cJSON_DetachItemFromArray(ws->pending, 0);
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddItemToObject(msg, "filesystem", ev);
    *json = cJSON_PrintUnformatted(msg);
    cJSON_Delete(msg);
    return 1;
}

static void watch_free(void *ctx)
{
    watch_stream *ws = ctx;
    watcher_free(ws->w);
    cJSON_Delete(ws->pending);
    free(ws);
}

void envd_fs_watch(agent *a, http_req *req)
{
    cJSON *in;
    if (envd_rpc_begin(a, req, 1, &in) < 0) return;
    cube_err err = {0};
    agent_user u;
    char path[PATH_MAX];
    if (agent_request_user(a, req, &u, &err) < 0 ||
        agent_resolve_path(&u, pj_string(in, "path", NULL), path, sizeof(path), &err) < 0) {
        envd_rpc_error_err(req, 1, &err);
        cJSON_Delete(in);
        return;
    }
    uid_t ou;
    gid_t og;
    agent_fs_become(&u, &ou, &og);
    watcher *w =
        watcher_new(path, pj_bool(in, "recursive", NULL), pj_bool(in, "includeEntry", "include_entry"), &err);
    agent_fs_restore(ou, og);
    cJSON_Delete(in);
    watch_stream *ws = w ? calloc(1, sizeof(*ws)) : NULL;
    if (!ws) {
        watcher_free(w);
        envd_rpc_error_err(req, 1, &err);
        return;
    }
    ws->w = w;
    ws->pending = cJSON_CreateArray();
    envd_rpc_stream(req, (envd_stream){ws, watch_next, watch_free, "{\"keepalive\":{}}"});
}
