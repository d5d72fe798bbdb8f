/* E2B's /secrets: create, list (paged), get, update (a new version), delete. No answer carries a value. */
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "json.h"

#define SECRETS_PAGE_MAX 1000

static cJSON *secret_json(const Cube__Secret *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "secretID", s->secret_id);
    cJSON_AddStringToObject(o, "name", s->name);
    cJSON_AddNumberToObject(o, "currentVersion", (double)s->version);
    cJSON *md = cJSON_AddObjectToObject(o, "metadata");
    for (size_t i = 0; i < s->n_metadata; i++)
        cJSON_AddStringToObject(md, s->metadata[i]->key, s->metadata[i]->value);
    api_add_time(o, "createdAt", s->created_at_ms);
    api_add_time(o, "updatedAt", s->updated_at_ms);
    return o;
}

static void reply_secret(http_req *req, unsigned status, ProtobufCMessage *resp)
{
    http_reply_cjson(req, status, secret_json((Cube__Secret *)resp));
    protobuf_c_message_free_unpacked(resp, NULL);
}

/* value (required) and metadata (optional: *has_metadata says whether it was given) of a create or update. */
static int secret_fields(const cJSON *in, const char **value, kv_pool *md, size_t *n_md, bool *has_metadata,
                         cube_err *err)
{
    if (cube_json_get_string(in, "value", true, value, err) < 0) return -1;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(in, "metadata");
    *has_metadata = m && !cJSON_IsNull(m);
    return *has_metadata ? api_to_entries(m, "metadata", md, n_md, err) : 0;
}

static void list_page(api *a, http_req *req)
{
    size_t limit = 100, offset = 0;
    const char *l = http_query(req, "limit"), *next = http_query(req, "nextToken");
    char *end;
    if (l) {
        long v = strtol(l, &end, 10);
        if (*end || v < 1 || v > SECRETS_PAGE_MAX)
            return http_reply_error(req, 400, "limit must be within 1..%d", SECRETS_PAGE_MAX);
        limit = (size_t)v;
    }
    if (next && *next) {
        long v = strtol(next, &end, 10);
        if (*end || v < 0) return http_reply_error(req, 400, "nextToken is not one this API gave");
        offset = (size_t)v;
    }
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (api_master_call(a, "/cube.Master/ListSecrets", &e.base, &cube__list_secrets_response__descriptor,
                        &resp, &err) < 0)
        return api_reply_err(req, &err);
    Cube__ListSecretsResponse *r = (Cube__ListSecretsResponse *)resp;
    cJSON *arr = cJSON_CreateArray();
    size_t i = offset;
    for (; i < r->n_secrets && i < offset + limit; i++) cJSON_AddItemToArray(arr, secret_json(r->secrets[i]));
    char token[32] = "";
    if (i < r->n_secrets) snprintf(token, sizeof(token), "%zu", i);
    protobuf_c_message_free_unpacked(resp, NULL);
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    if (!s) return http_reply_error(req, 500, "out of memory");
    struct MHD_Response *mr = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (*token) MHD_add_response_header(mr, "X-Next-Token", token);
    http_reply(req, 200, mr);
}

void api_secrets(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    if (strcmp(req->method, "GET") == 0) return list_page(a, req);
    cJSON *in = api_parse_body(req, 0);
    if (!in) return;
    Cube__CreateSecretRequest r = CUBE__CREATE_SECRET_REQUEST__INIT;
    const char *name = NULL, *value = NULL;
    kv_pool md = {0};
    bool has_md = false;
    cube_err err = {0};
    int rc = cube_json_get_string(in, "name", true, &name, &err) == 0 &&
                     secret_fields(in, &value, &md, &r.n_metadata, &has_md, &err) == 0
                 ? 0
                 : -1;
    ProtobufCMessage *resp = NULL;
    if (rc < 0) {
        http_reply_error(req, 400, "%s", err.msg);
    } else {
        r.name = (char *)name;
        r.value = (char *)value;
        r.metadata = (Cube__CreateSecretRequest__MetadataEntry **)md.p;
        if (api_master_call(a, "/cube.Master/CreateSecret", &r.base, &cube__secret__descriptor, &resp, &err) <
            0)
            api_reply_err(req, &err);
        else
            reply_secret(req, 201, resp);
    }
    free(md.e);
    free(md.p);
    cJSON_Delete(in);
}

/* GET, POST (a new value) and DELETE /secrets/{id or name} */
void api_secret_one(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    const char *id = req->url + strlen("/secrets/");
    if (!*id || strchr(id, '/'))
        return http_reply_error(req, 404, "no such endpoint: %s %s", req->method, req->url);
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (strcmp(req->method, "POST") == 0) {
        cJSON *in = api_parse_body(req, 0);
        if (!in) return;
        Cube__UpdateSecretRequest r = CUBE__UPDATE_SECRET_REQUEST__INIT;
        const char *value = NULL;
        kv_pool md = {0};
        bool has_md = false;
        if (secret_fields(in, &value, &md, &r.n_metadata, &has_md, &err) < 0) {
            http_reply_error(req, 400, "%s", err.msg);
        } else {
            r.secret = (char *)id;
            r.value = (char *)value;
            r.metadata = (Cube__UpdateSecretRequest__MetadataEntry **)md.p;
            r.replace_metadata = has_md;
            if (api_master_call(a, "/cube.Master/UpdateSecret", &r.base, &cube__secret__descriptor, &resp,
                                &err) < 0)
                api_reply_err(req, &err);
            else
                reply_secret(req, 200, resp);
        }
        free(md.e);
        free(md.p);
        cJSON_Delete(in);
        return;
    }
    Cube__SecretRef ref = CUBE__SECRET_REF__INIT;
    ref.secret = (char *)id;
    int del = strcmp(req->method, "DELETE") == 0;
    if (api_master_call(a, del ? "/cube.Master/DeleteSecret" : "/cube.Master/GetSecret", &ref.base,
                        del ? &cube__empty__descriptor : &cube__secret__descriptor, &resp, &err) < 0)
        return api_reply_err(req, &err);
    if (del) {
        protobuf_c_message_free_unpacked(resp, NULL);
        return http_reply_empty(req, 204);
    }
    reply_secret(req, 200, resp);
}
