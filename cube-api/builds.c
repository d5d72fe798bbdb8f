/* E2B template builds through cube-api (the SDK's Template.build): POST /v3/templates asks for a build,
 * GET /templates/{id}/files/{hash} says whether a COPY step's files are there and where to PUT them,
 * PUT /templates/{id}/files/{hash} takes them (a tar, usually gzipped; buffered, so at most
 * HTTP_MAX_BUFFERED_BODY), POST /v2/templates/{id}/builds/{buildID} starts it and
 * GET /templates/{id}/builds/{buildID}/status?logsOffset= follows it. cube-master keeps the records; the node
 * that runs the build keeps its files, layers and logs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "common.pb-c.h"
#include "id.h"
#include "json.h"

#define FILE_CHUNK        (1u << 20) /* bytes a PutBuildFile call carries (gRPC messages stay small) */
#define TEMPLATE_CPUS_MAX 64
#define TEMPLATE_MEM_MIN  128
#define TEMPLATE_DISK_MAX (1 << 18) /* MB: cubelet's TEMPLATE_DISK_MB_MAX */
#define TEMPLATE_MEM_MAX  (1 << 20)
#define TAGS_MAX          16

static bool valid_hash(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 128) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_'))
            return false;
    return true;
}

/* A whole number field in [lo, hi], or absent (*out untouched). */
static int int_field(http_req *req, const cJSON *j, const char *name, double lo, double hi, double *out)
{
    const cJSON *v = cJSON_GetObjectItem(j, name);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(long long)v->valuedouble || v->valuedouble < lo ||
        v->valuedouble > hi) {
        http_reply_error(req, 400, "%s: a whole number from %.0f to %.0f", name, lo, hi);
        return -1;
    }
    *out = v->valuedouble;
    return 0;
}

/* POST /v3/templates {name ("name" or "name:tag"), tags, cpuCount, memoryMB, minFreeDiskMb} */
void api_templates_v3(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    cJSON *j = api_parse_body(req, 0);
    if (!j) return;
    const char *full = cJSON_GetStringValue(cJSON_GetObjectItem(j, "name"));
    if (!full) full = cJSON_GetStringValue(cJSON_GetObjectItem(j, "alias")); /* the older SDKs' field */
    char name[128] = "", tag[128] = "";
    if (full) {
        const char *colon = strchr(full, ':');
        snprintf(name, sizeof(name), "%.*s", colon ? (int)(colon - full) : (int)strlen(full), full);
        if (colon) snprintf(tag, sizeof(tag), "%s", colon + 1);
    }
    double cpus = 2, mem = 512, disk = 0;
    const cJSON *tags = cJSON_GetObjectItem(j, "tags"), *t;
    char *tagv[TAGS_MAX + 1];
    size_t ntags = 0;
    if (!cube_template_name_valid(name)) {
        http_reply_error(req, 400,
                         "name: a template name of 1-63 characters of [a-z0-9._-] (name or name:tag)");
    } else if (full[strlen(name)] == ':' && !cube_template_name_valid(tag)) {
        http_reply_error(req, 400, "name: the tag after ':' must be 1-63 characters of [a-z0-9._-]");
    } else if (tags && !cJSON_IsNull(tags) && !cJSON_IsArray(tags)) {
        http_reply_error(req, 400, "tags: an array of strings");
    } else if (int_field(req, j, "cpuCount", 1, TEMPLATE_CPUS_MAX, &cpus) < 0 ||
               int_field(req, j, "memoryMB", TEMPLATE_MEM_MIN, TEMPLATE_MEM_MAX, &mem) < 0 ||
               int_field(req, j, "minFreeDiskMb", 0, TEMPLATE_DISK_MAX, &disk) < 0) {
    } else {
        bool ok = true;
        if (*tag) tagv[ntags++] = tag;
        const cJSON *tag_list = cJSON_IsArray(tags) ? tags : NULL;
        cJSON_ArrayForEach(t, tag_list)
        {
            if (!cube_template_name_valid(cJSON_GetStringValue(t)) || ntags >= TAGS_MAX) {
                http_reply_error(req, 400, "tags: at most %d strings of [a-z0-9._-]", TAGS_MAX);
                ok = false;
                break;
            }
            tagv[ntags++] = t->valuestring;
        }
        if (!ok) {
            cJSON_Delete(j);
            return;
        }
        Cube__RequestBuildRequest in = CUBE__REQUEST_BUILD_REQUEST__INIT;
        Cube__Resources res = CUBE__RESOURCES__INIT;
        res.cpu_count = (uint32_t)cpus;
        res.memory_mb = (uint64_t)mem;
        res.disk_mb = (uint64_t)disk; /* 0: the node's; more: each sandbox's disk is at least this */
        in.name = name;
        in.resources = &res;
        in.n_tags = ntags;
        in.tags = tagv;
        ProtobufCMessage *resp = NULL;
        cube_err err = {0};
        if (api_master_call(a, "/cube.Master/RequestBuild", &in.base, &cube__template_build__descriptor,
                            &resp, &err) < 0) {
            cJSON_Delete(j);
            return api_reply_err(req, &err);
        }
        const Cube__TemplateBuild *b = (const Cube__TemplateBuild *)resp;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "templateID", b->template_id);
        cJSON_AddStringToObject(o, "buildID", b->build_id);
        cJSON_AddBoolToObject(o, "public", false);
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "names"), cJSON_CreateString(b->template_id));
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "aliases"), cJSON_CreateString(b->template_id));
        cJSON *ta = cJSON_AddArrayToObject(o, "tags");
        for (size_t i = 0; i < b->n_tags; i++) cJSON_AddItemToArray(ta, cJSON_CreateString(b->tags[i]));
        protobuf_c_message_free_unpacked(resp, NULL);
        http_reply_cjson(req, 202, o);
    }
    cJSON_Delete(j);
}

