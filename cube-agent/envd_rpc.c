#include "envd_rpc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "timeutil.h"

const cJSON *pj_get(const cJSON *o, const char *camel, const char *snake)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, camel);
    if (!v && snake) v = cJSON_GetObjectItemCaseSensitive(o, snake);
    return cJSON_IsNull(v) ? NULL : v;
}

const char *pj_string(const cJSON *o, const char *camel, const char *snake)
{
    const cJSON *v = pj_get(o, camel, snake);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int64_t pj_int(const cJSON *o, const char *camel, const char *snake, int64_t def)
{
    const cJSON *v = pj_get(o, camel, snake);
    if (cJSON_IsNumber(v)) return (int64_t)v->valuedouble;
    if (cJSON_IsString(v)) return strtoll(v->valuestring, NULL, 10); /* int64 travel as strings */
    return def;
}

int pj_bool(const cJSON *o, const char *camel, const char *snake)
{
    return cJSON_IsTrue(pj_get(o, camel, snake));
}

void envd_rpc_error(http_req *req, int streaming, connect_code code, const char *msg)
{
    if (streaming) {
        /* Connect streams report errors in the end-stream envelope of a 200 response */
        char *payload = connect_end_stream_json(code, msg);
        size_t len;
        unsigned char *env = connect_envelope(CONNECT_FLAG_END, payload, strlen(payload), &len);
        http_reply_bytes(req, 200, "application/connect+json", env, len);
        free(env);
        free(payload);
        return;
    }
    char *body = connect_error_json(code, msg);
    http_reply_json(req, (unsigned)connect_code_http_status(code), body);
    free(body);
}

void envd_rpc_error_err(http_req *req, int streaming, const cube_err *err)
{
    envd_rpc_error(req, streaming, connect_code_from_errno(err->code), err->msg);
}

int envd_rpc_begin(agent *a, http_req *req, int streaming, cJSON **in)
{
    *in = NULL;
    if (!agent_token_ok(a, req)) {
        envd_rpc_error(req, streaming, CONNECT_UNAUTHENTICATED, "missing or invalid access token");
        return -1;
    }
    const char *ct = http_header(req, "Content-Type");
    const char *want = streaming ? "application/connect+json" : "application/json";
    if (!ct || strncmp(ct, want, strlen(want)) != 0) {
        if (ct && strstr(ct, "proto")) {
            envd_rpc_error(req, streaming, CONNECT_UNIMPLEMENTED, "only the JSON codec is served");
            return -1;
        }
        /* curl and friends often omit it; a unary body that parses is accepted */
        if (streaming) {
            envd_rpc_error(req, 1, CONNECT_INVALID_ARGUMENT,
                           "streaming calls need Content-Type application/connect+json");
            return -1;
        }
    }
    const char *body = req->body ? req->body : "";
    size_t len = req->body_len;
    if (streaming) {
        uint8_t flags;
        const unsigned char *payload;
        size_t plen;
        const char *why;
        if (connect_envelope_parse((const unsigned char *)body, len, &flags, &payload, &plen, &why) < 0) {
            envd_rpc_error(req, 1, CONNECT_INVALID_ARGUMENT, why);
            return -1;
        }
        body = (const char *)payload;
        len = plen;
    }
    cube_err err = {0};
    cJSON *j = len ? cube_json_parse(body, len, &err) : cJSON_CreateObject();
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        envd_rpc_error(req, streaming, CONNECT_INVALID_ARGUMENT,
                       j ? "request must be a JSON object" : err.msg);
        return -1;
    }
    *in = j;
    return 0;
}

void envd_rpc_reply(http_req *req, cJSON *out)
{
    http_reply_cjson(req, 200, out);
}

typedef struct stream_state {
    envd_stream src;
    unsigned char *pending;
    size_t pending_len, pending_off;
    int finished; /* end-stream queued */
    int keepalive_ms;
    int64_t deadline_ms; /* 0: none */
} stream_state;

static void set_pending(stream_state *st, uint8_t flags, const char *json)
{
    free(st->pending);
    st->pending = connect_envelope(flags, json, strlen(json), &st->pending_len);
    st->pending_off = 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream_state *st = cls;
    while (!st->pending || st->pending_off == st->pending_len) {
        if (st->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        int wait = st->keepalive_ms;
        if (st->deadline_ms) {
            int64_t left = st->deadline_ms - cube_now_mono_ms();
            if (left <= 0) {
                char *end = connect_end_stream_json(CONNECT_DEADLINE_EXCEEDED, "the call's deadline passed");
                set_pending(st, CONNECT_FLAG_END, end);
                free(end);
                st->finished = 1;
                break;
            }
            if (left < wait) wait = (int)left;
        }
        char *json = NULL;
        int rc = st->src.next(st->src.ctx, wait, &json);
        if (rc == 1) {
            set_pending(st, 0, json);
            free(json);
        } else if (rc == 0) {
            if (!st->deadline_ms || cube_now_mono_ms() < st->deadline_ms)
                set_pending(st, 0, st->src.keepalive_json);
        } else {
            set_pending(st, CONNECT_FLAG_END, "{}");
            st->finished = 1;
        }
    }
    size_t n = st->pending_len - st->pending_off;
    if (n > max) n = max;
    memcpy(buf, st->pending + st->pending_off, n);
    st->pending_off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    stream_state *st = cls;
    st->src.free(st->src.ctx);
    free(st->pending);
    free(st);
}

void envd_rpc_stream(http_req *req, envd_stream src)
{
    stream_state *st = calloc(1, sizeof(*st));
    if (!st) {
        src.free(src.ctx);
        envd_rpc_error(req, 1, CONNECT_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    st->src = src;
    const char *ka = http_header(req, "Keepalive-Ping-Interval");
    long secs = ka ? strtol(ka, NULL, 10) : 0;
    st->keepalive_ms = (int)((secs > 0 && secs < 3600 ? secs : 30) * 1000);
    const char *tmo = http_header(req, "Connect-Timeout-Ms");
    long long ms = tmo ? strtoll(tmo, NULL, 10) : 0;
    if (ms > 0) st->deadline_ms = cube_now_mono_ms() + ms;
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, stream_read, st, stream_free);
    if (!r) {
        stream_free(st);
        envd_rpc_error(req, 1, CONNECT_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/connect+json");
    http_reply(req, 200, r);
}
