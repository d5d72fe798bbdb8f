#include "api.h"
#include "envd_version.h"
#include "api_internal.h"
#include "hash.h"
#include "console.h"
#include "network.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "metrics.h"
#include "hypervisor.pb-c.h"
#include "master.pb-c.h"
#include "timeutil.h"

static int call_masters(api *a, const char *method, const ProtobufCMessage *in,
                        const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out, int64_t timeout_ms,
                        cube_err *err);

#define MAX_TIMEOUT_S (24 * 3600)

void api_reply_err(http_req *req, const cube_err *err)
{
    unsigned st = (unsigned)cube_err_http_status(err);
    if (err->code == EAGAIN || err->code == EHOSTUNREACH) st = 503; /* no node can take it now: ServiceBusy */
    http_reply_error(req, st, "%s", err->msg);
}

int api_authenticate(api *a, http_req *req, char key_id[64])
{
    uint32_t max = 0;
    return api_authenticate_limited(a, req, key_id, &max);
}

/* X-API-KEY → the key's id through cube-master; replies 401 and returns -1 when it is missing or wrong. */
int api_authenticate_limited(api *a, http_req *req, char key_id[64], uint32_t *max_sandboxes)
{
    const char *key = http_header(req, "X-API-KEY");
    if (!key || !*key) {
        http_reply_error(req, 401, "missing X-API-KEY header");
        return -1;
    }
    size_t kl = strlen(key);
    api_auth_entry *slot = &a->auth[cube_fnv1a(key) % API_AUTH_SLOTS];
    int64_t now = cube_now_mono_ms();
    pthread_mutex_lock(&a->auth_lock);
    int hit = kl < sizeof(slot->key) && slot->expires_ms > now && strcmp(slot->key, key) == 0;
    if (hit) {
        snprintf(key_id, 64, "%s", slot->key_id);
        *max_sandboxes = slot->max_sandboxes;
    }
    pthread_mutex_unlock(&a->auth_lock);
    if (hit) return 0;
    Cube__AuthKeyRequest in = CUBE__AUTH_KEY_REQUEST__INIT;
    in.key = (char *)key;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (call_masters(a, "/cube.Master/AuthKey", &in.base, &cube__auth_key_response__descriptor, &resp, 5000,
                     &err) < 0) {
        if (err.code == EKEYREJECTED)
            http_reply_error(req, 401, "Invalid API key");
        else
            api_reply_err(req, &err);
        return -1;
    }
    snprintf(key_id, 64, "%s", ((Cube__AuthKeyResponse *)resp)->key_id);
    *max_sandboxes = ((Cube__AuthKeyResponse *)resp)->max_sandboxes;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (kl < sizeof(slot->key)) {
        pthread_mutex_lock(&a->auth_lock);
        snprintf(slot->key, sizeof(slot->key), "%s", key);
        snprintf(slot->key_id, sizeof(slot->key_id), "%s", key_id);
        slot->max_sandboxes = *max_sandboxes;
        slot->expires_ms = now + API_AUTH_TTL_MS;
        pthread_mutex_unlock(&a->auth_lock);
    }
    return 0;
}

static int call_masters(api *a, const char *method, const ProtobufCMessage *in,
                        const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out, int64_t timeout_ms,
                        cube_err *err)
{
    cube_rpc_call_opts o = {.timeout_ms = timeout_ms};
    return cube_rpc_failover_call(&a->masters, method, in, rd, out, &o, err);
}

int api_master_call(api *a, const char *method, const ProtobufCMessage *in,
                    const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out, cube_err *err)
{
    return call_masters(a, method, in, rd, out, 90000, err);
}

void api_add_time(cJSON *o, const char *name, int64_t ms)
{
    char ts[CUBE_RFC3339_MAX];
    cube_rfc3339_format(ms, ts);
    cJSON_AddStringToObject(o, name, ts);
}

static cJSON *metadata_json(const Cube__Sandbox *sb)
{
    cJSON *md = cJSON_CreateObject();
    for (size_t i = 0; i < sb->n_metadata; i++)
        cJSON_AddStringToObject(md, sb->metadata[i]->key, sb->metadata[i]->value);
    return md;
}

/* E2B's Sandbox (create, connect, resume). */
static cJSON *sandbox_json(api *a, const Cube__Sandbox *sb)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "sandboxID", sb->sandbox_id);
    cJSON_AddStringToObject(o, "templateID", sb->template_id);
    cJSON_AddStringToObject(o, "alias", sb->template_id);
    cJSON_AddStringToObject(o, "clientID", sb->client_id && *sb->client_id ? sb->client_id : "cube");
    cJSON_AddStringToObject(o, "envdVersion",
                            sb->envd_version && *sb->envd_version ? sb->envd_version : CUBE_ENVD_VERSION);
    if (sb->envd_access_token && *sb->envd_access_token)
        cJSON_AddStringToObject(o, "envdAccessToken", sb->envd_access_token);
    if (sb->traffic_access_token && *sb->traffic_access_token)
        cJSON_AddStringToObject(o, "trafficAccessToken", sb->traffic_access_token);
    if (*a->domain) cJSON_AddStringToObject(o, "domain", a->domain);
    return o;
}

/* E2B's ListedSandbox, and SandboxDetail when detail is set. */
static cJSON *listed_json(api *a, const Cube__Sandbox *sb, int detail)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "sandboxID", sb->sandbox_id);
    cJSON_AddStringToObject(o, "templateID", sb->template_id);
    cJSON_AddStringToObject(o, "alias", sb->template_id);
    cJSON_AddStringToObject(o, "clientID", sb->client_id && *sb->client_id ? sb->client_id : "cube");
    api_add_time(o, "startedAt", sb->started_at_ms);
    api_add_time(o, "endAt", sb->end_at_ms);
    cJSON_AddNumberToObject(o, "cpuCount", sb->resources ? sb->resources->cpu_count : 2);
    cJSON_AddNumberToObject(o, "memoryMB", sb->resources ? (double)sb->resources->memory_mb : 512);
    cJSON_AddNumberToObject(o, "diskSizeMB", sb->resources ? (double)sb->resources->disk_mb : 1024);
    cJSON_AddStringToObject(o, "envdVersion",
                            sb->envd_version && *sb->envd_version ? sb->envd_version : CUBE_ENVD_VERSION);
    cJSON_AddItemToObject(o, "metadata", metadata_json(sb));
    if (sb->node_id && *sb->node_id) cJSON_AddStringToObject(o, "nodeID", sb->node_id); /* cube's own */
    cJSON_AddStringToObject(o, "state",
                            sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED ? "paused" : "running");
    cJSON *vm = cJSON_AddArrayToObject(o, "volumeMounts");
    for (size_t i = 0; i < sb->n_volume_mounts; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "name", sb->volume_mounts[i]->name);
        cJSON_AddStringToObject(m, "path", sb->volume_mounts[i]->path);
        cJSON_AddItemToArray(vm, m);
    }
    if (detail) {
        if (sb->envd_access_token && *sb->envd_access_token)
            cJSON_AddStringToObject(o, "envdAccessToken", sb->envd_access_token);
        if (*a->domain) cJSON_AddStringToObject(o, "domain", a->domain);
        cJSON_AddBoolToObject(o, "allowInternetAccess", sb->network ? sb->network->allow_internet_access : 1);
        cJSON_AddItemToObject(
            o, "network",
            api_network_json(sb->network, !(sb->traffic_access_token && *sb->traffic_access_token)));
        cJSON *lc = cJSON_AddObjectToObject(o, "lifecycle");
        cJSON_AddStringToObject(lc, "onTimeout", sb->auto_pause ? "pause" : "kill");
        cJSON_AddBoolToObject(lc, "autoResume", sb->auto_resume);
    }
    return o;
}

