/* RPC on one machine without gRPC: a sandbox's control socket. One connection per call on a unix
 * SOCK_SEQPACKET socket (the kernel keeps message boundaries), one message each way:
 *
 *   request: u32 timeout in ms (little-endian, 0: none), the method's path, NUL, the packed request
 *   reply:   i32 errno (little-endian, 0: success), then the packed response or the error's message
 *
 * Why not gRPC here: every sandbox has a control server, and gRPC's core wakes its timer threads about twice
 * a second in every process and holds ~8 threads; this one holds `threads` workers blocked in poll and
 * nothing else, so an idle pooled sandbox costs no CPU, and the process needs neither grpc_init nor its 9 MB.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "rpc.h"
#include "rpc_core.h"
#include "timeutil.h"

#define LOCAL_MAX_MSG                                                                                        \
    (64u << 10) /* control messages are small; one seqpacket message must fit the socket buffer */
#define LOCAL_IO_TIMEOUT_MS 10000 /* a client that connects and then stalls holds a worker no longer */

typedef struct local_worker {
    cube_rpc_local *srv;
    pthread_t th;
    int conn; /* atomic: the connection being served, or -1 (stop shuts it down) */
} local_worker;

struct cube_rpc_local {
    const cube_rpc_method *methods;
    void *service;
    int lfd, stop_fd;
    int stopping; /* atomic */
    int nworkers;
    local_worker *workers;
    char path[108];
};

static void set_timeouts(int fd, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Receives one whole message into a new buffer (*len its size). -1 with errno: EMSGSIZE over the cap, 0 on
 * hang-up (errno ECONNRESET). */
static uint8_t *recv_msg(int fd, size_t *len)
{
    ssize_t n;
    do n = recv(fd, NULL, 0, MSG_PEEK | MSG_TRUNC); /* seqpacket: the message's whole length */
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        if (n == 0) errno = ECONNRESET;
        return NULL;
    }
    if ((size_t)n > LOCAL_MAX_MSG) {
        errno = EMSGSIZE;
        return NULL;
    }
    uint8_t *buf = malloc((size_t)n);
    if (!buf) return NULL;
    ssize_t got;
    do got = recv(fd, buf, (size_t)n, 0);
    while (got < 0 && errno == EINTR);
    if (got != n) {
        int e = got < 0 ? errno : EBADMSG;
        free(buf);
        errno = e;
        return NULL;
    }
    *len = (size_t)n;
    return buf;
}

static void send_reply(int fd, int code, const void *body, size_t len)
{
    uint8_t *msg = malloc(4 + len);
    if (!msg) return; /* the client sees the hang-up */
    rpc_put_u32(msg, (uint32_t)code);
    if (len) memcpy(msg + 4, body, len);
    if (send(fd, msg, 4 + len, MSG_NOSIGNAL) < 0) cube_log_debug("control reply not sent", "errno=%d", errno);
    free(msg);
}

static void send_error(int fd, const cube_err *err)
{
    send_reply(fd, err->code ? err->code : EIO, err->msg, strlen(err->msg));
}

static void serve_one(cube_rpc_local *srv, int fd)
{
    set_timeouts(fd, LOCAL_IO_TIMEOUT_MS);
    size_t len = 0;
    uint8_t *msg = recv_msg(fd, &len);
    cube_err err = {0};
    if (!msg) {
        if (errno == EMSGSIZE) {
            cube_err_set(&err, EMSGSIZE, "request over %u bytes", LOCAL_MAX_MSG);
            send_error(fd, &err);
        }
        return;
    }
    cube_rpc_ctx ctx = {.fd = fd, .arena = rpc_arena_new()};
    uint8_t *out = NULL;
    size_t n = 0;
    if (rpc_serve_request(srv->methods, srv->service, &ctx, msg, len, LOCAL_MAX_MSG - 4, &out, &n, &err) == 0)
        send_reply(fd, 0, out, n);
    if (err.code) send_error(fd, &err);
    rpc_arena_free(ctx.arena);
    free(msg);
}

static void *worker_main(void *arg)
{
    local_worker *w = arg;
    cube_rpc_local *srv = w->srv;
    while (!__atomic_load_n(&srv->stopping, __ATOMIC_ACQUIRE)) {
        int fd = rpc_accept(srv->lfd, srv->stop_fd);
        if (fd < 0) break;
        __atomic_store_n(&w->conn, fd, __ATOMIC_RELEASE);
        if (!__atomic_load_n(&srv->stopping, __ATOMIC_ACQUIRE)) serve_one(srv, fd);
        __atomic_store_n(&w->conn, -1, __ATOMIC_RELEASE);
        close(fd);
    }
    return NULL;
}

