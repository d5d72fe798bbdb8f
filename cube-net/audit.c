/* Audit records and counters (see audit.h). */
#include "audit.h"

#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "bpf/net_maps.h"
#include "log.h"
#include "metrics.h"
#include "sandbox_net.skel.h"
#include "timeutil.h"

static const char *reason_name(unsigned r)
{
    static const char *const names[] = {"allowed",         "not-ipv4",  "spoofed-source",
                                        "sandbox-network", "node",      "node-deny-list",
                                        "policy",          "no-uplink", "unknown-interface"};
    return r < sizeof(names) / sizeof(names[0]) ? names[r] : "unknown";
}

static const char *proto_name(unsigned p)
{
    return p == IPPROTO_TCP ? "tcp" : p == IPPROTO_UDP ? "udp" : p == IPPROTO_ICMP ? "icmp" : "other";
}

/* Each refused connection (each refused datagram, for UDP) is a record, and a sandbox can send hundreds of
 * thousands a second: measured, 10 s of refused UDP from one sandbox wrote 82 MB to the node's log. Each
 * sandbox gets CN_AUDIT_LINES_PER_SEC lines a second; the rest are counted, and said in one line a second
 * (every record still counts in the metrics). */
#define CN_AUDIT_LINES_PER_SEC 20

static void say_suppressed(const char *lease, unsigned slot, uint64_t n)
{
    cube_metric_add("cube_net_audit_suppressed_total",
                    "audit records not logged (a sandbox past its lines a second)", n);
    cube_log_info("net.audit.suppressed", "sandbox=%s slot=%u records=%llu", *lease ? lease : "-", slot,
                  (unsigned long long)n);
}

/* With n->lock: a second passed since slot's window began: what it suppressed then (and whose, into lease),
 * and a new window. */
static uint64_t audit_window_end(cn_slot *s, int64_t now, char lease[64])
{
    if (now - s->audit_window_ms < 1000) return 0;
    uint64_t was = s->audit_suppressed;
    if (was) snprintf(lease, 64, "%s", s->audit_lease);
    s->audit_window_ms = now;
    s->audit_lines = 0;
    s->audit_suppressed = 0;
    return was;
}

static int on_event(void *ctx, void *data, size_t len)
{
    cube_net *n = ctx;
    if (len < sizeof(struct cn_event)) return 0;
    const struct cn_event *e = data;
    char lease[64] = "", whose[64] = "";
    uint64_t suppressed = 0;
    bool log_it = true;
    pthread_mutex_lock(&n->lock);
    if (e->slot >= 1 && (int)e->slot <= n->nslots) {
        cn_slot *s = &n->slots[e->slot];
        snprintf(lease, sizeof(lease), "%s", s->lease);
        suppressed = audit_window_end(s, cube_now_mono_ms(), whose);
        if (s->audit_lines < CN_AUDIT_LINES_PER_SEC) {
            s->audit_lines++;
        } else {
            if (!s->audit_suppressed++) snprintf(s->audit_lease, sizeof(s->audit_lease), "%s", s->lease);
            log_it = false;
        }
    }
    pthread_mutex_unlock(&n->lock);
    if (suppressed) say_suppressed(whose, e->slot, suppressed);
    char src[INET_ADDRSTRLEN], dst[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &e->saddr, src, sizeof(src));
    inet_ntop(AF_INET, &e->daddr, dst, sizeof(dst));
    char name[160];
    snprintf(name, sizeof(name), "cube_net_audit_events_total{verdict=\"%s\",reason=\"%s\"}",
             e->reason ? "deny" : "allow", reason_name(e->reason));
    cube_metric_add(name, "connections audited by cube-net", 1);
    if (!log_it) return 0;
    cube_metric_add("cube_net_audit_lines_total", "audit records logged", 1);
    cube_log_info("net.audit", "sandbox=%s slot=%u verdict=%s reason=%s proto=%s src=%s:%u dst=%s:%u",
                  *lease ? lease : "-", e->slot, e->reason ? "deny" : "allow", reason_name(e->reason),
                  proto_name(e->proto), src, e->sport, dst, e->dport);
    return 0;
}

int cn_audit_open(cube_net *n, cube_err *err)
{
    n->events = ring_buffer__new(bpf_map__fd(n->skel->maps.cn_events), on_event, n, NULL);
    if (!n->events) return cube_err_sys(err, errno, "audit ring buffer");
    return 0;
}

void cn_audit_close(cube_net *n)
{
    if (n->events) ring_buffer__free(n->events);
    n->events = NULL;
}

static void refresh_metrics(cube_net *n)
{
    int ready = 0, leased = 0;
    cube_metric_clear("cube_net_sandbox_");
    for (int i = 1; i <= n->nslots; i++) {
        pthread_mutex_lock(&n->lock);
        cn_state st = n->slots[i].state;
        char lease[64];
        snprintf(lease, sizeof(lease), "%s", n->slots[i].lease);
        pthread_mutex_unlock(&n->lock);
        if (st == CN_READY) ready++;
        if (st != CN_LEASED) continue;
        leased++;
        cn_stats s;
        cube_err err = {0};
        if (cube_net_stats(n, lease, &s, &err) < 0) continue;
        struct {
            const char *what;
            uint64_t v;
        } rows[] = {{"tx_bytes", s.tx_bytes},     {"rx_bytes", s.rx_bytes}, {"tx_packets", s.tx_packets},
                    {"rx_packets", s.rx_packets}, {"dropped", s.dropped},   {"denied", s.denied}};
        for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
            char name[160];
            snprintf(name, sizeof(name), "cube_net_sandbox_%s{sandbox=\"%s\"}", rows[r].what, lease);
            cube_metric_set(name, "per-sandbox network counters (since the slot was built)",
                            (double)rows[r].v);
        }
    }
    cube_metric_set("cube_net_slots{state=\"ready\"}", "network slots by state", ready);
    cube_metric_set("cube_net_slots{state=\"leased\"}", "network slots by state", leased);
}

/* What sandboxes suppressed in a second now over, said even when no record follows it. */
static void flush_suppressed(cube_net *n)
{
    int64_t now = cube_now_mono_ms();
    for (int i = 1; i <= n->nslots; i++) {
        pthread_mutex_lock(&n->lock);
        char lease[64] = "";
        uint64_t was = n->slots[i].audit_suppressed ? audit_window_end(&n->slots[i], now, lease) : 0;
        pthread_mutex_unlock(&n->lock);
        if (was) say_suppressed(lease, (unsigned)i, was);
    }
}

void *cn_audit_loop(void *arg)
{
    cube_net *n = arg;
    int64_t next = 0;
    for (;;) {
        pthread_mutex_lock(&n->lock);
        int stop = n->stopping;
        pthread_mutex_unlock(&n->lock);
        if (stop) break;
        int rc = ring_buffer__poll(n->events, 250);
        if (rc < 0 && rc != -EINTR) cube_log_warn("audit ring buffer", "err=%d", rc);
        if (cube_now_mono_ms() >= next) {
            refresh_metrics(n);
            flush_suppressed(n);
            next = cube_now_mono_ms() + 1000;
        }
    }
    return NULL;
}