cJSON *api_parse_body(http_req *req, int allow_empty)
{
    cube_err err = {0};
    if (req->body_len == 0 && allow_empty) return cJSON_CreateObject();
    cJSON *j = cube_json_parse(req->body, req->body_len, &err);
    if (!j) {
        http_reply_error(req, 400, "%s", err.msg);
        return NULL;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        http_reply_error(req, 400, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

int api_to_entries(const cJSON *obj, const char *name, kv_pool *pool, size_t *n, cube_err *err)
{
    *n = 0;
    if (!obj) return 0;
    if (cube_json_check_string_map(obj, name, err) < 0) return -1;
    size_t cnt = (size_t)cJSON_GetArraySize(obj);
    pool->e = calloc(cnt ? cnt : 1, sizeof(*pool->e));
    pool->p = calloc(cnt ? cnt : 1, sizeof(*pool->p));
    if (!pool->e || !pool->p) return cube_err_set(err, ENOMEM, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        cube__create_sandbox_request__metadata_entry__init(&pool->e[*n]);
        pool->e[*n].key = it->string;
        pool->e[*n].value = it->valuestring;
        pool->p[*n] = &pool->e[*n];
        (*n)++;
    }
    return 0;
}

/* The kernel's limits on what a process starts with: one "NAME=value" at most 128 KiB (MAX_ARG_STRLEN),
 * all of them with the command's arguments a quarter of the stack limit (2 MiB by default). */
#define ENV_VAR_MAX   (128 * 1024 - 2)
#define ENV_TOTAL_MAX (1024 * 1024)

/* envVars every command in the sandbox starts with: a name no process could hold ("", one with '='), or more
 * than the kernel lets a process start with, would make every command fail ("Argument list too long"). */
static int check_env_vars(const cJSON *envs, cube_err *err)
{
    size_t total = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, envs)
    {
        size_t len = strlen(it->string) + 1 + strlen(it->valuestring);
        if (!*it->string || strchr(it->string, '='))
            return cube_err_set(err, EINVAL, "envVars: '%.64s' is not a variable name (empty, or has '=')",
                                it->string);
        if (len > ENV_VAR_MAX)
            return cube_err_set(err, EINVAL,
                                "envVars.%.64s: %zu bytes, more than a process may start with (%d)",
                                it->string, len, ENV_VAR_MAX);
        total += len + 1;
    }
    if (total > ENV_TOTAL_MAX)
        return cube_err_set(err, EINVAL, "envVars: %zu bytes in all, more than commands may start with (%d)",
                            total, ENV_TOTAL_MAX);
    return 0;
}

/* metadata is kept with the sandbox's record and comes back in every list of sandboxes: a careless client
 * putting megabytes in each (up to the 8 MiB body) made every list, of the API and of the console, carry
 * them all. 64 KiB is far more than labels need. */
#define METADATA_MAX (64 * 1024)
static int check_metadata(const cJSON *md, cube_err *err)
{
    size_t total = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, md)
    {
        if (!*it->string) return cube_err_set(err, EINVAL, "metadata: a key must not be empty");
        total += strlen(it->string) + strlen(it->valuestring);
    }
    if (total > METADATA_MAX)
        return cube_err_set(err, EINVAL, "metadata: %zu bytes of keys and values, more than %d", total,
                            METADATA_MAX);
    return 0;
}

static void create(api *a, http_req *req)
{
    char key_id[64];
    uint32_t key_max = 0;
    if (api_authenticate_limited(a, req, key_id, &key_max) < 0) return;
    cJSON *in = api_parse_body(req, 0);
    if (!in) return;
    cube_err err = {0};
    const char *tpl = NULL;
    int64_t timeout = 300;
    bool auto_pause = false, internet = true;
    const cJSON *md = NULL, *envs = NULL, *resume = NULL;
    bool auto_resume = false;
    kv_pool mdp = {0}, envp = {0};
    Cube__VolumeMount *vmounts = NULL, **vmptrs = NULL;
    Cube__CreateSandboxRequest r = CUBE__CREATE_SANDBOX_REQUEST__INIT;
    api_network net = {0};
    if (cube_json_get_string(in, "templateID", true, &tpl, &err) < 0 ||
        cube_json_get_int(in, "timeout", false, 0, MAX_TIMEOUT_S, &timeout, &err) < 0 ||
        cube_json_get_bool(in, "autoPause", false, &auto_pause, &err) < 0 ||
        cube_json_get_bool(in, "allow_internet_access", false, &internet, &err) < 0 ||
        cube_json_get_object(in, "metadata", false, &md, &err) < 0 ||
        cube_json_get_object(in, "envVars", false, &envs, &err) < 0 ||
        cube_json_get_object(in, "autoResume", false, &resume, &err) < 0 ||
        (resume && cube_json_get_bool(resume, "enabled", false, &auto_resume, &err) < 0) ||
        api_to_entries(md, "metadata", &mdp, &r.n_metadata, &err) < 0 ||
        api_to_entries(envs, "envVars", &envp, &r.n_env_vars, &err) < 0 ||
        (envs && check_env_vars(envs, &err) < 0) || (md && check_metadata(md, &err) < 0)) {
        http_reply_error(req, 400, "%s", err.msg);
        goto out;
    }
    if (!*tpl) {
        http_reply_error(req, 400, "templateID must not be empty");
        goto out;
    }
    r.template_id = (char *)tpl;
    r.timeout_s = timeout;
    r.auto_pause = auto_pause;
    r.auto_resume = auto_resume;
    const cJSON *vms = cJSON_GetObjectItemCaseSensitive(in, "volumeMounts");
    if (vms && !cJSON_IsNull(vms)) {
        if (!cJSON_IsArray(vms) || cJSON_GetArraySize(vms) > 16) {
            http_reply_error(req, 400, "volumeMounts must be an array of at most 16 {name, path}");
            goto out;
        }
        size_t nv = (size_t)cJSON_GetArraySize(vms);
        vmounts = calloc(nv ? nv : 1, sizeof(*vmounts));
        vmptrs = calloc(nv ? nv : 1, sizeof(*vmptrs));
        const cJSON *it;
        cJSON_ArrayForEach(it, vms)
        {
            const char *vn = NULL, *vp = NULL;
            if (cube_json_get_string(it, "name", true, &vn, &err) < 0 ||
                cube_json_get_string(it, "path", true, &vp, &err) < 0) {
                http_reply_error(req, 400, "volumeMounts: %s", err.msg);
                goto out;
            }
            cube__volume_mount__init(&vmounts[r.n_volume_mounts]);
            vmounts[r.n_volume_mounts].name = (char *)vn;
            vmounts[r.n_volume_mounts].path = (char *)vp;
            vmptrs[r.n_volume_mounts] = &vmounts[r.n_volume_mounts];
            r.n_volume_mounts++;
        }
        r.volume_mounts = vmptrs;
    }
    if (auto_resume && !auto_pause) {
        http_reply_error(req, 400, "autoResume needs autoPause (lifecycle onTimeout: pause)");
        goto out;
    }
    /* what cube cannot do is refused by name, never accepted and ignored */
    bool keep_memory = true;
    if (cube_json_get_bool(in, "autoPauseMemory", false, &keep_memory, &err) < 0) {
        http_reply_error(req, 400, "%s", err.msg);
        goto out;
    }
    if (!keep_memory) {
        http_reply_error(req, 400,
                         "autoPauseMemory: false (onTimeout keepMemory: false) is not supported: a "
                         "paused cube sandbox keeps its memory and processes");
        goto out;
    }
    const cJSON *mcp = cJSON_GetObjectItemCaseSensitive(in, "mcp");
    if (mcp && !cJSON_IsNull(mcp)) {
        http_reply_error(req, 400, "mcp is not supported: cube has no MCP gateway template");
        goto out;
    }
    r.metadata = (Cube__CreateSandboxRequest__MetadataEntry **)mdp.p;
    r.env_vars = (Cube__CreateSandboxRequest__EnvVarsEntry **)envp.p;
    if (api_network_parse(internet, cJSON_GetObjectItemCaseSensitive(in, "network"), &net, &err) < 0) {
        http_reply_error(req, 400, "%s", err.msg);
        goto out;
    }
    r.network = &net.policy;
    r.private_traffic = net.private_traffic;
    r.api_key_id = key_id;
    r.api_key_max_sandboxes = key_max;
    ProtobufCMessage *resp = NULL;
    if (api_master_call(a, "/cube.Master/CreateSandbox", &r.base, &cube__create_sandbox_response__descriptor,
                        &resp, &err) < 0) {
        api_reply_err(req, &err);
        goto out;
    }
    http_reply_cjson(req, 201, sandbox_json(a, ((Cube__CreateSandboxResponse *)resp)->sandbox));
    protobuf_c_message_free_unpacked(resp, NULL);
out:
    api_network_free(&net);
    free(vmounts);
    free(vmptrs);
    free(mdp.e);
    free(mdp.p);
    free(envp.e);
    free(envp.p);
    cJSON_Delete(in);
}

static Cube__Sandbox *get_one(api *a, const char *id, ProtobufCMessage **holder, cube_err *err)
{
    Cube__SandboxRef ref = CUBE__SANDBOX_REF__INIT;
    ref.sandbox_id = (char *)id;
    if (api_master_call(a, "/cube.Master/GetSandbox", &ref.base, &cube__get_sandbox_response__descriptor,
                        holder, err) < 0)
        return NULL;
    return ((Cube__GetSandboxResponse *)*holder)->sandbox;
}

static int url_decode(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = in; *p && o + 1 < cap; p++) {
        if (*p == '%' && p[1] && p[2]) {
            char hex[3] = {p[1], p[2], 0};
            char *end;
            long v = strtol(hex, &end, 16);
            if (*end) return -1;
            out[o++] = (char)v;
            p += 2;
        } else {
            out[o++] = *p == '+' ? ' ' : *p;
        }
    }
    out[o] = '\0';
    return 0;
}

