/* What every RPC transport shares (gRPC in rpc_server.c/rpc_client.c, unix SOCK_SEQPACKET in rpc_local.c).
 * Not for use outside lib/rpc_*.c. No gRPC types here. */
#ifndef CUBE_RPC_CORE_H
#define CUBE_RPC_CORE_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "rpc.h"

/* The local transports' integers: 32 bits, little-endian. */
static inline void rpc_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t rpc_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A bump allocator that owns every allocation of one server call; freed whole. */
typedef struct rpc_arena rpc_arena;
rpc_arena *rpc_arena_new(void);
void *rpc_arena_alloc(rpc_arena *a, size_t size);
void rpc_arena_free(rpc_arena *a);
/* A ProtobufCAllocator over the arena (frees are no-ops; the arena frees at the end). */
ProtobufCAllocator rpc_arena_allocator(rpc_arena *a);

struct cube_rpc_ctx {
    int64_t deadline_ns; /* monotonic; INT64_MAX: none */
    int closed;          /* gRPC, atomic: RECV_CLOSE_ON_SERVER completed */
    int cancelled;       /* gRPC: written by grpc before the close completion */
    int fd;              /* local: the call's connection (its hang-up is the cancel); -1 for gRPC */
    rpc_arena *arena;
};

/* Unpacks in as m's request, runs its handler with a fresh response, counts the call. 0 with *resp (in the
 * arena), or -1 with err set (EINVAL for a malformed request). */
int rpc_invoke(const cube_rpc_method *m, void *service, cube_rpc_ctx *ctx, const uint8_t *in, size_t len,
               ProtobufCMessage **resp, cube_err *err);
/* A call in the local transports' request layout (u32 timeout in ms, little-endian, 0: none; the method's
 * path; NUL; the packed request), served: its method found, ctx's deadline set, the handler run. 0 with
 * *out the packed response (*out_len bytes, at most max_reply, in ctx->arena, which the caller made), or -1
 * with err. */
int rpc_serve_request(const cube_rpc_method *methods, void *service, cube_rpc_ctx *ctx, const uint8_t *msg,
                      size_t len, size_t max_reply, uint8_t **out, size_t *out_len, cube_err *err);

/* The local transports' socket address for path: absolute, and short enough for sun_path (else EINVAL). */
struct sockaddr_un;
int rpc_unix_address(const char *path, struct sockaddr_un *sa, cube_err *err);
/* A non-blocking listening unix socket of type (SOCK_STREAM, SOCK_SEQPACKET) at path, mode 0600 from the
 * start; a stale socket a crashed run left there is replaced. -1 with err. */
int rpc_unix_listen(const char *path, int type, int backlog, cube_err *err);

/* The next connection on the (non-blocking) listening socket lfd, or -1 once stop_fd is readable (or poll
 * fails). */
int rpc_accept(int lfd, int stop_fd);

/* The transport of unix:PATH servers and clients (rpc_unix.c); cube_rpc_server/cube_rpc_client use it for
 * such addresses. target is "unix:PATH" and must outlive the client. */
typedef struct rpc_unix_server rpc_unix_server;
rpc_unix_server *rpc_unix_server_start(const char *path, const cube_rpc_method *methods, void *service,
                                       cube_err *err);
void rpc_unix_server_stop(rpc_unix_server *srv);
typedef struct rpc_unix_client rpc_unix_client;
rpc_unix_client *rpc_unix_client_new(const char *target, cube_err *err);
void rpc_unix_client_free(rpc_unix_client *c);
int rpc_unix_connect(rpc_unix_client *c, int64_t timeout_ms, cube_err *err);
int rpc_unix_call(rpc_unix_client *c, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, int64_t timeout_ms,
                  cube_rpc_cancel *cancel, cube_err *err);

/* A cancel token's hold on a unix call's connection (rpc_client.c): a fire shuts it down, which wakes the
 * caller and tells the server. attach: -1 when the token has fired already. */
int rpc_cancel_attach(cube_rpc_cancel *c, int fd);
void rpc_cancel_detach(cube_rpc_cancel *c);
bool rpc_cancel_fired(cube_rpc_cancel *c);

#endif
