/* cube-net's egress on the way out, for real, in test_net's world (net_world.h): TCP tunnelled through an
 * operator's SOCKS5 server (and refused when it fails: closed, never direct), and header rules injected into
 * HTTPS requests to a name (cube-net terminating TLS under the node's CA, the upstream's certificate checked
 * against the test's own CA). Needs root. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "net.h"
#include "net_world.h"
#include "testutil.h"

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
        printf("SKIP test_net_egress: needs root to create namespaces and load BPF programs\n");
        return 77;
    }
    Suite *s = suite_create("net_egress");
    TCase *tc = tcase_create("cube-net");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, node_setup, NULL);
    tcase_add_test(tc, egress_proxy_tunnels_and_fails_closed);
    tcase_add_test(tc, header_rules_are_injected_on_the_way_out);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
