/* Small helpers shared by the Check suites. */
#ifndef CUBE_TESTUTIL_H
#define CUBE_TESTUTIL_H

#include <check.h>
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

#endif
