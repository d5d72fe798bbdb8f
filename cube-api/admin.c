/* The operators' side of the REST API, as the console uses it: API keys (E2B's /api-keys shapes), nodes with
 * their pools, and the templates the nodes hold. Any valid key may call them: a cube deployment is one team.
 * Only a key without a sandbox limit manages keys (else a limited key would make itself an unlimited one).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api_internal.h"
#include "envd_version.h"
#include "json.h"

#define KEY_NAME_MAX 64

static cJSON *key_json(const Cube__ApiKey *k)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", k->key_id);
    cJSON_AddStringToObject(o, "name", k->name);
    /* the secret is stored hashed: only its fixed prefix can be shown */
    cJSON *mask = cJSON_AddObjectToObject(o, "mask");
    cJSON_AddStringToObject(mask, "prefix", "e2b_");
    cJSON_AddStringToObject(mask, "maskedValuePrefix", "");
    cJSON_AddStringToObject(mask, "maskedValueSuffix", "");
    api_add_time(o, "createdAt", k->created_at_ms);
    cJSON_AddNullToObject(o, "createdBy");
    cJSON_AddNullToObject(o, "lastUsed");
    if (k->key && *k->key) cJSON_AddStringToObject(o, "key", k->key);
    /* cube's own: the most sandboxes the key's creates may hold at once (null: no limit), and how many now */
    if (k->max_sandboxes)
        cJSON_AddNumberToObject(o, "maxSandboxes", k->max_sandboxes);
    else
        cJSON_AddNullToObject(o, "maxSandboxes");
    cJSON_AddNumberToObject(o, "sandboxes", k->sandboxes);
    return o;
}

/* 403 (and -1) when the caller's key has a sandbox limit: such keys do not manage keys */
static int refuse_limited(http_req *req, uint32_t max)
{
    if (!max) return 0;
    http_reply_error(req, 403,
                     "this API key may hold at most %u sandboxes: a key with a sandbox limit cannot create, "
                     "change or revoke API keys (use a key without one)",
                     max);
    return -1;
}

/* maxSandboxes of a key's body: absent or null is 0 (no limit); its range is cube-master's to check */
static int get_limit(const cJSON *in, bool required, uint32_t *out, cube_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(in, "maxSandboxes");
    int64_t max = 0;
    if (cJSON_IsNull(v)) {
        *out = 0;
        return 0;
    }
    if (cube_json_get_int(in, "maxSandboxes", required, 0, UINT32_MAX, &max, err) < 0) return -1;
    *out = (uint32_t)max;
    return 0;
}

/* GET /api-keys, POST /api-keys {name, maxSandboxes} (the answer holds the key, once) */
void api_keys(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    uint32_t own_max = 0;
    if (api_authenticate_limited(a, req, key_id, &own_max) < 0) return;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (strcmp(req->method, "GET") == 0) {
        Cube__Empty e = CUBE__EMPTY__INIT;
        if (api_master_call(a, "/cube.Master/ListKeys", &e.base, &cube__list_keys_response__descriptor, &resp,
                            &err) < 0)
            return api_reply_err(req, &err);
        Cube__ListKeysResponse *l = (Cube__ListKeysResponse *)resp;
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < l->n_keys; i++) {
            cJSON *o = key_json(l->keys[i]);
            /* which one this caller holds: the console marks it (revoking it signs the console out) */
            if (strcmp(l->keys[i]->key_id, key_id) == 0) cJSON_AddBoolToObject(o, "current", true);
            cJSON_AddItemToArray(arr, o);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return http_reply_cjson(req, 200, arr);
    }
    if (refuse_limited(req, own_max) < 0) return;
    cJSON *in = api_parse_body(req, 0);
    if (!in) return;
    const char *name = NULL;
    uint32_t max = 0;
    if (cube_json_get_string(in, "name", true, &name, &err) < 0 || get_limit(in, false, &max, &err) < 0) {
        cJSON_Delete(in);
        return http_reply_error(req, 400, "%s", err.msg);
    }
    size_t n = strlen(name);
    bool printable = n > 0 && n <= KEY_NAME_MAX;
    for (size_t i = 0; printable && i < n; i++) printable = isprint((unsigned char)name[i]) || name[i] < 0;
    if (!printable) {
        cJSON_Delete(in);
        return http_reply_error(req, 400, "name must be 1 to %d printable characters", KEY_NAME_MAX);
    }
    Cube__CreateKeyRequest r = CUBE__CREATE_KEY_REQUEST__INIT;
    r.name = (char *)name;
    r.max_sandboxes = max;
    int rc = api_master_call(a, "/cube.Master/CreateKey", &r.base, &cube__api_key__descriptor, &resp, &err);
    cJSON_Delete(in);
    if (rc < 0) return api_reply_err(req, &err);
    http_reply_cjson(req, 201, key_json((Cube__ApiKey *)resp));
    protobuf_c_message_free_unpacked(resp, NULL);
}

