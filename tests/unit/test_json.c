#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "testutil.h"

START_TEST(typed_access)
{
    const char *s = "{\"templateID\":\"base\",\"timeout\":300,\"autoPause\":true,\"metadata\":{\"a\":\"b\"},"
                    "\"nothing\":null}";
    cube_err err = {0};
    cJSON *o = cube_json_parse(s, strlen(s), &err);
    ck_assert_msg(o != NULL, "%s", err.msg);
    const char *t = NULL;
    ck_assert_int_eq(cube_json_get_string(o, "templateID", true, &t, &err), 0);
    ck_assert_str_eq(t, "base");
    int64_t n = 0;
    ck_assert_int_eq(cube_json_get_int(o, "timeout", false, 0, 86400, &n, &err), 0);
    ck_assert_int_eq(n, 300);
    bool b = false;
    ck_assert_int_eq(cube_json_get_bool(o, "autoPause", false, &b, &err), 0);
    ck_assert(b);
    const cJSON *md;
    ck_assert_int_eq(cube_json_get_object(o, "metadata", false, &md, &err), 0);
    ck_assert_int_eq(cube_json_check_string_map(md, "metadata", &err), 0);
    const char *absent = "default";
    ck_assert_int_eq(cube_json_get_string(o, "nothing", false, &absent, &err), 0);
    ck_assert_str_eq(absent, "default");
    cJSON_Delete(o);
}
END_TEST

START_TEST(type_errors_name_the_field)
{
    const char *s = "{\"timeout\":\"300\",\"n\":1.5,\"big\":1e12,\"metadata\":{\"a\":1}}";
    cube_err err = {0};
    cJSON *o = cube_json_parse(s, strlen(s), &err);
    int64_t n;
    ck_assert_int_eq(cube_json_get_int(o, "timeout", false, 0, 100, &n, &err), -1);
    ck_assert_str_eq(err.msg, "field 'timeout' must be a number");
    ck_assert_int_eq(cube_json_get_int(o, "n", false, 0, 100, &n, &err), -1);
    ck_assert_str_eq(err.msg, "field 'n' must be an integer");
    ck_assert_int_eq(cube_json_get_int(o, "big", false, 0, 100, &n, &err), -1);
    ck_assert_int_eq(err.code, EINVAL);
    const char *t;
    ck_assert_int_eq(cube_json_get_string(o, "templateID", true, &t, &err), -1);
    ck_assert_str_eq(err.msg, "missing required field 'templateID'");
    const cJSON *md;
    cube_json_get_object(o, "metadata", false, &md, &err);
    ck_assert_int_eq(cube_json_check_string_map(md, "metadata", &err), -1);
    ck_assert_str_eq(err.msg, "field 'metadata.a' must be a string");
    cJSON_Delete(o);
}
END_TEST

START_TEST(malformed_input)
{
    cube_err err = {0};
    const char *cases[] = {"{", "{\"a\":}", "[1,2", "nul", "{} trailing", "\"unterminated"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_ptr_null(cube_json_parse(cases[i], strlen(cases[i]), &err));
        ck_assert_int_eq(err.code, EBADMSG);
    }
    ck_assert_ptr_null(cube_json_parse("", 0, &err));
    /* length is honoured: bytes past len are not read */
    const char *s = "{\"a\":1}garbage";
    cJSON *o = cube_json_parse(s, 7, &err);
    ck_assert_ptr_nonnull(o);
    cJSON_Delete(o);
    /* deep nesting is refused, not a stack overflow */
    size_t depth = 100000;
    char *deep = malloc(depth + 1);
    memset(deep, '[', depth);
    deep[depth] = 0;
    ck_assert_ptr_null(cube_json_parse(deep, depth, &err));
    free(deep);
}
END_TEST

START_TEST(error_body)
{
    char *s = cube_json_error_body(404, "sandbox \"x\" not found");
    ck_assert_str_eq(s, "{\"code\":404,\"message\":\"sandbox \\\"x\\\" not found\"}");
    free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, typed_access);
    tcase_add_test(tc, type_errors_name_the_field);
    tcase_add_test(tc, malformed_input);
    tcase_add_test(tc, error_body);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
