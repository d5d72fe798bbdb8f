/* The proxy's relay: one event loop (lib/loop.c) for every client and upstream socket, a fixed pool of
 * workers for routing (which blocks), and the edge's limits.
 *
 * A connection goes HEAD (reading the request head, under head_timeout_ms from accept) -> ROUTE (a worker
 * resolves the sandbox and connects; the loop does not touch it meanwhile) -> PUMP (bytes both ways through a
 * buffer each, idle_timeout_ms without a byte either way ends it). Caps: max_conns in total and max_per_addr
 * per client address. At a cap the oldest connection still in HEAD (of that address, for the per-address cap)
 * is answered 503 and closed to make room — idle or slow clients cannot lock out the ones that send whole
 * requests; only when none is left in HEAD is the new one refused (503 or 429, with Retry-After). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <stdint.h>
#include <unistd.h>

#include "hash.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "proxy.h"
#include "timeutil.h"
#include "tls.h"

#define HEAD_MAX      65536
#define PUMP_BUF      65536
#define SWEEP_MS      250 /* deadlines are checked this often */
#define ADDR_BUCKETS  1024
#define ACCEPT_BATCH  128
#define ACCEPT_PAUSE  100 /* ms without accepting when the process is out of descriptors */
#define RETRY_AFTER_S "1"

typedef enum { C_HEAD, C_ROUTE, C_PUMP } conn_state;

typedef struct addr_count {
    char key[INET6_ADDRSTRLEN];
    int n;
    struct addr_count *next;
} addr_count;

typedef struct pbuf {
    char *p;
    size_t off, len, cap; /* pending bytes are p[off..len) */
} pbuf;

typedef struct conn {
    struct proxy_relay *r;
    int fd, up;
    conn_state state;
    char *head;
    size_t head_len, head_cap;
    int64_t accepted_ms, active_ms;
    addr_count *addr;
    struct conn *prev, *next;   /* every connection */
    struct conn *hprev, *hnext; /* in HEAD, oldest first */
    struct conn *qnext;         /* the workers' queue */
    proxy_route route;
    pbuf c2u, u2c;
    SSL *ssl, *up_ssl; /* TLS on the client side (a hop from another proxy) and upstream (our hop) */
    bool tls_checked;  /* the first byte was looked at: TLS or plain */
    bool tls_ready;    /* the client's handshake is done */
    bool ssl_read_wants_write, up_ssl_read_wants_write;
    bool client_eof, up_eof, up_shut;
    char *inject; /* header lines still to add to the sandbox's answer, after its status line (CORS) */
    int client_ev, up_ev; /* interests registered with the loop (0: not registered) */
} conn;

typedef struct proxy_relay {
    proxy *p;
    cube_loop *loop;
    conn *all, *heads, *heads_tail;
    size_t n;
    addr_count *addrs[ADDR_BUCKETS];
    bool accepting;
    /* workers */
    pthread_t *th;
    int nth;
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    conn *qhead, *qtail;
    bool qstop;
} proxy_relay;

void proxy_limits_default(proxy_limits *l)
{
    struct rlimit rl = {0};
    getrlimit(RLIMIT_NOFILE, &rl);
    long fds = rl.rlim_cur == RLIM_INFINITY ? 1 << 20 : (long)rl.rlim_cur;
    long conns = (fds - 64) / 2;
    if (conns > 65536) conns = 65536;
    if (conns < 16) conns = 16;
    l->head_timeout_ms = 10000;
    l->idle_timeout_ms = 15 * 60 * 1000;
    l->max_conns = (int)conns;
    l->max_per_addr = (int)conns;
    l->workers = 16;
    l->signed_lookups_per_s = 100;
}

/* ---- client addresses ---- */

static addr_count *addr_ref(proxy_relay *r, const char *key)
{
    addr_count **b = &r->addrs[cube_fnv1a(key) % ADDR_BUCKETS];
    for (addr_count *a = *b; a; a = a->next)
        if (strcmp(a->key, key) == 0) return a;
    addr_count *a = calloc(1, sizeof(*a));
    if (!a) return NULL;
    snprintf(a->key, sizeof(a->key), "%s", key);
    a->next = *b;
    *b = a;
    return a;
}

