/* The pool's depth following demand (cubelet/pool_demand.c). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cgroup_tune.h"
#include "pool_demand.h"
#include "testutil.h"

START_TEST(quiet_keeps_the_base)
{
    pool_demand d = {0};
    ck_assert_int_eq(pool_demand_target(&d, 5000, 2, 64), 2);
    ck_assert(!pool_demand_busy(&d, 5000));
    pool_demand_note(&d, 5000);
    ck_assert(pool_demand_busy(&d, 5100));
    ck_assert_int_eq(pool_demand_target(&d, 5100, 2, 64), 2);
    ck_assert_int_eq(pool_demand_target(&d, 5100, 0, 64), 0); /* a template that keeps no pool */
    ck_assert(!pool_demand_busy(&d, 5000 + POOL_QUIET_MS));
    ck_assert_int_eq(pool_demand_target(&d, 5000 + POOL_QUIET_MS, 2, 64), 2); /* a burst of one */
}
END_TEST

START_TEST(a_burst_raises_it_once_over_for_a_minute)
{
    pool_demand d = {0};
    int64_t t = 1000000;
    for (int i = 0; i < 50; i++) pool_demand_note(&d, t + i * 5); /* 50 within a quarter second */
    /* while it comes, the pool is only refilled to its size: it grows in the quiet after */
    ck_assert(pool_demand_busy(&d, t + 300));
    ck_assert_int_eq(pool_demand_target(&d, t + 300, 2, 64), 2);
    int64_t after = t + 245 + POOL_QUIET_MS;
    ck_assert(!pool_demand_busy(&d, after));
    ck_assert_int_eq(pool_demand_peak(&d, after), 50);
    ck_assert_int_eq(pool_demand_target(&d, after, 2, 64), 50);
    ck_assert_int_eq(pool_demand_target(&d, after, 2, 20), 20); /* capped */
    ck_assert_int_eq(pool_demand_target(&d, t + 59000, 2, 64), 50);
    ck_assert_int_eq(pool_demand_target(&d, t + 245 + POOL_DEMAND_SPAN_MS, 2, 64),
                     2); /* gone a minute later */
}
END_TEST

START_TEST(a_stream_raises_nothing)
{
    pool_demand d = {0};
    int64_t t = 2000000;
    for (int s = 0; s < 30; s++)
        for (int k = 0; k < 100; k++) pool_demand_note(&d, t + s * 1000 + k * 10); /* 100 a second */
    ck_assert_int_eq(pool_demand_target(&d, t + 29995, 2, 256), 2);
    /* over: a churn, or rounds back to back, is not a burst to keep sandboxes for */
    ck_assert_int_eq(pool_demand_peak(&d, t + 32000), 0);
    ck_assert_int_eq(pool_demand_target(&d, t + 32000, 2, 256), 2);
    /* a long gap clears everything */
    ck_assert_int_eq(pool_demand_peak(&d, t + 10 * 60 * 1000), 0);
}
END_TEST

START_TEST(bursts_apart_keep_the_largest_and_a_stream_keeps_them)
{
    pool_demand d = {0};
    int64_t t = 3000000;
    for (int i = 0; i < 200; i++) pool_demand_note(&d, t + i);       /* 200 at once */
    for (int i = 0; i < 50; i++) pool_demand_note(&d, t + 8000 + i); /* 8 s later, 50 */
    ck_assert_int_eq(pool_demand_target(&d, t + 10000, 4, 256), 200);
    /* a stream after them: refills keep the configured size while it runs, the bursts count again after */
    for (int s = 0; s < 10; s++) pool_demand_note(&d, t + 12000 + s * 500);
    ck_assert_int_eq(pool_demand_target(&d, t + 16600, 4, 256), 4);
    ck_assert_int_eq(pool_demand_target(&d, t + 18000, 4, 256), 200);
    /* the 200 a minute on, the 50 still counts */
    ck_assert_int_eq(pool_demand_target(&d, t + 199 + POOL_DEMAND_SPAN_MS, 4, 256), 50);
    ck_assert_int_eq(pool_demand_target(&d, t + 8049 + POOL_DEMAND_SPAN_MS, 4, 256), 4);
}
END_TEST

/* The cgroup2 mount's options as /proc/self/mounts shows them, or false when there is none. */
static bool cgroup2_options(char *out, size_t cap)
{
    FILE *f = fopen("/proc/self/mounts", "re");
    char line[4096], type[64], o[2048];
    bool found = false;
    while (f && !found && fgets(line, sizeof(line), f))
        if (sscanf(line, "%*s %*s %63s %2047s", type, o) == 2 && strcmp(type, "cgroup2") == 0) {
            snprintf(out, cap, "%s", o);
            found = true;
        }
    if (f) fclose(f);
    return found;
}

/* Every option of before is in after, and after adds favordynmods and nothing else. */
static void assert_only_favordynmods_added(const char *before, const char *after)
{
    char b[2048], a[2048], *save = NULL;
    snprintf(b, sizeof(b), ",%s,", before);
    snprintf(a, sizeof(a), "%s", after);
    for (char *o = strtok_r(a, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
        char needle[300];
        snprintf(needle, sizeof(needle), ",%s,", o);
        ck_assert_msg(strstr(b, needle) || strcmp(o, "favordynmods") == 0, "option %s appeared", o);
    }
    snprintf(a, sizeof(a), ",%s,", after);
    snprintf(b, sizeof(b), "%s", before);
    for (char *o = strtok_r(b, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
        char needle[300];
        snprintf(needle, sizeof(needle), ",%s,", o);
        ck_assert_msg(strstr(a, needle), "option %s was dropped (%s -> %s)", o, before, after);
    }
    ck_assert_ptr_nonnull(strstr(after, "favordynmods"));
}

/* The mount's options before main() tuned it (the tuning is host-wide and done once; see main). */
static char options_before[2048];

START_TEST(cgroup_moves_favoured_keeping_the_mount_options)
{
    char after[2048], again[2048];
    ck_assert(cgroup2_options(after, sizeof(after)));
    assert_only_favordynmods_added(options_before, after);
    /* again: nothing to do, nothing changes */
    cube_err err = {0};
    ck_assert_msg(cube_cgroup_favor_dynmods(&err) == 0, "%s", err.msg);
    ck_assert(cgroup2_options(again, sizeof(again)));
    ck_assert_str_eq(again, after);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pool_demand");
    TCase *tc = tcase_create("target");
    tcase_add_test(tc, quiet_keeps_the_base);
    tcase_add_test(tc, a_burst_raises_it_once_over_for_a_minute);
    tcase_add_test(tc, a_stream_raises_nothing);
    tcase_add_test(tc, bursts_apart_keep_the_largest_and_a_stream_keeps_them);
    suite_add_tcase(s, tc);
    /* the tuning, applied here once: a host that does not allow it (no cgroup2 mount, not root, a kernel
     * before 6.1, a read-only mount in a container) skips the case, loudly */
    cube_err err = {0};
    if (getuid() == 0 && cgroup2_options(options_before, sizeof(options_before)) &&
        cube_cgroup_favor_dynmods(&err) == 0) {
        TCase *tune = tcase_create("cgroup tuning");
        tcase_add_test(tune, cgroup_moves_favoured_keeping_the_mount_options);
        suite_add_tcase(s, tune);
    } else {
        fprintf(stderr, "SKIPPED: the cgroup tuning case: this host does not allow it (%s)\n",
                *err.msg ? err.msg : "not root, or no cgroup2 mount");
    }
    return cube_run_suite(s);
}
