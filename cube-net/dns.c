/* The node's resolver for sandboxes (see dns.h): sockets, the pending queries and the policy. */
#include "dns.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bpf/net_maps.h"
#include "log.h"
#include "metrics.h"
#include "names.h"
#include "net_internal.h"
#include "sandbox_net.skel.h"
#include "timeutil.h"

#define GATEWAY "169.254.1.1" /* the address the resolver's socket is bound to (never routed to) */
#define MAX_MSG 4096
#define MAX_A   32

typedef struct pending {
    bool used;
    uint16_t upstream_id;
    int slot;
    struct sockaddr_in client; /* the sandbox's socket */
    struct in_addr server;     /* the address it asked: the answer comes from there */
    bool record;               /* an allowed name: its addresses are recorded */
    int64_t deadline_ms;
    cn_dns_question q;
} pending;

typedef struct cn_dns {
    int sock;     /* steered queries arrive here; answers leave from here */
    int upstream; /* to and from the node's resolver (not connected: a resolver unreachable now may not be
                     later) */
    struct sockaddr_in upstream_addr;
    pending pend[CN_DNS_MAX_PENDING];
    int16_t by_id[65536]; /* upstream id -> pend index + 1 */
    uint8_t buf[MAX_MSG], out[MAX_MSG];
} cn_dns;

/* "ADDR[:PORT]", or the first IPv4 nameserver of /etc/resolv.conf */
static int upstream_of(const char *spec, struct sockaddr_in *sa, cube_err *err)
{
    char line[256], addr[64] = "";
    int port = CN_DNS_PORT;
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    if (spec && *spec) {
        snprintf(addr, sizeof(addr), "%s", spec);
        char *colon = strchr(addr, ':');
        if (colon) {
            *colon = '\0';
            char *end;
            long p = strtol(colon + 1, &end, 10);
            if (*end || p <= 0 || p > 65535) return cube_err_set(err, EINVAL, "--dns %s: bad port", spec);
            port = (int)p;
        }
        if (inet_pton(AF_INET, addr, &sa->sin_addr) != 1)
            return cube_err_set(err, EINVAL, "--dns %s: an IPv4 address[:port] is needed", spec);
    } else {
        FILE *f = fopen("/etc/resolv.conf", "re");
        while (f && fgets(line, sizeof(line), f))
            if (sscanf(line, " nameserver %63s", addr) == 1 && inet_pton(AF_INET, addr, &sa->sin_addr) == 1)
                break;
        if (f) fclose(f);
        if (!sa->sin_addr.s_addr) return 1;
    }
    sa->sin_port = htons((uint16_t)port);
    return 0;
}

