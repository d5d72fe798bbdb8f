/* cube-agent's users and groups, read from passwd and group files as envd reads them (users.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "users.h"

static char *dir, passwd[256], group[256];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
}

static void setup(void)
{
    dir = cube_test_tmpdir();
    snprintf(passwd, sizeof(passwd), "%s/passwd", dir);
    snprintf(group, sizeof(group), "%s/group", dir);
    write_file(passwd, "root:x:0:0:root:/root:/bin/bash\n"
                       "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
                       "this line is not an entry\n"
                       "user:x:1000:1000::/home/user:/bin/bash\n"
                       "nohome:x:1001:1001:::/bin/sh\n"
                       "user:x:2000:2000::/second:/bin/sh\n");
    /* a group line of ~30 KB (more than one page of buffer): read whole, and the lines after it too */
    size_t big = 30000;
    char *members = malloc(big + 64);
    ck_assert_ptr_nonnull(members);
    size_t n = 0;
    for (int i = 0; n + 16 < big; i++)
        n += (size_t)snprintf(members + n, big + 64 - n, "%sm%05d", i ? "," : "", i);
    char *text = malloc(big + 512);
    ck_assert_ptr_nonnull(text);
    snprintf(text, big + 512,
             "root:x:0:\n"
             "sudo:x:27:user\n"
             "crowd:x:500:%s,user\n"
             "user:x:1000:user\n" /* the primary group listing the user too: once in the list */
             "docker:x:998:root,user,other\n"
             "other:x:999:other\n",
             members);
    write_file(group, text);
    free(text);
    free(members);
}

static void teardown(void)
{
    unlink(passwd);
    unlink(group);
    rmdir(dir);
    free(dir);
}

START_TEST(user_by_name)
{
    users_entry u;
    ck_assert_int_eq(users_by_name(passwd, "user", &u), 0);
    ck_assert_str_eq(u.name, "user");
    ck_assert_uint_eq(u.uid, 1000);
    ck_assert_uint_eq(u.gid, 1000);
    ck_assert_str_eq(u.home, "/home/user"); /* the first entry of a name, as getpwnam */
    ck_assert_int_eq(users_by_name(passwd, "root", &u), 0);
    ck_assert_uint_eq(u.uid, 0);
    ck_assert_str_eq(u.home, "/root");
    ck_assert_int_eq(users_by_name(passwd, "nohome", &u), 0);
    ck_assert_str_eq(u.home, "/");
    errno = 0;
    ck_assert_int_eq(users_by_name(passwd, "nobody-here", &u), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_int_eq(users_by_name(passwd, "", &u), -1);
    ck_assert_int_eq(users_by_name(passwd, "use", &u), -1); /* a prefix is not a name */
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/none", dir);
    ck_assert_int_eq(users_by_name(missing, "root", &u), -1);
}
END_TEST

START_TEST(names_of_ids)
{
    char name[64];
    ck_assert_int_eq(users_name_of_uid(passwd, 1000, name, sizeof(name)), 0);
    ck_assert_str_eq(name, "user");
    ck_assert_int_eq(users_name_of_uid(passwd, 4242, name, sizeof(name)), -1);
    ck_assert_int_eq(users_name_of_gid(group, 999, name, sizeof(name)), 0); /* after the long line */
    ck_assert_str_eq(name, "other");
    ck_assert_int_eq(users_name_of_gid(group, 500, name, sizeof(name)), 0);
    ck_assert_str_eq(name, "crowd");
    ck_assert_int_eq(users_name_of_gid(group, 4242, name, sizeof(name)), -1);
    char tiny[3];
    ck_assert_int_eq(users_name_of_uid(passwd, 1, tiny, sizeof(tiny)), -1); /* "daemon" does not fit */
}
END_TEST

static int has(const gid_t *v, int n, gid_t g)
{
    int c = 0;
    for (int i = 0; i < n; i++) c += v[i] == g;
    return c;
}

START_TEST(groups_of_a_user)
{
    gid_t g[64];
    int n = users_groups(group, "user", 1000, g, 64);
    ck_assert_int_eq(n, 4);
    ck_assert_uint_eq(g[0], 1000);
    ck_assert_int_eq(has(g, n, 27), 1);
    ck_assert_int_eq(has(g, n, 500), 1); /* its name at the end of the long line */
    ck_assert_int_eq(has(g, n, 998), 1);
    ck_assert_int_eq(has(g, n, 1000), 1);
    ck_assert_int_eq(has(g, n, 999), 0);
    n = users_groups(group, "root", 0, g, 64);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(has(g, n, 998), 1);
    n = users_groups(group, "m00007", 4000, g, 64); /* a member inside the long line */
    ck_assert_int_eq(n, 2);
    ck_assert_uint_eq(g[1], 500);
    ck_assert_int_eq(users_groups(group, "user", 1000, g, 2), 2); /* the cap holds */
    ck_assert_int_eq(users_groups(group, "nobody-here", 7, g, 64), 1);
    ck_assert_uint_eq(g[0], 7);
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/none", dir);
    ck_assert_int_eq(users_groups(missing, "user", 1000, g, 64), 1);
    write_file(group, ""); /* an empty file: no groups but the primary, and no error */
    ck_assert_int_eq(users_groups(group, "user", 1000, g, 64), 1);
    char name[16];
    ck_assert_int_eq(users_name_of_gid(group, 1000, name, sizeof(name)), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("agent_users");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, user_by_name);
    tcase_add_test(tc, names_of_ids);
    tcase_add_test(tc, groups_of_a_user);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
