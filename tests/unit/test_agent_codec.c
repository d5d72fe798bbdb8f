/* cube-agent's wire pieces: Connect envelopes, error vocabulary, base64, /files signatures. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "connect.h"
#include "file_signature.h"
#include "testutil.h"

START_TEST(envelope_round_trip)
{
    size_t len;
    unsigned char *env = connect_envelope(0, "{\"a\":1}", 7, &len);
    ck_assert_uint_eq(len, 12);
    ck_assert_int_eq(env[0], 0);
    ck_assert_int_eq(env[4], 7);
    uint8_t flags;
    const unsigned char *payload;
    size_t plen;
    const char *why;
    ck_assert_int_eq(connect_envelope_parse(env, len, &flags, &payload, &plen, &why), 0);
    ck_assert_uint_eq(plen, 7);
    ck_assert_int_eq(memcmp(payload, "{\"a\":1}", 7), 0);
    free(env);
    env = connect_envelope(CONNECT_FLAG_END, "{}", 2, &len);
    ck_assert_int_eq(env[0], 2);
    free(env);
}
END_TEST

START_TEST(envelope_malformed)
{
    uint8_t flags;
    const unsigned char *payload;
    size_t plen;
    const char *why;
    const unsigned char short_hdr[] = {0, 0, 0};
    ck_assert_int_eq(connect_envelope_parse(short_hdr, sizeof(short_hdr), &flags, &payload, &plen, &why), -1);
    ck_assert_str_eq(why, "truncated envelope header");
    const unsigned char truncated[] = {0, 0, 0, 0, 10, '{', '}'};
    ck_assert_int_eq(connect_envelope_parse(truncated, sizeof(truncated), &flags, &payload, &plen, &why), -1);
    ck_assert_str_eq(why, "truncated envelope");
    const unsigned char huge[] = {0, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    ck_assert_int_eq(connect_envelope_parse(huge, sizeof(huge), &flags, &payload, &plen, &why), -1);
    ck_assert_str_eq(why, "envelope length exceeds the 4 MiB limit");
    const unsigned char trailing[] = {0, 0, 0, 0, 2, '{', '}', 'x'};
    ck_assert_int_eq(connect_envelope_parse(trailing, sizeof(trailing), &flags, &payload, &plen, &why), -1);
    const unsigned char compressed[] = {1, 0, 0, 0, 2, '{', '}'};
    ck_assert_int_eq(connect_envelope_parse(compressed, sizeof(compressed), &flags, &payload, &plen, &why),
                     -1);
}
END_TEST

START_TEST(error_vocabulary)
{
    ck_assert_str_eq(connect_code_name(connect_code_from_errno(ENOENT)), "not_found");
    ck_assert_int_eq(connect_code_http_status(CONNECT_NOT_FOUND), 404);
    ck_assert_int_eq(connect_code_http_status(CONNECT_UNAUTHENTICATED), 401);
    ck_assert_str_eq(connect_code_name(connect_code_from_errno(EEXIST)), "already_exists");
    char *s = connect_error_json(CONNECT_INVALID_ARGUMENT, "bad \"cwd\"");
    ck_assert_str_eq(s, "{\"code\":\"invalid_argument\",\"message\":\"bad \\\"cwd\\\"\"}");
    free(s);
    s = connect_end_stream_json(CONNECT_OK, NULL);
    ck_assert_str_eq(s, "{}");
    free(s);
    s = connect_end_stream_json(CONNECT_NOT_FOUND, "gone");
    ck_assert_str_eq(s, "{\"error\":{\"code\":\"not_found\",\"message\":\"gone\"}}");
    free(s);
}
END_TEST

START_TEST(base64)
{
    char *e = b64_encode((const unsigned char *)"hi\n", 3);
    ck_assert_str_eq(e, "aGkK");
    free(e);
    size_t n;
    unsigned char *d = b64_decode("aGVsbG8", &n); /* unpadded */
    ck_assert_uint_eq(n, 5);
    ck_assert_int_eq(memcmp(d, "hello", 5), 0);
    free(d);
    d = b64_decode("ZXJyCg==", &n);
    ck_assert_uint_eq(n, 4);
    free(d);
    d = b64_decode("-_8", &n); /* url-safe alphabet */
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(d[0], 0xfb);
    ck_assert_int_eq(d[1], 0xff);
    free(d);
    ck_assert_ptr_null(b64_decode("!!!!", &n));
}
END_TEST

START_TEST(files_signature_matches_the_sdk)
{
    /* "v1_" + base64(sha256("/home/user/a.txt:read:user:tok")) computed independently with node's crypto */
    char sig[128];
    ck_assert_int_eq(cube_file_signature("/home/user/a.txt", "read", "user", "tok", NULL, sig, sizeof(sig)),
                     0);
    ck_assert_str_eq(sig, "v1_p0WqJQYCLtO6YX+e4h7VbpybRsdJbMbIw7clYpulIJk");
    ck_assert_int_eq(
        cube_file_signature("/home/user/a.txt", "read", "user", "tok", "1795380163", sig, sizeof(sig)), 0);
    ck_assert_str_eq(sig, "v1_UXQ9LhyEOLNskJDyi6zOEKAahlF975bJrO7dy/RfD1E");
    ck_assert_ptr_null(strchr(sig, '='));
    ck_assert(cube_file_signature_ok(sig, "/home/user/a.txt", "read", "user", "tok", "1795380163"));
    ck_assert(!cube_file_signature_ok(sig, "/home/user/a.txt", "write", "user", "tok", "1795380163"));
    ck_assert(!cube_file_signature_ok(sig, "/home/user/a.txt", "read", "user", "tok", NULL));
    ck_assert(!cube_file_signature_ok(sig, "/home/user/a.txt", "read", "user", "", "1795380163"));
    ck_assert(!cube_file_signature_ok("v1_UXQ9", "/home/user/a.txt", "read", "user", "tok", "1795380163"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("agent_codec");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, envelope_round_trip);
    tcase_add_test(tc, envelope_malformed);
    tcase_add_test(tc, error_vocabulary);
    tcase_add_test(tc, base64);
    tcase_add_test(tc, files_signature_matches_the_sdk);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
