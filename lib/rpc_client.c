#include <errno.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "rpc.h"
#include "rpc_internal.h"

struct cube_rpc_client {
    grpc_channel *channel; /* a gRPC target */
    rpc_unix_client *ux;   /* or a unix:PATH one (rpc_unix.c) */
    char *target;
};

struct cube_rpc_cancel {
    pthread_mutex_t lock;
    grpc_call *call; /* the gRPC call in flight with this token, if any */
    int fd;          /* or the unix call's connection, or -1 */
    int fired;
};

cube_rpc_cancel *cube_rpc_cancel_new(void)
{
    cube_rpc_cancel *c = calloc(1, sizeof(*c));
    if (c) {
        pthread_mutex_init(&c->lock, NULL);
        c->fd = -1;
    }
    return c;
}

void cube_rpc_cancel_fire(cube_rpc_cancel *c)
{
    pthread_mutex_lock(&c->lock);
    c->fired = 1;
    if (c->call) grpc_call_cancel(c->call, NULL);
    if (c->fd >= 0) shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&c->lock);
}

int rpc_cancel_attach(cube_rpc_cancel *c, int fd)
{
    pthread_mutex_lock(&c->lock);
    int fired = c->fired;
    if (!fired) c->fd = fd;
    pthread_mutex_unlock(&c->lock);
    return fired ? -1 : 0;
}

void rpc_cancel_detach(cube_rpc_cancel *c)
{
    pthread_mutex_lock(&c->lock);
    c->fd = -1;
    pthread_mutex_unlock(&c->lock);
}

bool rpc_cancel_fired(cube_rpc_cancel *c)
{
    pthread_mutex_lock(&c->lock);
    int fired = c->fired;
    pthread_mutex_unlock(&c->lock);
    return fired;
}

void cube_rpc_cancel_free(cube_rpc_cancel *c)
{
    if (!c) return;
    pthread_mutex_destroy(&c->lock);
    free(c);
}

cube_rpc_client *cube_rpc_client_new(const char *target, cube_err *err)
{
    return cube_rpc_client_new_tls(target, cube_rpc_address_is_local(target) ? NULL : cube_rpc_tls_default(),
                                   err);
}

cube_rpc_client *cube_rpc_client_new_tls(const char *target, const cube_rpc_tls *tls, cube_err *err)
{
    cube_rpc_client *c = calloc(1, sizeof(*c));
    if (!c || !(c->target = strdup(target))) {
        free(c);
        return cube_err_set(err, ENOMEM, "rpc client: out of memory"), NULL;
    }
    if (!tls && strncmp(target, "unix:", 5) == 0) { /* one machine: no gRPC (rpc_unix.c) */
        if (!(c->ux = rpc_unix_client_new(c->target, err))) {
            cube_rpc_client_free(c);
            return NULL;
        }
        return c;
    }
    rpc_lib_init();
    grpc_channel_credentials *creds =
        tls ? cube_rpc_tls_channel_creds(tls) : grpc_insecure_credentials_create();
    /* Our calls are not idempotent by default (create, kill): a retry belongs to the caller, who knows. */
    /* A peer that restarts (a master, a cubelet) is reconnected to within a second, not after gRPC's default
     * backoff of up to two minutes: our peers are local services, not remote hosts to be gentle with. */
    grpc_arg arg[] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ENABLE_RETRIES, .value.integer = 0},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, .value.integer = 100},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, .value.integer = 1000},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, .value.integer = 100},
    };
    grpc_channel_args args = {.num_args = sizeof(arg) / sizeof(arg[0]), .args = arg};
    c->channel = grpc_channel_create(target, creds, &args);
    grpc_channel_credentials_release(creds);
    if (!c->channel) {
        cube_rpc_client_free(c);
        return cube_err_set(err, EINVAL, "rpc client: cannot create channel to %s", target), NULL;
    }
    return c;
}

void cube_rpc_client_free(cube_rpc_client *c)
{
    if (!c) return;
    if (c->channel) grpc_channel_destroy(c->channel);
    rpc_unix_client_free(c->ux);
    free(c->target);
    free(c);
}

const char *cube_rpc_client_target(const cube_rpc_client *c)
{
    return c->target;
}

static gpr_timespec deadline_in(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static void drain_and_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
}

