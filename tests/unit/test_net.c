/* cube-net for real: its BPF programs loaded with libbpf and attached to real veths, in namespaces this test
 * creates. Each test runs in its own process (Check's fork) inside a fresh "node" network namespace and a
 * private mount namespace, with an "uplink" namespace behind the node holding two outside networks:
 * 198.51.100.1 and 203.0.113.1. Traffic goes only between those namespaces. Needs root. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <nftables/libnftables.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ldns/ldns.h>
#include <openssl/ssl.h>

#include "dns.h"
#include "metrics.h"
#include "net.h"
#include "nl.h"
#include "testutil.h"

#define ALLOWED_IP "198.51.100.1"
#define DENIED_IP  "203.0.113.1"
#define NODE_IP    "192.0.2.1"
#define PORT       8000
#define DNS_IP     "192.0.2.2"    /* the uplink side: the node's upstream resolver in the names tests */
#define TLS_IP     "198.51.100.2" /* an HTTPS server (secure.test, under the test's own CA) */
#define PRIVATE_IP "10.77.0.1"    /* a private network behind the uplink (an operator's own services) */

static char *dir;
static int node_ns = -1, uplink_ns = -1;
static cube_net net;

static uint32_t ip4(const char *s)
{
    struct in_addr a;
    ck_assert_int_eq(inet_pton(AF_INET, s, &a), 1);
    return a.s_addr;
}

/* A socket made inside the namespace at path (or of fd ns_fd when path is NULL). */
static int ns_socket(const char *path, int ns_fd, int type, int proto)
{
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : ns_fd;
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(setns(fd, CLONE_NEWNET), 0);
    int s = socket(AF_INET, type | SOCK_CLOEXEC, proto);
    ck_assert_int_eq(setns(node_ns, CLONE_NEWNET), 0);
    if (path) close(fd);
    ck_assert_int_ge(s, 0);
    return s;
}

static int listener(int ns_fd, const char *path, int type, int port)
{
    int s = ns_socket(path, ns_fd, type, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    if (type == SOCK_STREAM) ck_assert_int_eq(listen(s, 16), 0);
    return s;
}

static int listener_at_udp(int ns_fd, const char *ip, int port)
{
    int s = ns_socket(NULL, ns_fd, SOCK_DGRAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = ip4(ip)};
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    return s;
}

static int listener_at(int ns_fd, const char *ip, int port)
{
    int s = ns_socket(NULL, ns_fd, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = ip4(ip)};
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(s, 16), 0);
    return s;
}

/* TCP connect from inside the sandbox's namespace: the fd, or -1 when it did not connect in time. */
static int tcp_connect(const char *ns, const char *ip, int port, int timeout_ms)
{
    int s = ns_socket(ns, -1, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = ip4(ip)};
    int rc = connect(s, (struct sockaddr *)&a, sizeof(a));
    if (rc < 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = s, .events = POLLOUT};
        int e = 0;
        socklen_t l = sizeof(e);
        rc = poll(&p, 1, timeout_ms) == 1 && getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &l) == 0 && e == 0 ? 0
                                                                                                        : -1;
    }
    if (rc < 0) {
        close(s);
        return -1;
    }
    fcntl(s, F_SETFL, 0);
    return s;
}

static int can_connect(const char *ns, const char *ip, int port)
{
    int s = tcp_connect(ns, ip, port, 400);
    if (s >= 0) close(s);
    return s >= 0;
}

/* Sends one UDP datagram from the sandbox; true when the receiving socket got it. */
static int udp_reaches(const char *from_ns, const char *ip, int port, int rx)
{
    int s = ns_socket(from_ns, -1, SOCK_DGRAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = ip4(ip)};
    sendto(s, "x", 1, 0, (struct sockaddr *)&a, sizeof(a));
    close(s);
    struct pollfd p = {.fd = rx, .events = POLLIN};
    if (poll(&p, 1, 300) != 1) return 0;
    char b[8];
    return recv(rx, b, sizeof(b), 0) == 1;
}

/* One ICMP echo from the sandbox (a ping socket, as an unprivileged user inside would use). */
static int ping_answers(const char *ns, const char *ip)
{
    int s = ns_socket(ns, -1, SOCK_DGRAM, IPPROTO_ICMP);
    struct icmphdr h = {.type = ICMP_ECHO};
    h.un.echo.sequence = htons(1);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = ip4(ip)};
    int ok = 0;
    if (sendto(s, &h, sizeof(h), 0, (struct sockaddr *)&a, sizeof(a)) == (ssize_t)sizeof(h)) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        char b[64];
        ok = poll(&p, 1, 400) == 1 && recv(s, b, sizeof(b), 0) > 0;
    }
    close(s);
    return ok;
}

/* The uplink side: echo every TCP connection's bytes back; remember who connected. */
static struct sockaddr_in last_peer;
static void *echo_server(void *arg)
{
    int l = (int)(intptr_t)arg;
    for (;;) {
        struct sockaddr_in peer;
        socklen_t pl = sizeof(peer);
        int c = accept(l, (struct sockaddr *)&peer, &pl);
        if (c < 0) return NULL;
        last_peer = peer;
        char b[256];
        ssize_t n;
        while ((n = recv(c, b, sizeof(b), 0)) > 0)
            if (send(c, b, (size_t)n, MSG_NOSIGNAL) != n) break;
        close(c);
    }
}

static int echo_ok(int s, const char *msg)
{
    size_t len = strlen(msg);
    if (send(s, msg, len, MSG_NOSIGNAL) != (ssize_t)len) return 0;
    struct pollfd p = {.fd = s, .events = POLLIN};
    char b[256] = {0};
    return poll(&p, 1, 1000) == 1 && recv(s, b, sizeof(b) - 1, 0) == (ssize_t)len && memcmp(b, msg, len) == 0;
}

/* The uplink's resolver: allowed.test and other.test share ALLOWED_IP (as names on a CDN do); wild.test and
 * a.wild.test are DENIED_IP; anything else does not exist. */
static void *dns_server(void *arg)
{
    int s = (int)(intptr_t)arg;
    static const char *const zone[][2] = {{"allowed.test.", ALLOWED_IP}, {"other.test.", ALLOWED_IP},
                                          {"wild.test.", DENIED_IP},     {"a.wild.test.", DENIED_IP},
                                          {"secure.test.", TLS_IP},      {"internal.test.", PRIVATE_IP}};
    for (;;) {
        uint8_t b[512];
        struct sockaddr_in from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(s, b, sizeof(b), 0, (struct sockaddr *)&from, &fl);
        if (n < 0) return NULL;
        ldns_pkt *q = NULL;
        if (ldns_wire2pkt(&q, b, (size_t)n) != LDNS_STATUS_OK) continue;
        ldns_rr *qr = ldns_rr_list_rr(ldns_pkt_question(q), 0);
        char *name = ldns_rdf2str(ldns_rr_owner(qr));
        ldns_pkt *r = ldns_pkt_new();
        ldns_pkt_set_id(r, ldns_pkt_id(q));
        ldns_pkt_set_qr(r, true);
        ldns_pkt_set_rd(r, ldns_pkt_rd(q));
        ldns_pkt_push_rr(r, LDNS_SECTION_QUESTION, ldns_rr_clone(qr));
        ldns_pkt_set_rcode(r, LDNS_RCODE_NXDOMAIN);
        for (size_t i = 0; i < sizeof(zone) / sizeof(zone[0]); i++) {
            if (strcasecmp(name, zone[i][0]) != 0 || ldns_rr_get_type(qr) != LDNS_RR_TYPE_A) continue;
            char rr[300];
            snprintf(rr, sizeof(rr), "%s 60 IN A %s", zone[i][0], zone[i][1]);
            ldns_rr *a = NULL;
            ldns_rr_new_frm_str(&a, rr, 0, NULL, NULL);
            ldns_pkt_push_rr(r, LDNS_SECTION_ANSWER, a);
            ldns_pkt_set_rcode(r, LDNS_RCODE_NOERROR);
        }
        uint8_t *wire = NULL;
        size_t wl = 0;
        if (ldns_pkt2wire(&wire, r, &wl) == LDNS_STATUS_OK)
            sendto(s, wire, wl, 0, (struct sockaddr *)&from, fl);
        free(wire);
        free(name);
        ldns_pkt_free(r);
        ldns_pkt_free(q);
    }
}

