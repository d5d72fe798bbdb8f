/* RPC between the processes of one machine without gRPC: every "unix:PATH" server and client of rpc.h speaks
 * this instead of HTTP/2 (host:port links, between machines and under TLS, stay gRPC).
 *
 * Why: a create crosses four RPC hops on one node (cube-api → cube-master → cubelet and back). Through gRPC's
 * core each hop cost ~0.2 ms there (a completion queue and a call object per call, hand-offs between its
 * poller and handler threads), ~0.8 ms of a pooled create's ~2.4 ms inside the node. Here a call is one write
 * and one read on a connection kept open for the next call.
 *
 * Wire: a SOCK_STREAM connection carries calls one after another, a frame each way:
 *
 *   request: u32 length of what follows, u32 timeout in ms (0: none), the method's path, NUL, packed request
 *   reply:   u32 length of what follows, i32 errno (0: success), the packed response or the error's message
 *
 * (little-endian). A handler's errno goes through the same mapping a gRPC status would (rpc_common.c), so a
 * caller sees the same codes over either transport. The client keeps idle connections for later calls; one
 * whose call timed out or was cancelled is closed (a late reply must not answer the next call), and that
 * hang-up is how the server learns of it (cube_rpc_cancelled). The server serves each connection on a thread
 * of its own, up to UNIX_MAX_CONNS connections; a stop ends the reads, lets calls in flight answer (their
 * handlers see themselves cancelled) and waits for them. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "rpc.h"
#include "rpc_core.h"
#include "timeutil.h"

#define UNIX_MAX_MSG   (64u << 20) /* a frame's cap (gRPC's default receive cap is 4 MiB) */
#define UNIX_MAX_CONNS 1024        /* connections a server serves at once; more are closed at accept */
#define UNIX_IDLE_MAX  64          /* idle connections a client keeps */
#define UNIX_SEND_MS   10000 /* a reply the client does not take within this is dropped (stop waits for it) */

