#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "timeutil.h"
#include "rpc.h"
#include "rpc_internal.h"

/* One server call from request to reply. Two batches can be outstanding on it at once (the main chain and
 * RECV_CLOSE_ON_SERVER, which tells us the client went away), so it is reference counted: each batch holds
 * one reference and whichever completes last frees the slot. */
typedef enum { SLOT_REQUESTED, SLOT_RECEIVING, SLOT_SENDING } slot_state;

typedef struct call_slot call_slot;
typedef struct slot_tag {
    call_slot *slot;
    int is_close;
} slot_tag;

struct call_slot {
    cube_rpc_server *srv;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array request_md;
    grpc_byte_buffer *request;
    grpc_byte_buffer *response;
    grpc_slice status_details;
    int has_status_details;
    grpc_metadata carried; /* trailing "cube-errno" (cube_rpc_errno_carried), kept until the send completes */
    char carried_code[16];
    slot_state state;
    int refs; /* atomic */
    slot_tag main_tag, close_tag;
    cube_rpc_ctx ctx;
};

struct cube_rpc_server {
    rpc_unix_server *ux; /* a unix:PATH server (rpc_unix.c); the rest is for gRPC */
    grpc_server *server;
    grpc_completion_queue *cq;
    const cube_rpc_method *methods;
    void *service;
    int port;
    int nthreads;
    pthread_t *threads;
    int live_slots;    /* atomic: slots not yet freed */
    int shutting_down; /* atomic */
    int shutdown_done; /* atomic: the server's shutdown tag arrived */
    int cq_shut;       /* atomic: grpc_completion_queue_shutdown called */
    slot_tag shutdown_tag;
};

static void maybe_shutdown_cq(cube_rpc_server *srv)
{
    if (__atomic_load_n(&srv->shutdown_done, __ATOMIC_ACQUIRE) &&
        __atomic_load_n(&srv->live_slots, __ATOMIC_ACQUIRE) == 0 &&
        __atomic_exchange_n(&srv->cq_shut, 1, __ATOMIC_ACQ_REL) == 0)
        grpc_completion_queue_shutdown(srv->cq);
}

static void slot_unref(call_slot *s)
{
    if (__atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    cube_rpc_server *srv = s->srv;
    if (s->call) grpc_call_unref(s->call);
    grpc_call_details_destroy(&s->details);
    grpc_metadata_array_destroy(&s->request_md);
    if (s->request) grpc_byte_buffer_destroy(s->request);
    if (s->response) grpc_byte_buffer_destroy(s->response);
    if (s->has_status_details) grpc_slice_unref(s->status_details);
    rpc_arena_free(s->ctx.arena);
    free(s);
    __atomic_sub_fetch(&srv->live_slots, 1, __ATOMIC_ACQ_REL);
    maybe_shutdown_cq(srv);
}

/* Puts one more slot waiting for an incoming call. */
static int request_one(cube_rpc_server *srv)
{
    call_slot *s = calloc(1, sizeof(*s));
    if (!s) return -1;
    s->ctx.fd = -1;
    s->ctx.arena = rpc_arena_new();
    if (!s->ctx.arena) {
        free(s);
        return -1;
    }
    s->srv = srv;
    s->refs = 1;
    s->state = SLOT_REQUESTED;
    s->main_tag = (slot_tag){s, 0};
    s->close_tag = (slot_tag){s, 1};
    grpc_call_details_init(&s->details);
    grpc_metadata_array_init(&s->request_md);
    __atomic_add_fetch(&srv->live_slots, 1, __ATOMIC_ACQ_REL);
    RPC_HANDOFF_RELEASE(&s->main_tag);
    grpc_call_error e = grpc_server_request_call(srv->server, &s->call, &s->details, &s->request_md, srv->cq,
                                                 srv->cq, &s->main_tag);
    if (e != GRPC_CALL_OK) {
        slot_unref(s);
        return -1;
    }
    return 0;
}

static const cube_rpc_method *find_method(const cube_rpc_server *srv, grpc_slice path)
{
    size_t len = GRPC_SLICE_LENGTH(path);
    const char *p = (const char *)GRPC_SLICE_START_PTR(path);
    for (const cube_rpc_method *m = srv->methods; m->path; m++)
        if (strlen(m->path) == len && memcmp(m->path, p, len) == 0) return m;
    return NULL;
}

/* Sends the reply: the packed response when status is OK, else only the status with err's message. */
static void send_reply(call_slot *s, grpc_status_code status, const char *details, int code)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (status == GRPC_STATUS_OK && s->response) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = s->response;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = status;
    if (details && *details) {
        s->status_details = grpc_slice_from_copied_string(details);
        s->has_status_details = 1;
        ops[n].data.send_status_from_server.status_details = &s->status_details;
    }
    if (cube_rpc_errno_carried(code)) {
        snprintf(s->carried_code, sizeof(s->carried_code), "%d", code);
        s->carried.key = grpc_slice_from_static_string(RPC_ERRNO_HEADER);
        s->carried.value = grpc_slice_from_static_string(s->carried_code);
        ops[n].data.send_status_from_server.trailing_metadata_count = 1;
        ops[n].data.send_status_from_server.trailing_metadata = &s->carried;
    }
    n++;
    s->state = SLOT_SENDING;
    grpc_call *call = s->call; /* read before the hand-off: the event may free s */
    RPC_HANDOFF_RELEASE(&s->main_tag);
    if (grpc_call_start_batch(call, ops, n, &s->main_tag, NULL) != GRPC_CALL_OK) slot_unref(s);
}