/* The uplink's web servers (80, 443, on both outside addresses): remember the first bytes, answer "ok". */
static char last_head[4096];
static pthread_mutex_t head_lock = PTHREAD_MUTEX_INITIALIZER;
static void *head_server(void *arg)
{
    int l = (int)(intptr_t)arg;
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) return NULL;
        struct pollfd p = {.fd = c, .events = POLLIN};
        char b[sizeof(last_head)] = {0};
        ssize_t n = poll(&p, 1, 2000) == 1 ? recv(c, b, sizeof(b) - 1, 0) : -1;
        if (n > 0) {
            pthread_mutex_lock(&head_lock);
            memcpy(last_head, b, sizeof(b));
            pthread_mutex_unlock(&head_lock);
            send(c, "ok", 2, MSG_NOSIGNAL);
        }
        close(c);
    }
}

/* whether the web servers' last connection carried needle in its first bytes (then forgotten) */
static int head_had(const char *needle, size_t len)
{
    pthread_mutex_lock(&head_lock);
    int found = memmem(last_head, sizeof(last_head), needle, len) != NULL;
    memset(last_head, 0, sizeof(last_head));
    pthread_mutex_unlock(&head_lock);
    return found;
}

/* node namespace + private mounts; the uplink namespace behind veth up0 with the two outside addresses */
static void node_setup(void)
{
    ck_assert_int_eq(unshare(CLONE_NEWNS | CLONE_NEWNET), 0);
    ck_assert_int_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
    node_ns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    cube_err err = {0};
    cn_nl *node = cn_nl_open(&err);
    ck_assert_msg(node != NULL, "%s", err.msg);
    ck_assert_int_eq(cn_nl_link_up(node, 1, &err), 0);
    ck_assert_int_eq(unshare(CLONE_NEWNET), 0);
    uplink_ns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    cn_nl *up = cn_nl_open(&err);
    ck_assert_ptr_nonnull(up);
    ck_assert_int_eq(setns(node_ns, CLONE_NEWNET), 0);
    const uint8_t m1[6] = {2, 0, 0, 0, 0, 1}, m2[6] = {2, 0, 0, 0, 0, 2};
    int ifx = cn_nl_add_veth(node, "up0", m1, "eth0", 2, m2, uplink_ns, &err);
    ck_assert_msg(ifx > 0, "%s", err.msg);
    ck_assert_int_eq(cn_nl_link_up(node, ifx, &err), 0);
    ck_assert_int_eq(cn_nl_addr_add(node, ifx, ip4(NODE_IP), 24, &err), 0);
    ck_assert_int_eq(cn_nl_route_add(node, ifx, ip4("198.51.100.0"), 24, ip4("192.0.2.2"), &err), 0);
    ck_assert_int_eq(cn_nl_route_add(node, ifx, ip4("203.0.113.0"), 24, ip4("192.0.2.2"), &err), 0);
    ck_assert_int_eq(cn_nl_route_add(node, ifx, ip4("10.77.0.0"), 16, ip4("192.0.2.2"), &err), 0);
    ck_assert_int_eq(cn_nl_link_up(up, 1, &err), 0);
    ck_assert_int_eq(cn_nl_link_up(up, 2, &err), 0);
    ck_assert_int_eq(cn_nl_addr_add(up, 2, ip4("192.0.2.2"), 24, &err), 0);
    ck_assert_int_eq(cn_nl_addr_add(up, 1, ip4(ALLOWED_IP), 32, &err), 0);
    ck_assert_int_eq(cn_nl_addr_add(up, 1, ip4(DENIED_IP), 32, &err), 0);
    ck_assert_int_eq(cn_nl_addr_add(up, 1, ip4(TLS_IP), 32, &err), 0);
    ck_assert_int_eq(cn_nl_addr_add(up, 1, ip4(PRIVATE_IP), 32, &err), 0);
    cn_nl_close(up);
    cn_nl_close(node);
    pthread_t t;
    pthread_create(&t, NULL, echo_server, (void *)(intptr_t)listener(uplink_ns, NULL, SOCK_STREAM, PORT));
    pthread_detach(t);
    pthread_create(&t, NULL, dns_server, (void *)(intptr_t)listener(uplink_ns, NULL, SOCK_DGRAM, 53));
    pthread_detach(t);
    pthread_create(&t, NULL, head_server, (void *)(intptr_t)listener(uplink_ns, NULL, SOCK_STREAM, 80));
    pthread_detach(t);
    for (int i = 0; i < 2; i++) { /* 443 on the two outside addresses; TLS_IP's is the HTTPS server's */
        pthread_create(&t, NULL, head_server,
                       (void *)(intptr_t)listener_at(uplink_ns, i ? DENIED_IP : ALLOWED_IP, 443));
        pthread_detach(t);
    }
    dir = cube_test_tmpdir();
}

static char upstream_ca[600]; /* the HTTPS server's CA, when a test made one */
static int flows_cap; /* the flows each sandbox may have open, when a test sets it (else the default) */

static void net_start(int pool)
{
    static char state[512], nsd[512]; /* cube_net keeps these pointers */
    snprintf(state, sizeof(state), "%s/state", dir);
    snprintf(nsd, sizeof(nsd), "%s/ns", dir);
    cn_config cfg = {.state_dir = state,
                     .ns_dir = nsd,
                     .cidr = "10.200.0.0/24",
                     .uplink = "up0",
                     .node_deny = "169.254.0.0/16",
                     .dns = DNS_IP,
                     .upstream_ca = upstream_ca[0] ? upstream_ca : NULL,
                     .pool_size = pool,
                     .flows_per_sandbox = flows_cap};
    cube_err err = {0};
    ck_assert_msg(cube_net_init(&net, &cfg, &err) == 0, "cube_net_init: %s", err.msg);
    cube_net_start(&net);
}

static cn_policy policy(bool internet, const char *allow, const char *deny)
{
    cn_policy p = {.internet = internet};
    cube_err err = {0};
    if (allow) ck_assert_int_eq(cn_policy_add(&p, true, &allow, 1, &err), 0);
    if (deny) ck_assert_int_eq(cn_policy_add(&p, false, &deny, 1, &err), 0);
    return p;
}

static void lease(const char *name, cn_policy p, cn_lease_info *li)
{
    cube_err err = {0};
    ck_assert_msg(cube_net_lease(&net, name, &p, li, &err) == 0, "lease %s: %s", name, err.msg);
}