/* GET /templates/{id}/files/{hash}: {present} and, when absent, where the SDK PUTs them (this API, with the
 * caller's own key in the headers the SDK sends along). */
static void file_link(api *a, http_req *req, const char *id, const char *hash)
{
    Cube__BuildFileRef in = CUBE__BUILD_FILE_REF__INIT;
    in.template_id = (char *)id;
    in.hash = (char *)hash;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (api_master_call(a, "/cube.Master/GetBuildFile", &in.base, &cube__build_file_state__descriptor, &resp,
                        &err) < 0)
        return api_reply_err(req, &err);
    bool present = ((const Cube__BuildFileState *)resp)->present;
    protobuf_c_message_free_unpacked(resp, NULL);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "present", present);
    const char *host = http_header(req, "Host");
    if (!present && host) {
        char url[1024];
        snprintf(url, sizeof(url), "http://%s/templates/%s/files/%s", host, id, hash);
        cJSON_AddStringToObject(o, "url", url);
        cJSON *h = cJSON_AddObjectToObject(o, "headers");
        cJSON_AddStringToObject(h, "X-API-KEY", http_header(req, "X-API-KEY"));
    }
    http_reply_cjson(req, 201, o);
}

/* GET /templates/{id}/builds/{buildID}/status?logsOffset=&level= */
static void build_status(api *a, http_req *req, const char *id, const char *build)
{
    const char *off = http_query(req, "logsOffset");
    char *end = NULL;
    long long offset = off && *off ? strtoll(off, &end, 10) : 0;
    if (off && *off && (*end || offset < 0 || offset > 1000000000))
        return http_reply_error(req, 400, "logsOffset: a whole number from 0");
    Cube__BuildStatusRequest in = CUBE__BUILD_STATUS_REQUEST__INIT;
    in.template_id = (char *)id;
    in.build_id = (char *)build;
    in.logs_offset = (uint32_t)offset;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (api_master_call(a, "/cube.Master/GetBuildStatus", &in.base, &cube__build_status__descriptor, &resp,
                        &err) < 0)
        return api_reply_err(req, &err);
    const Cube__BuildStatus *s = (const Cube__BuildStatus *)resp;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "templateID", id);
    cJSON_AddStringToObject(o, "buildID", build);
    cJSON_AddStringToObject(o, "status", s->state && *s->state ? s->state : "waiting");
    cJSON *logs = cJSON_AddArrayToObject(o, "logs"), *entries = cJSON_AddArrayToObject(o, "logEntries");
    for (size_t i = 0; i < s->n_logs; i++) {
        const Cube__BuildLogEntry *l = s->logs[i];
        cJSON_AddItemToArray(logs, cJSON_CreateString(l->message));
        cJSON *e = cJSON_CreateObject();
        api_add_time(e, "timestamp", l->timestamp_ms);
        cJSON_AddStringToObject(e, "level", l->level);
        cJSON_AddStringToObject(e, "message", l->message);
        if (l->step && *l->step) cJSON_AddStringToObject(e, "step", l->step);
        cJSON_AddItemToArray(entries, e);
    }
    if (s->reason && *s->reason) {
        cJSON *r = cJSON_AddObjectToObject(o, "reason");
        cJSON_AddStringToObject(r, "message", s->reason);
        if (s->reason_step && *s->reason_step) cJSON_AddStringToObject(r, "step", s->reason_step);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    http_reply_cjson(req, 200, o);
}

