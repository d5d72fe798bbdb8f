#include <stdlib.h>
#include <string.h>

#include "id.h"
#include "testutil.h"

START_TEST(sandbox_ids_have_e2b_shape)
{
    cube_err err = {0};
    char id[CUBE_ID_LEN + 1];
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(cube_sandbox_id_new(id, &err), 0);
        ck_assert_uint_eq(strlen(id), 21);
        ck_assert_msg(cube_sandbox_id_valid(id), "%s", id);
    }
}
END_TEST

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

START_TEST(ids_are_distinct_and_use_all_symbols)
{
    cube_err err = {0};
    enum { N = 2000 };
    static char ids[N][CUBE_ID_LEN + 1];
    int seen[128] = {0};
    for (int i = 0; i < N; i++) {
        cube_sandbox_id_new(ids[i], &err);
        for (int j = 1; j < CUBE_ID_LEN; j++) seen[(int)ids[i][j]]++;
    }
    qsort(ids, N, sizeof(ids[0]), cmp_id);
    for (int i = 1; i < N; i++) ck_assert_str_ne(ids[i - 1], ids[i]);
    for (const char *p = "abcdefghijklmnopqrstuvwxyz0123456789"; *p; p++) ck_assert_int_gt(seen[(int)*p], 0);
}
END_TEST

START_TEST(validation_rejects_bad_ids)
{
    ck_assert(!cube_sandbox_id_valid(NULL));
    ck_assert(!cube_sandbox_id_valid(""));
    ck_assert(!cube_sandbox_id_valid("iabc"));
    ck_assert(!cube_sandbox_id_valid("xaaaaaaaaaaaaaaaaaaaa"));
    ck_assert(!cube_sandbox_id_valid("iAAAAAAAAAAAAAAAAAAAA"));
    ck_assert(!cube_sandbox_id_valid("i../../../etc/passwd0"));
    ck_assert(cube_sandbox_id_valid("i0123456789abcdefghij"));
}
END_TEST

/* template names and tags: what E2B takes, and nothing that could leave a directory or look like a flag */
START_TEST(template_names_are_path_safe)
{
    const char *good[] = {"base", "code-interpreter-v1", "app.v2", "my_tpl", "0", NULL};
    const char *bad[] = {"", "-x", ".hidden", "..", "a/b", "a:b", "Upper", "sp ace", NULL};
    for (int i = 0; good[i]; i++) ck_assert_msg(cube_template_name_valid(good[i]), "'%s' refused", good[i]);
    for (int i = 0; bad[i]; i++) ck_assert_msg(!cube_template_name_valid(bad[i]), "'%s' taken", bad[i]);
    ck_assert(!cube_template_name_valid(NULL));
    char long_name[70];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    ck_assert(!cube_template_name_valid(long_name));
    long_name[63] = '\0';
    ck_assert(cube_template_name_valid(long_name));
}
END_TEST

START_TEST(tokens_are_hex)
{
    cube_err err = {0};
    char tok[65];
    ck_assert_int_eq(cube_token_hex(tok, 32, &err), 0);
    ck_assert_uint_eq(strlen(tok), 64);
    ck_assert_uint_eq(strspn(tok, "0123456789abcdef"), 64);
    char big[300];
    ck_assert_int_eq(cube_token_hex(big, 129, &err), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("id");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, sandbox_ids_have_e2b_shape);
    tcase_add_test(tc, ids_are_distinct_and_use_all_symbols);
    tcase_add_test(tc, validation_rejects_bad_ids);
    tcase_add_test(tc, tokens_are_hex);
    tcase_add_test(tc, template_names_are_path_safe);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