START_TEST(sandboxes_cannot_reach_each_other)
{
    net_start(2);
    cn_lease_info a, b;
    lease("sb-a", policy(true, NULL, NULL), &a);
    lease("sb-b", policy(true, NULL, NULL), &b);
    ck_assert_str_ne(a.address, b.address);
    int tl = listener(-1, b.netns, SOCK_STREAM, 7000), ul = listener(-1, b.netns, SOCK_DGRAM, 7001);
    /* the servers are up: B reaches itself, and A reaches the outside */
    ck_assert(can_connect(b.netns, b.address, 7000));
    ck_assert(udp_reaches(b.netns, b.address, 7001, ul));
    ck_assert(can_connect(a.netns, ALLOWED_IP, PORT));
    ck_assert(ping_answers(a.netns, ALLOWED_IP));
    /* but not each other, by any protocol */
    ck_assert(!can_connect(a.netns, b.address, 7000));
    ck_assert(!udp_reaches(a.netns, b.address, 7001, ul));
    ck_assert(!ping_answers(a.netns, b.address));
    cn_stats st;
    cube_err err = {0};
    ck_assert_int_eq(cube_net_stats(&net, "sb-a", &st, &err), 0);
    ck_assert_uint_ge(st.dropped, 3);
    ck_assert_uint_gt(st.tx_packets, 0);
    ck_assert_uint_gt(st.rx_packets, 0);
    close(tl);
    close(ul);
    cube_net_stop(&net);
}
END_TEST

START_TEST(sandbox_cannot_reach_the_node)
{
    net_start(1);
    cn_lease_info a;
    lease("sb-a", policy(true, NULL, NULL), &a);
    int l = listener(node_ns, NULL, SOCK_STREAM, 7100);
    int ul = listener(node_ns, NULL, SOCK_DGRAM, 7101);
    ck_assert(!can_connect(a.netns, NODE_IP, 7100));
    ck_assert(!can_connect(a.netns, a.gateway, 7100));
    ck_assert(!udp_reaches(a.netns, NODE_IP, 7101, ul));
    ck_assert(!ping_answers(a.netns, NODE_IP));
    /* the operator's deny list holds whatever the sandbox's policy says */
    cube_err err = {0};
    cn_policy p = policy(true, "169.254.169.254", NULL);
    ck_assert_int_eq(cube_net_update(&net, "sb-a", &p, &err), 0);
    ck_assert(!can_connect(a.netns, "169.254.169.254", 80));
    close(l);
    close(ul);
    cube_net_stop(&net);
}
END_TEST

/* The node's connection table is every sandbox's: one sandbox's new flows beyond its cap are dropped, and
 * another sandbox's still go out. (Without the cap, one sandbox sending UDP from fresh ports fills the
 * table, 262144 flows by default, and every sandbox's new connections are dropped.) */
START_TEST(one_sandbox_cannot_fill_the_nodes_connection_table)
{
    flows_cap = 16;
    net_start(2);
    cn_lease_info a, b;
    lease("flood", policy(true, NULL, NULL), &a);
    lease("quiet", policy(true, NULL, NULL), &b);
    int rx = listener_at_udp(uplink_ns, ALLOWED_IP, 7201);
    int arrived = 0;
    for (int i = 0; i < 40; i++) arrived += udp_reaches(a.netns, ALLOWED_IP, 7201, rx); /* a new flow each */
    ck_assert_msg(arrived >= 14 && arrived <= 16, "%d of 40 new flows went out with a cap of 16", arrived);
    ck_assert(udp_reaches(b.netns, ALLOWED_IP, 7201, rx));
    ck_assert(can_connect(b.netns, ALLOWED_IP, PORT));
    ck_assert(!can_connect(a.netns, ALLOWED_IP, PORT)); /* its own new ones wait for its flows to end */
    close(rx);
    cube_net_stop(&net);
    flows_cap = 0;
}
END_TEST

START_TEST(egress_follows_allow_and_deny_lists)
{
    net_start(2);
    cn_lease_info a, b, c;
    /* allow_internet_access=false with one allowed network (allowOut wins over the implied deny) */
    lease("only-allowed", policy(false, "198.51.100.0/24", NULL), &a);
    ck_assert(can_connect(a.netns, ALLOWED_IP, PORT));
    ck_assert(!can_connect(a.netns, DENIED_IP, PORT));
    /* masqueraded out of the uplink: the outside sees the node's address (once the echo server took it) */
    for (int i = 0; i < 100 && !last_peer.sin_addr.s_addr; i++) usleep(10 * 1000);
    ck_assert_str_eq(inet_ntoa(last_peer.sin_addr), NODE_IP);
    /* internet on, one network denied */
    lease("deny-one", policy(true, NULL, "203.0.113.0/24"), &b);
    ck_assert(can_connect(b.netns, ALLOWED_IP, PORT));
    ck_assert(!can_connect(b.netns, DENIED_IP, PORT));
    /* no internet, nothing allowed */
    lease("none", policy(false, NULL, NULL), &c);
    ck_assert(!can_connect(c.netns, ALLOWED_IP, PORT));
    ck_assert(!ping_answers(c.netns, ALLOWED_IP));
    /* refused connections are counted and audited */
    cn_stats st;
    cube_err err = {0};
    ck_assert_int_eq(cube_net_stats(&net, "only-allowed", &st, &err), 0);
    ck_assert_uint_ge(st.denied, 1);
    usleep(600 * 1000); /* the audit thread drains the ring buffer */
    char *m = cube_metrics_render();
    ck_assert_msg(strstr(m, "cube_net_audit_events_total{verdict=\"deny\",reason=\"policy\"}") != NULL, "%s",
                  m);
    free(m);
    cube_net_stop(&net);
}
END_TEST

/* A metric's value from the registry (0 when absent). */
static double metric_value(const char *name)
{
    char *m = cube_metrics_render();
    double v = 0;
    size_t nl = strlen(name);
    for (const char *p = m; p && *p;) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ' ') v = strtod(p + nl + 1, NULL);
        const char *e = strchr(p, '\n');
        p = e ? e + 1 : NULL;
    }
    free(m);
    return v;
}

/* One sandbox refusing itself a flood (every refused datagram is a record): its lines in the node's log are
 * capped a second, the rest counted and said in one line, so that it cannot fill the node's disk. */
START_TEST(audit_lines_are_capped_per_sandbox)
{
    net_start(1);
    cn_lease_info a;
    lease("flood", policy(false, NULL, NULL), &a);
    int s = ns_socket(a.netns, -1, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = ip4(DENIED_IP)};
    for (int i = 0; i < 3000; i++) sendto(s, "x", 1, 0, (struct sockaddr *)&to, sizeof(to));
    close(s);
    for (int i = 0; i < 40 && metric_value("cube_net_audit_suppressed_total") < 2000; i++) usleep(100 * 1000);
    double lines = metric_value("cube_net_audit_lines_total");
    double suppressed = metric_value("cube_net_audit_suppressed_total");
    ck_assert_msg(lines >= 1 && lines <= 60, "%.0f audit lines logged", lines);
    ck_assert_msg(suppressed >= 2000, "%.0f audit records counted as suppressed", suppressed);
    cube_net_stop(&net);
}
END_TEST

