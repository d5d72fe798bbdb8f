/* When a short HTTP answer from a sandbox's agent has all come (lib/netns.h): its head, and the body its
 * status and Content-Length say. */
#include <string.h>

#include "netns.h"
#include "testutil.h"

static int complete(const char *s)
{
    return cube_http_answer_complete(s, strlen(s));
}

START_TEST(no_body_statuses)
{
    ck_assert_int_eq(complete("HTTP/1.1 204 No Content\r\nX-Envd-Version: 0.2.0\r\n\r\n"), 1);
    ck_assert_int_eq(complete("HTTP/1.0 304 Not Modified\r\n\r\n"), 1);
    ck_assert_int_eq(complete("HTTP/1.1 101 Switching\r\n\r\n"), 1);
    ck_assert_int_eq(complete("HTTP/1.1 204 No Content\r\nX-Envd-Version: 0.2.0\r\n"),
                     0); /* head not ended */
    ck_assert_int_eq(complete("HTTP/1.1 204"), 0);
    ck_assert_int_eq(complete(""), 0);
}
END_TEST

START_TEST(content_length)
{
    ck_assert_int_eq(complete("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), 1);
    ck_assert_int_eq(complete("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhell"), 0);
    ck_assert_int_eq(complete("HTTP/1.1 400 Bad\r\ncontent-length:2\r\n\r\n{}"), 1); /* any case, no space */
    ck_assert_int_eq(complete("HTTP/1.1 200 OK\r\nX-A: 1\r\nCONTENT-LENGTH: 0\r\n\r\n"), 1);
    ck_assert_int_eq(complete("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nx"), 0);
}
END_TEST

START_TEST(read_to_the_close)
{
    /* no length, a length that is not a number, chunked, or not HTTP at all: the close ends it */
    ck_assert_int_eq(complete("HTTP/1.1 200 OK\r\n\r\nsome body"), 0);
    ck_assert_int_eq(complete("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"), 0);
    ck_assert_int_eq(complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 0);
    ck_assert_int_eq(complete("HTTP/1.1 2x4 OK\r\n\r\n"), 0);
    ck_assert_int_eq(complete("SSH-2.0-x\r\n\r\n"), 0);
    ck_assert_int_eq(complete("HTTP/1.1 200 OK\r\nX-Content-Length: 0\r\n\r\n"), 0); /* not that header */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http_answer");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, no_body_statuses);
    tcase_add_test(tc, content_length);
    tcase_add_test(tc, read_to_the_close);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
