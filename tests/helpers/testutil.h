/* Small helpers shared by the Check suites. */
#ifndef CUBE_TESTUTIL_H
#define CUBE_TESTUTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs one suite with Check's runner; exit status for main(). */
static inline int cube_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* A fresh directory under /tmp; the caller removes it. */
static inline char *cube_test_tmpdir(void)
{
    char *d = strdup("/tmp/cube-test-XXXXXX");
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(mkdtemp(d));
    return d;
}

/* A TLS identity NAME under the test CA in dir (deploy/tls-certs, named by CUBE_TLS_CERTS), valid for
 * 127.0.0.1: dir/NAME/{ca,cert,key}.pem. */
static inline void cube_test_tls_identity(const char *dir, const char *name)
{
    const char *tool = getenv("CUBE_TLS_CERTS");
    ck_assert_msg(tool != NULL, "CUBE_TLS_CERTS (deploy/tls-certs) is not set");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s %s %s IP:127.0.0.1", tool, dir, name);
    ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
}

#endif
