/* The node's egress proxy (see egress.h): one thread, epoll, a fixed cap of connections. */
#include "egress.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bpf/net_maps.h"
#include "egress_head.h"
#include "egress_mitm.h"
#include "log.h"
#include "metrics.h"
#include "names.h"
#include "net_internal.h"
#include "sandbox_net.skel.h"
#include "timeutil.h"

#define BUF 16384

enum { HEAD, CONNECTING, SOCKS, RELAY };

typedef struct pipe_buf {
    uint8_t data[BUF];
    size_t off, len;
} pipe_buf;

struct conn;
typedef struct end {
    struct conn *c;
    int fd;
    bool eof;     /* nothing more will be read from it */
    bool shut_wr; /* we told it we are done writing */
    bool hup;     /* shut both ways: out of the epoll set */
} end;

typedef struct conn {
    int state;
    bool dead;        /* closed; freed after the current batch of events (which may still name it) */
    end down, up;     /* the sandbox's connection, ours to the server */
    pipe_buf to_up;   /* the sandbox's bytes (the head first) */
    pipe_buf to_down; /* the server's */
    int64_t deadline_ms;
    int slot;
    /* a SOCKS5 egress proxy (the sandbox's policy): connect there, then ask it for dst */
    bool socks;
    struct sockaddr_in proxy;
    char user[256], pass[256];
    int socks_step;  /* 0: method chosen?  1: authenticated?  2: connected? */
    uint8_t sk[300]; /* the proxy's answer so far */
    size_t sk_len;
    struct sockaddr_in sandbox, dst;
    char lease[64];
    char name[CN_NAME_MAX];
} conn;

typedef struct cn_egress {
    int listener;
    int ep;
    conn *conns[CN_EGRESS_MAX_CONNS]; /* live ones */
    int nconns;
    conn *dead[CN_EGRESS_MAX_CONNS]; /* closed in this batch */
    int ndead;
} cn_egress;

int cn_egress_open(cube_net *n, cube_err *err)
{
    cn_egress *e = calloc(1, sizeof(*e));
    if (!e) return cube_err_sys(err, ENOMEM, "egress proxy");
    int one = 1;
    /* on loopback with a port of the kernel's choosing: only steered connections ever reach it (assigned by
     * the programs); transparent: it accepts them for the addresses the sandboxes asked */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    e->listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    e->ep = epoll_create1(EPOLL_CLOEXEC);
    if (e->listener < 0 || e->ep < 0 ||
        setsockopt(e->listener, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) < 0 ||
        bind(e->listener, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(e->listener, 1024) < 0) {
        int er = errno;
        if (e->listener >= 0) close(e->listener);
        if (e->ep >= 0) close(e->ep);
        free(e);
        return cube_err_sys(err, er, "the egress proxy's listener");
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(e->ep, EPOLL_CTL_ADD, e->listener, &ev);
    if (cube_net_steer_to(n, CN_SOCK_EGRESS, e->listener, err) < 0) {
        close(e->listener);
        close(e->ep);
        free(e);
        return cube_err_prefix(err, "the egress proxy's listener");
    }
    n->egress = e;
    return 0;
}

/* closes both ends at once; the memory goes after the batch of events (reap) */
static void conn_free(cn_egress *e, conn *c)
{
    if (c->dead) return;
    if (c->down.fd >= 0) close(c->down.fd);
    if (c->up.fd >= 0) close(c->up.fd);
    c->down.fd = c->up.fd = -1;
    c->dead = true;
    for (int i = 0; i < e->nconns; i++)
        if (e->conns[i] == c) {
            e->conns[i] = e->conns[--e->nconns];
            break;
        }
    e->dead[e->ndead++] = c;
}

static void reap(cn_egress *e)
{
    while (e->ndead) free(e->dead[--e->ndead]);
}

/* a reset, not a FIN: the sandbox's connect or first read fails at once */
static void reset_fd(int fd)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}

void cn_egress_close(cube_net *n)
{
    cn_egress *e = n->egress;
    if (!e) return;
    if (n->skel) cube_net_steer_to(n, CN_SOCK_EGRESS, -1, NULL);
    while (e->nconns) conn_free(e, e->conns[0]);
    reap(e);
    close(e->listener);
    close(e->ep);
    free(e);
    n->egress = NULL;
}

static void audit(const conn *c, const char *verdict, const char *rule)
{
    char a[INET_ADDRSTRLEN], metric[128];
    inet_ntop(AF_INET, &c->dst.sin_addr, a, sizeof(a));
    cube_log_info("egress", "lease=%s name=%s address=%s port=%u verdict=%s rule=%s", c->lease,
                  *c->name ? c->name : "-", a, ntohs(c->dst.sin_port), verdict, rule);
    snprintf(metric, sizeof(metric), "cube_net_egress_connections_total{verdict=\"%s\"}", verdict);
    cube_metric_add(metric, "TCP connections the egress proxy decided, by verdict", 1);
}

static void refuse(cn_egress *e, conn *c, const char *rule)
{
    audit(c, "deny", rule);
    reset_fd(c->down.fd);
    c->down.fd = -1;
    conn_free(e, c);
}

static void watch(cn_egress *e, end *x, uint32_t events)
{
    if (x->fd < 0 || x->hup) return;
    struct epoll_event ev = {.events = events, .data.ptr = x};
    if (epoll_ctl(e->ep, EPOLL_CTL_MOD, x->fd, &ev) < 0) epoll_ctl(e->ep, EPOLL_CTL_ADD, x->fd, &ev);
}

static void start_upstream(cn_egress *e, conn *c, const char *rule)
{
    const struct sockaddr_in *to = c->socks ? &c->proxy : &c->dst;
    c->up.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->up.fd < 0 ||
        (connect(c->up.fd, (const struct sockaddr *)to, sizeof(*to)) < 0 && errno != EINPROGRESS)) {
        refuse(e, c, c->socks ? "egress-proxy-unreachable" : "upstream-unreachable");
        return;
    }
    audit(c, "allow", rule);
    c->state = CONNECTING;
    c->deadline_ms = cube_now_mono_ms() + CN_EGRESS_CONNECT_MS;
    watch(e, &c->down, 0);
    watch(e, &c->up, EPOLLOUT);
}

