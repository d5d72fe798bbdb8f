/* What the node keeps of each sandbox stays bounded over the sandbox's life, however long: its metrics
 * history (cubelet/metrics_history.c) and its log on the node (cubelet/sandbox_log.c). Pure: no node runs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fsutil.h"
#include "metrics_history.h"
#include "sandbox_log.h"
#include "testutil.h"

/* The history stays bounded over a long life: full, it halves (pairs merged, CPU averaged) and samples half
 * as often. */
START_TEST(a_long_history_halves)
{
    metrics_history *h = calloc(1, sizeof(*h));
    int64_t ns = 1000000000;
    for (int i = 0; i < 1000; i++) {
        metrics_sample x = {.at_ms = i * 1000};
        /* CPU: 20 % of a CPU for the first 500 s, then 60 % */
        uint64_t cpu =
            i < 500 ? (uint64_t)i * ns / 5 : 500 * (uint64_t)ns / 5 + (uint64_t)(i - 500) * ns * 3 / 5;
        metrics_history_add(h, &x, cpu, (int64_t)i * ns + 1);
    }
    ck_assert_int_le(h->n, METRICS_HISTORY_MAX);
    ck_assert_int_ge(h->n, METRICS_HISTORY_MAX / 2);
    ck_assert_int_eq(h->s[0].at_ms > 0 ? 1 : 0, 1);
    ck_assert_int_le(h->s[0].at_ms, 10 * 1000); /* the beginning is still there */
    ck_assert_int_ge(h->s[h->n - 1].at_ms, 990 * 1000);
    for (int i = 1; i < h->n; i++) ck_assert_int_gt(h->s[i].at_ms, h->s[i - 1].at_ms);
    ck_assert_msg(h->s[h->n / 4].cpu_pct > 19 && h->s[h->n / 4].cpu_pct < 21, "%.2f", h->s[h->n / 4].cpu_pct);
    ck_assert_msg(h->s[h->n - 1].cpu_pct > 59 && h->s[h->n - 1].cpu_pct < 61, "%.2f", h->s[h->n - 1].cpu_pct);
    free(h);
}
END_TEST

/* A sandbox's log on the node is cut to its tail once it is over its cap: the tail whole, from a line's
 * start, after a line saying how much went; a log under the cap is left as it is. */
START_TEST(a_sandboxs_log_stays_bounded)
{
    char *d = cube_test_tmpdir(), path[600];
    snprintf(path, sizeof(path), "%s/sandbox.log", d);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 100000; i++) fprintf(f, "line %06d of what the sandbox said\n", i);
    fclose(f);
    ck_assert_int_eq(cl_sandbox_log_trim(path, 1 << 24, 4096), 0); /* under its cap */
    ck_assert_int_eq(cl_sandbox_log_trim(path, 1 << 20, 4096), 1);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_le(st.st_size, 4096 + 128);
    char buf[8192] = {0};
    f = fopen(path, "r");
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    ck_assert_msg(strncmp(buf, "... ", 4) == 0 && strstr(buf, "bytes of this sandbox's earlier log dropped"),
                  "%s", buf);
    const char *second = strchr(buf, '\n') + 1;
    ck_assert_msg(strncmp(second, "line ", 5) == 0, "the tail starts mid-line: %.40s", second);
    const char *last = "line 099999 of what the sandbox said\n";
    ck_assert_msg(n > strlen(last) && strcmp(buf + n - strlen(last), last) == 0, "%s", buf);
    cube_rm_rf(d);
    free(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sandbox_records");
    TCase *tc = tcase_create("bounded");
    tcase_add_test(tc, a_long_history_halves);
    tcase_add_test(tc, a_sandboxs_log_stays_bounded);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
