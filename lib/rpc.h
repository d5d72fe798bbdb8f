/* Internal RPC: protobuf-c messages for every cross-process call, over gRPC (the C core, completion-queue
 * API) to host:port addresses, and over a kept unix stream connection to "unix:PATH" ones (rpc_unix.c: the
 * services of one machine, where gRPC's per-call machinery was most of each hop's cost). Both behave the
 * same to callers and handlers: deadlines, cancellation, errno codes.
 *
 * Server: a table of methods ("/cube.Master/CreateSandbox" → handler) served by a few threads that share one
 * completion queue. A handler gets the unpacked request and an initialised response message; everything it
 * allocates with cube_rpc_alloc/cube_rpc_strdup lives until the reply has been sent, then goes in one free.
 * A handler error becomes a gRPC status (errno → status code) whose details are the error message.
 *
 * Client: one channel per peer, kept open; a call is synchronous with a deadline and optional cancellation;
 * a gRPC status comes back as a cube_err (status → errno) so callers treat RPC failures like any other. */
#ifndef CUBE_RPC_H
#define CUBE_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>

#include "err.h"

typedef struct cube_rpc_ctx cube_rpc_ctx;
typedef struct cube_rpc_server cube_rpc_server;
typedef struct cube_rpc_client cube_rpc_client;
typedef struct cube_rpc_cancel cube_rpc_cancel;

/* Returns 0 with *resp filled, or -1 with err set. req and resp are the method's message types. */
typedef int (*cube_rpc_handler)(void *service, cube_rpc_ctx *ctx, const void *req, void *resp, cube_err *err);

typedef struct cube_rpc_method {
    const char *path; /* "/package.Service/Method" */
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *response;
    cube_rpc_handler handler;
} cube_rpc_method;

/* One method-table row: CUBE_RPC_METHOD("cube.Master", "GetSandbox", handler, cube__sandbox_ref,
 * cube__get_...) */
#define CUBE_RPC_METHOD(service, name, fn, req, resp)                                                        \
    {                                                                                                        \
        "/" service "/" name, &req##__descriptor, &resp##__descriptor, fn                                    \
    }

/* methods ends with a zeroed entry and must outlive the server. address: "unix:/path" or "host:port"
 * ("127.0.0.1:0" picks a port: see cube_rpc_server_port). threads: handler concurrency (>= 1). */
cube_rpc_server *cube_rpc_server_start(const char *address, const cube_rpc_method *methods, void *service,
                                       int threads, cube_err *err);
int cube_rpc_server_port(const cube_rpc_server *srv);
/* Stops accepting, cancels calls in flight, waits for handlers to return, frees everything. */
void cube_rpc_server_stop(cube_rpc_server *srv);

void *cube_rpc_alloc(cube_rpc_ctx *ctx, size_t size); /* zeroed; NULL only when memory is exhausted */
char *cube_rpc_strdup(cube_rpc_ctx *ctx, const char *s);
/* True once the client has gone away or cancelled; long handlers check it between steps. */
bool cube_rpc_cancelled(const cube_rpc_ctx *ctx);
/* Milliseconds until the client's deadline (INT64_MAX when it set none). */
int64_t cube_rpc_deadline_left_ms(const cube_rpc_ctx *ctx);

cube_rpc_client *cube_rpc_client_new(const char *target, cube_err *err);
void cube_rpc_client_free(cube_rpc_client *c);
const char *cube_rpc_client_target(const cube_rpc_client *c);
/* Connects now instead of on the first call (the first call on a cold channel costs milliseconds). */
int cube_rpc_client_connect(cube_rpc_client *c, int64_t timeout_ms, cube_err *err);

typedef struct cube_rpc_call_opts {
    int64_t timeout_ms;      /* <= 0: 30 s */
    cube_rpc_cancel *cancel; /* optional: cube_rpc_cancel_fire from another thread aborts the call */
} cube_rpc_call_opts;

/* *resp is the unpacked reply; free it with protobuf_c_message_free_unpacked(*resp, NULL). */
int cube_rpc_call(cube_rpc_client *c, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                  const cube_rpc_call_opts *opts, cube_err *err);