/* the name is in (or will never be): allowed by name, by address, or refused */
static void decide(cube_net *n, cn_egress *e, conn *c, bool have_name)
{
    pthread_mutex_lock(&n->lock);
    int idx = cube_net_slot_of_addr(n, c->sandbox.sin_addr.s_addr);
    const cn_policy *p = idx == c->slot ? n->slots[idx].policy : NULL;
    char rule[2 * CN_NAME_MAX + 32] = "";
    const char *pattern = p && have_name ? cn_policy_name_rule(p, c->name) : NULL;
    if (pattern && cn_names_fresh(n, idx, c->dst.sin_addr.s_addr))
        snprintf(rule, sizeof(rule), "name:%s", pattern);
    else if (p && cn_policy_allows_dest(p, c->dst.sin_addr.s_addr, n->private_nets, n->n_private_nets))
        snprintf(rule, sizeof(rule), "address");
    /* a header rule for the name on a TLS connection: injected on a thread of its own */
    cn_mitm_job *job = NULL;
    const char *rule_host =
        *rule && have_name && ntohs(c->dst.sin_port) == 443 ? cn_policy_rule_host(p, c->name) : NULL;
    if (rule_host && (job = calloc(1, sizeof(*job)))) {
        for (int i = 0; i < p->n_rules; i++)
            if (strcmp(p->rules[i].host, rule_host) == 0) {
                snprintf(job->names[job->nrules], sizeof(job->names[0]), "%s", p->rules[i].header);
                snprintf(job->values[job->nrules], sizeof(job->values[0]), "%s", p->rules[i].value);
                job->nrules++;
            }
        strncat(rule, " inject=", sizeof(rule) - strlen(rule) - 1);
        strncat(rule, rule_host, sizeof(rule) - strlen(rule) - 1);
    }
    if (*rule && p->proxy.address[0]) {
        c->socks = true;
        c->proxy = (struct sockaddr_in){
            .sin_family = AF_INET, .sin_port = htons(p->proxy.port), .sin_addr.s_addr = p->proxy.addr};
        snprintf(c->user, sizeof(c->user), "%s", p->proxy.username);
        snprintf(c->pass, sizeof(c->pass), "%s", p->proxy.password);
        strncat(rule, " via=socks5", sizeof(rule) - strlen(rule) - 1);
    }
    pthread_mutex_unlock(&n->lock);
    if (rule_host) {
        if (!job || !(job->head = malloc(c->to_up.len ? c->to_up.len : 1))) {
            free(job);
            refuse(e, c, "out-of-memory");
            return;
        }
        memcpy(job->head, c->to_up.data, c->to_up.len);
        job->head_len = c->to_up.len;
        job->down = c->down.fd;
        job->dst = c->dst;
        job->sandbox = c->sandbox.sin_addr.s_addr;
        snprintf(job->name, sizeof(job->name), "%s", c->name);
        snprintf(job->lease, sizeof(job->lease), "%s", c->lease);
        epoll_ctl(e->ep, EPOLL_CTL_DEL, c->down.fd, NULL);
        if (cn_mitm_start(n, job) < 0) {
            free(job->head);
            explicit_bzero(job, sizeof(*job));
            free(job);
            refuse(e, c, "busy");
            return;
        }
        audit(c, "allow", rule);
        c->down.fd = -1; /* the job's now */
        conn_free(e, c);
        return;
    }
    if (!*rule) {
        refuse(e, c,
               !p          ? "no-lease"
               : pattern   ? "name-not-resolved-to-address"
               : have_name ? "name-not-allowed"
                           : "policy");
        return;
    }
    start_upstream(e, c, rule);
}

