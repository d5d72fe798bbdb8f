/* E2B's volume content API (/volumecontent/{volumeID}/dir|path|file), the SDK's Volume file calls without a
 * sandbox. The SDK sends them to E2B_VOLUME_API_URL with the volume's token (Authorization: Bearer, from
 * POST /volumes or GET /volumes/{id}); an API key (X-API-KEY) is taken too. cube-master passes each call to
 * the node that holds the volume's files.
 *
 * Served twice: on cube-api's own port (bodies buffered, files up to HTTP_MAX_BUFFERED_BODY), and on the
 * volume port (--volume-port, what E2B_VOLUME_API_URL names), a thread per connection where a file streams
 * both ways in chunks of one RPC each, whatever its size. */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "common.pb-c.h"
#include "json.h"

#define VC_CHUNK  (1u << 20) /* bytes one VolumeFiles call carries (less: api.file_chunk) */
#define VC_PREFIX "/volumecontent/"

typedef struct vc_call {
    api *a;
    char volume_id[64];
    char kind[8]; /* dir | path | file */
    char path[4096];
    Cube__VolumeFileRequest r; /* the query's fields; op, data, offset set per call */
    /* an upload: its chunk being filled, the bytes sent, whether the node has a part of it */
    uint8_t *buf;
    size_t len;
    uint64_t sent;
    char upload_id[33];
    bool started, finished;
    /* a streamed read */
    uint64_t read_off;
    Cube__VolumeFileResponse *chunk;
    size_t chunk_pos;
    bool eof;
} vc_call;

static size_t chunk_size(const vc_call *c)
{
    return c->a->file_chunk && c->a->file_chunk < VC_CHUNK ? c->a->file_chunk : VC_CHUNK;
}

static int node_call(vc_call *c, const char *op, Cube__VolumeFileResponse **out, cube_err *err)
{
    c->r.op = (char *)op;
    c->r.volume_id = c->volume_id;
    c->r.path = c->path;
    return api_master_call(c->a, "/cube.Master/VolumeFiles", &c->r.base,
                           &cube__volume_file_response__descriptor, (ProtobufCMessage **)out, err);
}

static void abort_upload(vc_call *c)
{
    if (!c->started || c->finished) return;
    c->finished = true;
    Cube__VolumeFileResponse *r = NULL;
    cube_err err = {0};
    c->r.data.len = 0;
    if (node_call(c, "abort", &r, &err) == 0) cube__volume_file_response__free_unpacked(r, NULL);
}

static void vc_free(void *p)
{
    vc_call *c = p;
    abort_upload(c); /* the client went away mid-upload: its part goes */
    if (c->chunk) cube__volume_file_response__free_unpacked(c->chunk, NULL);
    free(c->buf);
    free(c);
}

/* A query parameter that is a whole number in [lo, hi], or absent (*out = -1). */
static int int_param(http_req *req, const char *name, long long lo, long long hi, int64_t *out)
{
    const char *v = http_query(req, name);
    *out = -1;
    if (!v || !*v) return 0;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || n < lo || n > hi) {
        http_reply_error(req, 400, "%s: a whole number from %lld to %lld", name, lo, hi);
        return -1;
    }
    *out = n;
    return 0;
}

/* The volume's token (Bearer) or an API key. */
static int authorize(api *a, http_req *req, const char *volume_id)
{
    if (http_header(req, "X-API-KEY")) {
        char key_id[64];
        return api_authenticate(a, req, key_id);
    }
    const char *auth = http_header(req, "Authorization");
    if (!auth || strncmp(auth, "Bearer ", 7) != 0 || !auth[7]) {
        http_reply_error(req, 401, "missing Authorization: Bearer <the volume's token> (or an X-API-KEY)");
        return -1;
    }
    Cube__VolumeRef ref = CUBE__VOLUME_REF__INIT;
    ref.volume_id = (char *)volume_id;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    if (api_master_call(a, "/cube.Master/GetVolume", &ref.base, &cube__volume__descriptor, &resp, &err) < 0) {
        api_reply_err(req, &err);
        return -1;
    }
    const char *tok = ((Cube__Volume *)resp)->token, *got = auth + 7;
    bool ok = tok && strlen(tok) == strlen(got) && CRYPTO_memcmp(tok, got, strlen(tok)) == 0;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!ok) http_reply_error(req, 401, "the token is not this volume's");
    return ok ? 0 : -1;
}