static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Blocking: n bytes, or -1 (0 read: errno ECONNRESET). */
static int read_all(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) errno = ECONNRESET;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void send_timeout(int fd, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* ---- server ---- */

typedef struct unix_conn {
    struct rpc_unix_server *srv;
    int fd;
    struct unix_conn *prev, *next;
} unix_conn;

struct rpc_unix_server {
    const cube_rpc_method *methods;
    void *service;
    int lfd, stop_fd;
    pthread_t acceptor;
    pthread_mutex_t lock;
    pthread_cond_t drained; /* nconns reached 0 */
    unix_conn *conns;       /* under lock */
    int nconns;             /* under lock */
    bool stopping;          /* under lock */
    char path[108];
};

static void reply(int fd, int code, const void *body, size_t len)
{
    uint8_t *msg = malloc(8 + len);
    if (!msg) return; /* the client sees no answer: its deadline ends the call */
    rpc_put_u32(msg, (uint32_t)(4 + len));
    rpc_put_u32(msg + 4, (uint32_t)code);
    if (len) memcpy(msg + 8, body, len);
    if (send_all(fd, msg, 8 + len) < 0) cube_log_debug("rpc reply not sent", "errno=%d", errno);
    free(msg);
}

static void reply_error(int fd, const cube_err *err)
{
    /* the code a gRPC client would have read from the status this errno maps to (and what it carries) */
    int code = cube_rpc_errno_carried(err->code)
                   ? err->code
                   : cube_rpc_errno_from_status(cube_rpc_status_from_errno(err->code ? err->code : EIO));
    reply(fd, code ? code : EIO, err->msg, strlen(err->msg));
}

/* One request frame (body of len bytes, after its length): served and answered. */
static void serve_call(rpc_unix_server *srv, int fd, const uint8_t *msg, size_t len)
{
    cube_err err = {0};
    cube_rpc_ctx ctx = {.fd = fd, .arena = rpc_arena_new()};
    uint8_t *out = NULL;
    size_t n = 0;
    if (rpc_serve_request(srv->methods, srv->service, &ctx, msg, len, UNIX_MAX_MSG - 4, &out, &n, &err) == 0)
        reply(fd, 0, out, n);
    if (err.code) reply_error(fd, &err);
    rpc_arena_free(ctx.arena);
}

static void *conn_main(void *arg)
{
    unix_conn *c = arg;
    rpc_unix_server *srv = c->srv;
    for (;;) {
        uint8_t hdr[4];
        if (read_all(c->fd, hdr, 4) < 0) break; /* the client closed it (or the server stops) */
        uint32_t len = rpc_get_u32(hdr);
        if (len > UNIX_MAX_MSG) {
            cube_err err = {0};
            cube_err_set(&err, EMSGSIZE, "request of %u bytes is over %u", len, UNIX_MAX_MSG);
            reply_error(c->fd, &err);
            break; /* the rest of it cannot be skipped reliably */
        }
        uint8_t *msg = malloc(len ? len : 1);
        if (!msg || read_all(c->fd, msg, len) < 0) {
            free(msg);
            break;
        }
        serve_call(srv, c->fd, msg, len);
        free(msg);
    }
    pthread_mutex_lock(&srv->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    close(c->fd);
    free(c);
    if (--srv->nconns == 0) pthread_cond_broadcast(&srv->drained);
    pthread_mutex_unlock(&srv->lock); /* nothing of srv is touched after this: stop may free it */
    return NULL;
}

static void *acceptor_main(void *arg)
{
    rpc_unix_server *srv = arg;
    for (;;) {
        int fd = rpc_accept(srv->lfd, srv->stop_fd);
        if (fd < 0) break;
        unix_conn *c = calloc(1, sizeof(*c));
        pthread_mutex_lock(&srv->lock);
        if (!c || srv->stopping || srv->nconns >= UNIX_MAX_CONNS) {
            pthread_mutex_unlock(&srv->lock);
            if (c)
                cube_log_warn("rpc connection refused: too many", "socket=%s max=%d", srv->path,
                              UNIX_MAX_CONNS);
            free(c);
            close(fd);
            continue;
        }
        send_timeout(fd, UNIX_SEND_MS);
        *c = (unix_conn){.srv = srv, .fd = fd, .next = srv->conns};
        if (srv->conns) srv->conns->prev = c;
        srv->conns = c;
        srv->nconns++;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_t th;
        int rc = pthread_create(&th, &at, conn_main, c);
        pthread_attr_destroy(&at);
        if (rc != 0) {
            srv->conns = c->next;
            if (c->next) c->next->prev = NULL;
            if (--srv->nconns == 0) pthread_cond_broadcast(&srv->drained);
            close(fd);
            free(c);
        }
        pthread_mutex_unlock(&srv->lock);
    }
    return NULL;
}

rpc_unix_server *rpc_unix_server_start(const char *path, const cube_rpc_method *methods, void *service,
                                       cube_err *err)
{
    rpc_unix_server *srv = calloc(1, sizeof(*srv));
    if (!srv) return cube_err_set(err, ENOMEM, "out of memory"), NULL;
    srv->methods = methods;
    srv->service = service;
    snprintf(srv->path, sizeof(srv->path), "%s", path);
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->drained, NULL);
    srv->stop_fd = -1;
    if ((srv->lfd = rpc_unix_listen(path, SOCK_STREAM, 512, err)) < 0) goto fail;
    if ((srv->stop_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
        cube_err_sys(err, errno, "rpc server eventfd");
        unlink(path);
        goto fail;
    }
    if (pthread_create(&srv->acceptor, NULL, acceptor_main, srv) != 0) {
        cube_err_set(err, EAGAIN, "rpc server: cannot start its thread");
        unlink(path);
        goto fail;
    }
    return srv;
fail:
    if (srv->lfd >= 0) close(srv->lfd);
    if (srv->stop_fd >= 0) close(srv->stop_fd);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->drained);
    free(srv);
    return NULL;
}

void rpc_unix_server_stop(rpc_unix_server *srv)
{
    if (!srv) return;
    uint64_t one = 1;
    if (write(srv->stop_fd, &one, sizeof(one)) < 0) {
    }
    pthread_join(srv->acceptor, NULL);
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    /* reads end now; a call in flight still answers (its handler sees itself cancelled: the read side's
     * shutdown is what cube_rpc_cancelled looks for) */
    for (unix_conn *c = srv->conns; c; c = c->next) shutdown(c->fd, SHUT_RD);
    while (srv->nconns > 0) pthread_cond_wait(&srv->drained, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
    close(srv->lfd);
    close(srv->stop_fd);
    unlink(srv->path);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->drained);
    free(srv);
}

/* ---- client ---- */

struct rpc_unix_client {
    struct sockaddr_un sa;
    const char *target; /* "unix:PATH", for messages (the owning cube_rpc_client's) */
    pthread_mutex_t lock;
    int idle[UNIX_IDLE_MAX]; /* under lock */
    int nidle;               /* under lock */
};

rpc_unix_client *rpc_unix_client_new(const char *target, cube_err *err)
{
    rpc_unix_client *c = calloc(1, sizeof(*c));
    if (!c) return cube_err_set(err, ENOMEM, "out of memory"), NULL;
    if (rpc_unix_address(target + 5, &c->sa, err) < 0) {
        free(c);
        return NULL;
    }
    c->target = target;
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void rpc_unix_client_free(rpc_unix_client *c)
{
    if (!c) return;
    for (int i = 0; i < c->nidle; i++) close(c->idle[i]);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* An idle connection the server has not closed, or -1. */
static int take_idle(rpc_unix_client *c)
{
    for (;;) {
        pthread_mutex_lock(&c->lock);
        int fd = c->nidle > 0 ? c->idle[--c->nidle] : -1;
        pthread_mutex_unlock(&c->lock);
        if (fd < 0) return -1;
        /* between calls nothing may arrive but the server's hang-up (it stopped, or restarted) */
        struct pollfd p = {fd, POLLIN | POLLRDHUP, 0};
        if (poll(&p, 1, 0) == 0) return fd;
        close(fd);
    }
}

static void put_idle(rpc_unix_client *c, int fd)
{
    pthread_mutex_lock(&c->lock);
    bool kept = c->nidle < UNIX_IDLE_MAX;
    if (kept) c->idle[c->nidle++] = fd;
    pthread_mutex_unlock(&c->lock);
    if (!kept) close(fd);
}

/* A new connection within timeout_ms; -1 with err (ECONNREFUSED: nobody serves the path). */
static int dial(rpc_unix_client *c, const char *method, int64_t timeout_ms, cube_err *err)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return cube_err_sys(err, errno, "%s: socket", method);
    /* a listener whose backlog is full makes connect wait: at most the call's time */
    send_timeout(fd, timeout_ms);
    int rc;
    do rc = connect(fd, (struct sockaddr *)&c->sa, sizeof(c->sa));
    while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        int e = errno;
        close(fd);
        if (e == EAGAIN || e == EINPROGRESS)
            return cube_err_set(err, ETIMEDOUT, "%s to %s: no answer within %lld ms", method, c->target,
                                (long long)timeout_ms);
        /* no socket, or nobody behind it: gRPC's UNAVAILABLE */
        return cube_err_set(err, ECONNREFUSED, "%s: %s unavailable: %s", method, c->target, strerror(e));
    }
    return fd;
}

int rpc_unix_connect(rpc_unix_client *c, int64_t timeout_ms, cube_err *err)
{
    int fd = take_idle(c);
    if (fd < 0) fd = dial(c, "connect", timeout_ms > 0 ? timeout_ms : 1, err);
    if (fd < 0) return -1;
    put_idle(c, fd);
    return 0;
}

/* Reads the reply frame by the deadline; its body (malloc'd, *len bytes), or NULL with err. */
static uint8_t *await_reply(rpc_unix_client *c, int fd, const char *method, int64_t deadline_ns,
                            int64_t timeout_ms, cube_rpc_cancel *cancel, size_t *len, cube_err *err)
{
    uint8_t hdr[4], *body = NULL;
    size_t want = 4, got = 0;
    uint8_t *into = hdr;
    for (;;) {
        int64_t left = (deadline_ns - cube_now_mono_ns() + 999999) / 1000000;
        struct pollfd p = {fd, POLLIN, 0};
        int n = left > 0 ? poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left) : 0;
        if (n < 0 && errno == EINTR) continue;
        if (cancel && rpc_cancel_fired(cancel)) {
            cube_err_set(err, ECANCELED, "%s: cancelled", method);
            break;
        }
        if (n <= 0) {
            cube_err_set(err, ETIMEDOUT, "%s to %s: no answer within %lld ms", method, c->target,
                         (long long)timeout_ms);
            break;
        }
        ssize_t k = read(fd, into + got, want - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            cube_err_set(err, ECONNRESET, "%s: %s hung up without an answer", method, c->target);
            break;
        }
        got += (size_t)k;
        if (got < want) continue;
        if (into == hdr) {
            want = rpc_get_u32(hdr);
            if (want < 4 || want > UNIX_MAX_MSG) {
                cube_err_set(err, EBADMSG, "%s: a reply of %zu bytes from %s", method, want, c->target);
                break;
            }
            if (!(body = malloc(want))) {
                cube_err_set(err, ENOMEM, "out of memory");
                break;
            }
            into = body;
            got = 0;
            continue;
        }
        *len = want;
        return body;
    }
    free(body);
    return NULL;
}

