#include <stdio.h>
#include <string.h>

#include "log.h"
#include "testutil.h"

static char buf[8192];
static FILE *mem;

static void capture(void)
{
    memset(buf, 0, sizeof(buf));
    mem = fmemopen(buf, sizeof(buf), "w");
    cube_log_set_stream(mem);
}

static void release(void)
{
    cube_log_set_stream(NULL);
    fclose(mem);
}

START_TEST(structured_line)
{
    cube_log_init("cube-test", CUBE_LOG_INFO);
    capture();
    cube_log_info("sandbox created", "id=%s ms=%d", "iabc", 4);
    release();
    ck_assert_msg(strncmp(buf, "ts=", 3) == 0, "%s", buf);
    ck_assert_msg(strstr(buf, " level=info svc=cube-test msg=\"sandbox created\" id=iabc ms=4\n") != NULL,
                  "%s", buf);
}
END_TEST

START_TEST(threshold_filters)
{
    cube_log_init("cube-test", CUBE_LOG_WARN);
    capture();
    cube_log_info("hidden", NULL);
    cube_log_warn("shown", NULL);
    release();
    ck_assert_ptr_null(strstr(buf, "hidden"));
    ck_assert_ptr_nonnull(strstr(buf, "msg=shown"));
}
END_TEST

START_TEST(values_are_escaped_to_one_line)
{
    cube_log_init("cube-test", CUBE_LOG_DEBUG);
    capture();
    cube_log_debug("line one\nline \"two\"", NULL);
    release();
    ck_assert_msg(strstr(buf, "msg=\"line one\\nline \\\"two\\\"\"\n") != NULL, "%s", buf);
    ck_assert_ptr_eq(strchr(buf, '\n'), buf + strlen(buf) - 1);
}
END_TEST

START_TEST(overlong_line_is_truncated_not_split)
{
    cube_log_init("cube-test", CUBE_LOG_DEBUG);
    capture();
    char big[6000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    cube_log_info("big", "v=%s", big);
    release();
    ck_assert_ptr_eq(strchr(buf, '\n'), buf + strlen(buf) - 1);
}
END_TEST

START_TEST(level_names_parse)
{
    ck_assert_int_eq(cube_log_level_parse("debug"), CUBE_LOG_DEBUG);
    ck_assert_int_eq(cube_log_level_parse("WARNING"), CUBE_LOG_WARN);
    ck_assert_int_eq(cube_log_level_parse("loud"), -1);
    ck_assert_int_eq(cube_log_level_parse(NULL), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, structured_line);
    tcase_add_test(tc, threshold_filters);
    tcase_add_test(tc, values_are_escaped_to_one_line);
    tcase_add_test(tc, overlong_line_is_truncated_not_split);
    tcase_add_test(tc, level_names_parse);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
