/* RPC across two real processes: round trip, error statuses, deadline, cancellation, dead peer; each over
 * both transports (a unix socket: rpc_unix.c; TCP: gRPC). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "echo_service.h"
#include "testutil.h"
#include "timeutil.h"

static char *tmpdir;
static char address[256];
static pid_t server_pid = -1;
static cube_rpc_client *client;
static bool over_tcp;

/* Starts tests' rpc_echo_server at `address` and waits for its "ready" line. */
static void start_server(void)
{
    const char *bindir = getenv("CUBE_TEST_BIN_DIR");
    char bin[512];
    snprintf(bin, sizeof(bin), "%s/rpc_echo_server", bindir ? bindir : ".");
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    server_pid = fork();
    ck_assert_int_ge(server_pid, 0);
    if (server_pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        close(pipefd[1]);
        execl(bin, bin, address, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    char line[64] = {0};
    FILE *f = fdopen(pipefd[0], "r");
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    fclose(f);
    ck_assert_msg(strncmp(line, "ready", 5) == 0, "echo server said '%s'", line);
    if (over_tcp) snprintf(address, sizeof(address), "127.0.0.1:%d", atoi(line + 6));
}

static void stop_server(int sig)
{
    if (server_pid <= 0) return;
    kill(server_pid, sig);
    int status;
    waitpid(server_pid, &status, 0);
    server_pid = -1;
}

static void setup(void)
{
    tmpdir = cube_test_tmpdir();
    if (over_tcp)
        snprintf(address, sizeof(address), "127.0.0.1:0");
    else
        snprintf(address, sizeof(address), "unix:%s/echo.sock", tmpdir);
    start_server();
    cube_err err = {0};
    client = cube_rpc_client_new(address, &err);
    ck_assert_msg(client != NULL, "%s", err.msg);
}

static void setup_tcp(void)
{
    over_tcp = true;
    setup();
}

static void teardown(void)
{
    cube_rpc_client_free(client);
    stop_server(SIGTERM);
    char sock[300];
    snprintf(sock, sizeof(sock), "%s/echo.sock", tmpdir);
    unlink(sock);
    rmdir(tmpdir);
    free(tmpdir);
    over_tcp = false;
}

static int call_echo(Cubetest__EchoRequest *req, Cubetest__EchoReply **reply, int64_t timeout_ms,
                     cube_rpc_cancel *cancel, cube_err *err)
{
    cube_rpc_call_opts opts = {.timeout_ms = timeout_ms, .cancel = cancel};
    ProtobufCMessage *resp = NULL;
    int rc =
        cube_rpc_call(client, ECHO_METHOD, &req->base, &cubetest__echo_reply__descriptor, &resp, &opts, err);
    *reply = (Cubetest__EchoReply *)resp;
    return rc;
}

START_TEST(round_trip)
{
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.text = "hello across processes";
    size_t n = 1 << 20;
    unsigned char *blob = malloc(n);
    for (size_t i = 0; i < n; i++) blob[i] = (unsigned char)(i * 7);
    req.blob.data = blob;
    req.blob.len = n;
    Cubetest__EchoReply *reply;
    cube_err err = {0};
    /* a generous deadline: this is about a 1 MiB round trip arriving whole, not about its speed (under
     * ThreadSanitizer on a busy machine it takes seconds) */
    ck_assert_msg(call_echo(&req, &reply, 30000, NULL, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(reply->text, "hello across processes");
    ck_assert_uint_eq(reply->blob.len, n);
    ck_assert_int_eq(memcmp(reply->blob.data, blob, n), 0);
    /* the server saw our deadline */
    ck_assert_int_gt(reply->deadline_left_ms, 0);
    ck_assert_int_le(reply->deadline_left_ms, 30000);
    protobuf_c_message_free_unpacked(&reply->base, NULL);
    free(blob);
}
END_TEST

START_TEST(handler_error_becomes_status)
{
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.fail_errno = ENOENT;
    req.fail_message = "sandbox i123 not found";
    Cubetest__EchoReply *reply;
    cube_err err = {0};
    ck_assert_int_eq(call_echo(&req, &reply, 5000, NULL, &err), -1);
    ck_assert_ptr_null(reply);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_str_eq(err.msg, "sandbox i123 not found");

    req.fail_errno = EINVAL;
    req.fail_message = "timeout must be positive";
    ck_assert_int_eq(call_echo(&req, &reply, 5000, NULL, &err), -1);
    ck_assert_int_eq(err.code, EINVAL);

    /* two errnos one status stands for (RESOURCE_EXHAUSTED): a key's limit (429) and a busy node (503) stay
     * apart */
    req.fail_errno = EDQUOT;
    req.fail_message = "API key k1 may hold at most 2 sandboxes";
    ck_assert_int_eq(call_echo(&req, &reply, 5000, NULL, &err), -1);
    ck_assert_int_eq(err.code, EDQUOT);
    ck_assert_str_eq(err.msg, "API key k1 may hold at most 2 sandboxes");
    req.fail_errno = EAGAIN;
    req.fail_message = "node is busy";
    ck_assert_int_eq(call_echo(&req, &reply, 5000, NULL, &err), -1);
    ck_assert_int_eq(err.code, EAGAIN);
}
END_TEST

START_TEST(unknown_method_is_unimplemented)
{
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    int rc = cube_rpc_call(client, "/cubetest.Echo/Nope", &req.base, &cubetest__echo_reply__descriptor, &resp,
                           NULL, &err);
    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(err.code, ENOSYS);
    ck_assert_msg(strstr(err.msg, "/cubetest.Echo/Nope") != NULL, "%s", err.msg);
}
END_TEST

START_TEST(deadline_exceeded)
{
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.sleep_ms = 3000;
    Cubetest__EchoReply *reply;
    cube_err err = {0};
    int64_t t0 = cube_now_mono_ms();
    ck_assert_int_eq(call_echo(&req, &reply, 150, NULL, &err), -1);
    int64_t took = cube_now_mono_ms() - t0;
    ck_assert_int_eq(err.code, ETIMEDOUT);
    ck_assert_msg(strstr(err.msg, "150 ms") != NULL, "%s", err.msg);
    ck_assert_msg(took >= 140 && took < 1500, "deadline of 150 ms took %lld ms", (long long)took);
}
END_TEST

static void *fire_later(void *arg)
{
    nanosleep(&(struct timespec){0, 100 * 1000000}, NULL);
    cube_rpc_cancel_fire(arg);
    return NULL;
}

START_TEST(cancellation)
{
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.sleep_ms = 5000;
    Cubetest__EchoReply *reply;
    cube_err err = {0};
    cube_rpc_cancel *cancel = cube_rpc_cancel_new();
    pthread_t th;
    pthread_create(&th, NULL, fire_later, cancel);
    int64_t t0 = cube_now_mono_ms();
    ck_assert_int_eq(call_echo(&req, &reply, 10000, cancel, &err), -1);
    int64_t took = cube_now_mono_ms() - t0;
    pthread_join(th, NULL);
    ck_assert_int_eq(err.code, ECANCELED);
    ck_assert_msg(took < 2000, "cancel took %lld ms", (long long)took);
    /* a fired token refuses the next call at once */
    ck_assert_int_eq(call_echo(&req, &reply, 10000, cancel, &err), -1);
    ck_assert_int_eq(err.code, ECANCELED);
    cube_rpc_cancel_free(cancel);
    /* the server is still fine afterwards */
    req.sleep_ms = 0;
    req.text = "still here";
    ck_assert_msg(call_echo(&req, &reply, 5000, NULL, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(reply->text, "still here");
    protobuf_c_message_free_unpacked(&reply->base, NULL);
}
END_TEST

START_TEST(dead_peer_fails_within_deadline)
{
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.text = "warm";
    Cubetest__EchoReply *reply;
    cube_err err = {0};
    ck_assert_msg(call_echo(&req, &reply, 5000, NULL, &err) == 0, "%s", err.msg);
    protobuf_c_message_free_unpacked(&reply->base, NULL);

    stop_server(SIGKILL);
    int64_t t0 = cube_now_mono_ms();
    int rc = call_echo(&req, &reply, 1000, NULL, &err);
    int64_t took = cube_now_mono_ms() - t0;
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(err.code == ECONNREFUSED || err.code == ETIMEDOUT, "errno %s: %s",
                  cube_errno_name(err.code), err.msg);
    ck_assert_msg(strstr(err.msg, address) != NULL || err.code == ETIMEDOUT, "%s", err.msg);
    ck_assert_msg(took <= 1500, "dead peer took %lld ms to report", (long long)took);
}
END_TEST

START_TEST(never_started_peer_is_unavailable)
{
    char addr[300];
    snprintf(addr, sizeof(addr), "unix:%s/nobody.sock", tmpdir);
    cube_err err = {0};
    cube_rpc_client *c = cube_rpc_client_new(addr, &err);
    ck_assert_ptr_nonnull(c);
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts opts = {.timeout_ms = 500};
    int64_t t0 = cube_now_mono_ms();
    int rc = cube_rpc_call(c, ECHO_METHOD, &req.base, &cubetest__echo_reply__descriptor, &resp, &opts, &err);
    int64_t took = cube_now_mono_ms() - t0;
    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(err.code, ECONNREFUSED);
    ck_assert_msg(strstr(err.msg, "unavailable") != NULL, "%s", err.msg);
    ck_assert_msg(took <= 1000, "took %lld ms", (long long)took);
    ck_assert_int_eq(cube_rpc_client_connect(c, 200, &err), -1);
    cube_rpc_client_free(c);
}
END_TEST

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 25; i++) {
        char text[32];
        snprintf(text, sizeof(text), "msg-%d", i);
        Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
        req.text = text;
        Cubetest__EchoReply *reply;
        cube_err err = {0};
        if (call_echo(&req, &reply, 5000, NULL, &err) < 0) return (void *)1;
        int bad = strcmp(reply->text, text) != 0;
        protobuf_c_message_free_unpacked(&reply->base, NULL);
        if (bad) return (void *)1;
    }
    return NULL;
}

START_TEST(concurrent_calls_share_one_channel)
{
    cube_err err = {0};
    ck_assert_msg(cube_rpc_client_connect(client, 2000, &err) == 0, "%s", err.msg);
    pthread_t th[8];
    for (int i = 0; i < 8; i++) pthread_create(&th[i], NULL, hammer, NULL);
    for (int i = 0; i < 8; i++) {
        void *r;
        pthread_join(th[i], &r);
        ck_assert_ptr_null(r);
    }
}
END_TEST

START_TEST(in_process_tcp_and_port_conflict)
{
    cube_err err = {0};
    cube_rpc_server *a = cube_rpc_server_start("127.0.0.1:0", echo_methods, NULL, 2, &err);
    ck_assert_msg(a != NULL, "%s", err.msg);
    int port = cube_rpc_server_port(a);
    ck_assert_int_gt(port, 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    cube_rpc_server *b = cube_rpc_server_start(addr, echo_methods, NULL, 1, &err);
    ck_assert_ptr_null(b);
    ck_assert_int_eq(err.code, EADDRINUSE);

    cube_rpc_client *c = cube_rpc_client_new(addr, &err);
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.text = "tcp";
    ProtobufCMessage *resp = NULL;
    ck_assert_msg(
        cube_rpc_call(c, ECHO_METHOD, &req.base, &cubetest__echo_reply__descriptor, &resp, NULL, &err) == 0,
        "%s", err.msg);
    ck_assert_str_eq(((Cubetest__EchoReply *)resp)->text, "tcp");
    protobuf_c_message_free_unpacked(resp, NULL);
    cube_rpc_client_free(c);
    cube_rpc_server_stop(a);
}
END_TEST

/* Mutual TLS between machines: a peer with the cluster CA's certificate is served; one signed by another CA,
 * or one with none, is refused; a client does not talk to a server the cluster's CA did not sign. */

static cube_rpc_tls *identity(const char *dir, const char *name)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    cube_err err = {0};
    cube_rpc_tls *t = cube_rpc_tls_load(p, &err);
    ck_assert_msg(t != NULL, "%s", err.msg);
    return t;
}

static int echo_over(const char *addr, const cube_rpc_tls *tls, cube_err *err)
{
    cube_rpc_client *c = cube_rpc_client_new_tls(addr, tls, err);
    ck_assert_ptr_nonnull(c);
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.text = "over tls";
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 15000}; /* TLS handshakes under ThreadSanitizer are slow */
    int rc = cube_rpc_call(c, ECHO_METHOD, &req.base, &cubetest__echo_reply__descriptor, &resp, &o, err);
    if (rc == 0) ck_assert_str_eq(((Cubetest__EchoReply *)resp)->text, "over tls");
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    cube_rpc_client_free(c);
    return rc;
}

START_TEST(mutual_tls_refuses_strangers)
{
    char cluster[400], other[400];
    snprintf(cluster, sizeof(cluster), "%s/cluster", tmpdir);
    snprintf(other, sizeof(other), "%s/other", tmpdir);
    cube_test_tls_identity(cluster, "master");
    cube_test_tls_identity(cluster, "node-1");
    cube_test_tls_identity(other, "intruder");
    cube_rpc_tls *master = identity(cluster, "master"), *node = identity(cluster, "node-1"),
                 *intruder = identity(other, "intruder");
    cube_err err = {0};
    cube_rpc_server *srv = cube_rpc_server_start_tls("127.0.0.1:0", echo_methods, NULL, 2, master, &err);
    ck_assert_msg(srv != NULL, "%s", err.msg);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", cube_rpc_server_port(srv));
    ck_assert_msg(echo_over(addr, node, &err) == 0, "the cluster's node was refused: %s", err.msg);
    ck_assert_int_eq(echo_over(addr, intruder, &err), -1); /* a certificate from another CA */
    ck_assert_int_eq(echo_over(addr, NULL, &err), -1);     /* plain text */
    cube_rpc_server_stop(srv);
    /* and the other way: a node does not talk to a server outside the cluster */
    srv = cube_rpc_server_start_tls("127.0.0.1:0", echo_methods, NULL, 2, intruder, &err);
    ck_assert_msg(srv != NULL, "%s", err.msg);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", cube_rpc_server_port(srv));
    ck_assert_int_eq(echo_over(addr, node, &err), -1);
    cube_rpc_server_stop(srv);
    /* an identity directory that is not one is a clear error */
    ck_assert_ptr_null(cube_rpc_tls_load(tmpdir, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "ca.pem"));
    cube_rpc_tls_free(master);
    cube_rpc_tls_free(node);
    cube_rpc_tls_free(intruder);
}
END_TEST

typedef struct slow_call {
    cube_rpc_client *c;
    int rc;
    cube_err err;
} slow_call;

static void *run_slow_call(void *arg)
{
    slow_call *sc = arg;
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.sleep_ms = 10000;
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts opts = {.timeout_ms = 20000};
    sc->rc = cube_rpc_call(sc->c, ECHO_METHOD, &req.base, &cubetest__echo_reply__descriptor, &resp, &opts,
                           &sc->err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return NULL;
}

/* A handler is mid-sleep when the server at addr (in this process) stops: stop cancels the call, waits for
 * the handler, and the client gets an error long before its own deadline. Returns the client. */
static cube_rpc_client *stop_mid_call(const char *addr_in)
{
    cube_err err = {0};
    cube_rpc_server *s = cube_rpc_server_start(addr_in, echo_methods, NULL, 2, &err);
    ck_assert_msg(s != NULL, "%s", err.msg);
    char addr[300];
    if (cube_rpc_server_port(s) > 0)
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", cube_rpc_server_port(s));
    else
        snprintf(addr, sizeof(addr), "%s", addr_in);
    slow_call sc = {.c = cube_rpc_client_new(addr, &err)};
    ck_assert_int_eq(cube_rpc_client_connect(sc.c, 2000, &err), 0);
    pthread_t th;
    pthread_create(&th, NULL, run_slow_call, &sc);
    nanosleep(&(struct timespec){0, 200 * 1000000}, NULL);
    int64_t t0 = cube_now_mono_ms();
    cube_rpc_server_stop(s);
    pthread_join(th, NULL);
    int64_t took = cube_now_mono_ms() - t0;
    ck_assert_int_eq(sc.rc, -1);
    ck_assert_msg(took < 3000, "stop + failed call took %lld ms", (long long)took);
    return sc.c;
}

START_TEST(stop_with_call_in_flight)
{
    cube_rpc_client_free(stop_mid_call("127.0.0.1:0"));
}
END_TEST

/* A server restarted at the same path: the client's kept connection to the old one is found closed and a
 * new one made, with no error for the caller. */
START_TEST(restarted_server_is_reached_again)
{
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.text = "before";
    Cubetest__EchoReply *reply;
    cube_err err = {0};
    ck_assert_msg(call_echo(&req, &reply, 5000, NULL, &err) == 0, "%s", err.msg);
    protobuf_c_message_free_unpacked(&reply->base, NULL);
    stop_server(SIGTERM);
    start_server();
    req.text = "after";
    ck_assert_msg(call_echo(&req, &reply, 5000, NULL, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(reply->text, "after");
    protobuf_c_message_free_unpacked(&reply->base, NULL);
}
END_TEST

/* stop_with_call_in_flight on a unix socket; after it nothing listens: a new call is refused at once */
START_TEST(unix_stop_with_call_in_flight)
{
    char addr[300];
    snprintf(addr, sizeof(addr), "unix:%s/inproc.sock", tmpdir);
    cube_err err = {0};
    ck_assert_ptr_null(cube_rpc_server_start("unix:relative.sock", echo_methods, NULL, 1, &err));
    ck_assert_int_eq(err.code, EINVAL);
    cube_rpc_client *c = stop_mid_call(addr);
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    ck_assert_int_eq(
        cube_rpc_call(c, ECHO_METHOD, &req.base, &cubetest__echo_reply__descriptor, &resp, NULL, &err), -1);
    ck_assert_int_eq(err.code, ECONNREFUSED);
    cube_rpc_client_free(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rpc");
    TCase *tc = tcase_create("two processes, unix socket");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, handler_error_becomes_status);
    tcase_add_test(tc, unknown_method_is_unimplemented);
    tcase_add_test(tc, deadline_exceeded);
    tcase_add_test(tc, cancellation);
    tcase_add_test(tc, dead_peer_fails_within_deadline);
    tcase_add_test(tc, never_started_peer_is_unavailable);
    tcase_add_test(tc, concurrent_calls_share_one_channel);
    tcase_add_test(tc, in_process_tcp_and_port_conflict);
    tcase_add_test(tc, stop_with_call_in_flight);
    tcase_add_test(tc, mutual_tls_refuses_strangers);
    tcase_add_test(tc, restarted_server_is_reached_again);
    tcase_add_test(tc, unix_stop_with_call_in_flight);
    suite_add_tcase(s, tc);
    /* the same calls to a server on TCP: gRPC */
    TCase *tcp = tcase_create("two processes, gRPC");
    tcase_add_checked_fixture(tcp, setup_tcp, teardown);
    tcase_set_timeout(tcp, 30);
    tcase_add_test(tcp, round_trip);
    tcase_add_test(tcp, handler_error_becomes_status);
    tcase_add_test(tcp, unknown_method_is_unimplemented);
    tcase_add_test(tcp, deadline_exceeded);
    tcase_add_test(tcp, cancellation);
    tcase_add_test(tcp, dead_peer_fails_within_deadline);
    tcase_add_test(tcp, concurrent_calls_share_one_channel);
    suite_add_tcase(s, tcp);
    return cube_run_suite(s);
}
