/* ttrpc server and client (see ttrpc.h). */
#include "ttrpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "shim.pb-c.h"

enum { T_REQUEST = 1, T_RESPONSE = 2, T_DATA = 3 };

struct ttrpc_ctx {
    void **ptrs;
    size_t n, cap;
};

void *ttrpc_alloc(ttrpc_ctx *ctx, size_t size)
{
    if (ctx->n == ctx->cap) {
        size_t cap = ctx->cap ? ctx->cap * 2 : 16;
        void **p = realloc(ctx->ptrs, cap * sizeof(*p));
        if (!p) return NULL;
        ctx->ptrs = p;
        ctx->cap = cap;
    }
    void *m = calloc(1, size ? size : 1);
    if (m) ctx->ptrs[ctx->n++] = m;
    return m;
}

char *ttrpc_strdup(ttrpc_ctx *ctx, const char *s)
{
    size_t len = strlen(s ? s : "");
    char *d = ttrpc_alloc(ctx, len + 1);
    if (d) memcpy(d, s ? s : "", len);
    return d;
}

int ttrpc_code(int err)
{
    switch (err) {
    case 0:
        return 0;
    case EINVAL:
        return 3; /* INVALID_ARGUMENT */
    case ENOENT:
    case ESRCH:
        return 5; /* NOT_FOUND */
    case EEXIST:
        return 6; /* ALREADY_EXISTS */
    case EPERM:
    case EACCES:
        return 7; /* PERMISSION_DENIED */
    case EBUSY:
    case EAGAIN:
        return 9; /* FAILED_PRECONDITION */
    case ENOSYS:
    case ENOTSUP:
        return 12; /* UNIMPLEMENTED */
    case ETIMEDOUT:
        return 4; /* DEADLINE_EXCEEDED */
    default:
        return 2; /* UNKNOWN */
    }
}

int ttrpc_parse_header(const uint8_t h[10], uint32_t *len, uint32_t *stream, uint8_t *type, uint8_t *flags)
{
    uint32_t l, s;
    memcpy(&l, h, 4);
    memcpy(&s, h + 4, 4);
    *len = ntohl(l);
    *stream = ntohl(s);
    *type = h[8];
    *flags = h[9];
    if (*len > TTRPC_MAX_DATA) return -1;
    return 0;
}

void ttrpc_put_header(uint8_t h[10], uint32_t len, uint32_t stream, uint8_t type, uint8_t flags)
{
    uint32_t l = htonl(len), s = htonl(stream);
    memcpy(h, &l, 4);
    memcpy(h + 4, &s, 4);
    h[8] = type;
    h[9] = flags;
}

static int read_full(int fd, void *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n == 0) return -1;
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
    for (size_t put = 0; put < len;) {
        ssize_t n = send(fd, (const char *)buf + put, len - put, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        put += (size_t)n;
    }
    return 0;
}

/* One frame: header + payload, in one buffer so concurrent writers cannot interleave. */
static int send_frame(int fd, pthread_mutex_t *lock, uint32_t stream, uint8_t type, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    if (len > TTRPC_MAX_DATA) return -1;
    uint8_t *buf = malloc(len + 10);
    if (!buf) return -1;
    ttrpc_put_header(buf, (uint32_t)len, stream, type, 0);
    protobuf_c_message_pack(m, buf + 10);
    if (lock) pthread_mutex_lock(lock);
    int rc = write_full(fd, buf, len + 10);
    if (lock) pthread_mutex_unlock(lock);
    free(buf);
    return rc;
}

typedef struct conn {
    int fd;
    pthread_mutex_t wlock;
    int refs; /* the reader and each request in flight */
    const ttrpc_method *methods;
    void *svc;
    volatile bool *stop;
} conn;

static void conn_put(conn *c)
{
    pthread_mutex_lock(&c->wlock);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->wlock);
    if (!last) return;
    close(c->fd);
    pthread_mutex_destroy(&c->wlock);
    free(c);
}

