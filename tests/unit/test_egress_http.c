/* The egress proxy's request rewriter (cube-net/egress_http.c) on its own: what a header rule makes of the
 * requests of one connection, and the ambiguous ones it refuses. Pure: no namespace, no BPF (test_net drives
 * the proxy for real). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egress_http.h"
#include "testutil.h"

/* what the rewriter makes of a stream fed in one piece: the status, the bytes that go upstream in out */
static int rewrite(const char *in, char *out, size_t cap)
{
    static const char *const names[] = {"Authorization"}, *const values[] = {"Bearer v"};
    cn_http_rw *rw = malloc(sizeof(*rw));
    cn_http_rw_init(rw, "api.test", 1, names, values);
    cn_buf b = {0};
    int st = cn_http_rw_feed(rw, (const uint8_t *)in, strlen(in), &b);
    snprintf(out, cap, "%.*s", (int)b.len, b.data ? (char *)b.data : "");
    cn_buf_free(&b);
    free(rw);
    return st;
}

START_TEST(header_rules_rewrite_requests_and_refuse_ambiguity)
{
    char out[2048];
    ck_assert_int_eq(rewrite("GET / HTTP/1.1\r\nHost: api.test\r\nauthorization: mine\r\nAccept: */*\r\n\r\n",
                             out, sizeof(out)),
                     0);
    ck_assert_str_eq(out,
                     "GET / HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\nAuthorization: Bearer v\r\n\r\n");
    /* chunked bodies are passed by their framing: the next request's head is rewritten too */
    ck_assert_int_eq(
        rewrite("POST / HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                "GET /2 HTTP/1.1\r\nHost: api.test\r\n\r\n",
                out, sizeof(out)),
        0);
    ck_assert_ptr_nonnull(strstr(strstr(out, "GET /2"), "Authorization: Bearer v"));
    /* a body that only looks like a request is not one */
    ck_assert_int_eq(rewrite("POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 35\r\n\r\nGET / "
                             "HTTP/1.1\r\nHost: evil.test\r\n\r\n",
                             out, sizeof(out)),
                     0);
    ck_assert_ptr_null(strstr(strstr(out, "evil.test"), "Authorization"));
    /* what a smuggler or a fronting client would need: refused */
    ck_assert_int_eq(rewrite("GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n", out, sizeof(out)), 421);
    ck_assert_int_eq(rewrite("GET / HTTP/1.1\r\n\r\n", out, sizeof(out)), 421);
    ck_assert_int_eq(rewrite("GET / HTTP/1.1\r\nHost: api.test\r\nHost: evil.test\r\n\r\n", out, sizeof(out)),
                     400);
    ck_assert_int_eq(
        rewrite(
            "POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            out, sizeof(out)),
        400);
    ck_assert_int_eq(rewrite("GET / HTTP/1.1\r\nHost: api.test\r\nX: a\r\n b\r\n\r\n", out, sizeof(out)),
                     400);
    ck_assert_int_eq(rewrite("GET / HTTP/1.1\r\nHost : api.test\r\n\r\n", out, sizeof(out)), 400);
    ck_assert_int_eq(rewrite("GET / HTTP/2.0\r\nHost: api.test\r\n\r\n", out, sizeof(out)), 400);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("egress_http");
    TCase *tc = tcase_create("rewriter");
    tcase_add_test(tc, header_rules_rewrite_requests_and_refuse_ambiguity);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