START_TEST(live_policy_update_keeps_allowed_flows)
{
    net_start(1);
    cn_lease_info a;
    lease("sb", policy(false, "198.51.100.0/24", NULL), &a);
    int s = tcp_connect(a.netns, ALLOWED_IP, PORT, 1000);
    ck_assert_int_ge(s, 0);
    ck_assert(echo_ok(s, "before"));
    ck_assert(!can_connect(a.netns, DENIED_IP, PORT));
    cube_err err = {0};
    cn_policy p = policy(false, "198.51.100.0/24", NULL);
    const char *more = "203.0.113.0/24";
    ck_assert_int_eq(cn_policy_add(&p, true, &more, 1, &err), 0);
    ck_assert_int_eq(cube_net_update(&net, "sb", &p, &err), 0);
    ck_assert(echo_ok(s, "during")); /* the established flow went on */
    ck_assert(can_connect(a.netns, DENIED_IP, PORT));
    /* and back: 203.0.113.0/24 refused again, the 198.51.100.0/24 flow still fine */
    p = policy(false, "198.51.100.0/24", "203.0.113.0/24");
    ck_assert_int_eq(cube_net_update(&net, "sb", &p, &err), 0);
    ck_assert(!can_connect(a.netns, DENIED_IP, PORT));
    ck_assert(echo_ok(s, "after"));
    close(s);
    cube_net_stop(&net);
}
END_TEST

static int count_mounts_under(const char *prefix)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strstr(line, prefix)) n++;
    if (f) fclose(f);
    return n;
}

static int link_exists(const char *name)
{
    cube_err err = {0};
    cn_nl *nl = cn_nl_open(&err);
    int idx = cn_nl_link_index(nl, name, &err);
    cn_nl_close(nl);
    return idx > 0;
}

static int nft_table_exists(void)
{
    struct nft_ctx *c = nft_ctx_new(NFT_CTX_DEFAULT);
    nft_ctx_buffer_output(c);
    nft_ctx_buffer_error(c);
    int rc = nft_run_cmd_from_buffer(c, "list table ip cube_cn");
    nft_ctx_free(c);
    return rc == 0;
}

/* Whether the node's IPv6 routing table names the link (/proc/net/ipv6_route: the device is the last column).
 */
static bool ipv6_routes_via(const char *ifname)
{
    FILE *f = fopen("/proc/net/ipv6_route", "re");
    if (!f) return false;
    char line[512], dev[64];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found =
            sscanf(line, "%*s %*s %*s %*s %*s %*s %*s %*s %*s %63s", dev) == 1 && strcmp(dev, ifname) == 0;
    fclose(f);
    return found;
}

START_TEST(release_and_stop_leave_nothing)
{
    net_start(1);
    cn_lease_info a;
    lease("gone", policy(true, NULL, NULL), &a);
    ck_assert(link_exists(a.host_ifname));
    /* the host side carries IPv4 only: no link-local address, no routes in the node's IPv6 table */
    ck_assert_msg(!ipv6_routes_via(a.host_ifname), "%s has IPv6 routes", a.host_ifname);
    ck_assert(nft_table_exists());
    char ns[4300];
    snprintf(ns, sizeof(ns), "%s", a.netns);
    cube_err err = {0};
    ck_assert_int_eq(cube_net_release(&net, "gone", false, &err), 0);
    /* the lease is gone at once; its veth and namespace go on the refill thread */
    ck_assert_int_ne(cube_net_stats(&net, "gone", &(cn_stats){0}, &err), 0);
    cube_net_wait_removed(&net);
    ck_assert(!link_exists(a.host_ifname));
    ck_assert_int_ne(access(ns, F_OK), 0);
    ck_assert_int_ne(cube_net_stats(&net, "gone", &(cn_stats){0}, &err), 0);
    ck_assert_int_eq(cube_net_release(&net, "gone", false, &err), 0); /* twice: still fine */
    cube_net_stop(&net);
    char nsd[512];
    snprintf(nsd, sizeof(nsd), "%s/ns/", dir);
    ck_assert_int_eq(count_mounts_under(nsd), 0);
    for (int i = 1; i < 8; i++) {
        char n[16];
        snprintf(n, sizeof(n), "cn%d", i);
        ck_assert_msg(!link_exists(n), "%s left behind", n);
    }
    ck_assert(!nft_table_exists());
}
END_TEST

/* Released slots go together (their veths deleted as one group): every released veth and namespace goes,
 * one already gone by other hands does not stop the rest, a slot still leased keeps its veth, and the
 * addresses come back for new leases. */
START_TEST(released_slots_go_together)
{
    net_start(0);
    enum { N = 6 };
    cn_lease_info li[N];
    char names[N][16], ns[N][4300];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "batch-%d", i);
        lease(names[i], policy(true, NULL, NULL), &li[i]);
        snprintf(ns[i], sizeof(ns[i]), "%s", li[i].netns);
    }
    cube_err err = {0};
    cn_nl *nl = cn_nl_open(&err);
    ck_assert_ptr_nonnull(nl);
    int gone = cn_nl_link_index(nl, li[0].host_ifname, &err);
    ck_assert_int_gt(gone, 0);
    ck_assert_int_eq(cn_nl_link_del(nl, gone, &err), 0);
    cn_nl_close(nl);
    for (int i = 0; i < N - 1; i++) ck_assert_int_eq(cube_net_release(&net, names[i], false, &err), 0);
    cube_net_wait_removed(&net);
    for (int i = 0; i < N - 1; i++) {
        ck_assert_msg(!link_exists(li[i].host_ifname), "%s left behind", li[i].host_ifname);
        ck_assert_int_ne(access(ns[i], F_OK), 0);
    }
    ck_assert(link_exists(li[N - 1].host_ifname));
    ck_assert_int_eq(cube_net_stats(&net, names[N - 1], &(cn_stats){0}, &err), 0);
    for (int i = 0; i < N - 1; i++) lease(names[i], policy(true, NULL, NULL), &li[i]);
    for (int i = 0; i < N; i++) ck_assert(link_exists(li[i].host_ifname));
    cube_net_stop(&net);
}
END_TEST

START_TEST(restart_adopts_leases_and_their_policy)
{
    net_start(1);
    cn_lease_info a;
    lease("kept", policy(false, "198.51.100.0/24", NULL), &a);
    cube_net_stop(&net); /* leased slots stay */
    ck_assert(link_exists(a.host_ifname));
    ck_assert(can_connect(a.netns, ALLOWED_IP, PORT)); /* still filtered by the attached programs */
    ck_assert(!can_connect(a.netns, DENIED_IP, PORT));
    net_start(1);
    cn_lease_info again;
    lease("kept", policy(false, NULL, NULL), &again); /* the same lease: the same slot, policy unchanged */
    ck_assert_str_eq(again.address, a.address);
    ck_assert(can_connect(a.netns, ALLOWED_IP, PORT));
    ck_assert(!can_connect(a.netns, DENIED_IP, PORT));
    cube_err err = {0};
    ck_assert_int_eq(cube_net_release(&net, "kept", false, &err), 0);
    cube_net_stop(&net);
    ck_assert(!link_exists(a.host_ifname));
}
END_TEST