typedef struct call {
    conn *c;
    uint32_t stream;
    uint8_t *data;
    uint32_t len;
} call;

static void *handle_call(void *arg)
{
    call *k = arg;
    conn *c = k->c;
    Cubeshim__Response resp = CUBESHIM__RESPONSE__INIT;
    Cubeshim__Status st = CUBESHIM__STATUS__INIT;
    resp.status = &st;
    cube_err err = {0};
    ttrpc_ctx ctx = {0};
    uint8_t *out = NULL;
    ProtobufCMessage *in = NULL, *reply = NULL;
    const ttrpc_method *m = NULL;
    Cubeshim__Request *req = cubeshim__request__unpack(NULL, k->len, k->data);
    if (!req) {
        cube_err_set(&err, EINVAL, "malformed ttrpc request");
        goto done;
    }
    for (const ttrpc_method *x = c->methods; x->service && !m; x++)
        if (strcmp(x->service, req->service) == 0 && strcmp(x->method, req->method) == 0) m = x;
    if (!m) {
        cube_err_set(&err, ENOSYS, "%s/%s is not a method of this shim", req->service, req->method);
        goto done;
    }
    in = protobuf_c_message_unpack(m->request, NULL, req->payload.len, req->payload.data);
    if (!in) {
        cube_err_set(&err, EINVAL, "malformed %s request", m->method);
        goto done;
    }
    reply = ttrpc_alloc(&ctx, m->response->sizeof_message);
    if (!reply) {
        cube_err_set(&err, ENOMEM, "out of memory");
        goto done;
    }
    protobuf_c_message_init(m->response, reply);
    if (m->fn(c->svc, &ctx, in, reply, &err) == 0) {
        size_t len = protobuf_c_message_get_packed_size(reply);
        out = malloc(len ? len : 1);
        if (out) {
            protobuf_c_message_pack(reply, out);
            resp.payload.data = out;
            resp.payload.len = len;
        }
        st.code = 0;
    }
done:
    if (err.code || (!st.code && !out && m)) {
        st.code = ttrpc_code(err.code ? err.code : ENOMEM);
        st.message = err.msg;
    }
    if (send_frame(c->fd, &c->wlock, k->stream, T_RESPONSE, &resp.base) < 0)
        cube_log_warn("ttrpc response not sent", "stream=%u", k->stream);
    bool stop = *c->stop;
    if (in) protobuf_c_message_free_unpacked(in, NULL);
    if (req) cubeshim__request__free_unpacked(req, NULL);
    for (size_t i = 0; i < ctx.n; i++) free(ctx.ptrs[i]);
    free(ctx.ptrs);
    free(out);
    free(k->data);
    free(k);
    conn_put(c);
    if (stop) {
        cube_log_info("shim shutting down", "reason=Shutdown");
        exit(0);
    }
    return NULL;
}

static void *conn_loop(void *arg)
{
    conn *c = arg;
    for (;;) {
        uint8_t h[10];
        uint32_t len, stream;
        uint8_t type, flags;
        if (read_full(c->fd, h, sizeof(h)) < 0) break;
        if (ttrpc_parse_header(h, &len, &stream, &type, &flags) < 0) {
            cube_log_warn("ttrpc frame refused: too large; connection closed", "len=%u", len);
            break; /* the stream cannot be resynchronised past a frame we will not read */
        }
        uint8_t *data = malloc(len ? len : 1);
        if (!data || read_full(c->fd, data, len) < 0) {
            free(data);
            break;
        }
        if (type != T_REQUEST || (stream & 1) == 0) { /* data frames: no streaming methods here */
            free(data);
            continue;
        }
        call *k = calloc(1, sizeof(*k));
        if (!k) {
            free(data);
            break;
        }
        *k = (call){c, stream, data, len};
        pthread_mutex_lock(&c->wlock);
        c->refs++;
        pthread_mutex_unlock(&c->wlock);
        pthread_t t;
        if (pthread_create(&t, NULL, handle_call, k) != 0) {
            free(data);
            free(k);
            conn_put(c);
            continue;
        }
        pthread_detach(t);
    }
    conn_put(c);
    return NULL;
}