static void on_accept(cube_net *n, cn_egress *e)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_in peer;
        socklen_t pl = sizeof(peer);
        int fd = accept4(e->listener, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        /* one sandbox cannot take every place: the others' connections go on */
        int mine = 0;
        for (int j = 0; j < e->nconns; j++)
            mine += e->conns[j]->sandbox.sin_addr.s_addr == peer.sin_addr.s_addr;
        conn *c = e->nconns < CN_EGRESS_MAX_CONNS && mine < CN_EGRESS_MAX_CONNS_PER_SANDBOX
                      ? calloc(1, sizeof(*c))
                      : NULL;
        if (!c) {
            cube_metric_add("cube_net_egress_connections_total{verdict=\"overload\"}",
                            "TCP connections the egress proxy decided, by verdict", 1);
            reset_fd(fd);
            continue;
        }
        e->conns[e->nconns++] = c;
        c->down = (end){.c = c, .fd = fd};
        c->up = (end){.c = c, .fd = -1};
        c->sandbox = peer;
        socklen_t dl = sizeof(c->dst);
        getsockname(fd, (struct sockaddr *)&c->dst, &dl); /* the address the sandbox asked */
        pthread_mutex_lock(&n->lock);
        c->slot = cube_net_slot_of_addr(n, peer.sin_addr.s_addr);
        bool names =
            c->slot && (n->slots[c->slot].policy->n_names > 0 || n->slots[c->slot].policy->n_rules > 0);
        snprintf(c->lease, sizeof(c->lease), "%s", c->slot ? n->slots[c->slot].lease : "-");
        pthread_mutex_unlock(&n->lock);
        uint16_t port = ntohs(c->dst.sin_port);
        if (names && (port == 80 || port == 443)) {
            c->state = HEAD;
            c->deadline_ms = cube_now_mono_ms() + CN_EGRESS_HEAD_MS;
            watch(e, &c->down, EPOLLIN);
        } else {
            decide(n, e, c, false);
        }
    }
}

static void on_head(cube_net *n, cn_egress *e, conn *c)
{
    pipe_buf *b = &c->to_up;
    ssize_t r = recv(c->down.fd, b->data + b->len, sizeof(b->data) - b->len, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r <= 0) {
        conn_free(e, c);
        return;
    }
    b->len += (size_t)r;
    bool tls = ntohs(c->dst.sin_port) == 443;
    int rc = tls ? cn_tls_sni(b->data, b->len, c->name, sizeof(c->name))
                 : cn_http_host(b->data, b->len, c->name, sizeof(c->name));
    if (rc == 0 && b->len < sizeof(b->data)) return;
    if (rc != 1) c->name[0] = '\0';
    decide(n, e, c, rc == 1);
}

/* the tunnel could not be made: the sandbox's connection is reset (never sent direct instead) */
static void socks_fail(cn_egress *e, conn *c, const char *why)
{
    char a[INET_ADDRSTRLEN];
    cube_log_info("egress proxy failed", "lease=%s address=%s port=%u reason=\"%s\"", c->lease,
                  inet_ntop(AF_INET, &c->dst.sin_addr, a, sizeof(a)), ntohs(c->dst.sin_port), why);
    cube_metric_add("cube_net_egress_connections_total{verdict=\"proxy_failed\"}",
                    "TCP connections the egress proxy decided, by verdict", 1);
    reset_fd(c->down.fd);
    c->down.fd = -1;
    conn_free(e, c);
}