/* The parts of /templates/{id}/... ; false (after a 404) when the URL is none of ours. */
static int split(const char *rest, char parts[4][160])
{
    int n = 0;
    while (*rest && n < 4) {
        const char *slash = strchr(rest, '/');
        size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
        if (len == 0 || len >= 160) return -1;
        memcpy(parts[n], rest, len);
        parts[n][len] = '\0';
        n++;
        rest += len + (slash ? 1 : 0);
        if (slash && !*rest) return -1;
    }
    return *rest ? -1 : n;
}

/* TemplateTags through the master; list answers [{tag, buildID, createdAt}], assign {buildID, tags}. */
static void tags_call(api *a, http_req *req, const char *op, const char *name, const char *target,
                      const cJSON *tags)
{
    Cube__TemplateTagsRequest in = CUBE__TEMPLATE_TAGS_REQUEST__INIT;
    char *tagv[TAGS_MAX];
    const cJSON *t;
    cJSON_ArrayForEach(t, tags)
    {
        if (!cube_template_name_valid(cJSON_GetStringValue(t)) || in.n_tags >= TAGS_MAX)
            return http_reply_error(req, 400, "tags: at most %d strings of [a-z0-9._-]", TAGS_MAX);
        tagv[in.n_tags++] = t->valuestring;
    }
    in.name = (char *)name;
    in.op = (char *)op;
    in.target = (char *)(target ? target : "");
    in.tags = tagv;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (api_master_call(a, "/cube.Master/TemplateTags", &in.base, &cube__template_tags_response__descriptor,
                        &resp, &err) < 0)
        return api_reply_err(req, &err);
    const Cube__TemplateTagsResponse *r = (const Cube__TemplateTagsResponse *)resp;
    if (strcmp(op, "list") == 0) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < r->n_tags; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "tag", r->tags[i]->tag);
            cJSON_AddStringToObject(o, "buildID", r->tags[i]->build_id);
            api_add_time(o, "createdAt", r->tags[i]->created_at_ms);
            cJSON_AddItemToArray(arr, o);
        }
        http_reply_cjson(req, 200, arr);
    } else if (strcmp(op, "assign") == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "buildID", r->build_id);
        cJSON *ta = cJSON_AddArrayToObject(o, "tags");
        for (size_t i = 0; i < in.n_tags; i++) cJSON_AddItemToArray(ta, cJSON_CreateString(tagv[i]));
        http_reply_cjson(req, 201, o);
    } else {
        http_reply_empty(req, 204);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
}

/* POST /templates/tags {target: "name:tag" or "name", tags}; DELETE /templates/tags {name, tags} */
void api_template_tags(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    cJSON *j = api_parse_body(req, 0);
    if (!j) return;
    bool assign = strcmp(req->method, "POST") == 0;
    const char *field = assign ? "target" : "name";
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(j, field));
    const cJSON *tags = cJSON_GetObjectItem(j, "tags");
    char name[128] = "";
    if (v) snprintf(name, sizeof(name), "%.*s", (int)strcspn(v, ":"), v);
    const char *tag = v ? strchr(v, ':') : NULL;
    if (!cube_template_name_valid(name) || (tag && (!assign || !cube_template_name_valid(tag + 1))))
        http_reply_error(req, 400, "%s: a template name%s of [a-z0-9._-]", field,
                         assign ? " (name:tag)" : "");
    else if (!cJSON_IsArray(tags) || cJSON_GetArraySize(tags) == 0)
        http_reply_error(req, 400, "tags: a non-empty array of strings");
    else
        tags_call(a, req, assign ? "assign" : "remove", name, v, tags);
    cJSON_Delete(j);
}