/* Frees an address entry nobody counts any more. */
static void addr_forget(proxy_relay *r, addr_count *a)
{
    if (!a || a->n > 0) return;
    for (addr_count **pp = &r->addrs[cube_fnv1a(a->key) % ADDR_BUCKETS]; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            free(a);
            return;
        }
}

/* ---- lists ---- */

static void heads_remove(proxy_relay *r, conn *c)
{
    if (c->hprev)
        c->hprev->hnext = c->hnext;
    else if (r->heads == c)
        r->heads = c->hnext;
    if (c->hnext)
        c->hnext->hprev = c->hprev;
    else if (r->heads_tail == c)
        r->heads_tail = c->hprev;
    c->hprev = c->hnext = NULL;
}

static void gauge(proxy_relay *r)
{
    cube_metric_set("cube_proxy_open_connections", "Client connections open", (double)r->n);
}

static void set_interest(conn *c, int fd, int *reg, int want);

static void conn_close(conn *c)
{
    proxy_relay *r = c->r;
    set_interest(c, c->fd, &c->client_ev, 0);
    if (c->up >= 0) set_interest(c, c->up, &c->up_ev, 0);
    close(c->fd);
    if (c->up >= 0) close(c->up);
    if (c->route.up >= 0) close(c->route.up); /* routed, but never handed back (the loop stopped) */
    if (c->state == C_HEAD) heads_remove(r, c);
    if (c->prev)
        c->prev->next = c->next;
    else
        r->all = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->addr) c->addr->n--;
    addr_forget(r, c->addr);
    r->n--;
    gauge(r);
    SSL_free(c->ssl);
    SSL_free(c->up_ssl);
    SSL_free(c->route.up_ssl);
    free(c->head);
    free(c->route.send);
    free(c->route.reply);
    free(c->route.resp_headers);
    free(c->inject);
    free(c->c2u.p);
    free(c->u2c.p);
    free(c);
}

/* A refusal on a connection the loop holds no buffer for: best effort (a fresh socket's send buffer takes
 * it), then the write side closed and what the client sent read away, so the close that follows is not a
 * reset that could overtake the answer. The caller closes fd. */
static void refuse(int fd, int status, const char *reason, const char *msg, const char *metric)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"code\":%d,\"message\":\"%s\"}", status, msg);
    size_t len;
    char *resp = proxy_format_reply(status, reason, "application/json", body,
                                    "Retry-After: " RETRY_AFTER_S "\r\n", &len);
    if (resp && write(fd, resp, len) < 0) { /* nothing more to do for it */
    }
    free(resp);
    shutdown(fd, SHUT_WR);
    char sink[4096];
    while (read(fd, sink, sizeof(sink)) > 0) {
    }
    cube_metric_add(metric, "Client connections refused or dropped by the proxy's limits", 1);
}

/* The oldest connection still sending its head (of addr, when given) is answered and closed. */
static bool evict_head(proxy_relay *r, const addr_count *addr)
{
    for (conn *c = r->heads; c; c = c->hnext) {
        if (addr && c->addr != addr) continue;
        if (c->ssl) { /* no plain answer into a TLS session: the peer proxy retries on its side */
            conn_close(c);
            return true;
        }
        refuse(c->fd, 503, "Service Unavailable", "the proxy is at its connection limit: retry",
               "cube_proxy_refused_total{reason=\"evicted\"}");
        conn_close(c);
        return true;
    }
    return false;
}

/* ---- the loop side ---- */

static void on_conn(cube_loop *loop, int fd, int events, void *arg);