static void dispatch(call_slot *s)
{
    cube_rpc_server *srv = s->srv;
    const cube_rpc_method *m = find_method(srv, s->details.method);
    if (!m) {
        char msg[300];
        snprintf(msg, sizeof(msg), "unknown method %.*s", (int)GRPC_SLICE_LENGTH(s->details.method),
                 (const char *)GRPC_SLICE_START_PTR(s->details.method));
        send_reply(s, GRPC_STATUS_UNIMPLEMENTED, msg, 0);
        return;
    }
    if (!s->request) {
        send_reply(s, GRPC_STATUS_INVALID_ARGUMENT, "no request message", 0);
        return;
    }
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, s->request)) {
        send_reply(s, GRPC_STATUS_INVALID_ARGUMENT, "unreadable request message", 0);
        return;
    }
    grpc_slice in = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    int rc =
        rpc_invoke(m, srv->service, &s->ctx, GRPC_SLICE_START_PTR(in), GRPC_SLICE_LENGTH(in), &resp, &err);
    grpc_slice_unref(in);
    if (rc < 0) {
        send_reply(s, (grpc_status_code)cube_rpc_status_from_errno(err.code), err.msg, err.code);
        return;
    }
    s->response = rpc_pack(resp);
    send_reply(s, GRPC_STATUS_OK, NULL, 0);
}

static void on_event(cube_rpc_server *srv, slot_tag *tag, int ok)
{
    RPC_HANDOFF_ACQUIRE(tag); /* what the batch's starter wrote, this event's taker reads */
    call_slot *s = tag->slot;
    if (tag->is_close) {
        __atomic_store_n(&s->ctx.closed, 1, __ATOMIC_RELEASE);
        slot_unref(s);
        return;
    }
    switch (s->state) {
    case SLOT_REQUESTED: {
        if (!ok) { /* server shutting down */
            slot_unref(s);
            return;
        }
        if (!__atomic_load_n(&srv->shutting_down, __ATOMIC_ACQUIRE)) request_one(srv);
        s->ctx.deadline_ns = INT64_MAX;
        gpr_timespec dl = gpr_convert_clock_type(s->details.deadline, GPR_CLOCK_MONOTONIC);
        if (gpr_time_cmp(dl, gpr_inf_future(GPR_CLOCK_MONOTONIC)) != 0) {
            gpr_timespec left = gpr_time_sub(dl, gpr_now(GPR_CLOCK_MONOTONIC));
            s->ctx.deadline_ns = cube_now_mono_ns() + (int64_t)left.tv_sec * 1000000000 + left.tv_nsec;
        }
        grpc_op close_op;
        memset(&close_op, 0, sizeof(close_op));
        close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        close_op.data.recv_close_on_server.cancelled = &s->ctx.cancelled;
        __atomic_add_fetch(&s->refs, 1, __ATOMIC_ACQ_REL);
        grpc_call *call = s->call;
        RPC_HANDOFF_RELEASE(&s->close_tag);
        if (grpc_call_start_batch(call, &close_op, 1, &s->close_tag, NULL) != GRPC_CALL_OK) slot_unref(s);
        grpc_op recv_op;
        memset(&recv_op, 0, sizeof(recv_op));
        recv_op.op = GRPC_OP_RECV_MESSAGE;
        recv_op.data.recv_message.recv_message = &s->request;
        s->state = SLOT_RECEIVING;
        RPC_HANDOFF_RELEASE(&s->main_tag);
        if (grpc_call_start_batch(call, &recv_op, 1, &s->main_tag, NULL) != GRPC_CALL_OK) slot_unref(s);
        return;
    }
    case SLOT_RECEIVING:
        if (!ok) {
            slot_unref(s);
            return;
        }
        dispatch(s);
        return;
    case SLOT_SENDING:
        slot_unref(s);
        return;
    }
}

