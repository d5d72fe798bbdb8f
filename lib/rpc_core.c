/* The transport-neutral half of RPC: a call's arena, its context, and the step every server takes between
 * the request's bytes and the response message (unpack, handler, metrics). No gRPC here: cube-hypervisor's
 * control socket (rpc_local.c) links this and nothing of gRPC. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "rpc_core.h"
#include "timeutil.h"

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

struct rpc_arena {
    arena_block *blocks;
};

rpc_arena *rpc_arena_new(void)
{
    return calloc(1, sizeof(rpc_arena));
}

void *rpc_arena_alloc(rpc_arena *a, size_t size)
{
    size = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (size == 0) size = sizeof(max_align_t);
    arena_block *b = a->blocks;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > 4096 ? size : 4096;
        arena_block *nb = malloc(sizeof(*nb) + cap);
        if (!nb) return NULL;
        nb->used = 0;
        nb->cap = cap;
        /* a big one-off block goes second so the current small block keeps serving */
        if (b && size > 4096) {
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            a->blocks = nb;
        }
        b = nb;
    }
    void *p = (char *)b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

void rpc_arena_free(rpc_arena *a)
{
    if (!a) return;
    for (arena_block *b = a->blocks, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    free(a);
}

static void *arena_pb_alloc(void *data, size_t size)
{
    return rpc_arena_alloc(data, size);
}

static void arena_pb_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

ProtobufCAllocator rpc_arena_allocator(rpc_arena *a)
{
    return (ProtobufCAllocator){.alloc = arena_pb_alloc, .free = arena_pb_free, .allocator_data = a};
}

void *cube_rpc_alloc(cube_rpc_ctx *ctx, size_t size)
{
    return rpc_arena_alloc(ctx->arena, size);
}

char *cube_rpc_strdup(cube_rpc_ctx *ctx, const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *p = rpc_arena_alloc(ctx->arena, n);
    if (p) memcpy(p, s, n);
    return p;
}

bool cube_rpc_cancelled(const cube_rpc_ctx *ctx)
{
    if (ctx->fd >= 0) { /* a local call: the client hung up */
        struct pollfd p = {ctx->fd, POLLRDHUP, 0};
        return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
    }
    return __atomic_load_n(&ctx->closed, __ATOMIC_ACQUIRE) && ctx->cancelled;
}

int64_t cube_rpc_deadline_left_ms(const cube_rpc_ctx *ctx)
{
    if (ctx->deadline_ns == INT64_MAX) return INT64_MAX;
    int64_t left = (ctx->deadline_ns - cube_now_mono_ns()) / 1000000;
    return left < 0 ? 0 : left;
}

int rpc_invoke(const cube_rpc_method *m, void *service, cube_rpc_ctx *ctx, const uint8_t *in, size_t len,
               ProtobufCMessage **resp, cube_err *err)
{
    ProtobufCAllocator alloc = rpc_arena_allocator(ctx->arena);
    ProtobufCMessage *req = protobuf_c_message_unpack(m->request, &alloc, len, in);
    if (!req) return cube_err_set(err, EINVAL, "%s: malformed %s", m->path, m->request->name);
    ProtobufCMessage *out = cube_rpc_alloc(ctx, m->response->sizeof_message);
    if (!out) return cube_err_set(err, EAGAIN, "out of memory");
    m->response->message_init(out);
    int64_t t0 = cube_now_mono_ns();
    int hrc = m->handler(service, ctx, req, out, err);
    char name[400];
    snprintf(name, sizeof(name), "cube_rpc_calls_total{method=\"%s\",code=\"%s\"}", m->path,
             hrc < 0 ? cube_errno_name(err->code ? err->code : EIO) : "OK");
    cube_metric_add(name, "RPC calls served, by method and result", 1);
    snprintf(name, sizeof(name), "cube_rpc_duration_seconds{method=\"%s\"}", m->path);
    cube_metric_observe(name, "RPC handling time", (double)(cube_now_mono_ns() - t0) / 1e9);
    if (hrc < 0) {
        if (!err->code) err->code = EIO;
        cube_log_debug("rpc call failed", "method=%s errno=%s", m->path, cube_errno_name(err->code));
        return -1;
    }
    *resp = out;
    return 0;
}

int rpc_serve_request(const cube_rpc_method *methods, void *service, cube_rpc_ctx *ctx, const uint8_t *msg,
                      size_t len, size_t max_reply, uint8_t **out, size_t *out_len, cube_err *err)
{
    const uint8_t *nul = len > 4 ? memchr(msg + 4, '\0', len - 4) : NULL;
    if (!nul) return cube_err_set(err, EINVAL, "malformed request: no method");
    const cube_rpc_method *m = methods;
    while (m->path && strcmp(m->path, (const char *)msg + 4) != 0) m++;
    if (!m->path) return cube_err_set(err, ENOSYS, "unknown method %.200s", (const char *)msg + 4);
    uint32_t timeout_ms = rpc_get_u32(msg);
    ctx->deadline_ns = timeout_ms ? cube_now_mono_ns() + (int64_t)timeout_ms * 1000000 : INT64_MAX;
    if (!ctx->arena) return cube_err_set(err, EAGAIN, "out of memory");
    ProtobufCMessage *resp = NULL;
    size_t off = (size_t)(nul + 1 - msg);
    if (rpc_invoke(m, service, ctx, msg + off, len - off, &resp, err) < 0) return -1;
    size_t n = protobuf_c_message_get_packed_size(resp);
    if (n > max_reply)
        return cube_err_set(err, EMSGSIZE, "%s: a reply of %zu bytes is over %zu", m->path, n, max_reply);
    if (!(*out = rpc_arena_alloc(ctx->arena, n ? n : 1))) return cube_err_set(err, EAGAIN, "out of memory");
    protobuf_c_message_pack(resp, *out);
    *out_len = n;
    return 0;
}

int rpc_accept(int lfd, int stop_fd)
{
    for (;;) {
        struct pollfd p[2] = {{lfd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (p[1].revents) return -1;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) return fd;
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
            poll(NULL, 0, 10); /* out of descriptors: the listen socket stays readable, back off */
        /* EAGAIN: another thread took it */
    }
}

int rpc_unix_address(const char *path, struct sockaddr_un *sa, cube_err *err)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (path[0] != '/' || strlen(path) >= sizeof(sa->sun_path))
        return cube_err_set(err, EINVAL, "unix:%s: an absolute path under %zu bytes is required", path,
                            sizeof(sa->sun_path));
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return 0;
}

int rpc_unix_listen(const char *path, int type, int backlog, cube_err *err)
{
    struct sockaddr_un sa;
    if (rpc_unix_address(path, &sa, err) < 0) return -1;
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path); /* stale, from a crashed run */
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return cube_err_sys(err, errno, "socket for unix:%s", path);
    mode_t old = umask(0177); /* 0600 from the start: only its owner (root, the node's services) may call */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc < 0 || listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        return cube_err_set(err, e, "cannot listen on unix:%s: %s", path, strerror(e));
    }
    return fd;
}