static void set_interest(conn *c, int fd, int *reg, int want)
{
    if (*reg == want) return;
    cube_err err = {0};
    if (want == 0) {
        cube_loop_del_fd(c->r->loop, fd); /* not registered at all: no HUP storms from a socket not read */
    } else if (*reg == 0) {
        if (cube_loop_add_fd(c->r->loop, fd, want, on_conn, c, &err) < 0) {
            cube_log_warn("relay: watch failed", "err=\"%s\"", err.msg);
            return;
        }
    } else {
        cube_loop_mod_fd(c->r->loop, fd, want, &err);
    }
    *reg = want;
}

static size_t pending(const pbuf *b)
{
    return b->len - b->off;
}

/* One read from a side, TLS or plain: >0 bytes, 0 end of stream, -1 broken, -2 nothing now (*wants_write:
 * TLS needs the socket writable before it can read on). */
static ssize_t side_read(int fd, SSL *ssl, void *buf, size_t len, bool *wants_write)
{
    *wants_write = false;
    if (!ssl) {
        ssize_t n = read(fd, buf, len);
        if (n >= 0) return n;
        return errno == EAGAIN || errno == EINTR ? -2 : -1;
    }
    int n = SSL_read(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0) return n;
    int e = SSL_get_error(ssl, n);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ) return -2;
    if (e == SSL_ERROR_WANT_WRITE) return *wants_write = true, -2;
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    return -1;
}

/* One write to a side: bytes written, -2 nothing now, -1 broken. */
static ssize_t side_write(int fd, SSL *ssl, const void *buf, size_t len)
{
    if (!ssl) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0) return n;
        return errno == EAGAIN || errno == EINTR ? -2 : -1;
    }
    int n = SSL_write(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0) return n;
    int e = SSL_get_error(ssl, n);
    ERR_clear_error();
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? -2 : -1;
}

/* Reads what fits into b; 1 data, 0 eof, -1 error, 2 nothing now. */
static int fill(int fd, SSL *ssl, pbuf *b, bool *wants_write)
{
    if (b->off == b->len) b->off = b->len = 0;
    *wants_write = false;
    if (b->len == b->cap) return 2;
    ssize_t n = side_read(fd, ssl, b->p + b->len, b->cap - b->len, wants_write);
    if (n > 0) {
        b->len += (size_t)n;
        return 1;
    }
    return n == 0 ? 0 : n == -2 ? 2 : -1;
}

/* Writes what is pending; -1 on a broken peer. */
static int drain(int fd, SSL *ssl, pbuf *b)
{
    while (pending(b)) {
        ssize_t n = side_write(fd, ssl, b->p + b->off, pending(b));
        if (n > 0) {
            b->off += (size_t)n;
            continue;
        }
        return n == -2 ? 0 : -1;
    }
    b->off = b->len = 0;
    return 0;
}

/* Adds c->inject after the status line of the sandbox's answer, which the first read holds (the agent
 * writes its head at once; a status line split across reads would go out without them). One request per
 * connection upstream (Connection: close), so there is one answer head. */
static int inject_headers(conn *c)
{
    pbuf *b = &c->u2c;
    char *p = b->p + b->off, *eol = memmem(p, pending(b), "\r\n", 2);
    size_t il = strlen(c->inject);
    if (eol) {
        size_t at = (size_t)(eol - b->p) + 2;
        if (b->len + il > b->cap) {
            char *nb = realloc(b->p, b->len + il);
            if (!nb) return -1;
            b->p = nb;
            b->cap = b->len + il;
        }
        memmove(b->p + at + il, b->p + at, b->len - at);
        memcpy(b->p + at, c->inject, il);
        b->len += il;
    }
    free(c->inject);
    c->inject = NULL;
    return 0;
}

/* One step of the relay: move what can move, then say what each side waits for. Returns false once the
 * connection is done (closed). TLS may hold decrypted bytes no socket event will announce: those are taken
 * in further rounds. */