/* The call's volume, kind and query (replying 400/401/404 when they are wrong), as req's state. */
static vc_call *vc_begin(api *a, http_req *req)
{
    if (req->state) return req->state;
    const char *id = req->url + strlen(VC_PREFIX), *slash = strchr(id, '/');
    size_t idl = slash ? (size_t)(slash - id) : 0;
    const char *kind = slash ? slash + 1 : "";
    if (idl == 0 || idl >= 64 ||
        (strcmp(kind, "dir") != 0 && strcmp(kind, "path") != 0 && strcmp(kind, "file") != 0)) {
        http_reply_error(req, 404, "no such endpoint: %s %s (want /volumecontent/{volumeID}/dir|path|file)",
                         req->method, req->url);
        return NULL;
    }
    vc_call *c = calloc(1, sizeof(*c));
    if (!c) {
        http_reply_error(req, 500, "out of memory");
        return NULL;
    }
    req->state = c;
    req->state_free = vc_free;
    c->a = a;
    snprintf(c->volume_id, sizeof(c->volume_id), "%.*s", (int)idl, id);
    snprintf(c->kind, sizeof(c->kind), "%s", kind);
    cube__volume_file_request__init(&c->r);
    const char *path = http_query(req, "path");
    if (!path || strlen(path) >= sizeof(c->path)) {
        http_reply_error(req, 400, "path: required, at most %zu bytes", sizeof(c->path) - 1);
        return NULL;
    }
    snprintf(c->path, sizeof(c->path), "%s", path);
    int64_t depth, force = 0;
    const char *f = http_query(req, "force");
    if (f && *f && strcmp(f, "true") != 0 && strcmp(f, "false") != 0) {
        http_reply_error(req, 400, "force: true or false");
        return NULL;
    }
    force = f && strcmp(f, "true") == 0;
    if (int_param(req, "uid", 0, 65535, &c->r.uid) < 0 || int_param(req, "gid", 0, 65535, &c->r.gid) < 0 ||
        int_param(req, "mode", 0, 07777, &c->r.mode) < 0 || int_param(req, "depth", 1, 16, &depth) < 0)
        return NULL;
    c->r.depth = depth > 0 ? (uint32_t)depth : 1;
    c->r.force = force;
    if (authorize(a, req, c->volume_id) < 0) return NULL;
    return c;
}

static cJSON *entry_json(const Cube__VolumeEntry *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", e->name);
    cJSON_AddStringToObject(o, "path", e->path);
    cJSON_AddStringToObject(o, "type", e->type);
    if (e->target && *e->target) cJSON_AddStringToObject(o, "target", e->target);
    cJSON_AddNumberToObject(o, "size", (double)e->size);
    cJSON_AddNumberToObject(o, "mode", e->mode);
    cJSON_AddNumberToObject(o, "uid", e->uid);
    cJSON_AddNumberToObject(o, "gid", e->gid);
    api_add_time(o, "atime", e->atime_ms);
    api_add_time(o, "mtime", e->mtime_ms);
    api_add_time(o, "ctime", e->ctime_ms);
    return o;
}

/* One VolumeFiles call answered with its entry (or entries, for a listing). */
static void reply_entries(vc_call *c, http_req *req, const char *op, unsigned status, bool list)
{
    Cube__VolumeFileResponse *r = NULL;
    cube_err err = {0};
    if (node_call(c, op, &r, &err) < 0) return api_reply_err(req, &err);
    if (list) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < r->n_entries; i++) cJSON_AddItemToArray(arr, entry_json(r->entries[i]));
        http_reply_cjson(req, status, arr);
    } else if (status == 204) {
        http_reply_empty(req, 204);
    } else if (r->n_entries) {
        http_reply_cjson(req, status, entry_json(r->entries[0]));
    } else {
        http_reply_error(req, 500, "the node answered no entry");
    }
    cube__volume_file_response__free_unpacked(r, NULL);
}

/* ---- uploads: a chunk goes to the node whenever VC_CHUNK bytes are in, the last one places the file ---- */