int cn_dns_open(cube_net *n, cube_err *err)
{
    struct sockaddr_in up;
    int rc = upstream_of(n->cfg.dns, &up, err);
    if (rc < 0) return -1;
    if (rc > 0) {
        cube_log_warn("no resolver for sandboxes",
                      "reason=\"no --dns and no IPv4 nameserver in "
                      "/etc/resolv.conf\" effect=\"names in allowOut are refused\"");
        return 0;
    }
    cn_dns *d = calloc(1, sizeof(*d));
    if (!d) return cube_err_sys(err, ENOMEM, "resolver");
    d->upstream_addr = up;
    d->sock = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    d->upstream = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(CN_DNS_PORT)};
    inet_pton(AF_INET, GATEWAY, &a.sin_addr);
    /* transparent: it answers from whatever address the sandbox asked, which is not the node's */
    if (d->sock < 0 || d->upstream < 0 ||
        setsockopt(d->sock, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) < 0 ||
        setsockopt(d->sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(d->sock, SOL_IP, IP_RECVORIGDSTADDR, &one, sizeof(one)) < 0 ||
        bind(d->sock, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int e = errno;
        if (d->sock >= 0) close(d->sock);
        if (d->upstream >= 0) close(d->upstream);
        free(d);
        return cube_err_sys(err, e, "the resolver's sockets");
    }
    if (cube_net_steer_to(n, CN_SOCK_DNS, d->sock, err) < 0) {
        close(d->sock);
        close(d->upstream);
        free(d);
        return cube_err_prefix(err, "the resolver's socket");
    }
    n->dns = d;
    char s[INET_ADDRSTRLEN];
    cube_log_info("resolver for sandboxes", "upstream=%s:%d", inet_ntop(AF_INET, &up.sin_addr, s, sizeof(s)),
                  ntohs(up.sin_port));
    return 0;
}

void cn_dns_close(cube_net *n)
{
    cn_dns *d = n->dns;
    if (!d) return;
    if (n->skel) cube_net_steer_to(n, CN_SOCK_DNS, -1, NULL);
    close(d->sock);
    close(d->upstream);
    free(d);
    n->dns = NULL;
}

/* the answer to a sandbox, from the address it asked */
static void answer(cn_dns *d, const struct sockaddr_in *client, struct in_addr server, const void *msg,
                   size_t len)
{
    struct iovec iov = {(void *)msg, len};
    char cbuf[CMSG_SPACE(sizeof(struct in_pktinfo))] = {0};
    struct msghdr m = {.msg_name = (void *)client,
                       .msg_namelen = sizeof(*client),
                       .msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = cbuf,
                       .msg_controllen = sizeof(cbuf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
    struct in_pktinfo pi = {.ipi_spec_dst = server};
    memcpy(CMSG_DATA(c), &pi, sizeof(pi));
    if (sendmsg(d->sock, &m, MSG_DONTWAIT) < 0)
        cube_metric_add("cube_net_dns_errors_total", "DNS answers that could not be sent", 1);
}

static void count(const char *verdict)
{
    char name[128];
    snprintf(name, sizeof(name), "cube_net_dns_queries_total{verdict=\"%s\"}", verdict);
    cube_metric_add(name, "DNS queries from sandboxes, by what the node's resolver did", 1);
}

static int on_query(cube_net *n, cn_dns *d)
{
    struct sockaddr_in client;
    char cbuf[256];
    struct iovec iov = {d->buf, sizeof(d->buf)};
    struct msghdr m = {.msg_name = &client,
                       .msg_namelen = sizeof(client),
                       .msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = cbuf,
                       .msg_controllen = sizeof(cbuf)};
    ssize_t len = recvmsg(d->sock, &m, MSG_DONTWAIT);
    if (len <= 0) return 0;
    struct sockaddr_in server = {0};
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR)
            memcpy(&server, CMSG_DATA(c), sizeof(server));
    if (!server.sin_addr.s_addr) return 1;
    cn_dns_question q;
    if (cn_dns_parse_query(d->buf, (size_t)len, &q) < 0) {
        if (len >= 12) answer(d, &client, server.sin_addr, d->out, cn_dns_reply_empty(d->buf, 12, 1, d->out));
        count("malformed");
        return 1;
    }
    pthread_mutex_lock(&n->lock);
    int idx = cube_net_slot_of_addr(n, client.sin_addr.s_addr);
    bool by_name = idx && cn_policy_allows_name(n->slots[idx].policy, q.name);
    /* the server it asked is one it may reach anyway: intercepting takes nothing away */
    bool reachable = idx && cn_policy_allows_addr(n->slots[idx].policy, server.sin_addr.s_addr);
    char lease[64];
    snprintf(lease, sizeof(lease), "%s", idx ? n->slots[idx].lease : "");
    pthread_mutex_unlock(&n->lock);
    if (!by_name && !reachable) {
        answer(d, &client, server.sin_addr, d->out, cn_dns_reply_empty(d->buf, (size_t)len, 5, d->out));
        count("refused");
        if (idx) cube_log_debug("dns refused", "lease=%s name=%s", lease, q.name);
        return 1;
    }
    /* one sandbox cannot take every pending place: the others' lookups go on */
    int free_i = -1, mine = 0;
    for (int i = 0; i < CN_DNS_MAX_PENDING; i++) {
        if (!d->pend[i].used && free_i < 0) free_i = i;
        if (d->pend[i].used && d->pend[i].slot == idx) mine++;
    }
    if (mine >= CN_DNS_MAX_PENDING_PER_SANDBOX) free_i = -1;
    uint16_t id = 0;
    for (int tries = 0; free_i >= 0 && tries < 8; tries++) {
        if (getrandom(&id, sizeof(id), 0) != sizeof(id) || !d->by_id[id]) break;
    }
    if (free_i < 0 || d->by_id[id]) {
        answer(d, &client, server.sin_addr, d->out, cn_dns_reply_empty(d->buf, (size_t)len, 2, d->out));
        count("busy");
        return 1;
    }
    pending *p = &d->pend[free_i];
    *p = (pending){.used = true,
                   .upstream_id = id,
                   .slot = idx,
                   .client = client,
                   .server = server.sin_addr,
                   .record = by_name,
                   .deadline_ms = cube_now_mono_ms() + CN_DNS_TIMEOUT_MS,
                   .q = q};
    d->by_id[id] = (int16_t)(free_i + 1);
    uint16_t nid = htons(id);
    memcpy(d->buf, &nid, 2);
    if (sendto(d->upstream, d->buf, (size_t)len, MSG_DONTWAIT, (struct sockaddr *)&d->upstream_addr,
               sizeof(d->upstream_addr)) < 0) {
        d->by_id[id] = 0;
        p->used = false;
        memcpy(d->buf, &(uint16_t){htons(q.id)}, 2);
        answer(d, &client, server.sin_addr, d->out, cn_dns_reply_empty(d->buf, (size_t)len, 2, d->out));
        count("upstream_error");
        return 1;
    }
    count(by_name ? "forwarded_name" : "forwarded");
    return 1;
}

static int on_upstream(cube_net *n, cn_dns *d)
{
    struct sockaddr_in from;
    socklen_t fl = sizeof(from);
    ssize_t len = recvfrom(d->upstream, d->buf, sizeof(d->buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
    if (len < 0) return 0;
    /* only the upstream's answers count (anyone may send to this port) */
    if (len < 12 || from.sin_addr.s_addr != d->upstream_addr.sin_addr.s_addr ||
        from.sin_port != d->upstream_addr.sin_port)
        return 1;
    uint16_t id;
    memcpy(&id, d->buf, 2);
    id = ntohs(id);
    int i = d->by_id[id] - 1;
    if (i < 0) return 1; /* late, or not ours */
    pending *p = &d->pend[i];
    uint32_t addrs[MAX_A], ttl = 0;
    int na = cn_dns_parse_answer(d->buf, (size_t)len, &p->q, addrs, MAX_A, &ttl);
    if (na < 0) return 1; /* not the answer to this question: the real one may still come */
    d->by_id[id] = 0;
    p->used = false;
    if (p->record && na > 0) {
        /* before the answer goes back: the connection that follows it must find its address allowed */
        pthread_mutex_lock(&n->lock);
        cube_err err = {0};
        char lease[64] = "";
        if (cube_net_slot_of_addr(n, p->client.sin_addr.s_addr) == p->slot &&
            cn_policy_allows_name(n->slots[p->slot].policy, p->q.name)) {
            snprintf(lease, sizeof(lease), "%s", n->slots[p->slot].lease);
            if (cn_names_record(n, p->slot, p->q.name, addrs, na, ttl, &err) < 0)
                cube_log_warn("name not allowed", "lease=%s name=%s err=\"%s\"", lease, p->q.name, err.msg);
        }
        pthread_mutex_unlock(&n->lock);
        char a[INET_ADDRSTRLEN];
        if (*lease)
            cube_log_debug("dns allowed", "lease=%s name=%s addresses=%d first=%s ttl=%u", lease, p->q.name,
                           na, inet_ntop(AF_INET, &addrs[0], a, sizeof(a)), ttl);
    }
    uint16_t cid = htons(p->q.id);
    memcpy(d->buf, &cid, 2);
    answer(d, &p->client, p->server, d->buf, (size_t)len);
    return 1;
}

static void expire(cube_net *n, cn_dns *d)
{
    int64_t now = cube_now_mono_ms();
    for (int i = 0; i < CN_DNS_MAX_PENDING; i++)
        if (d->pend[i].used && d->pend[i].deadline_ms < now) {
            d->by_id[d->pend[i].upstream_id] = 0;
            d->pend[i].used = false;
            count("timeout");
        }
    pthread_mutex_lock(&n->lock);
    cn_names_sweep(n);
    pthread_mutex_unlock(&n->lock);
    cn_names_save(n);
}

void *cn_dns_loop(void *arg)
{
    cube_net *n = arg;
    cn_dns *d = n->dns;
    int64_t next_expire = cube_now_mono_ms() + 1000;
    for (;;) {
        pthread_mutex_lock(&n->lock);
        int stop = n->stopping;
        pthread_mutex_unlock(&n->lock);
        if (stop) break;
        struct pollfd p[2] = {{.fd = d->sock, .events = POLLIN}, {.fd = d->upstream, .events = POLLIN}};
        int rc = poll(p, 2, 250);
        if (rc < 0 && errno != EINTR) break;
        /* a burst of queries: each readable socket drained a message at a time, in turn */
        for (int i = 0, more = rc > 0; more && i < 64; i++) {
            more = 0;
            if (p[0].revents & POLLIN) more |= on_query(n, d);
            if (p[1].revents & POLLIN) more |= on_upstream(n, d);
        }
        if (cube_now_mono_ms() >= next_expire) {
            expire(n, d);
            next_expire = cube_now_mono_ms() + 1000;
        }
    }
    return NULL;
}