/* drops what this api remembers of keys: a revoked one stops working here now (at the others within
 * API_AUTH_TTL_MS), a new limit holds here from the next request */
static void forget_keys(api *a)
{
    pthread_mutex_lock(&a->auth_lock);
    memset(a->auth, 0, sizeof(a->auth));
    pthread_mutex_unlock(&a->auth_lock);
}

/* DELETE /api-keys/{id}; PATCH /api-keys/{id} {maxSandboxes} */
void api_key_one(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    uint32_t own_max = 0;
    if (api_authenticate_limited(a, req, key_id, &own_max) < 0) return;
    const char *id = req->url + strlen("/api-keys/");
    if (!*id || strchr(id, '/')) return http_reply_error(req, 404, "no such endpoint: %s", req->url);
    if (refuse_limited(req, own_max) < 0) return;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (strcmp(req->method, "PATCH") == 0) {
        cJSON *in = api_parse_body(req, 0);
        if (!in) return;
        Cube__KeyLimitRequest lr = CUBE__KEY_LIMIT_REQUEST__INIT;
        lr.key_id = (char *)id;
        bool named = cJSON_GetObjectItemCaseSensitive(in, "name") != NULL;
        int bad = get_limit(in, true, &lr.max_sandboxes, &err);
        cJSON_Delete(in);
        if (named) return http_reply_error(req, 400, "name: a key's name cannot be changed in cube");
        if (bad < 0) return http_reply_error(req, 400, "%s", err.msg);
        if (api_master_call(a, "/cube.Master/SetKeyLimit", &lr.base, &cube__api_key__descriptor, &resp,
                            &err) < 0)
            return api_reply_err(req, &err);
        forget_keys(a);
        http_reply_cjson(req, 200, key_json((Cube__ApiKey *)resp));
        protobuf_c_message_free_unpacked(resp, NULL);
        return;
    }
    Cube__KeyRef r = CUBE__KEY_REF__INIT;
    r.key_id = (char *)id;
    if (api_master_call(a, "/cube.Master/RevokeKey", &r.base, &cube__empty__descriptor, &resp, &err) < 0)
        return api_reply_err(req, &err);
    protobuf_c_message_free_unpacked(resp, NULL);
    forget_keys(a);
    http_reply_empty(req, 204);
}

static const char *node_status(const Cube__NodeInfo *n)
{
    return n->lost ? "lost" : n->silent ? "unhealthy" : n->draining ? "draining" : "ready";
}

static uint32_t pool_ready(const Cube__NodeInfo *n, const char *tpl)
{
    for (size_t i = 0; i < n->n_pool_ready; i++)
        if (strcmp(n->pool_ready[i]->key, tpl) == 0) return n->pool_ready[i]->value;
    return 0;
}

static uint32_t pool_target(const Cube__NodeInfo *n, const char *tpl)
{
    for (size_t i = 0; i < n->n_pool_target; i++)
        if (strcmp(n->pool_target[i]->key, tpl) == 0) return n->pool_target[i]->value;
    return 0;
}

static int list_nodes(api *a, http_req *req, Cube__ListNodesResponse **out)
{
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return -1;
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (api_master_call(a, "/cube.Master/ListNodes", &e.base, &cube__list_nodes_response__descriptor, &resp,
                        &err) < 0) {
        api_reply_err(req, &err);
        return -1;
    }
    *out = (Cube__ListNodesResponse *)resp;
    return 0;
}