int api_parse_metadata_filter(const char *q, char keys[][128], char values[][256], int max)
{
    char once[2048];
    if (url_decode(q, once, sizeof(once)) < 0) return -1;
    int n = 0;
    char *save = NULL;
    for (char *pair = strtok_r(once, "&", &save); pair; pair = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(pair, '=');
        if (!eq || n == max) return -1;
        *eq = '\0';
        if (url_decode(pair, keys[n], 128) < 0 || url_decode(eq + 1, values[n], 256) < 0) return -1;
        n++;
    }
    return n;
}

static void list(api *a, http_req *req, int v2)
{
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    Cube__ListSandboxesRequest r = CUBE__LIST_SANDBOXES_REQUEST__INIT;
    Cube__SandboxState states[4];
    const char *state = http_query(req, "state");
    if (state) {
        char buf[128];
        snprintf(buf, sizeof(buf), "%s", state);
        char *save = NULL;
        for (char *s = strtok_r(buf, ",", &save); s && r.n_states < 4; s = strtok_r(NULL, ",", &save)) {
            if (strcmp(s, "running") == 0)
                states[r.n_states++] = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
            else if (strcmp(s, "paused") == 0)
                states[r.n_states++] = CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED;
            else
                return http_reply_error(req, 400, "state must be running or paused, not '%s'", s);
        }
        r.states = states;
    }
    char keys[16][128], values[16][256];
    Cube__ListSandboxesRequest__MetadataEntry e[16], *ep[16];
    const char *md = http_query(req, "metadata");
    if (md && *md) {
        int n = api_parse_metadata_filter(md, keys, values, 16);
        if (n < 0) return http_reply_error(req, 400, "malformed metadata filter");
        for (int i = 0; i < n; i++) {
            cube__list_sandboxes_request__metadata_entry__init(&e[i]);
            e[i].key = keys[i];
            e[i].value = values[i];
            ep[i] = &e[i];
        }
        r.n_metadata = (size_t)n;
        r.metadata = ep;
    }
    const char *limit = http_query(req, "limit");
    if (limit) {
        char *end;
        long l = strtol(limit, &end, 10);
        if (*end || l < 1 || l > 1000) return http_reply_error(req, 400, "limit must be within 1..1000");
        r.limit = (uint32_t)l;
    } else if (!v2) {
        r.limit = 1000;
    }
    r.next_token = (char *)http_query(req, "nextToken");
    r.template_id = (char *)http_query(req, "template");
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (api_master_call(a, "/cube.Master/ListSandboxes", &r.base, &cube__list_sandboxes_response__descriptor,
                        &resp, &err) < 0)
        return api_reply_err(req, &err);
    Cube__ListSandboxesResponse *lr = (Cube__ListSandboxesResponse *)resp;
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < lr->n_sandboxes; i++)
        cJSON_AddItemToArray(arr, listed_json(a, lr->sandboxes[i], 0));
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    struct MHD_Response *mr = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (lr->next_token && *lr->next_token) MHD_add_response_header(mr, "X-Next-Token", lr->next_token);
    char total[32];
    snprintf(total, sizeof(total), "%u", lr->total_running);
    MHD_add_response_header(mr, "X-Total-Running", total);
    protobuf_c_message_free_unpacked(resp, NULL);
    http_reply(req, 200, mr);
}