int rpc_unix_call(rpc_unix_client *c, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, int64_t timeout_ms,
                  cube_rpc_cancel *cancel, cube_err *err)
{
    *resp = NULL;
    int64_t deadline = cube_now_mono_ns() + timeout_ms * 1000000;
    size_t mlen = strlen(method) + 1, plen = protobuf_c_message_get_packed_size(req);
    if (8 + mlen + plen > UNIX_MAX_MSG)
        return cube_err_set(err, EMSGSIZE, "%s: a request of %zu bytes is over %u", method, 8 + mlen + plen,
                            UNIX_MAX_MSG);
    uint8_t *msg = malloc(8 + mlen + plen);
    if (!msg) return cube_err_set(err, ENOMEM, "out of memory");
    rpc_put_u32(msg, (uint32_t)(4 + mlen + plen));
    rpc_put_u32(msg + 4, (uint32_t)(timeout_ms > UINT32_MAX ? UINT32_MAX : timeout_ms));
    memcpy(msg + 8, method, mlen);
    protobuf_c_message_pack(req, msg + 8 + mlen);
    int rc = -1, fd = -1;
    uint8_t *body = NULL;
    bool reused = false;
    for (int attempt = 0; attempt < 2; attempt++) {
        int64_t left = (deadline - cube_now_mono_ns()) / 1000000;
        if (left < 1) left = 1;
        fd = take_idle(c);
        reused = fd >= 0;
        if (fd < 0 && (fd = dial(c, method, left, err)) < 0) goto out;
        if (cancel && rpc_cancel_attach(cancel, fd) < 0) {
            put_idle(c, fd); /* unused */
            fd = -1;
            cube_err_set(err, ECANCELED, "%s: cancelled", method);
            goto out;
        }
        /* a request bigger than the socket's buffer waits for the server to read it: at most the call's time
         */
        send_timeout(fd, left);
        if (send_all(fd, msg, 8 + mlen + plen) == 0) break;
        int e = errno;
        if (cancel) rpc_cancel_detach(cancel);
        close(fd);
        fd = -1;
        if (e == EAGAIN || e == EWOULDBLOCK) {
            cube_err_set(err, ETIMEDOUT, "%s to %s: no answer within %lld ms", method, c->target,
                         (long long)timeout_ms);
            goto out;
        }
        /* a kept connection the server closed meanwhile: the request never arrived, a new one is safe */
        if (!reused || (e != EPIPE && e != ECONNRESET)) {
            cube_err_set(err, ECONNRESET, "%s: send to %s: %s", method, c->target, strerror(e));
            goto out;
        }
    }
    if (fd < 0) {
        cube_err_set(err, ECONNRESET, "%s: %s keeps closing its connections", method, c->target);
        goto out;
    }
    size_t len = 0;
    body = await_reply(c, fd, method, deadline, timeout_ms, cancel, &len, err);
    if (cancel) rpc_cancel_detach(cancel);
    if (!body) {
        close(fd); /* its reply may still come: this connection cannot carry another call */
        fd = -1;
        goto out;
    }
    put_idle(c, fd);
    fd = -1;
    int code = (int)rpc_get_u32(body);
    if (code) {
        int n = (int)(len - 4);
        if (code == ECONNREFUSED) /* as gRPC's UNAVAILABLE reads */
            cube_err_set(err, code, "%s: %s unavailable: %.*s", method, c->target, n, (const char *)body + 4);
        else
            cube_err_set(err, code, "%.*s", n, (const char *)body + 4);
        goto out;
    }
    *resp = protobuf_c_message_unpack(resp_desc, NULL, len - 4, body + 4);
    if (!*resp) {
        cube_err_set(err, EBADMSG, "%s: malformed %s in reply", method, resp_desc->name);
        goto out;
    }
    rc = 0;
out:
    free(msg);
    free(body);
    return rc;
}
