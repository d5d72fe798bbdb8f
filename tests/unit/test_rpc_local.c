/* The control-socket transport (lib/rpc_local.c): the Echo service served in-process, called the way cubelet
 * and the shim call a hypervisor. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "echo_service.h"
#include "testutil.h"
#include "timeutil.h"

static char *tmpdir;
static char address[300];
static cube_rpc_local *srv;

static void setup(void)
{
    tmpdir = cube_test_tmpdir();
    snprintf(address, sizeof(address), "unix:%s/control.sock", tmpdir);
    cube_err err = {0};
    srv = cube_rpc_local_start(address, echo_methods, NULL, 2, &err);
    ck_assert_msg(srv != NULL, "%s", err.msg);
}

static void teardown(void)
{
    cube_rpc_local_stop(srv);
    srv = NULL;
    rmdir(tmpdir);
    free(tmpdir);
}

static int echo_call(const char *addr, Cubetest__EchoRequest *req, Cubetest__EchoReply **reply,
                     int64_t timeout_ms, cube_err *err)
{
    ProtobufCMessage *resp = NULL;
    int rc = cube_rpc_call_once(addr, ECHO_METHOD, &req->base, &cubetest__echo_reply__descriptor, &resp,
                                timeout_ms, err);
    *reply = (Cubetest__EchoReply *)resp;
    return rc;
}

START_TEST(round_trip_and_size_cap)
{
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.text = "hello";
    size_t n = 60 << 10;
    uint8_t *blob = malloc(n);
    for (size_t i = 0; i < n; i++) blob[i] = (uint8_t)(i * 7);
    req.blob = (ProtobufCBinaryData){n, blob};
    Cubetest__EchoReply *r = NULL;
    cube_err err = {0};
    ck_assert_msg(echo_call(address, &req, &r, 5000, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(r->text, "hello");
    ck_assert_uint_eq(r->blob.len, n);
    ck_assert_int_eq(memcmp(r->blob.data, blob, n), 0);
    /* the handler sees the client's deadline */
    ck_assert_int_gt(r->deadline_left_ms, 0);
    ck_assert_int_le(r->deadline_left_ms, 5000);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* over the cap: a clear error, before anything is sent */
    uint8_t *big = calloc(1, 70 << 10);
    req.blob = (ProtobufCBinaryData){70 << 10, big};
    ck_assert_int_eq(echo_call(address, &req, &r, 5000, &err), -1);
    ck_assert_int_eq(err.code, EMSGSIZE);
    free(big);
    free(blob);
    /* the socket is for root only */
    struct stat st;
    ck_assert_int_eq(stat(address + 5, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
}
END_TEST

START_TEST(errors_keep_their_errno_and_message)
{
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.fail_errno = EBUSY;
    req.fail_message = "sandbox is stopping";
    Cubetest__EchoReply *r = NULL;
    cube_err err = {0};
    ck_assert_int_eq(echo_call(address, &req, &r, 5000, &err), -1);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(err.code, EBUSY);
    ck_assert_str_eq(err.msg, "sandbox is stopping");

    /* an unknown method */
    ProtobufCMessage *resp = NULL;
    ck_assert_int_eq(cube_rpc_call_once(address, "/cube.Nope/Nope", &req.base,
                                        &cubetest__echo_reply__descriptor, &resp, 5000, &err),
                     -1);
    ck_assert_int_eq(err.code, ENOSYS);
    ck_assert_ptr_nonnull(strstr(err.msg, "/cube.Nope/Nope"));

    /* nobody there: refused at once, as gRPC's UNAVAILABLE was */
    char gone[400];
    snprintf(gone, sizeof(gone), "unix:%s/nobody.sock", tmpdir);
    int64_t t0 = cube_now_mono_ms();
    ck_assert_int_eq(echo_call(gone, &req, &r, 5000, &err), -1);
    ck_assert_int_eq(err.code, ECONNREFUSED);
    ck_assert_int_lt(cube_now_mono_ms() - t0, 1000);
    /* not a path */
    ck_assert_int_eq(echo_call("127.0.0.1:80", &req, &r, 5000, &err), -1);
    ck_assert_int_eq(err.code, EINVAL);
}
END_TEST

START_TEST(deadline_then_the_handler_sees_the_hang_up)
{
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.sleep_ms = 3000;
    Cubetest__EchoReply *r = NULL;
    cube_err err = {0};
    int64_t t0 = cube_now_mono_ms();
    ck_assert_int_eq(echo_call(address, &req, &r, 200, &err), -1);
    int64_t took = cube_now_mono_ms() - t0;
    ck_assert_int_eq(err.code, ETIMEDOUT);
    ck_assert_msg(took >= 190 && took < 2000, "took %lld ms", (long long)took);
    /* the worker noticed the client left (the handler checks cube_rpc_cancelled), so both workers serve again
     * long before the 3 s sleep would have ended */
    req.sleep_ms = 0;
    req.text = "after";
    t0 = cube_now_mono_ms();
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(echo_call(address, &req, &r, 2500, &err) == 0, "%s", err.msg);
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    ck_assert_int_lt(cube_now_mono_ms() - t0, 2500);
}
END_TEST

START_TEST(malformed_requests_get_an_answer)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", address + 5);
    const char *bad[] = {"", "\x10\0\0\0", "\x10\0\0\0no-nul", "\x10\0\0\0/cubetest.Echo/Echo\0\xff\xff\xff"};
    const size_t lens[] = {1, 4, 10, 27};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(send(fd, bad[i], lens[i], 0), (ssize_t)lens[i]);
        uint8_t reply[512];
        ssize_t n = recv(fd, reply, sizeof(reply), 0);
        ck_assert_msg(n >= 4, "case %zu: no answer", i);
        ck_assert_int_eq(reply[0], EINVAL);
        close(fd);
    }
    /* a client that connects and says nothing, then goes: the server carries on */
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.text = "still";
    Cubetest__EchoReply *r = NULL;
    cube_err err = {0};
    ck_assert_msg(echo_call(address, &req, &r, 2000, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(r->text, "still");
    protobuf_c_message_free_unpacked(&r->base, NULL);
}
END_TEST

typedef struct slow {
    int rc;
    cube_err err;
} slow;

static void *slow_call(void *arg)
{
    slow *s = arg;
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.sleep_ms = 20000;
    Cubetest__EchoReply *r = NULL;
    s->rc = echo_call(address, &req, &r, 30000, &s->err);
    if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
    return NULL;
}

START_TEST(stop_ends_a_call_in_flight)
{
    slow s = {0};
    pthread_t th;
    pthread_create(&th, NULL, slow_call, &s);
    nanosleep(&(struct timespec){0, 200 * 1000000}, NULL);
    int64_t t0 = cube_now_mono_ms();
    cube_rpc_local_stop(srv);
    srv = NULL;
    pthread_join(th, NULL);
    ck_assert_int_eq(s.rc, -1);
    ck_assert_int_lt(cube_now_mono_ms() - t0, 3000);
    /* the socket went with the server */
    ck_assert_int_ne(access(address + 5, F_OK), 0);
    /* and a new server takes the same path */
    cube_err err = {0};
    srv = cube_rpc_local_start(address, echo_methods, NULL, 1, &err);
    ck_assert_msg(srv != NULL, "%s", err.msg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rpc_local");
    TCase *tc = tcase_create("control socket");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, round_trip_and_size_cap);
    tcase_add_test(tc, errors_keep_their_errno_and_message);
    tcase_add_test(tc, deadline_then_the_handler_sees_the_hang_up);
    tcase_add_test(tc, malformed_requests_get_an_answer);
    tcase_add_test(tc, stop_ends_a_call_in_flight);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