static void list_v1(void *svc, http_req *req)
{
    list(svc, req, 0);
}

static void list_v2(void *svc, http_req *req)
{
    list(svc, req, 1);
}

static void create_route(void *svc, http_req *req)
{
    create(svc, req);
}

/* One of our log lines, `ts=... level=... svc=... msg="..." key=value ...`, as E2B's log entry. */
static cJSON *log_entry(const char *line, int64_t *ts_ms)
{
    cJSON *e = cJSON_CreateObject(), *fields = cJSON_CreateObject();
    char ts[64] = "", level[16] = "info", msg[1024] = "";
    const char *p = line;
    while (*p) {
        while (*p == ' ') p++;
        const char *eq = strchr(p, '=');
        if (!eq) break;
        char key[64];
        snprintf(key, sizeof(key), "%.*s", (int)(eq - p) < 63 ? (int)(eq - p) : 63, p);
        char val[1024];
        size_t v = 0;
        p = eq + 1;
        if (*p == '"') { /* quoted, with \" and \n escapes */
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1]) p++;
                if (v + 1 < sizeof(val)) val[v++] = *p == 'n' && p[-1] == '\\' ? '\n' : *p;
            }
            if (*p == '"') p++;
        } else {
            while (*p && *p != ' ') {
                if (v + 1 < sizeof(val)) val[v++] = *p;
                p++;
            }
        }
        val[v] = '\0';
        if (!strcmp(key, "ts"))
            snprintf(ts, sizeof(ts), "%s", val);
        else if (!strcmp(key, "level"))
            snprintf(level, sizeof(level), "%s", val);
        else if (!strcmp(key, "msg"))
            snprintf(msg, sizeof(msg), "%s", val);
        else
            cJSON_AddStringToObject(fields, key, val);
    }
    *ts_ms = 0;
    cube_err ignored;
    if (*ts) cube_rfc3339_parse(ts, ts_ms, &ignored);
    if (!*msg) snprintf(msg, sizeof(msg), "%s", line); /* not one of ours: the whole line */
    char tsf[CUBE_RFC3339_MAX];
    cube_rfc3339_format(*ts_ms, tsf);
    cJSON_AddStringToObject(e, "timestamp", tsf);
    cJSON_AddStringToObject(e, "level", level);
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddItemToObject(e, "fields", fields);
    return e;
}

/* v1: {"logs": [{timestamp, line}], "logEntries": [...]}; v2: {"logs": [{timestamp, level, message, fields}]}
 */
static cJSON *logs_json(const Cube__LogLines *l, int v2)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *logs = cJSON_AddArrayToObject(o, "logs");
    cJSON *entries = v2 ? logs : cJSON_AddArrayToObject(o, "logEntries");
    for (size_t i = 0; i < l->n_lines; i++) {
        int64_t ms;
        cJSON *e = log_entry(l->lines[i], &ms);
        if (!v2) {
            cJSON *plain = cJSON_CreateObject();
            cJSON_AddStringToObject(plain, "timestamp",
                                    cJSON_GetStringValue(cJSON_GetObjectItem(e, "timestamp")));
            cJSON_AddStringToObject(plain, "line", l->lines[i]);
            cJSON_AddItemToArray(logs, plain);
        }
        cJSON_AddItemToArray(entries, e);
    }
    return o;
}

/* A pause or resume body's "memory": false asks to drop the sandbox's memory, which cube does not do: a 400
 * naming it (a body without it, or with true, passes). Returns -1 after replying. */
static int refuse_memory_false(http_req *req, const char *what)
{
    cJSON *in = api_parse_body(req, 1);
    if (!in) return -1;
    bool memory = true;
    cube_err err = {0};
    int rc = cube_json_get_bool(in, "memory", false, &memory, &err);
    cJSON_Delete(in);
    if (rc < 0) {
        http_reply_error(req, 400, "%s", err.msg);
        return -1;
    }
    if (!memory) {
        http_reply_error(req, 400,
                         "memory: false (%s) is not supported: a paused cube sandbox keeps its memory and "
                         "processes",
                         what);
        return -1;
    }
    return 0;
}

/* E2B's SandboxMetric */
static cJSON *metric_json(const Cube__HvStats *st, int64_t now_ms)
{
    cJSON *o = cJSON_CreateObject();
    api_add_time(o, "timestamp", now_ms);
    cJSON_AddNumberToObject(o, "timestampUnix", (double)(now_ms / 1000));
    cJSON_AddNumberToObject(o, "cpuCount", st->cpu_count);
    cJSON_AddNumberToObject(o, "cpuUsedPct", st->cpu_used_pct);
    cJSON_AddNumberToObject(o, "memUsed", (double)st->mem_used);
    cJSON_AddNumberToObject(o, "memTotal", (double)st->mem_total);
    cJSON_AddNumberToObject(o, "memCache", (double)st->mem_cache);
    cJSON_AddNumberToObject(o, "diskUsed", (double)st->disk_used);
    cJSON_AddNumberToObject(o, "diskTotal", (double)st->disk_total);
    return o;
}

#define BULK_METRICS_MAX 100

/* GET /sandboxes/metrics?sandbox_ids=a,b,...: {"sandboxes": {id: SandboxMetric}}; a sandbox that is gone or
 * paused (no sample) is left out, as E2B does */