/* GET /nodes: each node's health, load and pool per template (ready beside the depth it keeps) */
void api_nodes(void *svc, http_req *req)
{
    Cube__ListNodesResponse *l;
    if (list_nodes(svc, req, &l) < 0) return;
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < l->n_nodes; i++) {
        const Cube__NodeInfo *n = l->nodes[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "nodeID", n->node_id);
        cJSON_AddStringToObject(o, "status", node_status(n));
        cJSON_AddStringToObject(o, "backend", n->backend);
        cJSON_AddStringToObject(o, "address", n->address);
        cJSON_AddNumberToObject(o, "sandboxCount", n->running);
        cJSON_AddNumberToObject(o, "cpuCount", n->capacity ? n->capacity->cpu_count : 0);
        cJSON_AddNumberToObject(o, "memoryMB", n->capacity ? (double)n->capacity->memory_mb : 0);
        cJSON_AddNumberToObject(o, "memoryAvailableMB", (double)n->mem_available_mb);
        if (n->room_reported) { /* left for new sandboxes beyond the node's reserves (below 0: into them) */
            cJSON_AddNumberToObject(o, "memoryLeftMB", (double)n->memory_left_mb);
            cJSON_AddNumberToObject(o, "diskLeftMB", (double)n->disk_left_mb);
        }
        cJSON_AddNumberToObject(o, "load1", n->load1);
        cJSON_AddNumberToObject(o, "lastSeenMsAgo", (double)n->last_seen_ms_ago);
        cJSON *pools = cJSON_AddArrayToObject(o, "pools");
        for (size_t t = 0; t < n->n_templates; t++) {
            cJSON *p = cJSON_CreateObject();
            cJSON_AddStringToObject(p, "templateID", n->templates[t]);
            cJSON_AddNumberToObject(p, "ready", pool_ready(n, n->templates[t]));
            cJSON_AddNumberToObject(p, "target", pool_target(n, n->templates[t]));
            for (size_t z = 0; z < n->n_template_sizes; z++) /* which build it serves there */
                if (strcmp(n->template_sizes[z]->template_id, n->templates[t]) == 0 &&
                    n->template_sizes[z]->build_id && *n->template_sizes[z]->build_id)
                    cJSON_AddStringToObject(p, "buildID", n->template_sizes[z]->build_id);
            cJSON_AddItemToArray(pools, p);
        }
        cJSON_AddItemToArray(arr, o);
    }
    protobuf_c_message_free_unpacked(&l->base, NULL);
    http_reply_cjson(req, 200, arr);
}

/* The template's sandbox size as the node reports it, or NULL (an older cubelet) */
static const Cube__Resources *template_size(const Cube__NodeInfo *n, const char *tpl)
{
    for (size_t i = 0; i < n->n_template_sizes; i++)
        if (strcmp(n->template_sizes[i]->template_id, tpl) == 0) return n->template_sizes[i]->resources;
    return NULL;
}

/* GET /templates: E2B's template list, made from what the live nodes hold (a template is ready where a node
 * has it) */
void api_templates(void *svc, http_req *req)
{
    Cube__ListNodesResponse *l;
    if (list_nodes(svc, req, &l) < 0) return;
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < l->n_nodes; i++) {
        const Cube__NodeInfo *n = l->nodes[i];
        if (n->lost) continue;
        for (size_t t = 0; t < n->n_templates; t++) {
            const char *id = n->templates[t];
            cJSON *o = NULL, *it;
            cJSON_ArrayForEach(
                it, arr) if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(it, "templateID")), id) == 0) o =
                it;
            if (!o) {
                const Cube__Resources *r = template_size(n, id);
                o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "templateID", id);
                cJSON_AddStringToObject(o, "buildID", "");
                cJSON_AddNumberToObject(o, "cpuCount", r ? r->cpu_count : 2);
                cJSON_AddNumberToObject(o, "memoryMB", r ? (double)r->memory_mb : 512);
                cJSON_AddNumberToObject(o, "diskSizeMB", r ? (double)r->disk_mb : 1024);
                cJSON_AddBoolToObject(o, "public", false);
                cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "aliases"), cJSON_CreateString(id));
                cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "names"), cJSON_CreateString(id));
                cJSON_AddStringToObject(o, "buildStatus", "ready");
                cJSON_AddNumberToObject(o, "nodes", 0);
                cJSON_AddNumberToObject(o, "poolReady", 0);
                cJSON_AddNumberToObject(o, "poolTarget", 0);
                cJSON_AddItemToArray(arr, o);
            }
            const char *counts[] = {"nodes", "poolReady", "poolTarget"};
            double add[] = {1, pool_ready(n, id), pool_target(n, id)};
            for (int c = 0; c < 3; c++) {
                cJSON *v = cJSON_GetObjectItem(o, counts[c]);
                cJSON_SetNumberValue(v, v->valuedouble + add[c]);
            }
        }
    }
    protobuf_c_message_free_unpacked(&l->base, NULL);
    http_reply_cjson(req, 200, arr);
}