cube_rpc_cancel *cube_rpc_cancel_new(void);
/* Cancels the call using this token now, or the next one to start with it. Thread-safe. */
void cube_rpc_cancel_fire(cube_rpc_cancel *c);
void cube_rpc_cancel_free(cube_rpc_cancel *c);

/* The mapping both sides use; exposed for tests and for services that report statuses. */
int cube_rpc_status_from_errno(int code);
int cube_rpc_errno_from_status(int status);
/* Errnos whose status the table shares with another's, carried beside it so that callers tell them apart
 * (gRPC: trailing metadata RPC_ERRNO_HEADER; unix sockets: the frame's code): EDQUOT, a key's sandbox limit
 * (HTTP 429), shares RESOURCE_EXHAUSTED with EAGAIN, a busy node (503). */
#define RPC_ERRNO_HEADER "cube-errno"
bool cube_rpc_errno_carried(int code);

/* A sandbox's control socket (cube-hypervisor; cubelet and cube-shim call it): the same method tables and
 * handlers over a unix SOCK_SEQPACKET socket, a connection per call, no gRPC (see rpc_local.c for the wire
 * format and why). address: "unix:/path" or "/path"; the socket is made 0600. threads: calls served at once.
 */
typedef struct cube_rpc_local cube_rpc_local;
cube_rpc_local *cube_rpc_local_start(const char *address, const cube_rpc_method *methods, void *service,
                                     int threads, cube_err *err);
/* threads 0 above: the socket listens (calls wait in its queue) and is served from this call on, so that a
 * process can say it is ready before it starts the threads. Once. */
int cube_rpc_local_serve(cube_rpc_local *srv, int threads, cube_err *err);
/* Stops accepting, ends calls in flight (their connections are shut down), waits for handlers, removes the
 * socket, frees everything. */
void cube_rpc_local_stop(cube_rpc_local *srv);
/* One call to a control socket. Errors come back with the handler's errno; an absent or dead server is
 * ECONNREFUSED, no answer in time ETIMEDOUT. */
int cube_rpc_call_once(const char *address, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                       int64_t timeout_ms, cube_err *err);

/* Links between machines use mutual TLS: every peer holds a certificate signed by the cluster's CA and is
 * refused without one. An identity is a directory with ca.pem (the CA), cert.pem and key.pem (this
 * process's). cube_rpc_use_tls makes it the process's, once at start: from then on clients to host:port
 * targets and servers on host:port addresses speak TLS and require the peer's certificate (a server's must
 * name the address clients dial, as a DNS or IP subject alternative name). Unix sockets (one machine) stay
 * plain. */
typedef struct cube_rpc_tls cube_rpc_tls;
cube_rpc_tls *cube_rpc_tls_load(const char *dir, cube_err *err);
void cube_rpc_tls_free(cube_rpc_tls *t);
void cube_rpc_use_tls(const cube_rpc_tls *t); /* t must outlive every client and server */
const cube_rpc_tls *cube_rpc_tls_default(void);
/* A service's --tls-dir: loads it and makes it the process's (nothing when dir is NULL or empty). */
int cube_rpc_tls_configure(const char *dir, cube_err *err);
bool cube_rpc_address_is_local(const char *address);
/* The same with an explicit identity (NULL: plain), whatever the process's. */
cube_rpc_client *cube_rpc_client_new_tls(const char *target, const cube_rpc_tls *tls, cube_err *err);
cube_rpc_server *cube_rpc_server_start_tls(const char *address, const cube_rpc_method *methods, void *service,
                                           int threads, const cube_rpc_tls *tls, cube_err *err);

/* Several servers of one service (a cluster's masters), "addrA,addrB": calls go to the current one; when it
 * cannot be reached (connection refused: it died) the next is asked and becomes current. */
typedef struct cube_rpc_failover {
    cube_rpc_client *c[8];
    int n;
    int current; /* atomic */
} cube_rpc_failover;

int cube_rpc_failover_init(cube_rpc_failover *f, const char *addresses, cube_err *err);
int cube_rpc_failover_call(cube_rpc_failover *f, const char *method, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                           const cube_rpc_call_opts *opts, cube_err *err);
void cube_rpc_failover_free(cube_rpc_failover *f);

#endif