static bool pump(conn *c, bool client_ready, bool up_ready)
{
    for (int round = 0; round < 64; round++) {
        if (client_ready && !c->client_eof && pending(&c->c2u) == 0) {
            int rc = fill(c->fd, c->ssl, &c->c2u, &c->ssl_read_wants_write);
            if (rc < 0) return conn_close(c), false;
            if (rc == 0) c->client_eof = true;
            if (rc == 1) c->active_ms = cube_now_mono_ms();
        }
        if (c->up >= 0 && up_ready && !c->up_eof && pending(&c->u2c) == 0) {
            int rc = fill(c->up, c->up_ssl, &c->u2c, &c->up_ssl_read_wants_write);
            if (rc < 0) return conn_close(c), false;
            if (rc == 0) c->up_eof = true;
            if (rc == 1) c->active_ms = cube_now_mono_ms();
            if (rc == 1 && c->inject && inject_headers(c) < 0) return conn_close(c), false;
        }
        if (c->up >= 0 && drain(c->up, c->up_ssl, &c->c2u) < 0) return conn_close(c), false;
        if (drain(c->fd, c->ssl, &c->u2c) < 0) return conn_close(c), false;
        client_ready = c->ssl && !c->client_eof && !pending(&c->c2u) && SSL_pending(c->ssl) > 0;
        up_ready = c->up_ssl && !c->up_eof && !pending(&c->u2c) && SSL_pending(c->up_ssl) > 0;
        if (!client_ready && !up_ready) break;
    }
    /* the request is complete: the sandbox finishes its answer (over TLS: our close_notify, the reading goes
     * on) */
    if (c->client_eof && pending(&c->c2u) == 0 && c->up >= 0 && !c->up_shut) {
        if (c->up_ssl)
            SSL_shutdown(c->up_ssl);
        else
            shutdown(c->up, SHUT_WR);
        c->up_shut = true;
    }
    if (c->up_eof && pending(&c->u2c) == 0) return conn_close(c), false;
    if (c->client_eof && c->up < 0) return conn_close(c), false;
    set_interest(c, c->fd, &c->client_ev,
                 (!c->client_eof && !pending(&c->c2u) ? CUBE_LOOP_READ : 0) |
                     (pending(&c->u2c) || c->ssl_read_wants_write ? CUBE_LOOP_WRITE : 0));
    if (c->up >= 0)
        set_interest(c, c->up, &c->up_ev,
                     (!c->up_eof && !pending(&c->u2c) ? CUBE_LOOP_READ : 0) |
                         (pending(&c->c2u) || c->up_ssl_read_wants_write ? CUBE_LOOP_WRITE : 0));
    return true;
}

static void queue_route(proxy_relay *r, conn *c)
{
    pthread_mutex_lock(&r->qlock);
    c->qnext = NULL;
    if (r->qtail)
        r->qtail->qnext = c;
    else
        r->qhead = c;
    r->qtail = c;
    pthread_cond_signal(&r->qcond);
    pthread_mutex_unlock(&r->qlock);
}

static void read_head(conn *c)
{
    proxy_relay *r = c->r;
    for (;;) {
        if (c->head_len == c->head_cap) {
            if (c->head_cap >= HEAD_MAX) {
                heads_remove(r, c);
                c->state = C_PUMP; /* only to send the answer */
                c->route.reply =
                    proxy_format_reply(431, "Request Header Fields Too Large", "application/json",
                                       "{\"code\":431,\"message\":\"request head larger than 64 KiB\"}", NULL,
                                       &c->route.reply_len);
                goto answer;
            }
            size_t cap = c->head_cap ? c->head_cap * 4 : 2048;
            if (cap > HEAD_MAX) cap = HEAD_MAX;
            char *nh = realloc(c->head, cap + 1);
            if (!nh) return conn_close(c);
            c->head = nh;
            c->head_cap = cap;
        }
        bool wants_write;
        ssize_t n = side_read(c->fd, c->ssl, c->head + c->head_len, c->head_cap - c->head_len, &wants_write);
        if (n == -2) {
            set_interest(c, c->fd, &c->client_ev, CUBE_LOOP_READ | (wants_write ? CUBE_LOOP_WRITE : 0));
            return;
        }
        if (n <= 0) return conn_close(c); /* gone before a whole head: nothing to answer */
        size_t from = c->head_len > 3 ? c->head_len - 3 : 0;
        c->head_len += (size_t)n;
        c->head[c->head_len] = '\0';
        char *end = strstr(c->head + from, "\r\n\r\n");
        if (!end) continue;
        /* a whole head: a worker routes it; the loop leaves the connection alone until it is back */
        heads_remove(r, c);
        set_interest(c, c->fd, &c->client_ev, 0);
        c->state = C_ROUTE;
        c->route.send_len = (size_t)(end - c->head) + 4; /* the head's length, for the worker */
        queue_route(r, c);
        return;
    }
answer:
    c->u2c.p = c->route.reply;
    c->u2c.len = c->u2c.cap = c->route.reply_len;
    c->route.reply = NULL;
    c->up_eof = true; /* nothing comes from upstream: done once the answer is out */
    set_interest(c, c->fd, &c->client_ev, 0);
    pump(c, false, false);
}

