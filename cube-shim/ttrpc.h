/* ttrpc, containerd's RPC for shims: 10-byte frames (length, stream id, type, flags; big-endian) carrying a
 * protobuf Request {service, method, payload} and answered by a Response {status, payload}. Unary calls
 * only, which is all the task service and the events service use. Server: a thread per connection reads
 * frames, a thread per request runs the handler (Wait blocks until a process exits, others must not wait
 * behind it), responses are written whole under the connection's lock. */
#ifndef CUBE_SHIM_TTRPC_H
#define CUBE_SHIM_TTRPC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define TTRPC_MAX_DATA (4u << 20)

/* Memory a handler hands out with its response: freed once the response is sent. */
typedef struct ttrpc_ctx ttrpc_ctx;
void *ttrpc_alloc(ttrpc_ctx *ctx, size_t size); /* zeroed */
char *ttrpc_strdup(ttrpc_ctx *ctx, const char *s);

typedef int (*ttrpc_handler)(void *svc, ttrpc_ctx *ctx, const void *req, void *resp, cube_err *err);

typedef struct ttrpc_method {
    const char *service, *method;
    const ProtobufCMessageDescriptor *request, *response;
    ttrpc_handler fn;
} ttrpc_method;

/* Accepts on listen_fd and serves until *stop becomes true after a response (then returns). */
void ttrpc_serve(int listen_fd, const ttrpc_method *methods, void *svc, volatile bool *stop);

/* The gRPC status code for an errno (NotFound, AlreadyExists, InvalidArgument, Unimplemented, ...). */
int ttrpc_code(int err);

/* Frame codec, exposed for tests: header in, payload length out; -1 for a frame to refuse. */
int ttrpc_parse_header(const uint8_t h[10], uint32_t *len, uint32_t *stream, uint8_t *type, uint8_t *flags);
void ttrpc_put_header(uint8_t h[10], uint32_t len, uint32_t stream, uint8_t type, uint8_t flags);

/* A client connection (events to containerd): one call at a time. */
typedef struct ttrpc_client ttrpc_client;
ttrpc_client *ttrpc_client_connect(const char *address, cube_err *err); /* "unix:///path" or a path */
void ttrpc_client_free(ttrpc_client *c);
int ttrpc_client_call(ttrpc_client *c, const char *service, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, cube_err *err);

#endif