static void *serve_thread(void *arg)
{
    cube_rpc_server *srv = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        slot_tag *tag = ev.tag;
        if (tag == &srv->shutdown_tag) {
            __atomic_store_n(&srv->shutdown_done, 1, __ATOMIC_RELEASE);
            maybe_shutdown_cq(srv);
            continue;
        }
        on_event(srv, tag, ev.success);
    }
    return NULL;
}

/* grpc refuses to bind a unix socket path that exists; a stale socket from a crashed run is removed,
 * anything else at that path is left alone and reported by the bind. */
static void remove_stale_socket(const char *address)
{
    if (strncmp(address, "unix:", 5) != 0) return;
    const char *path = address + 5;
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path);
}

cube_rpc_server *cube_rpc_server_start(const char *address, const cube_rpc_method *methods, void *service,
                                       int threads, cube_err *err)
{
    return cube_rpc_server_start_tls(address, methods, service, threads,
                                     cube_rpc_address_is_local(address) ? NULL : cube_rpc_tls_default(), err);
}

cube_rpc_server *cube_rpc_server_start_tls(const char *address, const cube_rpc_method *methods, void *service,
                                           int threads, const cube_rpc_tls *tls, cube_err *err)
{
    if (threads < 1) threads = 1;
    cube_rpc_server *srv = calloc(1, sizeof(*srv));
    if (!srv) return cube_err_set(err, ENOMEM, "rpc server: out of memory"), NULL;
    if (!tls && strncmp(address, "unix:", 5) == 0) { /* one machine: no gRPC (rpc_unix.c) */
        if (!(srv->ux = rpc_unix_server_start(address + 5, methods, service, err))) {
            free(srv);
            return NULL;
        }
        return srv;
    }
    rpc_lib_init();
    srv->methods = methods;
    srv->service = service;
    srv->nthreads = threads;
    srv->shutdown_tag = (slot_tag){NULL, 0};
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    /* SO_REUSEPORT (grpc's default) would let a second server bind the same port and silently share its
     * traffic; an address conflict must be an error instead. */
    grpc_arg arg = {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0};
    grpc_channel_args args = {.num_args = 1, .args = &arg};
    srv->server = grpc_server_create(&args, NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    remove_stale_socket(address);
    grpc_server_credentials *creds =
        tls ? cube_rpc_tls_server_creds(tls) : grpc_insecure_server_credentials_create();
    srv->port = grpc_server_add_http2_port(srv->server, address, creds);
    grpc_server_credentials_release(creds);
    if (srv->port == 0) {
        cube_err_set(err, EADDRINUSE, "rpc server: cannot listen on %s", address);
        grpc_server_destroy(srv->server);
        grpc_completion_queue_shutdown(srv->cq);
        while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(srv->cq);
        free(srv);
        return NULL;
    }
    grpc_server_start(srv->server);
    for (int i = 0; i < threads; i++) request_one(srv);
    srv->threads = calloc((size_t)threads, sizeof(pthread_t));
    for (int i = 0; i < threads; i++) pthread_create(&srv->threads[i], NULL, serve_thread, srv);
    return srv;
}

int cube_rpc_server_port(const cube_rpc_server *srv)
{
    return srv->port; /* 0 for a unix socket */
}

void cube_rpc_server_stop(cube_rpc_server *srv)
{
    if (!srv) return;
    if (srv->ux) {
        rpc_unix_server_stop(srv->ux);
        free(srv);
        return;
    }
    __atomic_store_n(&srv->shutting_down, 1, __ATOMIC_RELEASE);
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
    grpc_server_cancel_all_calls(srv->server);
    for (int i = 0; i < srv->nthreads; i++) pthread_join(srv->threads[i], NULL);
    grpc_server_destroy(srv->server);
    grpc_completion_queue_destroy(srv->cq);
    free(srv->threads);
    free(srv);
}