/* Back from a worker (on the loop thread): pump to the sandbox, or send the answer. */
static void route_done(cube_loop *loop, void *arg)
{
    (void)loop;
    conn *c = arg;
    c->state = C_PUMP;
    c->active_ms = cube_now_mono_ms();
    c->up = c->route.up;
    c->route.up = -1;
    c->up_ssl = c->route.up_ssl;
    c->route.up_ssl = NULL;
    c->inject = c->route.resp_headers; /* an answer of the proxy's own has them already */
    c->route.resp_headers = NULL;
    if (c->up < 0) { /* an answer of the proxy's own */
        c->u2c.p = c->route.reply;
        c->u2c.len = c->u2c.cap = c->route.reply_len;
        c->route.reply = NULL;
        c->up_eof = true;
        pump(c, false, false);
        return;
    }
    fcntl(c->up, F_SETFL, fcntl(c->up, F_GETFL) | O_NONBLOCK);
    /* what goes upstream first (the rewritten head, any body that came with it), then the client's bytes */
    c->c2u.p = c->route.send;
    c->c2u.len = c->route.send_len;
    c->c2u.cap = c->route.send_len > PUMP_BUF ? c->route.send_len : PUMP_BUF;
    c->route.send = NULL;
    if (c->c2u.cap > c->route.send_len) {
        char *big = realloc(c->c2u.p, c->c2u.cap);
        if (!big) return conn_close(c);
        c->c2u.p = big;
    }
    c->u2c.p = malloc(PUMP_BUF);
    c->u2c.cap = PUMP_BUF;
    if (!c->u2c.p) return conn_close(c);
    free(c->head); /* the head has been copied into what goes upstream */
    c->head = NULL;
    pump(c, true, true);
}

/* Before the head: a TLS hello from another proxy, or plain HTTP. Returns false while the handshake goes on
 * (or when the connection is closed). */
static bool tls_step(conn *c)
{
    proxy_tls *tls = c->r->p->tls;
    if (!tls || c->tls_ready) return true;
    if (!c->tls_checked) {
        unsigned char first;
        ssize_t n = recv(c->fd, &first, 1, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return false;
        if (n <= 0) return conn_close(c), false;
        c->tls_checked = true;
        if (!proxy_tls_hello(first)) {
            c->tls_ready = true; /* plain: an SDK client */
            return true;
        }
        if (!(c->ssl = proxy_tls_server_session(tls, c->fd))) return conn_close(c), false;
    }
    int rc = SSL_accept(c->ssl);
    if (rc == 1) {
        c->tls_ready = true;
        set_interest(c, c->fd, &c->client_ev, CUBE_LOOP_READ);
        return true;
    }
    int e = SSL_get_error(c->ssl, rc);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        set_interest(c, c->fd, &c->client_ev, e == SSL_ERROR_WANT_READ ? CUBE_LOOP_READ : CUBE_LOOP_WRITE);
        return false;
    }
    cube_metric_add("cube_proxy_refused_total{reason=\"tls\"}",
                    "Client connections refused or dropped by the proxy's limits", 1);
    conn_close(c); /* a certificate the cluster did not sign, or no TLS at all */
    return false;
}