static int send_chunk(vc_call *c, bool last, cube_err *err)
{
    if (!c->started) {
        unsigned char rnd[16];
        if (RAND_bytes(rnd, sizeof(rnd)) != 1)
            return cube_err_set(err, EIO, "no randomness for an upload id");
        for (int i = 0; i < 16; i++) snprintf(c->upload_id + 2 * i, 3, "%02x", rnd[i]);
        c->r.upload_id = c->upload_id;
        c->started = true;
    }
    c->r.offset = c->sent;
    c->r.data.data = c->buf;
    c->r.data.len = c->len;
    c->r.last = last;
    Cube__VolumeFileResponse *r = NULL;
    if (node_call(c, "write", &r, err) < 0) return -1;
    c->sent += c->len;
    c->len = 0;
    if (last) {
        c->finished = true;
        c->chunk = r; /* its entry is the answer */
    } else {
        cube__volume_file_response__free_unpacked(r, NULL);
    }
    return 0;
}

static int take_bytes(vc_call *c, http_req *req, const char *data, size_t n)
{
    while (n) {
        size_t cs = chunk_size(c);
        if (!c->buf && !(c->buf = malloc(cs))) {
            http_reply_error(req, 500, "out of memory");
            return -1;
        }
        size_t take = cs - c->len < n ? cs - c->len : n;
        memcpy(c->buf + c->len, data, take);
        c->len += take;
        data += take;
        n -= take;
        cube_err err = {0};
        if (c->len == cs && send_chunk(c, false, &err) < 0) {
            abort_upload(c);
            api_reply_err(req, &err);
            return -1;
        }
    }
    return 0;
}

static bool is_file_put(http_req *req)
{
    const char *u = req->url + strlen(VC_PREFIX), *s = strchr(u, '/');
    return strcmp(req->method, "PUT") == 0 && s && strcmp(s, "/file") == 0;
}

int api_volume_upload(void *svc, http_req *req, const char *data, size_t len)
{
    if (!is_file_put(req)) { /* no other call has a body worth streaming: keep it for the handler */
        if (req->body_len + len > 65536) {
            http_reply_error(req, 413, "request body larger than 65536 bytes");
            return -1;
        }
        char *nb = realloc(req->body, req->body_len + len + 1);
        if (!nb) return -1;
        req->body = nb;
        memcpy(req->body + req->body_len, data, len);
        req->body_len += len;
        req->body[req->body_len] = '\0';
        return 0;
    }
    vc_call *c = vc_begin(svc, req);
    return c ? take_bytes(c, req, data, len) : -1;
}

static void file_put(vc_call *c, http_req *req)
{
    if (req->body_len && take_bytes(c, req, req->body, req->body_len) < 0) return; /* buffered */
    cube_err err = {0};
    if (send_chunk(c, true, &err) < 0) {
        abort_upload(c);
        return api_reply_err(req, &err);
    }
    if (!c->chunk || !c->chunk->n_entries) return http_reply_error(req, 500, "the node answered no entry");
    http_reply_cjson(req, 200, entry_json(c->chunk->entries[0]));
}

/* ---- reads ---- */

static int read_chunk(vc_call *c, cube_err *err)
{
    if (c->chunk) cube__volume_file_response__free_unpacked(c->chunk, NULL);
    c->chunk = NULL;
    c->chunk_pos = 0;
    c->r.offset = c->read_off;
    c->r.max_bytes = (uint32_t)chunk_size(c);
    if (node_call(c, "read", &c->chunk, err) < 0) return -1;
    c->read_off += c->chunk->data.len;
    c->eof = c->chunk->eof || c->chunk->data.len == 0;
    return 0;
}

/* MHD pulls the file: the next chunk is asked for once this one is out (a thread per connection here). */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    vc_call *c = cls;
    if (c->chunk_pos == c->chunk->data.len) {
        if (c->eof) return MHD_CONTENT_READER_END_OF_STREAM;
        cube_err err = {0};
        if (read_chunk(c, &err) < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (c->chunk->data.len == 0) return MHD_CONTENT_READER_END_OF_STREAM;
    }
    size_t n = c->chunk->data.len - c->chunk_pos < max ? c->chunk->data.len - c->chunk_pos : max;
    memcpy(buf, c->chunk->data.data + c->chunk_pos, n);
    c->chunk_pos += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    (void)cls; /* the request's state owns it */
}

