#include <errno.h>
#include <string.h>

#include "err.h"
#include "testutil.h"

START_TEST(set_and_prefix_build_the_chain)
{
    cube_err err = {0};
    ck_assert_int_eq(cube_err_set(&err, ENOENT, "template %s", "base"), -1);
    ck_assert_int_eq(err.code, ENOENT);
    cube_err_prefix(&err, "create sandbox %s", "iabc");
    ck_assert_str_eq(err.msg, "create sandbox iabc: template base");
    ck_assert_int_eq(err.code, ENOENT);
}
END_TEST

START_TEST(sys_appends_strerror)
{
    cube_err err = {0};
    cube_err_sys(&err, EPERM, "mount overlay");
    ck_assert_str_eq(err.msg, "mount overlay: Operation not permitted");
    ck_assert_str_eq(cube_errno_name(err.code), "EPERM");
}
END_TEST

START_TEST(null_err_is_allowed_and_zero_code_becomes_eio)
{
    ck_assert_int_eq(cube_err_set(NULL, EINVAL, "ignored"), -1);
    cube_err err = {0};
    cube_err_set(&err, 0, "no code given");
    ck_assert_int_eq(err.code, EIO);
    cube_err_clear(&err);
    ck_assert_int_eq(err.code, 0);
    ck_assert_str_eq(err.msg, "");
}
END_TEST

START_TEST(long_messages_truncate_safely)
{
    cube_err err = {0};
    char big[4000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    cube_err_set(&err, EIO, "%s", big);
    ck_assert_uint_eq(strlen(err.msg), CUBE_ERR_MSG_MAX - 1);
    cube_err_prefix(&err, "outer");
    ck_assert_uint_eq(strlen(err.msg), CUBE_ERR_MSG_MAX - 1);
    ck_assert(strncmp(err.msg, "outer: ", 7) == 0);
}
END_TEST

START_TEST(http_status_mapping)
{
    cube_err err = {.code = ENOENT};
    ck_assert_int_eq(cube_err_http_status(&err), 404);
    err.code = EINVAL;
    ck_assert_int_eq(cube_err_http_status(&err), 400);
    err.code = EEXIST;
    ck_assert_int_eq(cube_err_http_status(&err), 409);
    err.code = EKEYREJECTED;
    ck_assert_int_eq(cube_err_http_status(&err), 401);
    err.code = EIO;
    ck_assert_int_eq(cube_err_http_status(&err), 500);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("err");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, set_and_prefix_build_the_chain);
    tcase_add_test(tc, sys_appends_strerror);
    tcase_add_test(tc, null_err_is_allowed_and_zero_code_becomes_eio);
    tcase_add_test(tc, long_messages_truncate_safely);
    tcase_add_test(tc, http_status_mapping);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