static void on_conn(cube_loop *loop, int fd, int events, void *arg)
{
    (void)loop;
    conn *c = arg;
    if (c->state == C_HEAD) {
        if (!tls_step(c)) return;
        return read_head(c);
    }
    if (c->state != C_PUMP) return;
    bool ready = events & (CUBE_LOOP_READ | CUBE_LOOP_HUP);
    pump(c, fd == c->fd && ready, fd == c->up && ready);
}

static void accept_resume(cube_loop *loop, void *arg);

static void on_listen(cube_loop *loop, int lfd, int events, void *arg)
{
    (void)events;
    proxy_relay *r = arg;
    const proxy_limits *lim = &r->p->limits;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EAGAIN) return;
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if ((errno == EMFILE || errno == ENFILE) && evict_head(r, NULL)) continue;
            /* out of descriptors with nobody to evict: stop accepting a moment, not spin */
            cube_loop_del_fd(loop, lfd);
            r->accepting = false;
            cube_loop_add_timer(loop, ACCEPT_PAUSE, accept_resume, r);
            cube_metric_add("cube_proxy_accept_paused_total", "Times the proxy ran out of descriptors", 1);
            return;
        }
        char key[INET6_ADDRSTRLEN] = "?";
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, key, sizeof(key));
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, key, sizeof(key));
        if ((int)r->n >= lim->max_conns && !evict_head(r, NULL)) {
            refuse(fd, 503, "Service Unavailable", "the proxy is at its connection limit: retry",
                   "cube_proxy_refused_total{reason=\"total\"}");
            close(fd);
            continue;
        }
        addr_count *a = addr_ref(r, key);
        if (a && a->n >= lim->max_per_addr && !evict_head(r, a)) {
            refuse(fd, 429, "Too Many Requests", "too many connections from this address: retry",
                   "cube_proxy_refused_total{reason=\"per_address\"}");
            close(fd);
            continue;
        }
        conn *c = calloc(1, sizeof(*c));
        if (!c || !a) {
            free(c);
            addr_forget(r, a);
            close(fd);
            continue;
        }
        a->n++;
        c->r = r;
        c->fd = fd;
        c->up = -1;
        c->route.up = -1;
        c->route.up_ssl = NULL;
        c->addr = a;
        c->state = C_HEAD;
        c->accepted_ms = c->active_ms = cube_now_mono_ms();
        c->next = r->all;
        if (r->all) r->all->prev = c;
        r->all = c;
        c->hprev = r->heads_tail;
        if (r->heads_tail)
            r->heads_tail->hnext = c;
        else
            r->heads = c;
        r->heads_tail = c;
        r->n++;
        gauge(r);
        set_interest(c, fd, &c->client_ev, CUBE_LOOP_READ);
        if (!c->client_ev) conn_close(c);
    }
}

static void accept_resume(cube_loop *loop, void *arg)
{
    proxy_relay *r = arg;
    cube_err err = {0};
    if (!r->accepting && cube_loop_add_fd(loop, r->p->listen_fd, CUBE_LOOP_READ, on_listen, r, &err) == 0)
        r->accepting = true;
}

/* Deadlines: heads are in accept order, so the sweep stops at the first one still in time. */
static void sweep(cube_loop *loop, void *arg)
{
    proxy_relay *r = arg;
    const proxy_limits *lim = &r->p->limits;
    int64_t now = cube_now_mono_ms();
    while (r->heads && now - r->heads->accepted_ms >= lim->head_timeout_ms) {
        conn *c = r->heads;
        if (c->ssl) {
            conn_close(c);
            continue;
        }
        refuse(c->fd, 408, "Request Timeout", "the request head did not arrive in time",
               "cube_proxy_refused_total{reason=\"head_timeout\"}");
        conn_close(c);
    }
    for (conn *c = r->all, *next; c; c = next) {
        next = c->next;
        if (c->state == C_PUMP && now - c->active_ms >= lim->idle_timeout_ms) {
            cube_metric_add("cube_proxy_idle_closed_total", "Relayed connections closed after idling", 1);
            conn_close(c);
        }
    }
    cube_loop_add_timer(loop, SWEEP_MS, sweep, r);
}

