/* The pool's depth following demand (cubelet/pool_demand.c). */
#include "pool_demand.h"
#include "testutil.h"

START_TEST(quiet_keeps_the_base)
{
    pool_demand d = {0};
    ck_assert_int_eq(pool_demand_target(&d, 5000, 2, 64), 2);
    pool_demand_note(&d, 5000);
    ck_assert_int_eq(pool_demand_target(&d, 5100, 2, 64), 2);
    ck_assert_int_eq(pool_demand_target(&d, 5100, 0, 64), 0); /* a template that keeps no pool */
}
END_TEST

START_TEST(a_burst_raises_it_for_a_minute)
{
    pool_demand d = {0};
    int64_t t = 1000000;
    for (int i = 0; i < 50; i++) pool_demand_note(&d, t + i * 5); /* 50 within a quarter second */
    ck_assert_int_eq(pool_demand_peak(&d, t + 300, PEAK_WINDOW_S), 50);
    ck_assert_int_eq(pool_demand_target(&d, t + 300, 2, 64), 50);
    ck_assert_int_eq(pool_demand_target(&d, t + 300, 2, 20), 20); /* capped */
    ck_assert_int_eq(pool_demand_target(&d, t + 59000, 2, 64), 50);
    ck_assert_int_eq(pool_demand_target(&d, t + 61000, 2, 64), 2); /* gone a minute later */
}
END_TEST

START_TEST(a_steady_rate_counts_over_the_window)
{
    pool_demand d = {0};
    int64_t t = 2000000;
    for (int s = 0; s < 30; s++)
        for (int k = 0; k < 3; k++) pool_demand_note(&d, t + s * 1000 + k * 100); /* 3 a second */
    ck_assert_int_eq(pool_demand_peak(&d, t + 29500, PEAK_WINDOW_S), 30);
    /* a long gap clears everything, however the ring wrapped */
    ck_assert_int_eq(pool_demand_peak(&d, t + 10 * 60 * 1000, PEAK_WINDOW_S), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pool_demand");
    TCase *tc = tcase_create("target");
    tcase_add_test(tc, quiet_keeps_the_base);
    tcase_add_test(tc, a_burst_raises_it_for_a_minute);
    tcase_add_test(tc, a_steady_rate_counts_over_the_window);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
