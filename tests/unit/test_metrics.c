#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "testutil.h"

START_TEST(render_text_format)
{
    cube_metric_add("t_calls_total{method=\"a\"}", "calls", 2);
    cube_metric_add("t_calls_total{method=\"a\"}", "calls", 3);
    cube_metric_add("t_calls_total{method=\"b\"}", "calls", 1);
    cube_metric_set("t_depth", "depth", 4);
    cube_metric_observe("t_seconds", "latency", 0.003);
    cube_metric_observe("t_seconds", "latency", 2);
    char *s = cube_metrics_render();
    ck_assert_msg(strstr(s, "# HELP t_calls_total calls\n# TYPE t_calls_total counter\n"
                            "t_calls_total{method=\"a\"} 5\nt_calls_total{method=\"b\"} 1\n") != NULL,
                  "%s", s);
    ck_assert_ptr_nonnull(strstr(s, "# TYPE t_depth gauge\nt_depth 4\n"));
    ck_assert_ptr_nonnull(strstr(s, "t_seconds_bucket{le=\"0.001\"} 0\n"));
    ck_assert_ptr_nonnull(strstr(s, "t_seconds_bucket{le=\"0.005\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(s, "t_seconds_bucket{le=\"+Inf\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(s, "t_seconds_count 2\n"));
    free(s);
    cube_metric_set("t_pool{template=\"x\"}", "pool", 1);
    cube_metric_clear("t_pool{");
    s = cube_metrics_render();
    ck_assert_ptr_null(strstr(s, "t_pool{"));
    free(s);
}
END_TEST

/* A label first seen after other metrics joins its family: one HELP and TYPE for the family, its members
 * together (a second HELP for a name makes Prometheus refuse the whole scrape). */
START_TEST(a_family_stays_together_whenever_its_labels_appear)
{
    cube_metric_add("t_refused_total{reason=\"busy\"}", "refused", 1);
    cube_metric_set("t_other", "other", 1);
    cube_metric_add("t_refused_total{reason=\"memory\"}", "refused", 2);
    char *s = cube_metrics_render();
    ck_assert_msg(strstr(s, "# HELP t_refused_total refused\n# TYPE t_refused_total counter\n"
                            "t_refused_total{reason=\"busy\"} 1\nt_refused_total{reason=\"memory\"} 2\n"),
                  "%s", s);
    const char *first = strstr(s, "# HELP t_refused_total");
    ck_assert_ptr_null(strstr(first + 1, "# HELP t_refused_total"));
    ck_assert_ptr_nonnull(strstr(s, "# TYPE t_other gauge\nt_other 1\n"));
    free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, render_text_format);
    tcase_add_test(tc, a_family_stays_together_whenever_its_labels_appear);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