static void file_get(vc_call *c, http_req *req, bool stream)
{
    cube_err err = {0};
    if (read_chunk(c, &err) < 0) return api_reply_err(req, &err);
    if (c->eof) {
        return http_reply_bytes(req, 200, "application/octet-stream", c->chunk->data.data,
                                c->chunk->data.len);
    }
    if (stream) {
        struct MHD_Response *resp =
            MHD_create_response_from_callback(c->chunk->size, 64 * 1024, stream_read, c, stream_free);
        if (!resp) return http_reply_error(req, 500, "out of memory");
        MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
        return http_reply(req, 200, resp);
    }
    /* cube-api's own port answers from one buffer */
    if (c->chunk->size > HTTP_MAX_BUFFERED_BODY)
        return http_reply_error(req, 413,
                                "path: the file has %llu bytes; this port reads at most %u: read it through "
                                "E2B_VOLUME_API_URL (cube-api's --volume-port)",
                                (unsigned long long)c->chunk->size, HTTP_MAX_BUFFERED_BODY);
    size_t cap = (size_t)c->chunk->size + chunk_size(c), n = 0;
    char *all = malloc(cap);
    if (!all) return http_reply_error(req, 500, "out of memory");
    for (;;) {
        size_t l = c->chunk->data.len;
        if (n + l > cap) {
            free(all);
            return http_reply_error(req, 409, "path: the file grew while it was read: read it again");
        }
        memcpy(all + n, c->chunk->data.data, l);
        n += l;
        if (c->eof) break;
        if (read_chunk(c, &err) < 0) {
            free(all);
            return api_reply_err(req, &err);
        }
    }
    http_reply_bytes(req, 200, "application/octet-stream", all, n);
    free(all);
}

/* PATCH /path {uid, gid, mode} */
static void path_patch(vc_call *c, http_req *req)
{
    cJSON *j = api_parse_body(req, 1);
    if (!j) return;
    static const struct {
        const char *name;
        double hi;
    } fields[] = {{"uid", 65535}, {"gid", 65535}, {"mode", 07777}};
    int64_t *dst[] = {&c->r.uid, &c->r.gid, &c->r.mode};
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, fields[i].name);
        if (!v || cJSON_IsNull(v)) continue;
        if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble || v->valuedouble < 0 ||
            v->valuedouble > fields[i].hi) {
            cJSON_Delete(j);
            return http_reply_error(req, 400, "%s: a whole number from 0 to %.0f", fields[i].name,
                                    fields[i].hi);
        }
        *dst[i] = (int64_t)v->valuedouble;
    }
    cJSON_Delete(j);
    reply_entries(c, req, "chmeta", 200, false);
}

static void dispatch(void *svc, http_req *req, bool stream)
{
    vc_call *c = vc_begin(svc, req);
    if (!c) return;
    const char *m = req->method;
    if (strcmp(c->kind, "dir") == 0 && strcmp(m, "GET") == 0) return reply_entries(c, req, "list", 200, true);
    if (strcmp(c->kind, "dir") == 0 && strcmp(m, "POST") == 0)
        return reply_entries(c, req, "mkdir", 201, false);
    if (strcmp(c->kind, "path") == 0 && strcmp(m, "GET") == 0)
        return reply_entries(c, req, "stat", 200, false);
    if (strcmp(c->kind, "path") == 0 && strcmp(m, "PATCH") == 0) return path_patch(c, req);
    if (strcmp(c->kind, "path") == 0 && strcmp(m, "DELETE") == 0)
        return reply_entries(c, req, "remove", 204, false);
    if (strcmp(c->kind, "file") == 0 && strcmp(m, "GET") == 0) return file_get(c, req, stream);
    if (strcmp(c->kind, "file") == 0 && strcmp(m, "PUT") == 0) return file_put(c, req);
    http_reply_error(req, 405, "method %s not allowed on %s", m, req->url);
}

void api_volume_content(void *svc, http_req *req)
{
    dispatch(svc, req, false);
}

static void volume_content_streamed(void *svc, http_req *req)
{
    dispatch(svc, req, true);
}

static void health(void *svc, http_req *req)
{
    (void)svc;
    http_reply_json(req, 200, "{\"status\":\"ok\"}");
}

const http_route api_volume_routes[] = {
    {"GET", VC_PREFIX, volume_content_streamed, NULL},
    {"POST", VC_PREFIX, volume_content_streamed, api_volume_upload},
    {"PATCH", VC_PREFIX, volume_content_streamed, api_volume_upload},
    {"DELETE", VC_PREFIX, volume_content_streamed, NULL},
    {"PUT", VC_PREFIX, volume_content_streamed, api_volume_upload},
    {"GET", "/health", health, NULL},
    {0},
};