START_TEST(bad_input_is_refused_clearly)
{
    cn_prefix p;
    cube_err err = {0};
    ck_assert_int_eq(cn_parse_prefix("10.0.0.0/8", &p, &err), 0);
    ck_assert_int_eq(p.len, 8);
    ck_assert_int_eq(cn_parse_prefix("10.1.2.3/8", &p, &err), 0);
    ck_assert_uint_eq(p.addr, ip4("10.0.0.0"));
    ck_assert_int_eq(cn_parse_prefix("example.com", &p, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "domain names are not supported"));
    ck_assert_int_eq(cn_parse_prefix("::1/128", &p, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "IPv6"));
    ck_assert_int_eq(cn_parse_prefix("1.2.3.4/33", &p, &err), -1);
    ck_assert_int_eq(cn_parse_prefix("1.2.3/8x", &p, &err), -1);
    ck_assert_int_eq(cn_parse_prefix("", &p, &err), -1);
    net_start(0);
    cn_lease_info li;
    cn_policy pol = policy(true, NULL, NULL);
    ck_assert_int_eq(cube_net_lease(&net, "bad/name", &pol, &li, &err), -1);
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_int_eq(cube_net_update(&net, "nobody", &pol, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    /* pool 0: the lease builds its slot itself */
    ck_assert_int_eq(cube_net_lease(&net, "cold", &pol, &li, &err), 0);
    ck_assert(can_connect(li.netns, ALLOWED_IP, PORT));
    cube_net_stop(&net);
}
END_TEST

/* An A query from inside the sandbox to server (any address: the node's resolver answers for it). Returns the
 * rcode, the addresses in addrs[*n]; -1 when no answer came from server:53. */
static int resolve(const char *ns, const char *server, const char *name, uint32_t *addrs, int *n)
{
    ldns_pkt *q = NULL;
    ck_assert_int_eq(ldns_pkt_query_new_frm_str(&q, name, LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, LDNS_RD),
                     LDNS_STATUS_OK);
    ldns_pkt_set_id(q, 4242);
    uint8_t *wire = NULL, b[512];
    size_t wl = 0;
    ck_assert_int_eq(ldns_pkt2wire(&wire, q, &wl), LDNS_STATUS_OK);
    ldns_pkt_free(q);
    int s = ns_socket(ns, -1, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr.s_addr = ip4(server)};
    ck_assert_int_eq(sendto(s, wire, wl, 0, (struct sockaddr *)&a, sizeof(a)), (ssize_t)wl);
    free(wire);
    struct pollfd p = {.fd = s, .events = POLLIN};
    struct sockaddr_in from = {0};
    socklen_t fl = sizeof(from);
    ssize_t len = poll(&p, 1, 2000) == 1 ? recvfrom(s, b, sizeof(b), 0, (struct sockaddr *)&from, &fl) : -1;
    close(s);
    if (len < 12 || from.sin_addr.s_addr != a.sin_addr.s_addr || from.sin_port != htons(53)) return -1;
    cn_dns_question qq = {.id = 4242, .qtype = 1};
    snprintf(qq.name, sizeof(qq.name), "%s", name);
    uint32_t ttl;
    *n = cn_dns_parse_answer(b, (size_t)len, &qq, addrs, 8, &ttl);
    return b[3] & 0x0f;
}

/* errno of a TCP connect from the sandbox (0: connected), ETIMEDOUT when nothing answered in timeout_ms */
static int connect_errno(const char *ns, const char *ip, int port, int timeout_ms)
{
    int s = ns_socket(ns, -1, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = ip4(ip)};
    int e = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0 ? 0 : errno;
    if (e == EINPROGRESS) {
        struct pollfd p = {.fd = s, .events = POLLOUT};
        socklen_t l = sizeof(e);
        e = ETIMEDOUT;
        if (poll(&p, 1, timeout_ms) == 1) getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &l);
    }
    close(s);
    return e;
}

/* Sends bytes on a new connection to ip:port from the sandbox; true when the server answered "ok". */
static int web_ok(const char *ns, const char *ip, int port, const void *bytes, size_t len)
{
    int s = tcp_connect(ns, ip, port, 1000);
    if (s < 0) return 0;
    char b[8] = {0};
    struct pollfd p = {.fd = s, .events = POLLIN};
    int ok = send(s, bytes, len, MSG_NOSIGNAL) == (ssize_t)len && poll(&p, 1, 2000) == 1 &&
             recv(s, b, sizeof(b), 0) == 2 && memcmp(b, "ok", 2) == 0;
    close(s);
    return ok;
}

static int http_ok(const char *ns, const char *ip, const char *host)
{
    char req[256];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nUser-Agent: t\r\nHost: %s\r\n\r\n", host);
    return web_ok(ns, ip, 80, req, (size_t)n);
}

/* A real TLS ClientHello (OpenSSL's, server name sni) sent to ip:443 */
static int tls_ok(const char *ns, const char *ip, const char *sni)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    SSL_set_tlsext_host_name(ssl, sni);
    ck_assert_int_le(SSL_connect(ssl), 0); /* wants the server's answer: the hello is written */
    char *hello;
    long len = BIO_get_mem_data(wb, &hello);
    ck_assert_int_gt(len, 0);
    int ok = web_ok(ns, ip, 443, hello, (size_t)len);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return ok;
}

START_TEST(refused_connections_fail_at_once)
{
    net_start(1);
    cn_lease_info a;
    lease("sb", policy(true, NULL, "203.0.113.0/24"), &a);
    ck_assert_int_eq(connect_errno(a.netns, ALLOWED_IP, PORT, 1000), 0);
    /* a reset in answer to the SYN: not a timeout */
    ck_assert_int_eq(connect_errno(a.netns, DENIED_IP, PORT, 1000), ECONNREFUSED);
    cube_net_stop(&net);
}
END_TEST

