#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "testutil.h"

static const char *sample = "# cube sample\n"
                            "log_level = debug\n"
                            "[api]\n"
                            "port = 3000\n"
                            "listen = \" 0.0.0.0 \"\n"
                            "[cubelet]\n"
                            "pool_size = 4\n"
                            "auto_pause = yes\n";

START_TEST(file_sections_and_types)
{
    cube_config *cfg = cube_config_new();
    cube_err err = {0};
    ck_assert_msg(cube_config_load_string(cfg, sample, "sample.conf", &err) == 0, "%s", err.msg);
    ck_assert_str_eq(cube_config_get(cfg, "log_level", NULL), "debug");
    ck_assert_str_eq(cube_config_get(cfg, "api.listen", NULL), " 0.0.0.0 ");
    long long n;
    ck_assert_int_eq(cube_config_get_int(cfg, "api.port", 1, 1, 65535, &n, &err), 0);
    ck_assert_int_eq(n, 3000);
    bool b;
    ck_assert_int_eq(cube_config_get_bool(cfg, "cubelet.auto_pause", false, &b, &err), 0);
    ck_assert(b);
    ck_assert_int_eq(cube_config_get_int(cfg, "cubelet.missing", 7, 0, 10, &n, &err), 0);
    ck_assert_int_eq(n, 7);
    ck_assert_str_eq(cube_config_origin(cfg, "api.port"), "sample.conf");
    ck_assert_str_eq(cube_config_origin(cfg, "cubelet.missing"), "default");
    cube_config_free(cfg);
}
END_TEST

START_TEST(precedence_flag_env_file)
{
    cube_config *cfg = cube_config_new();
    cube_err err = {0};
    ck_assert_int_eq(cube_config_load_string(cfg, sample, "sample.conf", &err), 0);
    setenv("CUBE_CUBELET_POOL_SIZE", "9", 1);
    ck_assert_str_eq(cube_config_get(cfg, "cubelet.pool_size", NULL), "9");
    ck_assert_str_eq(cube_config_origin(cfg, "cubelet.pool_size"), "env");
    const cube_config_flag flags[] = {{"pool", "cubelet.pool_size", true, "pool size"}, {0}};
    char *argv[] = {"prog", "--pool", "12", "--api.port=4000", "rest", NULL};
    int first = 0;
    ck_assert_msg(cube_config_parse_args(cfg, 5, argv, flags, &first, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(first, 4);
    ck_assert_str_eq(cube_config_get(cfg, "cubelet.pool_size", NULL), "12");
    ck_assert_str_eq(cube_config_get(cfg, "api.port", NULL), "4000");
    ck_assert_str_eq(cube_config_origin(cfg, "api.port"), "flag");
    unsetenv("CUBE_CUBELET_POOL_SIZE");
    cube_config_free(cfg);
}
END_TEST

START_TEST(config_flag_loads_a_file)
{
    char path[] = "/tmp/cube-config-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, sample, strlen(sample)), (ssize_t)strlen(sample));
    close(fd);
    cube_config *cfg = cube_config_new();
    cube_err err = {0};
    char *argv[] = {"prog", "--config", path, NULL};
    ck_assert_msg(cube_config_parse_args(cfg, 3, argv, NULL, NULL, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(cube_config_get(cfg, "api.port", NULL), "3000");
    ck_assert_str_eq(cube_config_origin(cfg, "api.port"), path);
    unlink(path);
    cube_config_free(cfg);
}
END_TEST

START_TEST(errors_name_the_problem)
{
    cube_config *cfg = cube_config_new();
    cube_err err = {0};
    ck_assert_int_eq(cube_config_load_string(cfg, "[api\nport=1\n", "bad.conf", &err), -1);
    ck_assert_str_eq(err.msg, "bad.conf:1: malformed section header");
    ck_assert_int_eq(cube_config_load_string(cfg, "just words\n", "bad.conf", &err), -1);
    ck_assert_str_eq(err.msg, "bad.conf:1: expected 'key = value'");
    ck_assert_int_eq(cube_config_load_string(cfg, "a b = c\n", "bad.conf", &err), -1);
    ck_assert_int_eq(err.code, EINVAL);

    char *argv[] = {"prog", "--bogus", NULL};
    ck_assert_int_eq(cube_config_parse_args(cfg, 2, argv, NULL, NULL, &err), -1);
    ck_assert_str_eq(err.msg, "unknown flag --bogus");
    char *argv2[] = {"prog", "--api.port", NULL};
    ck_assert_int_eq(cube_config_parse_args(cfg, 2, argv2, NULL, NULL, &err), -1);
    ck_assert_str_eq(err.msg, "flag --api.port needs a value");
    char *argv3[] = {"prog", "--config", "/nonexistent/cube.conf", NULL};
    ck_assert_int_eq(cube_config_parse_args(cfg, 3, argv3, NULL, NULL, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);

    cube_config_set(cfg, "api.port", "30x0", &err);
    long long n;
    ck_assert_int_eq(cube_config_get_int(cfg, "api.port", 3000, 1, 65535, &n, &err), -1);
    ck_assert_str_eq(err.msg, "config api.port = '30x0' (flag): not an integer");
    cube_config_set(cfg, "api.port", "70000", &err);
    ck_assert_int_eq(cube_config_get_int(cfg, "api.port", 3000, 1, 65535, &n, &err), -1);
    ck_assert_int_eq(err.code, ERANGE);
    cube_config_set(cfg, "x.flag", "maybe", &err);
    bool b;
    ck_assert_int_eq(cube_config_get_bool(cfg, "x.flag", false, &b, &err), -1);
    cube_config_free(cfg);
}
END_TEST

START_TEST(switch_flags)
{
    cube_config *cfg = cube_config_new();
    cube_err err = {0};
    const cube_config_flag flags[] = {{"foreground", "daemon.foreground", false, "stay in foreground"}, {0}};
    char *argv[] = {"prog", "--foreground", NULL};
    ck_assert_int_eq(cube_config_parse_args(cfg, 2, argv, flags, NULL, &err), 0);
    bool b = false;
    ck_assert_int_eq(cube_config_get_bool(cfg, "daemon.foreground", false, &b, &err), 0);
    ck_assert(b);
    char *argv2[] = {"prog", "--foreground=1", NULL};
    ck_assert_int_eq(cube_config_parse_args(cfg, 2, argv2, flags, NULL, &err), -1);
    cube_config_free(cfg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, file_sections_and_types);
    tcase_add_test(tc, precedence_flag_env_file);
    tcase_add_test(tc, config_flag_loads_a_file);
    tcase_add_test(tc, errors_name_the_problem);
    tcase_add_test(tc, switch_flags);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
