/* Between api.c and the files of cube-api's other endpoints (secrets.c). */
#ifndef CUBE_API_INTERNAL_H
#define CUBE_API_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "api.h"
#include "master.pb-c.h"

/* err as an HTTP error (its status from the errno; 503 when no node can take it now). */
void api_reply_err(http_req *req, const cube_err *err);
/* X-API-KEY → the key's id through cube-master; replies 401 and returns -1 when it is missing or wrong. */
int api_authenticate(api *a, http_req *req, char key_id[64]);
/* The same, with the key's sandbox limit as cube-master last told this api (0: none). */
int api_authenticate_limited(api *a, http_req *req, char key_id[64], uint32_t *max_sandboxes);
int api_master_call(api *a, const char *method, const ProtobufCMessage *in,
                    const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out, cube_err *err);
void api_add_time(cJSON *o, const char *name, int64_t ms);
/* The body as a JSON object, or NULL after replying 400. */
cJSON *api_parse_body(http_req *req, int allow_empty);

/* A map<string,string> field of a request into protobuf entries allocated in *pool (freed by the caller); map
 * entries are {key = 1, value = 2} in every message, so these stand for any message's. */
typedef struct kv_pool {
    Cube__CreateSandboxRequest__MetadataEntry *e;
    Cube__CreateSandboxRequest__MetadataEntry **p;
} kv_pool;
int api_to_entries(const cJSON *obj, const char *name, kv_pool *pool, size_t *n, cube_err *err);

/* /secrets and /secrets/{id or name} */
void api_secrets(void *svc, http_req *req);
void api_secret_one(void *svc, http_req *req);

/* /api-keys, /api-keys/{id}, /nodes, /templates (admin.c) */
void api_keys(void *svc, http_req *req);
void api_key_one(void *svc, http_req *req);
void api_nodes(void *svc, http_req *req);
void api_templates(void *svc, http_req *req);
void api_template_one(void *svc, http_req *req);

/* E2B template builds (builds.c): POST /v3/templates, PUT /templates/{id}/files/{hash},
 * POST /v2/templates/{id}/builds/{buildID}; api_template_build_get answers GET /templates/{id}/files/{hash}
 * and /templates/{id}/builds/{buildID}/status, false when the URL is neither. */
void api_templates_v3(void *svc, http_req *req);
void api_template_file_put(void *svc, http_req *req);
void api_template_build_start(void *svc, http_req *req);
bool api_template_build_get(void *svc, http_req *req);
/* E2B's tags: POST and DELETE /templates/tags (GET /templates/{id}/tags is api_template_build_get's) */
void api_template_tags(void *svc, http_req *req);

/* E2B's /volumecontent/{id}/dir|path|file on cube-api's port (bodies and files buffered) */
void api_volume_content(void *svc, http_req *req);

#endif