START_TEST(names_allow_what_they_resolve_to)
{
    net_start(1);
    cn_lease_info a;
    const char *names[] = {"allowed.test", "*.wild.test"};
    cn_policy p = policy(false, NULL, NULL);
    cube_err err = {0};
    ck_assert_msg(cn_policy_add(&p, true, names, 2, &err) == 0, "%s", err.msg);
    lease("names", p, &a);
    uint32_t addrs[8];
    int n = 0;
    /* nothing is reachable before a name resolves to it */
    ck_assert_int_eq(connect_errno(a.netns, ALLOWED_IP, PORT, 1000), ECONNREFUSED);
    /* names not allowed are refused at the node (no name leaves it for a sandbox that may reach nothing); a
     * query is answered by the node's resolver, as the server asked (9.9.9.9 is nowhere here) */
    ck_assert_int_eq(resolve(a.netns, "9.9.9.9", "other.test", addrs, &n), 5);
    ck_assert_int_eq(resolve(a.netns, "9.9.9.9", "wild.test", addrs, &n), 5); /* not the wildcard's apex */
    ck_assert_int_eq(resolve(a.netns, "9.9.9.9", "allowed.test", addrs, &n), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_uint_eq(addrs[0], ip4(ALLOWED_IP));
    /* the address is allowed now, for the sandbox that resolved it */
    ck_assert_int_eq(connect_errno(a.netns, ALLOWED_IP, PORT, 1000), 0);
    ck_assert_int_eq(connect_errno(a.netns, DENIED_IP, PORT, 1000), ECONNREFUSED);
    /* one address, two names: on the web ports the name on the connection decides */
    ck_assert(http_ok(a.netns, ALLOWED_IP, "allowed.test"));
    ck_assert(head_had("Host: allowed.test", 18));
    ck_assert(!http_ok(a.netns, ALLOWED_IP, "other.test"));
    ck_assert(tls_ok(a.netns, ALLOWED_IP, "allowed.test"));
    ck_assert(head_had("allowed.test", 12));
    ck_assert(!tls_ok(a.netns, ALLOWED_IP, "other.test"));
    ck_assert(!head_had("other.test", 10));
    /* a wildcard: its subdomains */
    ck_assert_int_eq(resolve(a.netns, "9.9.9.9", "A.Wild.Test", addrs, &n), 0);
    ck_assert_uint_eq(addrs[0], ip4(DENIED_IP));
    ck_assert(tls_ok(a.netns, DENIED_IP, "a.wild.test"));
    ck_assert_int_eq(connect_errno(a.netns, DENIED_IP, PORT, 1000), 0);
    /* a live update: the name gone, its addresses go with it; an established flow of an allowed one goes on
     */
    int s = tcp_connect(a.netns, ALLOWED_IP, PORT, 1000);
    ck_assert_int_ge(s, 0);
    cn_policy q = policy(false, NULL, NULL);
    const char *one[] = {"allowed.test"};
    ck_assert_int_eq(cn_policy_add(&q, true, one, 1, &err), 0);
    ck_assert_int_eq(cube_net_update(&net, "names", &q, &err), 0);
    ck_assert(echo_ok(s, "still"));
    close(s);
    ck_assert_int_eq(connect_errno(a.netns, ALLOWED_IP, PORT, 1000), 0);
    ck_assert_int_eq(connect_errno(a.netns, DENIED_IP, PORT, 1000), ECONNREFUSED);
    ck_assert(!tls_ok(a.netns, DENIED_IP, "a.wild.test"));
    usleep(300 * 1000);
    char *m = cube_metrics_render();
    ck_assert_msg(strstr(m, "cube_net_egress_connections_total{verdict=\"deny\"}") != NULL, "%s", m);
    ck_assert_msg(strstr(m, "cube_net_dns_queries_total{verdict=\"refused\"}") != NULL, "%s", m);
    free(m);
    cube_net_stop(&net);
}
END_TEST

/* Internet access is the internet: the operator's private networks behind the uplink are reached only where
 * a sandbox's allowOut names them, by address or by a name that resolves there; the resolver still answers.
 */
START_TEST(internet_access_is_the_public_internet)
{
    net_start(1);
    cn_lease_info a, b, c;
    lease("internet", policy(true, NULL, NULL), &a);
    ck_assert_int_eq(connect_errno(a.netns, ALLOWED_IP, PORT, 1000), 0);
    ck_assert_int_eq(connect_errno(a.netns, PRIVATE_IP, PORT, 1000), ECONNREFUSED);
    uint32_t addrs[8];
    int n = 0;
    ck_assert_int_eq(resolve(a.netns, "10.255.255.53", "allowed.test", addrs, &n),
                     0); /* a private resolver */
    /* named by address */
    lease("by-address", policy(true, "10.77.0.0/16", NULL), &b);
    ck_assert_int_eq(connect_errno(b.netns, PRIVATE_IP, PORT, 1000), 0);
    /* named by a name that resolves there; on the web ports, only under that name */
    cn_policy p = policy(true, NULL, NULL);
    const char *names[] = {"internal.test"};
    cube_err err = {0};
    ck_assert_int_eq(cn_policy_add(&p, true, names, 1, &err), 0);
    lease("by-name", p, &c);
    ck_assert_int_eq(connect_errno(c.netns, PRIVATE_IP, PORT, 1000), ECONNREFUSED);
    ck_assert_int_eq(resolve(c.netns, "9.9.9.9", "internal.test", addrs, &n), 0);
    ck_assert_uint_eq(addrs[0], ip4(PRIVATE_IP));
    ck_assert_int_eq(connect_errno(c.netns, PRIVATE_IP, PORT, 1000), 0);
    ck_assert(http_ok(c.netns, PRIVATE_IP, "internal.test"));
    ck_assert(!http_ok(c.netns, PRIVATE_IP, "allowed.test")); /* its internet access does not reach there */
    ck_assert(http_ok(c.netns, ALLOWED_IP, "allowed.test"));  /* and does reach the internet */
    cube_net_stop(&net);
}
END_TEST

START_TEST(name_rules_refuse_bad_input)
{
    cn_policy p = {0};
    cube_err err = {0};
    const char *star[] = {"*"}, *mid[] = {"a.*.test"}, *deny[] = {"evil.test"}, *ok[] = {"*.Example.COM."};
    ck_assert_int_eq(cn_policy_add(&p, true, star, 1, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "every name"));
    ck_assert_int_eq(cn_policy_add(&p, true, mid, 1, &err), -1);
    ck_assert_int_eq(cn_policy_add(&p, false, deny, 1, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "allowOut"));
    ck_assert_int_eq(cn_policy_add(&p, true, ok, 1, &err), 0);
    ck_assert_str_eq(p.names[0], "*.example.com");
    ck_assert(cn_policy_allows_name(&p, "api.example.com"));
    ck_assert(cn_policy_allows_name(&p, "A.B.EXAMPLE.com."));
    ck_assert(!cn_policy_allows_name(&p, "example.com"));
    ck_assert(!cn_policy_allows_name(&p, "badexample.com"));
}
END_TEST

START_TEST(restart_keeps_what_names_resolved_to)
{
    net_start(1);
    cn_lease_info a;
    cn_policy p = policy(false, NULL, NULL);
    const char *names[] = {"allowed.test"};
    cube_err err = {0};
    ck_assert_int_eq(cn_policy_add(&p, true, names, 1, &err), 0);
    lease("named", p, &a);
    uint32_t addrs[8];
    int n = 0;
    ck_assert_int_eq(resolve(a.netns, "9.9.9.9", "allowed.test", addrs, &n), 0);
    int s = tcp_connect(a.netns, ALLOWED_IP, PORT, 1000);
    ck_assert_int_ge(s, 0);
    cube_net_stop(&net);
    net_start(1);
    /* the flow in progress goes on, and the name's address is still allowed without a new lookup */
    ck_assert(echo_ok(s, "across a restart"));
    close(s);
    ck_assert_int_eq(connect_errno(a.netns, ALLOWED_IP, PORT, 1000), 0);
    ck_assert(tls_ok(a.netns, ALLOWED_IP, "allowed.test"));
    ck_assert(!tls_ok(a.netns, ALLOWED_IP, "other.test"));
    ck_assert_int_eq(cube_net_release(&net, "named", false, &err), 0);
    char path[600];
    snprintf(path, sizeof(path), "%s/state/slot-1.names", dir);
    ck_assert_int_ne(access(path, F_OK), 0); /* gone with the lease */
    cube_net_stop(&net);
}
END_TEST

/* A SOCKS5 server (RFC 1928/1929, CONNECT to IPv4 only) in the uplink namespace: user "u", password "pw".
 * Counts the connections it carried; stops answering when socks_off is set. */
static int socks_carried, socks_listener = -1;
static pthread_mutex_t socks_lock = PTHREAD_MUTEX_INITIALIZER;

static int read_full(int fd, void *buf, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = recv(fd, (char *)buf + got, n - got, 0);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

static void *socks_conn(void *arg)
{
    int c = (int)(intptr_t)arg, up = -1;
    uint8_t b[600];
    if (read_full(c, b, 2) < 0 || b[0] != 5 || read_full(c, b + 2, b[1]) < 0 || !memchr(b + 2, 2, b[1]))
        goto out;
    if (send(c, "\x05\x02", 2, MSG_NOSIGNAL) != 2 || read_full(c, b, 2) < 0 || b[0] != 1 ||
        read_full(c, b + 2, b[1] + 1u) < 0)
        goto out;
    size_t ul = b[1], pl = b[2 + ul];
    char user[256] = {0}, pass[256] = {0};
    memcpy(user, b + 2, ul);
    if (read_full(c, pass, pl) < 0) goto out;
    int good = strcmp(user, "u") == 0 && strcmp(pass, "pw") == 0;
    if (send(c, good ? "\x01\x00" : "\x01\x01", 2, MSG_NOSIGNAL) != 2 || !good) goto out;
    if (read_full(c, b, 10) < 0 || b[0] != 5 || b[1] != 1 || b[3] != 1) goto out;
    struct sockaddr_in to = {.sin_family = AF_INET};
    memcpy(&to.sin_addr, b + 4, 4);
    memcpy(&to.sin_port, b + 8, 2);
    up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ok = connect(up, (struct sockaddr *)&to, sizeof(to)) == 0;
    uint8_t rep[10] = {5, ok ? 0 : 5, 0, 1};
    if (send(c, rep, sizeof(rep), MSG_NOSIGNAL) != sizeof(rep) || !ok) goto out;
    pthread_mutex_lock(&socks_lock);
    socks_carried++;
    pthread_mutex_unlock(&socks_lock);
    for (;;) {
        struct pollfd p[2] = {{.fd = c, .events = POLLIN}, {.fd = up, .events = POLLIN}};
        if (poll(p, 2, 5000) <= 0) break;
        ssize_t n = 0;
        if (p[0].revents &&
            ((n = recv(c, b, sizeof(b), 0)) <= 0 || send(up, b, (size_t)n, MSG_NOSIGNAL) != n))
            break;
        if (p[1].revents &&
            ((n = recv(up, b, sizeof(b), 0)) <= 0 || send(c, b, (size_t)n, MSG_NOSIGNAL) != n))
            break;
    }
out:
    if (up >= 0) close(up);
    close(c);
    return NULL;
}

static void *socks_server(void *arg)
{
    int l = (int)(intptr_t)arg;
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) return NULL;
        pthread_t t;
        pthread_create(&t, NULL, socks_conn, (void *)(intptr_t)c);
        pthread_detach(t);
    }
}

