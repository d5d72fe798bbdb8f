#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

static long long file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

/* Writes ~2.5 MiB of lines to a stderr that is the file p, with CUBE_LOG_MAX_MB as given (NULL: unset). */
static void log_lots(const char *p, const char *cap)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(dup2(fd, 2), 2);
    close(fd);
    if (cap)
        setenv("CUBE_LOG_MAX_MB", cap, 1);
    else
        unsetenv("CUBE_LOG_MAX_MB");
    cube_log_init("cube-test", CUBE_LOG_INFO);
    char pad[201];
    memset(pad, 'x', 200);
    pad[200] = '\0';
    for (int i = 0; i < 10000; i++) cube_log_info("line", "n=%d pad=%s", i, pad);
    cube_log_info("the last line", NULL);
}

/* A service's log file stays under CUBE_LOG_MAX_MB: the full one becomes .1, the newest lines are in the file
 * of that name; unset, the file grows as before. */
START_TEST(a_log_file_is_kept_under_its_cap)
{
    char *dir = cube_test_tmpdir(), p[512], old[520];
    snprintf(p, sizeof(p), "%s/svc.log", dir);
    snprintf(old, sizeof(old), "%s.1", p);
    log_lots(p, "1");
    ck_assert_int_le(file_size(p), 2 << 20);
    ck_assert_int_ge(file_size(old), 1 << 20);
    ck_assert_int_le(file_size(old), 3 << 20);
    char tail[512] = {0};
    FILE *f = fopen(p, "r");
    ck_assert_ptr_nonnull(f);
    fseek(f, -200, SEEK_END);
    ck_assert_uint_gt(fread(tail, 1, sizeof(tail) - 1, f), 0);
    fclose(f);
    ck_assert_msg(strstr(tail, "msg=\"the last line\""), "the file ends with '%s'", tail);
    unlink(p);
    unlink(old);
    log_lots(p, NULL);
    ck_assert_int_gt(file_size(p), 2 << 20);
    ck_assert_int_eq(file_size(old), -1);
    unlink(p);
    rmdir(dir);
    free(dir);
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
    tcase_add_test(tc, a_log_file_is_kept_under_its_cap);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