static void on_connected(cn_egress *e, conn *c)
{
    int so = 0;
    socklen_t sl = sizeof(so);
    getsockopt(c->up.fd, SOL_SOCKET, SO_ERROR, &so, &sl);
    if (so) {
        char a[INET_ADDRSTRLEN];
        cube_log_info("egress upstream failed", "lease=%s address=%s port=%u errno=%d", c->lease,
                      inet_ntop(AF_INET, &c->dst.sin_addr, a, sizeof(a)), ntohs(c->dst.sin_port), so);
        reset_fd(c->down.fd);
        c->down.fd = -1;
        conn_free(e, c);
        return;
    }
    if (c->socks) {
        /* RFC 1928: our methods (none, or username/password per RFC 1929) */
        uint8_t hello[3] = {5, 1, c->user[0] ? 2 : 0};
        if (send(c->up.fd, hello, sizeof(hello), MSG_NOSIGNAL) != sizeof(hello)) {
            socks_fail(e, c, "the proxy closed");
            return;
        }
        c->state = SOCKS;
        watch(e, &c->up, EPOLLIN);
        return;
    }
    c->state = RELAY;
    c->deadline_ms = cube_now_mono_ms() + CN_EGRESS_IDLE_MS;
}

/* how many bytes the proxy's answer at this step has in all (0: not known yet) */
static size_t socks_need(const conn *c)
{
    if (c->socks_step < 2) return 2;
    if (c->sk_len < 5) return 5;
    switch (c->sk[3]) { /* reply: VER REP RSV ATYP BND.ADDR BND.PORT */
    case 1:
        return 4 + 4 + 2;
    case 4:
        return 4 + 16 + 2;
    case 3:
        return 4 + 1 + (size_t)c->sk[4] + 2;
    default:
        return 5; /* bad: rejected below */
    }
}

/* the proxy's bytes: one step of the handshake at a time; when connected, the head (if any) goes first */
static void on_socks(cn_egress *e, conn *c)
{
    size_t need = socks_need(c);
    ssize_t r = recv(c->up.fd, c->sk + c->sk_len, need - c->sk_len, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r <= 0) {
        socks_fail(e, c, "the proxy closed");
        return;
    }
    c->sk_len += (size_t)r;
    if (c->sk_len < socks_need(c)) return;
    if (c->socks_step == 0) {
        if (c->sk[0] != 5 || c->sk[1] != (c->user[0] ? 2 : 0)) {
            socks_fail(e, c, "the proxy refused our authentication method");
            return;
        }
        if (c->user[0]) {
            uint8_t auth[3 + 255 + 255];
            size_t ul = strlen(c->user), pl = strlen(c->pass), n = 0;
            auth[n++] = 1;
            auth[n++] = (uint8_t)ul;
            memcpy(auth + n, c->user, ul);
            n += ul;
            auth[n++] = (uint8_t)pl;
            memcpy(auth + n, c->pass, pl);
            n += pl;
            ssize_t w = send(c->up.fd, auth, n, MSG_NOSIGNAL);
            explicit_bzero(auth, sizeof(auth));
            if (w != (ssize_t)n) {
                socks_fail(e, c, "the proxy closed");
                return;
            }
            c->socks_step = 1;
            c->sk_len = 0;
            return;
        }
        c->socks_step = 1;
        c->sk[1] = 0; /* no authentication: as if it succeeded */
    }
    if (c->socks_step == 1) {
        if (c->sk[1] != 0) {
            socks_fail(e, c, "the proxy refused the credentials");
            return;
        }
        uint8_t req[10] = {5, 1, 0, 1}; /* CONNECT to the IPv4 address the sandbox asked */
        memcpy(req + 4, &c->dst.sin_addr, 4);
        memcpy(req + 8, &c->dst.sin_port, 2);
        if (send(c->up.fd, req, sizeof(req), MSG_NOSIGNAL) != sizeof(req)) {
            socks_fail(e, c, "the proxy closed");
            return;
        }
        c->socks_step = 2;
        c->sk_len = 0;
        return;
    }
    if (c->sk[0] != 5 || c->sk[1] != 0 || (c->sk[3] != 1 && c->sk[3] != 3 && c->sk[3] != 4)) {
        char why[64];
        snprintf(why, sizeof(why), "the proxy refused the connection (reply %u)", c->sk[1]);
        socks_fail(e, c, why);
        return;
    }
    c->state = RELAY;
    c->deadline_ms = cube_now_mono_ms() + CN_EGRESS_IDLE_MS;
}

/* moves what it can from src's socket into b, and from b to dst's socket; false when the connection is done
 */
static bool pump(end *src, pipe_buf *b, end *dst)
{
    if (!src->eof && b->len < BUF) {
        if (b->off && b->len == 0) b->off = 0;
        size_t tail = b->off + b->len;
        if (tail < BUF) {
            ssize_t r = recv(src->fd, b->data + tail, BUF - tail, 0);
            if (r > 0)
                b->len += (size_t)r;
            else if (r == 0 || (errno != EAGAIN && errno != EINTR))
                src->eof = true;
        }
    }
    while (b->len) {
        ssize_t w = send(dst->fd, b->data + b->off, b->len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            return false;
        }
        b->off += (size_t)w;
        b->len -= (size_t)w;
    }
    if (!b->len) b->off = 0;
    if (src->eof && !b->len && !dst->shut_wr) {
        shutdown(dst->fd, SHUT_WR);
        dst->shut_wr = true;
    }
    return true;
}