static int carried(void)
{
    pthread_mutex_lock(&socks_lock);
    int n = socks_carried;
    pthread_mutex_unlock(&socks_lock);
    return n;
}

START_TEST(egress_proxy_tunnels_and_fails_closed)
{
    socks_listener = listener(uplink_ns, NULL, SOCK_STREAM, 1080);
    pthread_t t;
    pthread_create(&t, NULL, socks_server, (void *)(intptr_t)socks_listener);
    pthread_detach(t);
    net_start(1);
    cn_lease_info a;
    cube_err err = {0};
    cn_policy p = policy(true, NULL, "203.0.113.0/24");
    ck_assert_msg(cn_policy_set_proxy(&p, DNS_IP ":1080", "u", "pw", &err) == 0, "%s", err.msg);
    lease("tunnelled", p, &a);
    /* through the proxy: the server sees the proxy, not the node */
    int s = tcp_connect(a.netns, ALLOWED_IP, PORT, 1000);
    ck_assert_int_ge(s, 0);
    ck_assert(echo_ok(s, "through socks"));
    close(s);
    ck_assert_int_eq(carried(), 1);
    /* the policy first: a denied address is refused, never tunnelled */
    ck_assert_int_eq(connect_errno(a.netns, DENIED_IP, PORT, 1000), ECONNREFUSED);
    ck_assert_int_eq(carried(), 1);
    /* a wrong password, then no proxy at all: the connection fails, it never goes direct */
    cn_policy q = policy(true, NULL, "203.0.113.0/24");
    ck_assert_int_eq(cn_policy_set_proxy(&q, DNS_IP ":1080", "u", "wrong", &err), 0);
    ck_assert_int_eq(cube_net_update(&net, "tunnelled", &q, &err), 0);
    s = tcp_connect(a.netns, ALLOWED_IP, PORT, 1000);
    ck_assert(s < 0 || !echo_ok(s, "no"));
    if (s >= 0) close(s);
    shutdown(socks_listener, SHUT_RDWR);
    close(socks_listener);
    ck_assert_int_eq(cn_policy_set_proxy(&q, DNS_IP ":1080", "u", "pw", &err), 0);
    ck_assert_int_eq(cube_net_update(&net, "tunnelled", &q, &err), 0);
    s = tcp_connect(a.netns, ALLOWED_IP, PORT, 1000);
    ck_assert(s < 0 || !echo_ok(s, "no"));
    if (s >= 0) close(s);
    ck_assert_int_eq(carried(), 1);
    /* and without the proxy in the policy, direct again */
    cn_policy direct = policy(true, NULL, "203.0.113.0/24");
    ck_assert_int_eq(cube_net_update(&net, "tunnelled", &direct, &err), 0);
    ck_assert(can_connect(a.netns, ALLOWED_IP, PORT));
    /* a proxy that is no host:port */
    ck_assert_int_eq(cn_policy_set_proxy(&q, "no-port", NULL, NULL, &err), -1);
    ck_assert_int_eq(cn_policy_set_proxy(&q, "1.2.3.4:0", NULL, NULL, &err), -1);
    cube_net_stop(&net);
}
END_TEST

/* The HTTPS server at TLS_IP:443 (secure.test, a certificate of the test's CA): answers each request with the
 * head it received, as the body. */
static void *https_server(void *arg)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    char cert[640], key[640];
    snprintf(cert, sizeof(cert), "%s/srv.pem", dir);
    snprintf(key, sizeof(key), "%s/srv.key", dir);
    ck_assert_int_eq(SSL_CTX_use_certificate_file(ctx, cert, SSL_FILETYPE_PEM), 1);
    ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
    int l = (int)(intptr_t)arg;
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) return NULL;
        SSL *s = SSL_new(ctx);
        SSL_set_fd(s, c);
        if (SSL_accept(s) == 1) {
            char head[8192];
            size_t n = 0;
            for (;;) { /* request after request: heads only, bodies by Content-Length */
                int r = SSL_read(s, head + n, (int)(sizeof(head) - 1 - n));
                if (r <= 0) break;
                n += (size_t)r;
                head[n] = '\0';
                char *end = strstr(head, "\r\n\r\n");
                if (!end) continue;
                size_t hl = (size_t)(end + 4 - head), body = 0;
                char *cl = strcasestr(head, "content-length:");
                if (cl && cl < end) body = strtoul(cl + 15, NULL, 10);
                while (n < hl + body) {
                    r = SSL_read(s, head + n, (int)(sizeof(head) - 1 - n));
                    if (r <= 0) break;
                    n += (size_t)r;
                }
                char resp[9000];
                int rl = snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%.*s",
                                  hl, (int)hl, head);
                SSL_write(s, resp, rl);
                memmove(head, head + hl + body, n - hl - body);
                n -= hl + body;
            }
        }
        SSL_free(s);
        close(c);
    }
}