static void metrics_bulk(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    const char *q = http_query(req, "sandbox_ids");
    if (!q || !*q) return http_reply_error(req, 400, "sandbox_ids is required: sandbox ids, comma-separated");
    char ids[BULK_METRICS_MAX * 64 + 1];
    if (strlen(q) >= sizeof(ids))
        return http_reply_error(req, 400, "sandbox_ids: at most %d sandboxes at once", BULK_METRICS_MAX);
    snprintf(ids, sizeof(ids), "%s", q);
    cJSON *out = cJSON_CreateObject(), *map = cJSON_AddObjectToObject(out, "sandboxes");
    int n = 0, got = 0;
    cube_err failed = {
        0}; /* a sandbox's own failure leaves it out; only when none answered is it the answer */
    char *save = NULL;
    for (char *id = strtok_r(ids, ",", &save); id; id = strtok_r(NULL, ",", &save)) {
        if (++n > BULK_METRICS_MAX) {
            cJSON_Delete(out);
            return http_reply_error(req, 400, "sandbox_ids: at most %d sandboxes at once", BULK_METRICS_MAX);
        }
        if (strlen(id) >= 64 || cJSON_GetObjectItemCaseSensitive(map, id)) continue;
        Cube__SandboxRef ref = CUBE__SANDBOX_REF__INIT;
        ref.sandbox_id = id;
        ProtobufCMessage *resp = NULL;
        cube_err err = {0};
        if (api_master_call(a, "/cube.Master/SandboxMetrics", &ref.base, &cube__hv_stats__descriptor, &resp,
                            &err) < 0) {
            if (err.code != ENOENT) failed = err;
            continue;
        }
        got++;
        cJSON_AddItemToObject(map, id, metric_json((Cube__HvStats *)resp, cube_now_unix_ms()));
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    if (!got && failed.code) {
        cJSON_Delete(out);
        return api_reply_err(req, &failed);
    }
    http_reply_cjson(req, 200, out);
}

/* Operations on one sandbox: /sandboxes/{id}[/op] and /v2/sandboxes/{id}[/op]. */
static void sandbox_op(api *a, http_req *req, const char *rest)
{
    char id[64], op[32] = "";
    const char *slash = strchr(rest, '/');
    size_t idlen = slash ? (size_t)(slash - rest) : strlen(rest);
    if (idlen == 0 || idlen >= sizeof(id))
        return http_reply_error(req, 404, "no such endpoint: %s", req->url);
    memcpy(id, rest, idlen);
    id[idlen] = '\0';
    if (slash) snprintf(op, sizeof(op), "%s", slash + 1);
    char key_id[64];
    uint32_t key_max = 0;
    if (api_authenticate_limited(a, req, key_id, &key_max) < 0) return;
    cube_err err = {0};
    ProtobufCMessage *resp = NULL;
    const char *m = req->method;
    if (!*op && strcmp(m, "GET") == 0) {
        Cube__Sandbox *sb = get_one(a, id, &resp, &err);
        if (!sb) return api_reply_err(req, &err);
        http_reply_cjson(req, 200, listed_json(a, sb, 1));
    } else if (!*op && strcmp(m, "DELETE") == 0) {
        Cube__SandboxRef ref = CUBE__SANDBOX_REF__INIT;
        ref.sandbox_id = id;
        if (api_master_call(a, "/cube.Master/KillSandbox", &ref.base,
                            &cube__kill_sandbox_response__descriptor, &resp, &err) < 0)
            return api_reply_err(req, &err);
        http_reply_empty(req, 204);
    } else if ((strcmp(op, "timeout") == 0 || strcmp(op, "refreshes") == 0) && strcmp(m, "POST") == 0) {
        cJSON *in = api_parse_body(req, 1);
        if (!in) return;
        int64_t t = strcmp(op, "timeout") == 0 ? -1 : 60;
        int rc = cube_json_get_int(in, strcmp(op, "timeout") == 0 ? "timeout" : "duration",
                                   strcmp(op, "timeout") == 0, 0, MAX_TIMEOUT_S, &t, &err);
        cJSON_Delete(in);
        if (rc < 0) return http_reply_error(req, 400, "%s", err.msg);
        Cube__SetTimeoutRequest st = CUBE__SET_TIMEOUT_REQUEST__INIT;
        st.sandbox_id = id;
        st.timeout_s = t;
        if (api_master_call(a, "/cube.Master/SetTimeout", &st.base, &cube__empty__descriptor, &resp, &err) <
            0)
            return api_reply_err(req, &err);
        http_reply_empty(req, 204);
    } else if (strcmp(op, "pause") == 0 && strcmp(m, "POST") == 0) {
        if (refuse_memory_false(req, "a pause (keepMemory: false)") < 0) return;
        Cube__SandboxRef ref = CUBE__SANDBOX_REF__INIT;
        ref.sandbox_id = id;
        if (api_master_call(a, "/cube.Master/PauseSandbox", &ref.base, &cube__empty__descriptor, &resp,
                            &err) < 0)
            return api_reply_err(req, &err);
        http_reply_empty(req, 204);
    } else if ((strcmp(op, "connect") == 0 || strcmp(op, "resume") == 0) && strcmp(m, "POST") == 0) {
        cJSON *in = api_parse_body(req, 1);
        if (!in) return;
        int64_t t = 0;
        bool memory = true;
        int rc = cube_json_get_int(in, "timeout", false, 0, MAX_TIMEOUT_S, &t, &err) < 0 ||
                         cube_json_get_bool(in, "memory", false, &memory, &err) < 0
                     ? -1
                     : 0;
        cJSON_Delete(in);
        if (rc < 0) return http_reply_error(req, 400, "%s", err.msg);
        if (!memory)
            return http_reply_error(req, 400,
                                    "memory: false (onResume: 'reboot') is not supported: a paused cube "
                                    "sandbox resumes with its memory and processes");
        ProtobufCMessage *before = NULL;
        Cube__Sandbox *sb = get_one(a, id, &before, &err);
        if (!sb) return api_reply_err(req, &err);
        int was_paused = sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED;
        protobuf_c_message_free_unpacked(before, NULL);
        if (strcmp(op, "resume") == 0 && !was_paused)
            return http_reply_error(req, 409, "sandbox %s is already running", id);
        Cube__SetTimeoutRequest st = CUBE__SET_TIMEOUT_REQUEST__INIT;
        st.sandbox_id = id;
        st.timeout_s = t;
        if (api_master_call(a, "/cube.Master/ResumeSandbox", &st.base,
                            &cube__get_sandbox_response__descriptor, &resp, &err) < 0)
            return api_reply_err(req, &err);
        http_reply_cjson(req, was_paused ? 201 : 200,
                         sandbox_json(a, ((Cube__GetSandboxResponse *)resp)->sandbox));
    } else if (strcmp(op, "metrics") == 0 && strcmp(m, "GET") == 0) {
        /* its samples over its life (every 5 s, coarser as it ages; the last taken now), those in [start,
         * end] */
        int64_t range[2] = {0, INT64_MAX / 1000};
        const char *names[2] = {"start", "end"};
        for (int i = 0; i < 2; i++) {
            const char *v = http_query(req, names[i]);
            char *end;
            if (!v) continue;
            long long t = strtoll(v, &end, 10);
            if (!*v || *end || t < 0 || t > INT64_MAX / 1000)
                return http_reply_error(req, 400, "%s must be a Unix time in seconds, not '%s'", names[i], v);
            range[i] = t;
        }
        if (range[0] > range[1]) return http_reply_error(req, 400, "start must not be after end");
        Cube__SandboxRef ref = CUBE__SANDBOX_REF__INIT;
        ref.sandbox_id = id;
        if (api_master_call(a, "/cube.Master/SandboxMetricsHistory", &ref.base,
                            &cube__hv_stats_history__descriptor, &resp, &err) < 0)
            return api_reply_err(req, &err);
        const Cube__HvStatsHistory *h = (const Cube__HvStatsHistory *)resp;
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < h->n_samples; i++) {
            int64_t at = h->samples[i]->sampled_at_ms;
            if (at / 1000 >= range[0] && at / 1000 <= range[1])
                cJSON_AddItemToArray(arr, metric_json(h->samples[i], at));
        }
        http_reply_cjson(req, 200, arr);
    } else if (strcmp(op, "fork") == 0 && strcmp(m, "POST") == 0) {
        cJSON *in = api_parse_body(req, 1);
        if (!in) return;
        int64_t t = 0, count = 1;
        int bad = cube_json_get_int(in, "timeout", false, 0, MAX_TIMEOUT_S, &t, &err) < 0 ||
                  cube_json_get_int(in, "count", false, 1, 20, &count, &err) < 0;
        cJSON_Delete(in);
        if (bad) return http_reply_error(req, 400, "%s", err.msg);
        Cube__ForkRequest fr = CUBE__FORK_REQUEST__INIT;
        fr.sandbox_id = id;
        fr.timeout_s = t;
        fr.count = (uint32_t)count;
        fr.api_key_id = key_id;
        fr.api_key_max_sandboxes = key_max;
        if (api_master_call(a, "/cube.Master/ForkSandbox", &fr.base, &cube__fork_response__descriptor, &resp,
                            &err) < 0)
            return api_reply_err(req, &err);
        Cube__ForkResponse *res = (Cube__ForkResponse *)resp;
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < res->n_results; i++) {
            cJSON *o = cJSON_CreateObject();
            if (res->results[i]->sandbox) {
                cJSON_AddItemToObject(o, "sandbox", sandbox_json(a, res->results[i]->sandbox));
            } else {
                cJSON *e = cJSON_AddObjectToObject(o, "error");
                cJSON_AddNumberToObject(e, "code", res->results[i]->code);
                cJSON_AddStringToObject(e, "message", res->results[i]->error);
            }
            cJSON_AddItemToArray(arr, o);
        }
        http_reply_cjson(req, 201, arr);
    } else if (strcmp(op, "snapshots") == 0 && strcmp(m, "POST") == 0) {
        cJSON *in = api_parse_body(req, 1);
        if (!in) return;
        const char *name = NULL;
        int bad = cube_json_get_string(in, "name", false, &name, &err) < 0;
        Cube__CreateSnapshotRequest sr = CUBE__CREATE_SNAPSHOT_REQUEST__INIT;
        sr.sandbox_id = id;
        sr.name = (char *)name;
        if (bad) {
            cJSON_Delete(in);
            return http_reply_error(req, 400, "%s", err.msg);
        }
        int rc = api_master_call(a, "/cube.Master/CreateSnapshot", &sr.base, &cube__snapshot_info__descriptor,
                                 &resp, &err);
        cJSON_Delete(in);
        if (rc < 0) return api_reply_err(req, &err);
        cJSON *o = cJSON_CreateObject();
        const char *sid = ((Cube__SnapshotInfo *)resp)->snapshot_id;
        cJSON_AddStringToObject(o, "snapshotID", sid);
        cJSON *names = cJSON_AddArrayToObject(o, "names");
        cJSON_AddItemToArray(names, cJSON_CreateString(sid));
        http_reply_cjson(req, 201, o);
    } else if (strcmp(op, "rollback") == 0 && strcmp(m, "POST") == 0) {
        /* back in place to one of its snapshots: same id, URL, network and token; files only (processes
         * start again, the template's start command too) */
        cJSON *in = api_parse_body(req, 1);
        if (!in) return;
        const char *snap = NULL;
        Cube__RollbackRequest rr = CUBE__ROLLBACK_REQUEST__INIT;
        if (cube_json_get_string(in, "snapshotID", true, &snap, &err) < 0) {
            cJSON_Delete(in);
            return http_reply_error(req, 400, "%s", err.msg);
        }
        rr.sandbox_id = id;
        rr.snapshot_id = (char *)snap;
        int rc = api_master_call(a, "/cube.Master/RollbackSandbox", &rr.base,
                                 &cube__get_sandbox_response__descriptor, &resp, &err);
        cJSON_Delete(in);
        if (rc < 0) return api_reply_err(req, &err);
        http_reply_cjson(req, 200, listed_json(a, ((Cube__GetSandboxResponse *)resp)->sandbox, 1));
    } else if (strcmp(op, "logs") == 0 && strcmp(m, "GET") == 0) {
        Cube__SandboxRef ref = CUBE__SANDBOX_REF__INIT;
        ref.sandbox_id = id;
        if (api_master_call(a, "/cube.Master/SandboxLogs", &ref.base, &cube__log_lines__descriptor, &resp,
                            &err) < 0)
            return api_reply_err(req, &err);
        http_reply_cjson(req, 200, logs_json((Cube__LogLines *)resp, strncmp(req->url, "/v2/", 4) == 0));
    } else if (strcmp(op, "network") == 0 && strcmp(m, "PUT") == 0) {
        /* the whole egress policy is replaced: what the body leaves out goes back to E2B's defaults */
        cJSON *in = api_parse_body(req, 1);
        if (!in) return;
        bool internet = true;
        api_network net = {0};
        if (cube_json_get_bool(in, "allow_internet_access", false, &internet, &err) < 0 ||
            api_network_parse(internet, in, &net, &err) < 0 ||
            (net.traffic_given &&
             cube_err_set(&err, EINVAL, "network.allowPublicTraffic is chosen when the sandbox is created") <
                 0) ||
            (net.inbound_given &&
             cube_err_set(
                 &err, EINVAL,
                 "network.maskRequestHost and network.httpsPorts are chosen when the sandbox is created") <
                 0)) {
            api_network_free(&net);
            cJSON_Delete(in);
            return http_reply_error(req, 400, "%s", err.msg);
        }
        Cube__UpdateNetworkRequest ur = CUBE__UPDATE_NETWORK_REQUEST__INIT;
        ur.sandbox_id = id;
        ur.network = &net.policy;
        int rc =
            api_master_call(a, "/cube.Master/UpdateNetwork", &ur.base, &cube__empty__descriptor, &resp, &err);
        api_network_free(&net);
        cJSON_Delete(in);
        if (rc < 0) return api_reply_err(req, &err);
        http_reply_empty(req, 204);
    } else {
        http_reply_error(req, 404, "no such endpoint: %s %s", m, req->url);
    }
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
}