bool api_template_build_get(void *svc, http_req *req)
{
    api *a = svc;
    char parts[4][160];
    int n = split(req->url + strlen("/templates/"), parts);
    bool files = n == 3 && strcmp(parts[1], "files") == 0;
    bool status = n == 4 && strcmp(parts[1], "builds") == 0 && strcmp(parts[3], "status") == 0;
    bool tags = n == 2 && strcmp(parts[1], "tags") == 0;
    if (!files && !status && !tags) return false;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return true;
    if (!cube_template_name_valid(parts[0])) {
        http_reply_error(req, 404, "template '%s' not found", parts[0]);
    } else if (tags) {
        tags_call(a, req, "list", parts[0], NULL, NULL);
    } else if (files) {
        if (!valid_hash(parts[2]))
            http_reply_error(req, 400, "hash: letters, digits, '-' and '_'");
        else
            file_link(a, req, parts[0], parts[2]);
    } else {
        build_status(a, req, parts[0], parts[2]);
    }
    return true;
}

/* PUT /templates/{id}/files/{hash}: the body to the build's node, a chunk a call. */
void api_template_file_put(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    char parts[4][160];
    int n = split(req->url + strlen("/templates/"), parts);
    if (n != 3 || strcmp(parts[1], "files") != 0)
        return http_reply_error(req, 404, "no such endpoint: %s", req->url);
    if (!cube_template_name_valid(parts[0]))
        return http_reply_error(req, 404, "template '%s' not found", parts[0]);
    if (!valid_hash(parts[2])) return http_reply_error(req, 400, "hash: letters, digits, '-' and '_'");
    size_t chunk = a->file_chunk ? a->file_chunk : FILE_CHUNK;
    size_t off = 0;
    do {
        size_t len = req->body_len - off > chunk ? chunk : req->body_len - off;
        Cube__BuildFileChunk in = CUBE__BUILD_FILE_CHUNK__INIT;
        in.template_id = parts[0];
        in.hash = parts[2];
        in.offset = off;
        in.data.data = (uint8_t *)req->body + off;
        in.data.len = len;
        in.last = off + len == req->body_len;
        ProtobufCMessage *resp = NULL;
        cube_err err = {0};
        if (api_master_call(a, "/cube.Master/PutBuildFile", &in.base, &cube__empty__descriptor, &resp, &err) <
            0)
            return api_reply_err(req, &err);
        protobuf_c_message_free_unpacked(resp, NULL);
        off += len;
    } while (off < req->body_len);
    http_reply_empty(req, 201);
}

/* POST /v2/templates/{id}/builds/{buildID} with the SDK's serialized template */
void api_template_build_start(void *svc, http_req *req)
{
    api *a = svc;
    char key_id[64];
    if (api_authenticate(a, req, key_id) < 0) return;
    char parts[4][160];
    int n = split(req->url + strlen("/v2/templates/"), parts);
    if (n != 3 || strcmp(parts[1], "builds") != 0)
        return http_reply_error(req, 404, "no such endpoint: %s", req->url);
    cJSON *j = api_parse_body(req, 0);
    if (!j) return;
    const cJSON *steps = cJSON_GetObjectItem(j, "steps");
    const char *from = cJSON_GetStringValue(cJSON_GetObjectItem(j, "fromTemplate"));
    const char *img = cJSON_GetStringValue(cJSON_GetObjectItem(j, "fromImage"));
    if (steps && !cJSON_IsArray(steps)) {
        cJSON_Delete(j);
        return http_reply_error(req, 400, "steps: an array of steps");
    }
    if (!from && !img) {
        cJSON_Delete(j);
        return http_reply_error(req, 400, "fromTemplate or fromImage is required");
    }
    cJSON_Delete(j);
    Cube__BuildStartRequest in = CUBE__BUILD_START_REQUEST__INIT;
    in.template_id = parts[0];
    in.build_id = parts[2];
    in.template_json = req->body;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (api_master_call(a, "/cube.Master/StartBuild", &in.base, &cube__empty__descriptor, &resp, &err) < 0)
        return api_reply_err(req, &err);
    protobuf_c_message_free_unpacked(resp, NULL);
    http_reply_empty(req, 202);
}