/* ---- workers ---- */

static void *worker(void *arg)
{
    proxy_relay *r = arg;
    pthread_mutex_lock(&r->qlock);
    for (;;) {
        while (!r->qhead && !r->qstop) pthread_cond_wait(&r->qcond, &r->qlock);
        if (r->qstop) break;
        conn *c = r->qhead;
        r->qhead = c->qnext;
        if (!r->qhead) r->qtail = NULL;
        pthread_mutex_unlock(&r->qlock);
        size_t head_len = c->route.send_len;
        c->route.send_len = 0;
        proxy_route_request(r->p, c->head, head_len, c->head_len, c->ssl != NULL, &c->route);
        cube_err err = {0};
        if (cube_loop_post(r->loop, route_done, c, &err) < 0) /* the loop frees it with the rest at exit */
            cube_log_warn("relay: cannot hand a routed request back", "err=\"%s\"", err.msg);
        pthread_mutex_lock(&r->qlock);
    }
    pthread_mutex_unlock(&r->qlock);
    return NULL;
}

int proxy_serve(proxy *p, cube_err *err)
{
    proxy_relay *r = calloc(1, sizeof(*r));
    if (!r) return cube_err_set(err, ENOMEM, "out of memory");
    r->p = p;
    pthread_mutex_init(&r->qlock, NULL);
    pthread_cond_init(&r->qcond, NULL);
    int rc = -1;
    fcntl(p->listen_fd, F_SETFL, fcntl(p->listen_fd, F_GETFL) | O_NONBLOCK);
    r->loop = cube_loop_new(err);
    if (!r->loop) goto out;
    r->th = calloc((size_t)p->limits.workers, sizeof(*r->th));
    if (!r->th) {
        cube_err_set(err, ENOMEM, "out of memory");
        goto out;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (; r->nth < p->limits.workers; r->nth++)
        if (pthread_create(&r->th[r->nth], &attr, worker, r) != 0) break;
    pthread_attr_destroy(&attr);
    if (r->nth == 0) {
        cube_err_set(err, EAGAIN, "cannot start the proxy's workers");
        goto out;
    }
    if (cube_loop_add_fd(r->loop, p->listen_fd, CUBE_LOOP_READ, on_listen, r, err) < 0) goto out;
    r->accepting = true;
    cube_loop_add_timer(r->loop, SWEEP_MS, sweep, r);
    pthread_mutex_lock(&p->relay_lock);
    p->relay = r;
    if (p->stopping) cube_loop_stop(r->loop);
    pthread_mutex_unlock(&p->relay_lock);
    rc = cube_loop_run(r->loop, err);
out:
    pthread_mutex_lock(&p->relay_lock); /* no proxy_stop reaches the loop from here */
    p->relay = NULL;
    pthread_mutex_unlock(&p->relay_lock);
    pthread_mutex_lock(&r->qlock);
    r->qstop = true;
    pthread_cond_broadcast(&r->qcond);
    pthread_mutex_unlock(&r->qlock);
    for (int i = 0; i < r->nth; i++) pthread_join(r->th[i], NULL);
    /* every connection, whatever its state (a routed one whose hand-back the loop never ran included) */
    while (r->all) conn_close(r->all);
    for (int i = 0; i < ADDR_BUCKETS; i++)
        for (addr_count *a = r->addrs[i], *n; a; a = n) {
            n = a->next;
            free(a);
        }
    cube_loop_free(r->loop);
    free(r->th);
    pthread_mutex_destroy(&r->qlock);
    pthread_cond_destroy(&r->qcond);
    free(r);
    return rc;
}

void proxy_stop(proxy *p)
{
    pthread_mutex_lock(&p->relay_lock);
    p->stopping = 1;
    if (p->relay) cube_loop_stop(p->relay->loop);
    pthread_mutex_unlock(&p->relay_lock);
}