/* GET /templates/aliases/{alias} (the SDK's Template.exists) and GET /templates/{id}: a template is there
 * when a live node holds it; cube's template names are their ids and aliases. */
/* "builds": the template's builds, newest first, in E2B's shape (with their tags) */
static void add_builds(api *a, cJSON *o, const char *id)
{
    cJSON *arr = cJSON_AddArrayToObject(o, "builds");
    char name[128];
    snprintf(name, sizeof(name), "%.*s", (int)strcspn(id, ":"), id);
    Cube__TemplateRef r = CUBE__TEMPLATE_REF__INIT;
    r.template_id = name;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (api_master_call(a, "/cube.Master/ListBuilds", &r.base, &cube__list_builds_response__descriptor, &resp,
                        &err) < 0)
        return;
    const Cube__ListBuildsResponse *l = (const Cube__ListBuildsResponse *)resp;
    for (size_t i = 0; i < l->n_builds; i++) {
        const Cube__TemplateBuild *b = l->builds[i];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "buildID", b->build_id);
        cJSON_AddStringToObject(x, "status", i < l->n_states ? l->states[i] : "unknown");
        api_add_time(x, "createdAt", b->created_at_ms);
        api_add_time(x, "updatedAt", b->created_at_ms);
        cJSON_AddNumberToObject(x, "cpuCount", b->resources ? b->resources->cpu_count : 2);
        cJSON_AddNumberToObject(x, "memoryMB", b->resources ? (double)b->resources->memory_mb : 512);
        if (b->resources && b->resources->disk_mb)
            cJSON_AddNumberToObject(x, "diskSizeMB", (double)b->resources->disk_mb);
        cJSON_AddStringToObject(x, "envdVersion", CUBE_ENVD_VERSION);
        cJSON *tags = cJSON_AddArrayToObject(x, "tags");
        for (size_t k = 0; k < b->n_tags; k++) cJSON_AddItemToArray(tags, cJSON_CreateString(b->tags[k]));
        cJSON_AddItemToArray(arr, x);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
}

void api_template_one(void *svc, http_req *req)
{
    if (api_template_build_get(svc, req)) return;
    const char *rest = req->url + strlen("/templates/");
    bool alias = strncmp(rest, "aliases/", 8) == 0;
    const char *id = alias ? rest + 8 : rest;
    if (!*id || strchr(id, '/')) return http_reply_error(req, 404, "no such endpoint: %s", req->url);
    Cube__ListNodesResponse *l;
    if (list_nodes(svc, req, &l) < 0) return;
    bool found = false;
    for (size_t i = 0; i < l->n_nodes && !found; i++)
        for (size_t t = 0; !l->nodes[i]->lost && t < l->nodes[i]->n_templates && !found; t++)
            found = strcmp(l->nodes[i]->templates[t], id) == 0;
    protobuf_c_message_free_unpacked(&l->base, NULL);
    if (!found) return http_reply_error(req, 404, "template %s'%s' not found", alias ? "alias " : "", id);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "templateID", id);
    cJSON_AddBoolToObject(o, "public", false);
    if (!alias) {
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "aliases"), cJSON_CreateString(id));
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "names"), cJSON_CreateString(id));
        add_builds(svc, o, id); /* the builds through the API: none for a template made otherwise */
        cJSON_AddNumberToObject(o, "spawnCount", 0);
        cJSON_AddNullToObject(o, "lastSpawnedAt");
    }
    http_reply_cjson(req, 200, o);
}