cube_rpc_local *cube_rpc_local_start(const char *address, const cube_rpc_method *methods, void *service,
                                     int threads, cube_err *err)
{
    const char *path = strncmp(address, "unix:", 5) == 0 ? address + 5 : address;
    cube_rpc_local *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        cube_err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    srv->lfd = srv->stop_fd = -1;
    srv->methods = methods;
    srv->service = service;
    snprintf(srv->path, sizeof(srv->path), "%s", path);
    if ((srv->lfd = rpc_unix_listen(path, SOCK_SEQPACKET, 64, err)) < 0) {
        cube_err_prefix(err, "control socket");
        goto fail;
    }
    if ((srv->stop_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
        cube_err_sys(err, errno, "control socket");
        unlink(path);
        goto fail;
    }
    if (threads > 0 && cube_rpc_local_serve(srv, threads, err) < 0) {
        cube_rpc_local_stop(srv);
        return NULL;
    }
    return srv;
fail:
    if (srv->lfd >= 0) close(srv->lfd);
    if (srv->stop_fd >= 0) close(srv->stop_fd);
    free(srv);
    return NULL;
}

int cube_rpc_local_serve(cube_rpc_local *srv, int threads, cube_err *err)
{
    if (srv->workers || threads < 1) return cube_err_set(err, EINVAL, "control socket: served already");
    srv->workers = calloc((size_t)threads, sizeof(*srv->workers));
    if (!srv->workers) return cube_err_set(err, ENOMEM, "out of memory");
    for (int i = 0; i < threads; i++) {
        srv->workers[i] = (local_worker){.srv = srv, .conn = -1};
        if (pthread_create(&srv->workers[i].th, NULL, worker_main, &srv->workers[i]) != 0)
            return cube_err_set(err, EAGAIN, "cannot start control socket threads");
        srv->nworkers = i + 1;
    }
    return 0;
}

void cube_rpc_local_stop(cube_rpc_local *srv)
{
    if (!srv) return;
    __atomic_store_n(&srv->stopping, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    if (write(srv->stop_fd, &one, sizeof(one)) < 0) {
    }
    for (int i = 0; i < srv->nworkers; i++) {
        int fd = __atomic_load_n(&srv->workers[i].conn, __ATOMIC_ACQUIRE);
        /* a call in flight stops waiting for its request now, but still sends its reply (the Stop that
         * asked for this one is answered, not cut off: its caller would take that for a hung server) */
        if (fd >= 0) shutdown(fd, SHUT_RD);
    }
    for (int i = 0; i < srv->nworkers; i++) pthread_join(srv->workers[i].th, NULL);
    close(srv->lfd);
    close(srv->stop_fd);
    unlink(srv->path);
    free(srv->workers);
    free(srv);
}

int cube_rpc_call_once(const char *address, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                       int64_t timeout_ms, cube_err *err)
{
    *resp = NULL;
    const char *path = strncmp(address, "unix:", 5) == 0 ? address + 5 : address;
    struct sockaddr_un sa;
    if (rpc_unix_address(path, &sa, err) < 0) return cube_err_prefix(err, "control socket");
    if (timeout_ms <= 0) timeout_ms = 30000;
    int64_t deadline = cube_now_mono_ns() + timeout_ms * 1000000;
    size_t mlen = strlen(method) + 1, plen = protobuf_c_message_get_packed_size(req);
    if (4 + mlen + plen > LOCAL_MAX_MSG)
        return cube_err_set(err, EMSGSIZE, "%s: a request of %zu bytes is over the control socket's %u",
                            method, 4 + mlen + plen, LOCAL_MAX_MSG);
    uint8_t *msg = malloc(4 + mlen + plen);
    if (!msg) return cube_err_set(err, ENOMEM, "out of memory");
    rpc_put_u32(msg, (uint32_t)(timeout_ms > UINT32_MAX ? UINT32_MAX : timeout_ms));
    memcpy(msg + 4, method, mlen);
    protobuf_c_message_pack(req, msg + 4 + mlen);
    int rc = -1;
    uint8_t *reply = NULL;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        cube_err_sys(err, errno, "control socket");
        goto out;
    }
    set_timeouts(fd, timeout_ms);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        /* no socket, or nobody behind it: the hypervisor is gone (gRPC's UNAVAILABLE) */
        int e = errno == ENOENT ? ECONNREFUSED : errno;
        cube_err_set(err, e, "%s: cannot reach %s: %s", method, path, strerror(errno));
        goto out;
    }
    if (send(fd, msg, 4 + mlen + plen, MSG_NOSIGNAL) < 0) {
        cube_err_sys(err, errno, "%s: send to %s", method, path);
        goto out;
    }
    for (;;) {
        int64_t left = (deadline - cube_now_mono_ns()) / 1000000;
        struct pollfd p = {fd, POLLIN, 0};
        int n = left > 0 ? poll(&p, 1, (int)(left > INT32_MAX ? INT32_MAX : left)) : 0;
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            cube_err_set(err, ETIMEDOUT, "%s: no answer from %s within %lld ms", method, path,
                         (long long)timeout_ms);
            goto out;
        }
        break;
    }
    size_t rlen = 0;
    reply = recv_msg(fd, &rlen);
    if (!reply || rlen < 4) {
        cube_err_set(err, ECONNRESET, "%s: %s hung up without an answer", method, path);
        goto out;
    }
    int code = (int)rpc_get_u32(reply);
    if (code) {
        cube_err_set(err, code, "%.*s", (int)(rlen - 4 > 400 ? 400 : rlen - 4), (const char *)reply + 4);
        goto out;
    }
    *resp = protobuf_c_message_unpack(resp_desc, NULL, rlen - 4, reply + 4);
    if (!*resp) {
        cube_err_set(err, EBADMSG, "%s: malformed %s from %s", method, resp_desc->name, path);
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) close(fd);
    free(msg);
    free(reply);
    return rc;
}
