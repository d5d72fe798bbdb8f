#include "testutil.h"
#include "timeutil.h"

START_TEST(format_and_parse_round_trip)
{
    char s[CUBE_RFC3339_MAX];
    cube_rfc3339_format(1795380163123LL, s);
    ck_assert_str_eq(s, "2026-11-22T20:42:43.123Z");
    cube_err err = {0};
    int64_t ms;
    ck_assert_int_eq(cube_rfc3339_parse(s, &ms, &err), 0);
    ck_assert_int_eq(ms, 1795380163123LL);
    ck_assert_int_eq(cube_rfc3339_parse("2026-11-22T21:42:43+01:00", &ms, &err), 0);
    ck_assert_int_eq(ms, 1795380163000LL);
    ck_assert_int_eq(cube_rfc3339_parse("2026-11-22T20:42:43.5Z", &ms, &err), 0);
    ck_assert_int_eq(ms, 1795380163500LL);
    cube_rfc3339_format(0, s);
    ck_assert_str_eq(s, "1970-01-01T00:00:00.000Z");
}
END_TEST

START_TEST(parse_rejects_garbage)
{
    cube_err err = {0};
    int64_t ms;
    const char *bad[] = {"",
                         "2026",
                         "2026-13-01T00:00:00Z",
                         "2026-11-22T20:42:43",
                         "2026-11-22T20:42:43.Z",
                         "2026-11-22T25:00:00Z",
                         "2026-11-22T20:42:43Zjunk",
                         "yesterday"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(cube_rfc3339_parse(bad[i], &ms, &err) == -1, "accepted '%s'", bad[i]);
}
END_TEST

START_TEST(monotonic_moves_forward)
{
    int64_t a = cube_now_mono_ns(), b = cube_now_mono_ns();
    ck_assert_int_le(a, b);
    ck_assert_int_gt(cube_now_unix_ms(), 1700000000000LL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("timeutil");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, format_and_parse_round_trip);
    tcase_add_test(tc, parse_rejects_garbage);
    tcase_add_test(tc, monotonic_moves_forward);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
