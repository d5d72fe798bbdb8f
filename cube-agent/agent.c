#include "agent.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>

#include "connect.h"
#include "timeutil.h"

int agent_init(agent *a, const char *default_user, cube_err *err)
{
    memset(a, 0, sizeof(*a));
    pthread_mutex_init(&a->lock, NULL);
    a->env_vars = cJSON_CreateObject();
    a->default_user = strdup(default_user ? default_user : "root");
    a->procs = proc_table_new();
    a->watches = watch_table_new();
    a->started_ms = cube_now_unix_ms();
    if (!a->env_vars || !a->default_user || !a->procs || !a->watches)
        return cube_err_set(err, ENOMEM, "agent: out of memory");
    return 0;
}

int agent_lookup_user(const char *name, agent_user *u, cube_err *err)
{
    if (users_by_name(USERS_PASSWD, name, u) < 0)
        return cube_err_set(err, EINVAL, "user '%s' does not exist in the sandbox", name ? name : "");
    return 0;
}

int agent_request_user(agent *a, http_req *req, agent_user *u, cube_err *err)
{
    const char *auth = http_header(req, "Authorization");
    char name[64] = "";
    if (auth && strncmp(auth, "Basic ", 6) == 0) {
        size_t len;
        unsigned char *dec = b64_decode(auth + 6, &len);
        if (!dec) return cube_err_set(err, EINVAL, "malformed Authorization header");
        char *colon = memchr(dec, ':', len);
        size_t nl = colon ? (size_t)(colon - (char *)dec) : len;
        if (nl >= sizeof(name)) nl = sizeof(name) - 1;
        memcpy(name, dec, nl);
        name[nl] = '\0';
        free(dec);
    }
    if (!*name) {
        pthread_mutex_lock(&a->lock);
        snprintf(name, sizeof(name), "%s", a->default_user);
        pthread_mutex_unlock(&a->lock);
    }
    return agent_lookup_user(name, u, err);
}

int agent_resolve_path(const agent_user *u, const char *path, char *out, size_t cap, cube_err *err)
{
    if (!path || !*path) return cube_err_set(err, EINVAL, "path is required");
    int n;
    if (path[0] == '/')
        n = snprintf(out, cap, "%s", path);
    else if (path[0] == '~' && (path[1] == '/' || path[1] == '\0'))
        n = snprintf(out, cap, "%s%s", u->home, path + 1);
    else
        n = snprintf(out, cap, "%s/%s", strcmp(u->home, "/") == 0 ? "" : u->home, path);
    if (n < 0 || (size_t)n >= cap) return cube_err_set(err, ENAMETOOLONG, "path too long");
    return 0;
}

int agent_token_ok_locked(agent *a, http_req *req)
{
    if (!a->access_token) return 1;
    const char *t = http_header(req, "X-Access-Token");
    return t && strcmp(t, a->access_token) == 0;
}

int agent_token_ok(agent *a, http_req *req)
{
    pthread_mutex_lock(&a->lock);
    int ok = agent_token_ok_locked(a, req);
    pthread_mutex_unlock(&a->lock);
    return ok;
}

void agent_fs_become(const agent_user *u, uid_t *old_uid, gid_t *old_gid)
{
    /* setfsuid/setfsgid are per thread (raw syscalls, not broadcast by glibc): only this request's file
     * operations change identity. Safe because the agent runs as root and restores before returning. */
    *old_gid = (gid_t)setfsgid(u->gid);
    *old_uid = (uid_t)setfsuid(u->uid);
}

void agent_fs_restore(uid_t old_uid, gid_t old_gid)
{
    setfsuid(old_uid);
    setfsgid(old_gid);
}
