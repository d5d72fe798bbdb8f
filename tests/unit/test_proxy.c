/* cube-proxy's relay at its edge, in process over loopback: a request head that does not arrive in time is
 * answered 408; at the connection cap the oldest client still sending its head makes room for one that sends
 * a whole request; idle clients add no threads; requests the proxy answers itself (health, metrics, a request
 * naming no sandbox) come back whole. No master is reachable here: routing to a sandbox is the e2e tests'. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy.h"
#include "tls.h"
#include "testutil.h"
#include "timeutil.h"

static proxy px;
static pthread_t server;
static const char *console_origins; /* for the next start() */

static void *serve(void *arg)
{
    (void)arg;
    cube_err err = {0};
    if (proxy_serve(&px, &err) < 0) fprintf(stderr, "proxy_serve: %s\n", err.msg);
    return NULL;
}

static void start(int max_conns, int head_timeout_ms)
{
    cube_err err = {0};
    ck_assert_msg(proxy_init(&px, "127.0.0.1", 0, "unix:/nonexistent/master.sock", "", &err) == 0, "%s",
                  err.msg);
    proxy_set_console_origins(&px, console_origins);
    proxy_limits_default(&px.limits);
    px.limits.max_conns = max_conns;
    px.limits.max_per_addr = max_conns;
    px.limits.head_timeout_ms = head_timeout_ms;
    px.limits.workers = 2;
    px.limits.signed_lookups_per_s = 2;
    pthread_create(&server, NULL, serve, NULL);
}

