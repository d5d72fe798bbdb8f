/* test_net's world (net_world.h): its namespaces, the uplink's servers, and the probes from a sandbox. */
#include "net_world.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ldns/ldns.h>
#include <openssl/ssl.h>

#include "dns.h"
#include "nl.h"
#include "testutil.h"

char *dir;
int node_ns = -1, uplink_ns = -1;
cube_net net;

uint32_t ip4(const char *s)
{
    struct in_addr a;
    ck_assert_int_eq(inet_pton(AF_INET, s, &a), 1);
    return a.s_addr;
}

/* A socket made inside the namespace at path (or of fd ns_fd when path is NULL). */
int ns_socket(const char *path, int ns_fd, int type, int proto)
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

int listener(int ns_fd, const char *path, int type, int port)
{
    int s = ns_socket(path, ns_fd, type, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    if (type == SOCK_STREAM) ck_assert_int_eq(listen(s, 16), 0);
    return s;
}

int listener_at_udp(int ns_fd, const char *ip, int port)
{
    int s = ns_socket(NULL, ns_fd, SOCK_DGRAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = ip4(ip)};
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    return s;
}

int listener_at(int ns_fd, const char *ip, int port)
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
int tcp_connect(const char *ns, const char *ip, int port, int timeout_ms)
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

int can_connect(const char *ns, const char *ip, int port)
{
    int s = tcp_connect(ns, ip, port, 400);
    if (s >= 0) close(s);
    return s >= 0;
}

/* Sends one UDP datagram from the sandbox; true when the receiving socket got it. */
int udp_reaches(const char *from_ns, const char *ip, int port, int rx)
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
int ping_answers(const char *ns, const char *ip)
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
struct sockaddr_in last_peer;
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

int echo_ok(int s, const char *msg)
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
int head_had(const char *needle, size_t len)
{
    pthread_mutex_lock(&head_lock);
    int found = memmem(last_head, sizeof(last_head), needle, len) != NULL;
    memset(last_head, 0, sizeof(last_head));
    pthread_mutex_unlock(&head_lock);
    return found;
}

/* node namespace + private mounts; the uplink namespace behind veth up0 with the two outside addresses */
void node_setup(void)
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

char upstream_ca[600]; /* the HTTPS server's CA, when a test made one */
int flows_cap;         /* the flows each sandbox may have open, when a test sets it (else the default) */

void net_start(int pool)
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

cn_policy policy(bool internet, const char *allow, const char *deny)
{
    cn_policy p = {.internet = internet};
    cube_err err = {0};
    if (allow) ck_assert_int_eq(cn_policy_add(&p, true, &allow, 1, &err), 0);
    if (deny) ck_assert_int_eq(cn_policy_add(&p, false, &deny, 1, &err), 0);
    return p;
}

void lease(const char *name, cn_policy p, cn_lease_info *li)
{
    cube_err err = {0};
    ck_assert_msg(cube_net_lease(&net, name, &p, li, &err) == 0, "lease %s: %s", name, err.msg);
}

/* An A query from inside the sandbox to server (any address: the node's resolver answers for it). Returns the
 * rcode, the addresses in addrs[*n]; -1 when no answer came from server:53. */
int resolve(const char *ns, const char *server, const char *name, uint32_t *addrs, int *n)
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
int connect_errno(const char *ns, const char *ip, int port, int timeout_ms)
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

int http_ok(const char *ns, const char *ip, const char *host)
{
    char req[256];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nUser-Agent: t\r\nHost: %s\r\n\r\n", host);
    return web_ok(ns, ip, 80, req, (size_t)n);
}

/* A real TLS ClientHello (OpenSSL's, server name sni) sent to ip:443 */
int tls_ok(const char *ns, const char *ip, const char *sni)
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