static void sandbox_v1(void *svc, http_req *req)
{
    sandbox_op(svc, req, req->url + strlen("/sandboxes/"));
}

static void sandbox_v2(void *svc, http_req *req)
{
    sandbox_op(svc, req, req->url + strlen("/v2/sandboxes/"));
}

static cJSON *volume_json(const Cube__Volume *v, int with_token)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "volumeID", v->volume_id);
    cJSON_AddStringToObject(o, "name", v->name);
    if (with_token) cJSON_AddStringToObject(o, "token", v->token);
    return o;
}

static void volumes_create(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    cJSON *in = api_parse_body(req, 0);
    if (!in) return;
    const char *name = NULL;
    cube_err err = {0};
    if (cube_json_get_string(in, "name", true, &name, &err) < 0) {
        cJSON_Delete(in);
        return http_reply_error(req, 400, "%s", err.msg);
    }
    Cube__CreateVolumeRequest r = CUBE__CREATE_VOLUME_REQUEST__INIT;
    r.name = (char *)name;
    ProtobufCMessage *resp = NULL;
    int rc = api_master_call(a, "/cube.Master/CreateVolume", &r.base, &cube__volume__descriptor, &resp, &err);
    cJSON_Delete(in);
    if (rc < 0) return api_reply_err(req, &err);
    http_reply_cjson(req, 201, volume_json((Cube__Volume *)resp, 1));
    protobuf_c_message_free_unpacked(resp, NULL);
}