void ttrpc_serve(int listen_fd, const ttrpc_method *methods, void *svc, volatile bool *stop)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return;
        }
        conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->refs = 1;
        c->methods = methods;
        c->svc = svc;
        c->stop = stop;
        pthread_mutex_init(&c->wlock, NULL);
        pthread_t t;
        if (pthread_create(&t, NULL, conn_loop, c) != 0) {
            conn_put(c);
            continue;
        }
        pthread_detach(t);
    }
}

struct ttrpc_client {
    int fd;
    uint32_t next_stream;
    pthread_mutex_t lock;
};

ttrpc_client *ttrpc_client_connect(const char *address, cube_err *err)
{
    const char *path = strncmp(address, "unix://", 7) == 0 ? address + 7 : address;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        cube_err_set(err, ENAMETOOLONG, "ttrpc address too long: %s", path);
        return NULL;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        cube_err_sys(err, errno, "connect %s", path);
        if (fd >= 0) close(fd);
        return NULL;
    }
    ttrpc_client *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        cube_err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    c->fd = fd;
    c->next_stream = 1;
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void ttrpc_client_free(ttrpc_client *c)
{
    if (!c) return;
    close(c->fd);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int ttrpc_client_call(ttrpc_client *c, const char *service, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, cube_err *err)
{
    *resp = NULL;
    size_t plen = protobuf_c_message_get_packed_size(req);
    uint8_t *payload = malloc(plen ? plen : 1);
    if (!payload) return cube_err_set(err, ENOMEM, "out of memory");
    protobuf_c_message_pack(req, payload);
    Cubeshim__Request r = CUBESHIM__REQUEST__INIT;
    r.service = (char *)service;
    r.method = (char *)method;
    r.payload.data = payload;
    r.payload.len = plen;
    pthread_mutex_lock(&c->lock);
    uint32_t stream = c->next_stream;
    c->next_stream += 2;
    int rc = send_frame(c->fd, NULL, stream, T_REQUEST, &r.base);
    free(payload);
    uint8_t *data = NULL;
    uint32_t len = 0;
    while (rc == 0) {
        uint8_t h[10];
        uint32_t s;
        uint8_t type, flags;
        if (read_full(c->fd, h, sizeof(h)) < 0 || ttrpc_parse_header(h, &len, &s, &type, &flags) < 0) {
            rc = -1;
            break;
        }
        free(data);
        data = malloc(len ? len : 1);
        if (!data || read_full(c->fd, data, len) < 0) {
            rc = -1;
            break;
        }
        if (type == T_RESPONSE && s == stream) break;
    }
    pthread_mutex_unlock(&c->lock);
    if (rc < 0) {
        free(data);
        return cube_err_set(err, EIO, "ttrpc %s/%s: connection failed", service, method);
    }
    Cubeshim__Response *rs = cubeshim__response__unpack(NULL, len, data);
    free(data);
    if (!rs) return cube_err_set(err, EIO, "ttrpc %s/%s: malformed response", service, method);
    if (rs->status && rs->status->code != 0) {
        cube_err_set(err, EIO, "%s/%s: %s", service, method, rs->status->message ? rs->status->message : "");
        cubeshim__response__free_unpacked(rs, NULL);
        return -1;
    }
    *resp = protobuf_c_message_unpack(resp_desc, NULL, rs->payload.len, rs->payload.data);
    cubeshim__response__free_unpacked(rs, NULL);
    if (!*resp) return cube_err_set(err, EIO, "ttrpc %s/%s: malformed reply", service, method);
    return 0;
}