static void stop(void)
{
    proxy_stop(&px);
    pthread_join(server, NULL);
    close(px.listen_fd);
    cube_rpc_failover_free(&px.masters);
}

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)px.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void send_str(int fd, const char *s)
{
    ck_assert_int_eq(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* Everything the server sends until it closes (or timeout_ms passes: then what came so far). */
static char *read_all(int fd, int timeout_ms)
{
    static char buf[65536];
    size_t n = 0;
    int64_t until = cube_now_mono_ms() + timeout_ms;
    while (n < sizeof(buf) - 1) {
        int left = (int)(until - cube_now_mono_ms());
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, left) <= 0) break;
        ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return buf;
}

static int threads(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

START_TEST(answers_of_its_own)
{
    start(64, 5000);
    int fd = dial();
    send_str(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    char *r = read_all(fd, 3000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 ", 13) == 0 && strstr(r, "{\"ok\":true}"), "%s", r);
    close(fd);
    fd = dial();
    send_str(fd, "GET /files HTTP/1.1\r\nHost: nothing-here\r\n\r\n");
    r = read_all(fd, 3000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 400 ", 13) == 0 && strstr(r, "E2b-Sandbox-Id"), "%s", r);
    close(fd);
    /* a file URL that names no sandbox: unsigned, it cannot lead anywhere (said so); signed, a master is
     * asked whose it is (none here: a clear 502) */
    fd = dial();
    send_str(fd, "GET /files?path=%2Ftmp%2Fx HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    r = read_all(fd, 3000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 400 ", 13) == 0 && strstr(r, "without a signature"), "%s", r);
    close(fd);
    fd = dial();
    send_str(fd, "POST /files?path=%2Ftmp%2Fx&signature=v1_abc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Length: 0\r\n\r\n");
    r = read_all(fd, 8000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 502 ", 13) == 0 && strstr(r, "signed file URL"), "%s", r);
    close(fd);
    /* each lookup costs a master a hash per sandbox: beyond the rate (2 a second here), 429 */
    int refused = 0;
    for (int i = 0; i < 4; i++) {
        fd = dial();
        send_str(fd, "GET /files?path=x&signature=v1_abc HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        r = read_all(fd, 8000);
        refused += strncmp(r, "HTTP/1.1 429 ", 13) == 0;
        close(fd);
    }
    ck_assert_int_ge(refused, 2);
    /* a sandbox no master can be asked about: a clear 502, not a hang */
    fd = dial();
    send_str(fd, "GET / HTTP/1.1\r\nHost: 49983-isomething.example\r\n\r\n");
    r = read_all(fd, 8000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 502 ", 13) == 0, "%s", r);
    close(fd);
    /* a head over 64 KiB */
    fd = dial();
    send_str(fd, "GET / HTTP/1.1\r\n");
    char line[1024];
    memset(line, 'a', sizeof(line));
    memcpy(line, "X-Pad: ", 7);
    line[sizeof(line) - 2] = '\r';
    line[sizeof(line) - 1] = '\n';
    for (int i = 0; i < 70; i++)
        if (write(fd, line, sizeof(line)) < 0) break;
    r = read_all(fd, 3000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 431 ", 13) == 0, "%s", r);
    close(fd);
    stop();
}
END_TEST

/* The fields of a signed file URL read as the agent's HTTP library reads a query (%HH, '+' a space), from
 * the SDK's uploadUrl (POST) and downloadUrl (GET); what is not one is told apart. */
START_TEST(signed_file_urls_are_read_as_the_agent_reads_them)
{
    proxy_signed_file f;
    ck_assert_int_eq(proxy_parse_signed_file("GET /files?path=%2Ftmp%2Fwith+space%2Bplus.txt&username=root&"
                                             "signature=v1_ab%2Fc%2Bd&signature_expiration=1795380163 "
                                             "HTTP/1.1\r\nHost: x\r\n\r\n",
                                             &f),
                     0);
    ck_assert_str_eq(f.operation, "read");
    ck_assert_str_eq(f.path, "/tmp/with space+plus.txt");
    ck_assert_str_eq(f.username, "root");
    ck_assert_str_eq(f.signature, "v1_ab/c+d");
    ck_assert_str_eq(f.expiration, "1795380163");
    ck_assert_int_eq(proxy_parse_signed_file("POST /files?signature=v1_x&other=1&path= HTTP/1.1\r\n\r\n", &f),
                     0);
    ck_assert_str_eq(f.operation, "write");
    ck_assert_str_eq(f.path, "");
    ck_assert_str_eq(f.username, "");
    ck_assert_str_eq(f.expiration, "");
    ck_assert_int_eq(proxy_parse_signed_file("GET /files?path=%2Ftmp HTTP/1.1\r\n\r\n", &f), 1);
    ck_assert_int_eq(proxy_parse_signed_file("GET /filesystem?signature=v1_x HTTP/1.1\r\n\r\n", &f), -1);
    ck_assert_int_eq(proxy_parse_signed_file("PUT /files?signature=v1_x HTTP/1.1\r\n\r\n", &f), -1);
    ck_assert_int_eq(proxy_parse_signed_file("GET /files?path=%2&signature=v1_x HTTP/1.1\r\n\r\n", &f), -1);
    ck_assert_int_eq(proxy_parse_signed_file("GET /files?path=a%00b&signature=v1_x HTTP/1.1\r\n\r\n", &f),
                     -1);
    char big[5000];
    int n = snprintf(big, sizeof(big), "GET /files?signature=v1_x&path=");
    memset(big + n, 'a', 4200);
    snprintf(big + n + 4200, sizeof(big) - (size_t)n - 4200, " HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(proxy_parse_signed_file(big, &f), -1);
}
END_TEST

/* The web console's page (another origin: cube-api's port) may call the agents; no other origin is answered
 * CORS. A preflight names no sandbox, so the proxy answers it; its own errors carry the headers too. */
START_TEST(only_the_consoles_origin_is_answered_cors)
{
    console_origins = "http://127.0.0.1:3000,http://localhost:3000";
    start(64, 5000);
    int fd = dial();
    send_str(fd, "OPTIONS /process.Process/Start HTTP/1.1\r\nHost: p\r\nOrigin: http://localhost:3000\r\n"
                 "Access-Control-Request-Method: POST\r\n"
                 "Access-Control-Request-Headers: content-type,e2b-sandbox-id;x\r\n\r\n");
    char *r = read_all(fd, 3000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 204 ", 13) == 0, "%s", r);
    ck_assert_msg(strstr(r, "\r\nAccess-Control-Allow-Origin: http://localhost:3000\r\n"), "%s", r);
    ck_assert_msg(strstr(r, "\r\nAccess-Control-Allow-Headers: content-type,e2b-sandbox-id x\r\n"), "%s", r);
    close(fd);
    fd = dial();
    send_str(fd,
             "OPTIONS /process.Process/Start HTTP/1.1\r\nHost: p\r\nOrigin: http://localhost:3000.evil\r\n"
             "Access-Control-Request-Method: POST\r\n\r\n");
    r = read_all(fd, 3000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 400 ", 13) == 0 && !strstr(r, "Access-Control"), "%s", r);
    close(fd);
    /* an error of the proxy's own, readable by the console's page */
    fd = dial();
    send_str(fd,
             "POST /filesystem.Filesystem/ListDir HTTP/1.1\r\nHost: p\r\nOrigin: http://127.0.0.1:3000\r\n"
             "E2b-Sandbox-Id: isomething\r\nE2b-Sandbox-Port: 49983\r\nContent-Length: 0\r\n\r\n");
    r = read_all(fd, 8000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 502 ", 13) == 0, "%s", r);
    ck_assert_msg(strstr(r, "\r\nAccess-Control-Allow-Origin: http://127.0.0.1:3000\r\n"), "%s", r);
    close(fd);
    stop();
}
END_TEST

START_TEST(a_head_that_does_not_arrive_in_time_is_answered_408)
{
    start(64, 300);
    int fd = dial();
    send_str(fd, "GET /health HTTP/1.1\r\nHost: x\r\n"); /* half a head, then nothing */
    int64_t t0 = cube_now_mono_ms();
    char *r = read_all(fd, 5000);
    int64_t took = cube_now_mono_ms() - t0;
    ck_assert_msg(strncmp(r, "HTTP/1.1 408 ", 13) == 0, "%s", r);
    ck_assert_int_ge(took, 250);
    ck_assert_int_lt(took, 3000);
    close(fd);
    stop();
}
END_TEST

/* At the cap, the oldest client still sending its head is answered 503 and dropped; the new one that sends a
 * whole request is served. */
START_TEST(at_the_cap_idle_heads_make_room)
{
    start(4, 60000);
    int idle[4];
    for (int i = 0; i < 4; i++) {
        idle[i] = dial();
        send_str(idle[i], "GET /health HTTP/1.1\r\n");
        usleep(20 * 1000); /* accepted in this order */
    }
    int fd = dial();
    send_str(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    char *r = read_all(fd, 3000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 ", 13) == 0, "%s", r);
    close(fd);
    r = read_all(idle[0], 3000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 503 ", 13) == 0 && strstr(r, "Retry-After: 1"), "oldest: %s", r);
    /* the others are still held */
    struct pollfd pf = {idle[1], POLLIN, 0};
    ck_assert_int_eq(poll(&pf, 1, 100), 0);
    for (int i = 0; i < 4; i++) close(idle[i]);
    stop();
}
END_TEST

START_TEST(idle_clients_add_no_threads)
{
    start(4096, 60000);
    int fd = dial();
    send_str(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    read_all(fd, 3000);
    close(fd);
    int before = threads();
    enum { N = 500 };
    static int idle[N];
    for (int i = 0; i < N; i++) {
        idle[i] = dial();
        send_str(idle[i], "GET /health HTTP/1.1\r\nX-Half: ");
    }
    fd = dial();
    send_str(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    char *r = read_all(fd, 3000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 ", 13) == 0, "%s", r);
    close(fd);
    ck_assert_int_eq(threads(), before);
    for (int i = 0; i < N; i++) close(idle[i]);
    stop();
}
END_TEST

/* Hops between proxies: a proxy with a TLS identity takes TLS from a peer holding the cluster CA's
 * certificate (and answers it), refuses one from another CA, still serves plain SDK clients, and refuses a
 * hop that comes plain. */

/* A hop's client side as another proxy makes it: TLS over a fresh connection, then a request. NULL when the
 * handshake fails. */
static char *over_tls(proxy_tls *as, const char *req)
{
    int fd = dial();
    cube_err err = {0};
    SSL *ssl = proxy_tls_connect(as, fd, "127.0.0.1", 3000, &err);
    if (!ssl) {
        close(fd);
        return NULL;
    }
    SSL_write(ssl, req, (int)strlen(req));
    static char buf[8192];
    size_t n = 0;
    for (;;) {
        int r = SSL_read(ssl, buf + n, (int)(sizeof(buf) - 1 - n));
        if (r <= 0) break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    SSL_free(ssl);
    close(fd);
    return buf;
}

START_TEST(hops_between_proxies_use_mutual_tls)
{
    char dir[] = "/tmp/cube-proxy-tls-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char cluster[300], other[300], p[400];
    snprintf(cluster, sizeof(cluster), "%s/cluster", dir);
    snprintf(other, sizeof(other), "%s/other", dir);
    cube_test_tls_identity(cluster, "proxy-1");
    cube_test_tls_identity(cluster, "proxy-2");
    cube_test_tls_identity(other, "intruder");
    start(64, 5000);
    cube_err err = {0};
    snprintf(p, sizeof(p), "%s/proxy-1", cluster);
    ck_assert_msg(proxy_use_tls(&px, p, &err) == 0, "%s", err.msg);
    snprintf(p, sizeof(p), "%s/proxy-2", cluster);
    proxy_tls *peer = proxy_tls_load(p, &err);
    snprintf(p, sizeof(p), "%s/intruder", other);
    proxy_tls *intruder = proxy_tls_load(p, &err);
    ck_assert_ptr_nonnull(peer);
    ck_assert_ptr_nonnull(intruder);
    char *r = over_tls(peer, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_msg(r && strncmp(r, "HTTP/1.1 200 ", 13) == 0, "over TLS: %s", r ? r : "(handshake failed)");
    ck_assert_ptr_null(over_tls(intruder, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
    /* plain SDK clients on the same port */
    int fd = dial();
    send_str(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    r = read_all(fd, 3000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 ", 13) == 0, "plain: %s", r);
    close(fd);
    /* a hop that arrives plain: refused before anything is routed (no master answers here: 502 would mean it
     * was routed) */
    fd = dial();
    send_str(fd,
             "GET / HTTP/1.1\r\nE2b-Sandbox-Id: iabc\r\nE2b-Sandbox-Port: 49983\r\nX-Cube-Hop: 1\r\n\r\n");
    r = read_all(fd, 8000);
    ck_assert_msg(strncmp(r, "HTTP/1.1 403 ", 13) == 0, "plain hop: %s", r);
    close(fd);
    stop();
    proxy_tls_free(peer);
    proxy_tls_free(intruder);
    proxy_tls_free(px.tls);
    snprintf(p, sizeof(p), "rm -rf %s", dir);
    ck_assert_int_eq(system(p), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("proxy");
    TCase *tc = tcase_create("relay");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, answers_of_its_own);
    tcase_add_test(tc, signed_file_urls_are_read_as_the_agent_reads_them);
    tcase_add_test(tc, only_the_consoles_origin_is_answered_cors);
    tcase_add_test(tc, a_head_that_does_not_arrive_in_time_is_answered_408);
    tcase_add_test(tc, at_the_cap_idle_heads_make_room);
    tcase_add_test(tc, idle_clients_add_no_threads);
    tcase_add_test(tc, hops_between_proxies_use_mutual_tls);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