static void volumes_list(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (api_master_call(a, "/cube.Master/ListVolumes", &e.base, &cube__list_volumes_response__descriptor,
                        &resp, &err) < 0)
        return api_reply_err(req, &err);
    Cube__ListVolumesResponse *l = (Cube__ListVolumesResponse *)resp;
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < l->n_volumes; i++) cJSON_AddItemToArray(arr, volume_json(l->volumes[i], 0));
    protobuf_c_message_free_unpacked(resp, NULL);
    http_reply_cjson(req, 200, arr);
}

/* GET and DELETE /volumes/{id} */
static void volume_one(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    const char *id = req->url + strlen("/volumes/");
    if (strchr(id, '/')) return http_reply_error(req, 404, "no such endpoint: %s %s", req->method, req->url);
    Cube__VolumeRef ref = CUBE__VOLUME_REF__INIT;
    ref.volume_id = (char *)id;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    int del = strcmp(req->method, "DELETE") == 0;
    if (api_master_call(a, del ? "/cube.Master/DeleteVolume" : "/cube.Master/GetVolume", &ref.base,
                        del ? &cube__empty__descriptor : &cube__volume__descriptor, &resp, &err) < 0)
        return api_reply_err(req, &err);
    if (del)
        http_reply_empty(req, 204);
    else
        http_reply_cjson(req, 200, volume_json((Cube__Volume *)resp, 1));
    protobuf_c_message_free_unpacked(resp, NULL);
}

static int snapshot_newest_first(const void *x, const void *y)
{
    const Cube__SnapshotInfo *a = *(Cube__SnapshotInfo *const *)x, *b = *(Cube__SnapshotInfo *const *)y;
    if (a->created_at_ms != b->created_at_ms) return a->created_at_ms > b->created_at_ms ? -1 : 1;
    return strcmp(a->snapshot_id, b->snapshot_id);
}

#define SNAPSHOTS_PAGE_DEFAULT 100
#define SNAPSHOTS_PAGE_MAX     1000

/* GET /snapshots[?sandboxID&limit&nextToken]: newest first, a page at a time; the next page's token (the last
 * snapshot's id) in X-Next-Token, as the SDK's paginator reads it */
static void snapshots_list(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    long limit = SNAPSHOTS_PAGE_DEFAULT;
    const char *ls = http_query(req, "limit"), *after = http_query(req, "nextToken");
    if (ls) {
        char *end;
        limit = strtol(ls, &end, 10);
        if (!*ls || *end || limit < 1 || limit > SNAPSHOTS_PAGE_MAX)
            return http_reply_error(req, 400, "limit must be within 1..%d", SNAPSHOTS_PAGE_MAX);
    }
    Cube__ListSnapshotsRequest r = CUBE__LIST_SNAPSHOTS_REQUEST__INIT;
    r.sandbox_id = (char *)http_query(req, "sandboxID");
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (api_master_call(a, "/cube.Master/ListSnapshots", &r.base, &cube__list_snapshots_response__descriptor,
                        &resp, &err) < 0)
        return api_reply_err(req, &err);
    Cube__ListSnapshotsResponse *l = (Cube__ListSnapshotsResponse *)resp;
    if (l->n_snapshots) qsort(l->snapshots, l->n_snapshots, sizeof(*l->snapshots), snapshot_newest_first);
    size_t from = 0;
    if (after && *after) {
        while (from < l->n_snapshots && strcmp(l->snapshots[from]->snapshot_id, after) != 0) from++;
        if (from == l->n_snapshots) {
            protobuf_c_message_free_unpacked(resp, NULL);
            return http_reply_error(req, 400, "nextToken '%s' names no snapshot (deleted since?)", after);
        }
        from++;
    }
    cJSON *arr = cJSON_CreateArray();
    size_t i = from;
    for (; i < l->n_snapshots && i < from + (size_t)limit; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "snapshotID", l->snapshots[i]->snapshot_id);
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "names"),
                             cJSON_CreateString(l->snapshots[i]->snapshot_id));
        cJSON_AddStringToObject(o, "sandboxID", l->snapshots[i]->sandbox_id);
        api_add_time(o, "createdAt", l->snapshots[i]->created_at_ms);
        cJSON_AddItemToArray(arr, o);
    }
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    struct MHD_Response *mr = s ? MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!mr) {
        free(s);
        protobuf_c_message_free_unpacked(resp, NULL);
        return http_reply_error(req, 500, "out of memory");
    }
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (i < l->n_snapshots) MHD_add_response_header(mr, "X-Next-Token", l->snapshots[i - 1]->snapshot_id);
    protobuf_c_message_free_unpacked(resp, NULL);
    http_reply(req, 200, mr);
}

