/* The agent's shared state: what /init set (env vars, access token, default user and workdir), the process
 * table and the filesystem watchers. Handlers on many connection threads read it; `lock` guards the /init
 * part. */
#ifndef CUBE_AGENT_AGENT_H
#define CUBE_AGENT_AGENT_H

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "envd_version.h"
#include "err.h"
#include "http.h"
#include "proc.h"
#include "users.h"

#define ENVD_VERSION CUBE_ENVD_VERSION

typedef struct watch_table watch_table;

typedef struct agent {
    pthread_mutex_t lock;
    cJSON *env_vars;    /* object: name -> value, from /init */
    char *access_token; /* NULL: no token required */
    char *default_user; /* "root" unless /init says otherwise */
    char *default_workdir;
    proc_table *procs;
    watch_table *watches;
    int64_t started_ms;
} agent;

typedef users_entry agent_user;

int agent_init(agent *a, const char *default_user, cube_err *err);

/* The user a request acts as: Authorization "Basic base64(user:)" or the default user. EINVAL when unknown.
 */
int agent_request_user(agent *a, http_req *req, agent_user *u, cube_err *err);
int agent_lookup_user(const char *name, agent_user *u, cube_err *err);
/* Absolute path for a request path: relative paths are taken from the user's home. EINVAL when empty. */
int agent_resolve_path(const agent_user *u, const char *path, char *out, size_t cap, cube_err *err);
/* True when the request carries the access token /init set (or none was set). */
int agent_token_ok(agent *a, http_req *req);
int agent_token_ok_locked(agent *a, http_req *req); /* a->lock held */

/* Each file operation of a request runs with the user's filesystem identity (per thread), so ownership and
 * permissions are the user's as in an E2B sandbox. Returns the previous ids for agent_fs_restore. */
void agent_fs_become(const agent_user *u, uid_t *old_uid, gid_t *old_gid);
void agent_fs_restore(uid_t old_uid, gid_t old_gid);

/* Route tables of the two servers. */
extern const http_route envd_routes[];
extern const http_route interp_routes[];

/* envd services, in their own files. */
void envd_process_start(agent *a, http_req *req);
void envd_process_connect(agent *a, http_req *req);
void envd_process_unary(agent *a, http_req *req);
void envd_fs_unary(agent *a, http_req *req);
void envd_fs_watch(agent *a, http_req *req);
watch_table *watch_table_new(void);

#endif
