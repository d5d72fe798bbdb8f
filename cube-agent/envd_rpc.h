/* The Connect RPC edge of envd: auth, request decoding (unary JSON or one streaming envelope), replies and
 * streamed responses built from a producer of JSON messages. */
#ifndef CUBE_AGENT_ENVD_RPC_H
#define CUBE_AGENT_ENVD_RPC_H

#include <cjson/cJSON.h>

#include "agent.h"
#include "connect.h"

/* A server stream's source: next() returns 1 with a malloc'd JSON message, 0 after timeout_ms with nothing,
 * -1 when finished (then *err_code/err_msg say how: CONNECT_OK for a clean end). */
typedef struct envd_stream {
    void *ctx;
    int (*next)(void *ctx, int timeout_ms, char **json);
    void (*free)(void *ctx);
    const char *keepalive_json; /* sent after an idle keepalive interval */
} envd_stream;

/* Decodes the request: checks the token, parses the body (unary JSON or a stream envelope) into *in.
 * On failure it has already replied (unary: error JSON; stream: end-stream with the error) and returns -1. */
int envd_rpc_begin(agent *a, http_req *req, int streaming, cJSON **in);
void envd_rpc_reply(http_req *req, cJSON *out); /* takes out */
void envd_rpc_error(http_req *req, int streaming, connect_code code, const char *msg);
void envd_rpc_error_err(http_req *req, int streaming, const cube_err *err);
/* Starts the streamed response (HTTP 200, envelopes, end-stream); takes the stream. */
void envd_rpc_stream(http_req *req, envd_stream stream);

/* Proto-JSON field access accepting lowerCamelCase and proto names. */
const cJSON *pj_get(const cJSON *o, const char *camel, const char *snake);
const char *pj_string(const cJSON *o, const char *camel, const char *snake);
int64_t pj_int(const cJSON *o, const char *camel, const char *snake, int64_t def);
int pj_bool(const cJSON *o, const char *camel, const char *snake);

#endif