int cube_rpc_client_connect(cube_rpc_client *c, int64_t timeout_ms, cube_err *err)
{
    if (c->ux) return rpc_unix_connect(c->ux, timeout_ms, err);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = deadline_in(timeout_ms);
    int rc = 0;
    for (;;) {
        grpc_connectivity_state st = grpc_channel_check_connectivity_state(c->channel, 1);
        if (st == GRPC_CHANNEL_READY) break;
        if (st == GRPC_CHANNEL_SHUTDOWN) {
            rc = cube_err_set(err, ECONNREFUSED, "rpc: channel to %s is shut down", c->target);
            break;
        }
        grpc_channel_watch_connectivity_state(c->channel, st, deadline, cq, c);
        grpc_event ev = grpc_completion_queue_pluck(cq, c, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (!ev.success) { /* deadline passed before the state changed */
            rc = cube_err_set(err, ETIMEDOUT, "rpc: %s not reachable within %lld ms", c->target,
                              (long long)timeout_ms);
            break;
        }
    }
    drain_and_destroy(cq);
    return rc;
}

int cube_rpc_call(cube_rpc_client *c, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                  const cube_rpc_call_opts *opts, cube_err *err)
{
    int64_t timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : 30000;
    cube_rpc_cancel *cancel = opts ? opts->cancel : NULL;
    *resp = NULL;
    if (c->ux) return rpc_unix_call(c->ux, method, req, resp_desc, resp, timeout_ms, cancel, err);

    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice method_slice = grpc_slice_from_static_string(method);
    grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method_slice,
                                               NULL, deadline_in(timeout_ms), NULL);
    if (cancel) {
        pthread_mutex_lock(&cancel->lock);
        int fired = cancel->fired;
        if (!fired) cancel->call = call;
        pthread_mutex_unlock(&cancel->lock);
        if (fired) {
            grpc_call_unref(call);
            drain_and_destroy(cq);
            return cube_err_set(err, ECANCELED, "%s: cancelled", method);
        }
    }

    grpc_byte_buffer *send = rpc_pack(req);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;

    int rc = 0;
    RPC_HANDOFF_RELEASE(call);
    if (grpc_call_start_batch(call, ops, 6, call, NULL) != GRPC_CALL_OK) {
        rc = cube_err_set(err, EIO, "%s: cannot start call to %s", method, c->target);
    } else {
        /* the deadline bounds the call inside grpc, so this wait always ends */
        grpc_event ev = grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        RPC_HANDOFF_ACQUIRE(call);
        if (ev.type != GRPC_OP_COMPLETE || !ev.success) {
            rc = cube_err_set(err, EIO, "%s: call to %s failed", method, c->target);
        } else if (status != GRPC_STATUS_OK) {
            char *d = grpc_slice_to_c_string(details);
            int code = cube_rpc_errno_from_status(status);
            for (size_t i = 0; i < trailing_md.count; i++) {
                if (!grpc_slice_str_cmp(trailing_md.metadata[i].key, RPC_ERRNO_HEADER)) {
                    char v[16] = "";
                    grpc_slice val = trailing_md.metadata[i].value;
                    size_t vl =
                        GRPC_SLICE_LENGTH(val) < sizeof(v) - 1 ? GRPC_SLICE_LENGTH(val) : sizeof(v) - 1;
                    memcpy(v, GRPC_SLICE_START_PTR(val), vl);
                    if (cube_rpc_errno_carried(atoi(v))) code = atoi(v);
                }
            }
            if (status == GRPC_STATUS_DEADLINE_EXCEEDED)
                rc = cube_err_set(err, code, "%s to %s: no answer within %lld ms", method, c->target,
                                  (long long)timeout_ms);
            else if (status == GRPC_STATUS_UNAVAILABLE)
                rc = cube_err_set(err, code, "%s: %s unavailable: %s", method, c->target, d);
            else
                rc = cube_err_set(err, code, "%s", d && *d ? d : method);
            gpr_free(d);
        } else if (!recv) {
            rc = cube_err_set(err, EPROTO, "%s: reply carried no message", method);
        } else {
            *resp = rpc_unpack(recv, resp_desc, NULL);
            if (!*resp) rc = cube_err_set(err, EBADMSG, "%s: malformed %s in reply", method, resp_desc->name);
        }
    }
    if (cancel) {
        pthread_mutex_lock(&cancel->lock);
        cancel->call = NULL;
        pthread_mutex_unlock(&cancel->lock);
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_byte_buffer_destroy(send);
    if (recv) grpc_byte_buffer_destroy(recv);
    grpc_call_unref(call);
    drain_and_destroy(cq);
    return rc;
}

int cube_rpc_failover_init(cube_rpc_failover *f, const char *addresses, cube_err *err)
{
    memset(f, 0, sizeof(*f));
    char list[4096];
    snprintf(list, sizeof(list), "%s", addresses ? addresses : "");
    char *save = NULL;
    for (char *a = strtok_r(list, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        if (f->n == (int)(sizeof(f->c) / sizeof(f->c[0]))) {
            cube_rpc_failover_free(f);
            return cube_err_set(err, EINVAL, "at most %zu addresses", sizeof(f->c) / sizeof(f->c[0]));
        }
        if (!(f->c[f->n] = cube_rpc_client_new(a, err))) {
            cube_rpc_failover_free(f);
            return -1;
        }
        f->n++;
    }
    return f->n ? 0 : cube_err_set(err, EINVAL, "no address given");
}

int cube_rpc_failover_call(cube_rpc_failover *f, const char *method, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                           const cube_rpc_call_opts *opts, cube_err *err)
{
    int first = __atomic_load_n(&f->current, __ATOMIC_RELAXED);
    for (int k = 0; k < f->n; k++) {
        int i = (first + k) % f->n;
        cube_err_clear(err);
        int rc = cube_rpc_call(f->c[i], method, req, resp_desc, resp, opts, err);
        if (rc == 0 || err->code != ECONNREFUSED) {
            if (k) __atomic_store_n(&f->current, i, __ATOMIC_RELAXED);
            return rc;
        }
    }
    return -1;
}

void cube_rpc_failover_free(cube_rpc_failover *f)
{
    for (int i = 0; i < f->n; i++) cube_rpc_client_free(f->c[i]);
    f->n = 0;
}
