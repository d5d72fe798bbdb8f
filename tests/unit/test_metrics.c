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

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, render_text_format);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