/* One HTTPS exchange from the sandbox: TLS to ip:443 for sni, trusting ca; each of reqs sent in turn, the
 * bodies of the answers concatenated into out. Returns the number of answers, -1 when TLS failed. */
static int https_exchange(const char *ns, const char *ip, const char *sni, const char *ca,
                          const char *const *reqs, int nreq, char *out, size_t cap)
{
    int fd = tcp_connect(ns, ip, 443, 2000);
    if (fd < 0) return -1;
    /* each answer crosses the egress proxy's two TLS sessions: seconds under ASan on a loaded machine */
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL *s = SSL_new(ctx);
    SSL_set_fd(s, fd);
    SSL_set_tlsext_host_name(s, sni);
    SSL_set1_host(s, sni);
    int answers = -1;
    out[0] = '\0';
    if (SSL_connect(s) == 1) {
        answers = 0;
        size_t used = 0;
        for (int i = 0; i < nreq; i++) {
            if (SSL_write(s, reqs[i], (int)strlen(reqs[i])) <= 0) break;
            char b[9000];
            size_t n = 0;
            for (;;) {
                int r = SSL_read(s, b + n, (int)(sizeof(b) - 1 - n));
                if (r <= 0) break;
                n += (size_t)r;
                b[n] = '\0';
                char *end = strstr(b, "\r\n\r\n"), *cl = strcasestr(b, "content-length:");
                if (end && cl && n >= (size_t)(end + 4 - b) + strtoul(cl + 15, NULL, 10)) break;
            }
            if (n == 0) break;
            used += (size_t)snprintf(out + used, cap - used, "%s\n----\n", b);
            answers++;
            if (used >= cap) break;
        }
    }
    SSL_free(s);
    SSL_CTX_free(ctx);
    close(fd);
    return answers;
}

START_TEST(header_rules_are_injected_on_the_way_out)
{
    char cmd[2600];
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key "
             "-out ca.pem "
             ">/dev/null 2>&1 && openssl req -newkey rsa:2048 -nodes -subj /CN=secure.test -keyout srv.key "
             "-out srv.csr "
             ">/dev/null 2>&1 && printf 'subjectAltName=DNS:secure.test\\n' > ext && openssl x509 -req -in "
             "srv.csr -CA "
             "ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out srv.pem >/dev/null 2>&1",
             dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(upstream_ca, sizeof(upstream_ca), "%s/ca.pem", dir);
    pthread_t t;
    pthread_create(&t, NULL, https_server, (void *)(intptr_t)listener_at(uplink_ns, TLS_IP, 443));
    pthread_detach(t);
    net_start(1);
    cn_lease_info a;
    cube_err err = {0};
    cn_policy p = policy(true, NULL, NULL);
    ck_assert_int_eq(cn_policy_add_rule(&p, "secure.test", "Authorization", "Bearer s3cr3t-value", &err), 0);
    ck_assert_int_eq(cn_policy_add_rule(&p, "secure.test", "X-Cube-Test", "two", &err), 0);
    ck_assert_int_eq(cn_policy_add_rule(&p, "*.test", "X-Wild", "not-for-secure", &err), 0);
    lease("inject", p, &a);
    char node_ca[640], out[20000];
    snprintf(node_ca, sizeof(node_ca), "%s/state/ca/ca.pem", dir);
    /* the sandbox's own guess at the header is replaced; the exact host's rules win over the wildcard's; a
     * second request on the connection (after a body) gets them too */
    const char *reqs[] = {"GET /one HTTP/1.1\r\nHost: secure.test\r\nauthorization: guessed\r\n\r\n",
                          "POST /two HTTP/1.1\r\nHost: secure.test:443\r\nContent-Length: 5\r\n\r\nhello",
                          "GET /three HTTP/1.1\r\nHost: other.test\r\n\r\n"};
    int n = https_exchange(a.netns, TLS_IP, "secure.test", node_ca, reqs, 3, out, sizeof(out));
    ck_assert_msg(n == 3, "%d answers: %s", n, out);
    char *second = strstr(out, "POST /two"), *third = strstr(out, "HTTP/1.1 421");
    ck_assert_msg(second && third, "%s", out);
    ck_assert_msg(strstr(out, "Authorization: Bearer s3cr3t-value\r\nX-Cube-Test: two") < second, "%s", out);
    ck_assert_msg(strstr(second, "Authorization: Bearer s3cr3t-value\r\nX-Cube-Test: two"), "%s", out);
    ck_assert_msg(!strstr(out, "guessed") && !strstr(out, "not-for-secure"), "%s", out);
    /* the server's certificate is checked: trusting only the node's CA is what makes it work inside, and a
     * client that does not trust it gets no answer */
    ck_assert_int_eq(https_exchange(a.netns, TLS_IP, "secure.test", upstream_ca, reqs, 1, out, sizeof(out)),
                     -1);
    /* a name without rules is not intercepted: the real server's certificate comes through */
    const char *plain[] = {"GET / HTTP/1.1\r\nHost: secure.test\r\n\r\n"};
    cn_policy q = policy(true, NULL, NULL);
    ck_assert_int_eq(cn_policy_add_rule(&q, "elsewhere.test", "Authorization", "x", &err), 0);
    ck_assert_int_eq(cube_net_update(&net, "inject", &q, &err), 0);
    ck_assert_int_eq(https_exchange(a.netns, TLS_IP, "secure.test", upstream_ca, plain, 1, out, sizeof(out)),
                     1);
    ck_assert_msg(!strstr(out, "Authorization"), "%s", out);
    cube_net_stop(&net);
    upstream_ca[0] = '\0';
}
END_TEST

int main(void)
{
    if (geteuid() != 0) {
        printf("SKIP test_net: needs root to create namespaces and load BPF programs\n");
        return 77;
    }
    Suite *s = suite_create("net");
    TCase *tc = tcase_create("cube-net");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, node_setup, NULL);
    tcase_add_test(tc, sandboxes_cannot_reach_each_other);
    tcase_add_test(tc, sandbox_cannot_reach_the_node);
    tcase_add_test(tc, egress_follows_allow_and_deny_lists);
    tcase_add_test(tc, internet_access_is_the_public_internet);
    tcase_add_test(tc, audit_lines_are_capped_per_sandbox);
    tcase_add_test(tc, one_sandbox_cannot_fill_the_nodes_connection_table);
    tcase_add_test(tc, live_policy_update_keeps_allowed_flows);
    tcase_add_test(tc, release_and_stop_leave_nothing);
    tcase_add_test(tc, released_slots_go_together);
    tcase_add_test(tc, restart_adopts_leases_and_their_policy);
    tcase_add_test(tc, restart_keeps_what_names_resolved_to);
    tcase_add_test(tc, bad_input_is_refused_clearly);
    tcase_add_test(tc, refused_connections_fail_at_once);
    tcase_add_test(tc, names_allow_what_they_resolve_to);
    tcase_add_test(tc, name_rules_refuse_bad_input);
    tcase_add_test(tc, egress_proxy_tunnels_and_fails_closed);
    tcase_add_test(tc, header_rules_are_injected_on_the_way_out);
    suite_add_tcase(s, tc);
    int rc = cube_run_suite(s);
    return rc;
}