static void relay(cn_egress *e, conn *c)
{
    if (!pump(&c->down, &c->to_up, &c->up) || !pump(&c->up, &c->to_down, &c->down) ||
        (c->down.eof && c->up.eof && !c->to_up.len && !c->to_down.len)) {
        conn_free(e, c);
        return;
    }
    c->deadline_ms = cube_now_mono_ms() + CN_EGRESS_IDLE_MS;
    /* read only while there is room; write-wait only while something waits */
    watch(e, &c->down,
          (c->down.eof || c->to_up.off + c->to_up.len >= BUF ? 0 : EPOLLIN) |
              (c->to_down.len ? EPOLLOUT : 0));
    watch(e, &c->up,
          (c->up.eof || c->to_down.off + c->to_down.len >= BUF ? 0 : EPOLLIN) |
              (c->to_up.len ? EPOLLOUT : 0));
}

static void on_event(cube_net *n, cn_egress *e, end *x, uint32_t events)
{
    conn *c = x->c;
    if (events & EPOLLERR) {
        if (c->state == CONNECTING && x == &c->up) on_connected(e, c); /* says why */
        conn_free(e, c);
        return;
    }
    if (events & EPOLLHUP) {
        /* both ways shut: nothing more from it, and no more level-triggered reports of it */
        x->eof = x->hup = true;
        epoll_ctl(e->ep, EPOLL_CTL_DEL, x->fd, NULL);
        if (c->state != RELAY) {
            conn_free(e, c);
            return;
        }
    }
    switch (c->state) {
    case HEAD:
        on_head(n, e, c);
        return;
    case CONNECTING:
        if (x != &c->up) return;
        on_connected(e, c);
        if (c->dead || c->state != RELAY) return;
        break;
    case SOCKS:
        if (x != &c->up) return;
        on_socks(e, c);
        if (c->dead || c->state != RELAY) return;
        break;
    default:
        break;
    }
    relay(e, c);
}

/* the sandbox still holds its lease (lock held): a killed one's connections end with it */
static bool lease_held(const cube_net *n, const conn *c)
{
    int idx = cube_net_slot_of_addr(n, c->sandbox.sin_addr.s_addr);
    return idx && strcmp(n->slots[idx].lease, c->lease) == 0;
}

static void expire(cube_net *n, cn_egress *e)
{
    int64_t now = cube_now_mono_ms();
    pthread_mutex_lock(&n->lock);
    for (int i = 0; i < e->nconns; i++)
        if (!lease_held(n, e->conns[i])) e->conns[i]->deadline_ms = 0;
    pthread_mutex_unlock(&n->lock);
    for (int i = 0; i < e->nconns;) {
        conn *c = e->conns[i];
        if (c->deadline_ms > now) {
            i++;
            continue;
        }
        if (c->state == HEAD) { /* no name came in time: the address alone decides */
            c->name[0] = '\0';
            decide(n, e, c, false);
        } else if (c->state == SOCKS || (c->state == CONNECTING && c->socks)) {
            socks_fail(e, c, "the proxy did not answer in time");
        } else if (c->state == CONNECTING) {
            reset_fd(c->down.fd);
            c->down.fd = -1;
            conn_free(e, c);
        } else {
            conn_free(e, c);
        }
        /* either way conns[i] changed: look at it again (decide may have kept it, with a later deadline) */
        if (i < e->nconns && e->conns[i] == c) i++;
    }
}

void *cn_egress_loop(void *arg)
{
    cube_net *n = arg;
    cn_egress *e = n->egress;
    int64_t next_expire = cube_now_mono_ms() + 1000;
    struct epoll_event evs[64];
    for (;;) {
        pthread_mutex_lock(&n->lock);
        int stop = n->stopping;
        pthread_mutex_unlock(&n->lock);
        if (stop) break;
        int k = epoll_wait(e->ep, evs, 64, 250);
        for (int i = 0; i < k; i++) {
            if (!evs[i].data.ptr) {
                on_accept(n, e);
                continue;
            }
            end *x = evs[i].data.ptr;
            if (!x->c->dead) on_event(n, e, x, evs[i].events);
        }
        reap(e);
        if (cube_now_mono_ms() >= next_expire) {
            expire(n, e);
            reap(e);
            next_expire = cube_now_mono_ms() + 1000;
        }
    }
    return NULL;
}
