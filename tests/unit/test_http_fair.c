/* The HTTP servers' handler queue (lib/http.c, event-driven mode) takes turns by the caller's key: with one
 * handler thread busy and a burst of one key's requests waiting, another key's request is handled next, not
 * after the burst (without turns it waits behind it). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "testutil.h"

static pthread_mutex_t order_lock = PTHREAD_MUTEX_INITIALIZER;
static char order[64][16]; /* the X-Id of each request, in the order handled */
static int norder;

static void slow(void *svc, http_req *req)
{
    (void)svc;
    const char *id = http_header(req, "X-Id");
    pthread_mutex_lock(&order_lock);
    if (norder < 64) snprintf(order[norder++], sizeof(order[0]), "%s", id ? id : "?");
    pthread_mutex_unlock(&order_lock);
    nanosleep(&(struct timespec){0, 400000000}, NULL);
    http_reply_empty(req, 204);
}

static const http_route routes[] = {{"GET", "/slow", slow, NULL}, {0}};

static int send_request(int port, const char *key, const char *id)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char head[256];
    int n = snprintf(head, sizeof(head), "GET /slow HTTP/1.1\r\nHost: t\r\nX-Key: %s\r\nX-Id: %s\r\n\r\n",
                     key, id);
    ck_assert_int_eq(write(fd, head, (size_t)n), n);
    return fd;
}

static void wait_answer(int fd)
{
    char buf[512];
    ck_assert_int_gt(read(fd, buf, sizeof(buf)), 0);
    close(fd);
}

static int position(const char *id)
{
    for (int i = 0; i < norder; i++)
        if (strcmp(order[i], id) == 0) return i;
    return -1;
}

static void run(bool fair, int *pos_other, int *pos_last_a)
{
    norder = 0;
    http_server_opts o = {.workers = 1, .idle_timeout_s = 10, .fair_header = fair ? "X-Key" : NULL};
    cube_err err = {0};
    http_server *s = http_server_start_opts("127.0.0.1", 0, routes, NULL, &o, &err);
    ck_assert_msg(s != NULL, "%s", err.msg);
    int port = http_server_port(s), fds[9];
    char id[16];
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof(id), "a%d", i);
        fds[i] = send_request(port, "burst", id);
    }
    /* the burst waits: a0 runs (400 ms), a1..a7 are in line */
    nanosleep(&(struct timespec){0, 200000000}, NULL);
    fds[8] = send_request(port, "other", "b");
    for (int i = 0; i < 9; i++) wait_answer(fds[i]);
    http_server_stop(s);
    *pos_other = position("b");
    *pos_last_a = position("a7");
}

START_TEST(another_keys_request_waits_a_turn_not_a_burst)
{
    int b, a7;
    run(true, &b, &a7);
    ck_assert_msg(b == 1, "the other key's request was handled %d-th", b + 1);
    ck_assert_int_ge(a7, 2); /* the burst went on after it */
    /* one line in arrival order when the server takes no turns: behind the burst's requests in line before
     * it (all of them here, unless a busy machine was slow to read some of them) */
    run(false, &b, &a7);
    ck_assert_msg(b > 1, "without turns the other key's request was handled %d-th", b + 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http_fair");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, another_keys_request_waits_a_turn_not_a_burst);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
