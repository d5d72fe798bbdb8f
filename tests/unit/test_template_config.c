/* A template's config.json, read and written in one place: what is written reads back the same, unset fields
 * stay unset (and are not written), sizes out of range are kept for the loader to refuse, a write leaves no
 * half file, and what is not a config is said. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "template_config.h"
#include "testutil.h"

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "we");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

START_TEST(what_is_written_reads_back)
{
    char *dir = cube_test_tmpdir(), p[600];
    snprintf(p, sizeof(p), "%s/config.json", dir);
    cube_tpl_config c;
    cube_tpl_config_init(&c);
    snprintf(c.name, sizeof(c.name), "my-app");
    snprintf(c.id, sizeof(c.id), "b1");
    snprintf(c.from_template, sizeof(c.from_template), "base");
    snprintf(c.layers, sizeof(c.layers), "/l/2:/l/1");
    snprintf(c.user, sizeof(c.user), "guest");
    c.env_json = strdup("{\"A\":\"1\",\"B\":\"two words\"}");
    c.cmd_json = strdup("[\"python3\",\"-m\",\"http.server\"]");
    c.uid_base = 100000;
    c.cpu = 4;
    c.memory_mb = 2048;
    c.start_cmd = strdup("python3 -m http.server 8000");
    c.ready_cmd = strdup("curl -sf localhost:8000");
    c.created_at_ms = 1764892800123;
    cube_err err = {0};
    ck_assert_msg(cube_tpl_config_write(p, &c, &err) == 0, "%s", err.msg);
    cube_tpl_config r;
    ck_assert_msg(cube_tpl_config_read(p, &r, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(r.name, "my-app");
    ck_assert_str_eq(r.id, "b1");
    ck_assert_str_eq(r.from_template, "base");
    ck_assert_str_eq(r.layers, "/l/2:/l/1");
    ck_assert_str_eq(r.user, "guest");
    ck_assert_str_eq(r.workdir, ""); /* unset stays unset */
    ck_assert_str_eq(r.rootfs, "");
    ck_assert_str_eq(r.env_json, "{\"A\":\"1\",\"B\":\"two words\"}");
    ck_assert_str_eq(r.cmd_json, "[\"python3\",\"-m\",\"http.server\"]");
    ck_assert_uint_eq(r.uid_base, 100000);
    ck_assert_int_eq(r.cpu, 4);
    ck_assert_int_eq(r.memory_mb, 2048);
    ck_assert_int_eq(r.disk_mb, 0);
    ck_assert_int_eq(r.pool, -1);
    ck_assert_str_eq(r.start_cmd, "python3 -m http.server 8000");
    ck_assert_str_eq(r.ready_cmd, "curl -sf localhost:8000");
    ck_assert_int_eq(r.created_at_ms, 1764892800123);
    cube_tpl_config_free(&r);
    /* a ready command without a start command means nothing, and is not written */
    free(c.start_cmd);
    c.start_cmd = NULL;
    c.pool = 0;
    ck_assert_int_eq(cube_tpl_config_write(p, &c, &err), 0);
    ck_assert_int_eq(cube_tpl_config_read(p, &r, &err), 0);
    ck_assert_ptr_null(r.start_cmd);
    ck_assert_ptr_null(r.ready_cmd);
    ck_assert_int_eq(r.pool, 0);
    cube_tpl_config_free(&r);
    cube_tpl_config_free(&c);
    /* nothing beside it is left from the write */
    char ls[700];
    snprintf(ls, sizeof(ls), "test $(ls %s | wc -l) = 1", dir);
    ck_assert_int_eq(system(ls), 0);
    cube_rm_rf(dir);
    free(dir);
}
END_TEST

START_TEST(what_is_not_a_config_is_said)
{
    char *dir = cube_test_tmpdir(), p[600];
    snprintf(p, sizeof(p), "%s/config.json", dir);
    cube_tpl_config r;
    cube_err err = {0};
    ck_assert_int_eq(cube_tpl_config_read(p, &r, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    write_text(p, "[1, 2]");
    ck_assert_int_eq(cube_tpl_config_read(p, &r, &err), -1);
    ck_assert_int_eq(err.code, EBADMSG);
    /* wrong types stay unset; sizes out of any range are kept for the loader to refuse */
    write_text(p, "{\"name\": 7, \"user\": \"u\", \"env\": [\"A=1\"], \"cpu\": 0.5, \"memoryMB\": -3, "
                  "\"diskMB\": 1e300, \"pool\": \"many\", \"readyCmd\": \"true\"}");
    ck_assert_int_eq(cube_tpl_config_read(p, &r, &err), 0);
    ck_assert_str_eq(r.name, "");
    ck_assert_str_eq(r.user, "u");
    ck_assert_ptr_null(r.env_json);
    ck_assert_int_eq(r.cpu, 0);
    ck_assert_int_eq(r.memory_mb, -3);
    ck_assert_int_eq(r.disk_mb, INT64_MAX);
    ck_assert_int_eq(r.pool, -1);
    ck_assert_ptr_null(r.ready_cmd);
    cube_tpl_config_free(&r);
    cube_rm_rf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("template_config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, what_is_written_reads_back);
    tcase_add_test(tc, what_is_not_a_config_is_said);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