/* DELETE /templates/{id}: templates and snapshots alike (the SDK's deleteSnapshot) */
static void template_delete(void *svc, http_req *req)
{
    if (strcmp(req->url, "/templates/tags") == 0) return api_template_tags(svc, req);
    api *a = svc;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    Cube__TemplateRef r = CUBE__TEMPLATE_REF__INIT;
    r.template_id = (char *)(req->url + strlen("/templates/"));
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (api_master_call(a, "/cube.Master/DeleteTemplate", &r.base, &cube__empty__descriptor, &resp, &err) < 0)
        return api_reply_err(req, &err);
    protobuf_c_message_free_unpacked(resp, NULL);
    http_reply_empty(req, 204);
}

static void health(void *svc, http_req *req)
{
    (void)svc;
    http_reply_json(req, 200, "{\"ok\":true}");
}

static const char openapi[] =
    "openapi: 3.0.0\n"
    "info: {title: cube E2B-compatible API, version: 0.1.0}\n"
    "components:\n"
    "  securitySchemes: {ApiKeyAuth: {type: apiKey, in: header, name: X-API-KEY}}\n"
    "security: [{ApiKeyAuth: []}]\n"
    "paths:\n"
    "  /health: {get: {security: [], responses: {'200': {description: ok}}}}\n"
    "  /sandboxes:\n"
    "    get: {responses: {'200': {description: 'ListedSandbox[]'}}}\n"
    "    post: {responses: {'201': {description: Sandbox}}}\n"
    "  /v2/sandboxes:\n"
    "    get: {responses: {'200': {description: 'ListedSandbox[] (X-Next-Token)'}}}\n"
    "    post: {responses: {'201': {description: Sandbox}}}\n"
    "  /sandboxes/{sandboxID}:\n"
    "    get: {responses: {'200': {description: SandboxDetail}}}\n"
    "    delete: {responses: {'204': {description: killed}}}\n"
    "  /sandboxes/{sandboxID}/timeout: {post: {responses: {'204': {description: set}}}}\n"
    "  /sandboxes/{sandboxID}/refreshes: {post: {responses: {'204': {description: refreshed}}}}\n"
    "  /sandboxes/{sandboxID}/pause: {post: {responses: {'204': {description: paused}, '409': {description: "
    "already paused}}}}\n"
    "  /sandboxes/{sandboxID}/resume: {post: {responses: {'201': {description: Sandbox}}}}\n"
    "  /v2/sandboxes/{sandboxID}/connect: {post: {responses: {'200': {description: Sandbox}, '201': "
    "{description: resumed}}}}\n"
    "  /sandboxes/{sandboxID}/rollback:\n"
    "    post:\n"
    "      description: >-\n"
    "        cube: the sandbox returns in place to one of its snapshots (or to the snapshot it was created "
    "from),\n"
    "        keeping its id, URL, network, access token, env vars and volumes. Its files become the "
    "snapshot's; its\n"
    "        processes start again (the template's start command too): snapshots of the ns backend hold "
    "files, not\n"
    "        memory. A paused sandbox runs after.\n"
    "      requestBody:\n"
    "        content: {application/json: {schema: {type: object, required: [snapshotID], properties: "
    "{snapshotID: {type: string}}}}}\n"
    "      responses:\n"
    "        '200': {description: SandboxDetail}\n"
    "        '400': {description: no snapshotID, or a snapshot of another sandbox}\n"
    "        '404': {description: no such sandbox or snapshot}\n"
    "        '500': {description: the rollback failed after the old processes ended; the sandbox was "
    "removed}\n";

static void openapi_doc(void *svc, http_req *req)
{
    (void)svc;
    http_reply_bytes(req, 200, "application/yaml", openapi, sizeof(openapi) - 1);
}

const http_route api_routes[] = {
    {"GET", "/health", health, NULL},
    {"GET", "/openapi.yml", openapi_doc, NULL},
    {"GET", "/metrics", cube_metrics_http, NULL},
    {"POST", "/sandboxes", create_route, NULL},
    {"POST", "/v2/sandboxes", create_route, NULL},
    {"GET", "/sandboxes", list_v1, NULL},
    {"GET", "/v2/sandboxes", list_v2, NULL},
    {"GET", "/sandboxes/metrics", metrics_bulk, NULL},
    {"GET", "/sandboxes/", sandbox_v1, NULL},
    {"DELETE", "/sandboxes/", sandbox_v1, NULL},
    {"POST", "/sandboxes/", sandbox_v1, NULL},
    {"PUT", "/sandboxes/", sandbox_v1, NULL},
    {"GET", "/v2/sandboxes/", sandbox_v2, NULL},
    {"GET", "/snapshots", snapshots_list, NULL},
    {"GET", "/templates", api_templates, NULL},
    {"GET", "/templates/", api_template_one, NULL},
    {"GET", "/nodes", api_nodes, NULL},
    {"GET", "/api-keys", api_keys, NULL},
    {"POST", "/api-keys", api_keys, NULL},
    {"DELETE", "/api-keys/", api_key_one, NULL},
    {"PATCH", "/api-keys/", api_key_one, NULL},
    {"GET", "/console", api_console, NULL},
    {"GET", "/console/", api_console, NULL},
    {"DELETE", "/templates/", template_delete, NULL},
    {"POST", "/v3/templates", api_templates_v3, NULL},
    {"POST", "/templates/tags", api_template_tags, NULL},
    {"PUT", "/templates/", api_template_file_put, NULL},
    {"POST", "/v2/templates/", api_template_build_start, NULL},
    {"POST", "/volumes", volumes_create, NULL},
    {"GET", "/volumes", volumes_list, NULL},
    {"GET", "/volumes/", volume_one, NULL},
    {"GET", "/volumecontent/", api_volume_content, NULL},
    {"POST", "/volumecontent/", api_volume_content, NULL},
    {"PATCH", "/volumecontent/", api_volume_content, NULL},
    {"DELETE", "/volumecontent/", api_volume_content, NULL},
    {"PUT", "/volumecontent/", api_volume_content, NULL},
    {"DELETE", "/volumes/", volume_one, NULL},
    {"GET", "/secrets", api_secrets, NULL},
    {"POST", "/secrets", api_secrets, NULL},
    {"GET", "/secrets/", api_secret_one, NULL},
    {"POST", "/secrets/", api_secret_one, NULL},
    {"DELETE", "/secrets/", api_secret_one, NULL},
    {"POST", "/v2/sandboxes/", sandbox_v2, NULL},
    {0},
};
