/* A line served in turns by key (lib/fair_line.h), as cubelet's creates on a busy node and the HTTP servers'
 * handler queue use it: turns go round the keys, oldest first within a key; what is for one group (a
 * template's pooled sandbox) goes to the first of those waiting for it. */
#include <stdio.h>

#include "fair_line.h"
#include "testutil.h"

static const int X = 1, Y = 2; /* two templates (only their addresses are compared) */

START_TEST(one_key_is_served_in_arrival_order)
{
    fair_line q;
    fair_init(&q);
    fair_entry w[3];
    for (int i = 0; i < 3; i++) fair_join(&q, &w[i], "k1", &X);
    ck_assert(fair_first(&q, &w[0], false));
    ck_assert(!fair_first(&q, &w[1], false));
    ck_assert(!fair_first(&q, &w[2], true));
    fair_served(&q, &w[0]);
    fair_leave(&q, &w[0]);
    ck_assert(fair_first(&q, &w[1], false));
    ck_assert(!fair_first(&q, &w[2], false));
}
END_TEST

/* a burst of one key, then another key's create: that one is next, then the burst goes on */
START_TEST(turns_go_round_the_keys)
{
    fair_line q;
    fair_init(&q);
    fair_entry a[4], b, none;
    for (int i = 0; i < 4; i++) fair_join(&q, &a[i], "burst", &X);
    fair_served(&q, &a[0]);
    fair_leave(&q, &a[0]);
    fair_join(&q, &b, "other", &X);
    ck_assert(fair_first(&q, &b, false));
    ck_assert(fair_first(&q, &b, true));
    ck_assert(!fair_first(&q, &a[1], false));
    fair_served(&q, &b);
    fair_leave(&q, &b);
    ck_assert(fair_first(&q, &a[1], false));
    /* creates naming no key are one key of their own in the round */
    fair_served(&q, &a[1]);
    fair_leave(&q, &a[1]);
    fair_join(&q, &none, "", &X);
    fair_join(&q, &b, "other", &X);
    ck_assert(!fair_first(&q, &a[2], false)); /* "burst" was served last: the others come first */
    ck_assert(fair_first(&q, &b, false));     /* "other" came into the round before "" */
    fair_served(&q, &b);
    fair_leave(&q, &b);
    ck_assert(fair_first(&q, &none, false));
    fair_served(&q, &none);
    fair_leave(&q, &none);
    ck_assert(fair_first(&q, &a[2], false));
}
END_TEST

/* a pooled sandbox of one template is for the first of those waiting for it */
START_TEST(a_pooled_sandbox_goes_to_the_first_waiting_for_its_template)
{
    fair_line q;
    fair_init(&q);
    fair_entry x1, y1, x2;
    fair_join(&q, &x1, "a", &X);
    fair_join(&q, &y1, "a", &Y);
    fair_join(&q, &x2, "b", &X);
    ck_assert(!fair_first(&q, &y1, false)); /* a start of one's own: x1 is first */
    ck_assert(fair_first(&q, &y1, true));   /* a pooled Y: nobody before it wants one */
    ck_assert(fair_first(&q, &x1, true));
    ck_assert(!fair_first(&q, &x2, true));
}
END_TEST

/* when the line empties the round starts afresh; past FAIR_KEYS keys, the rest share the last place */
START_TEST(an_empty_line_forgets_and_many_keys_fit)
{
    fair_line q;
    fair_init(&q);
    fair_entry w[FAIR_KEYS + 4];
    char key[16];
    for (int i = 0; i < FAIR_KEYS + 4; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        fair_join(&q, &w[i], key, &X);
    }
    ck_assert_int_eq(q.nkeys, FAIR_KEYS);
    ck_assert_int_eq(w[FAIR_KEYS + 3].key, FAIR_KEYS - 1);
    ck_assert(fair_first(&q, &w[0], false));
    for (int i = 0; i < FAIR_KEYS + 4; i++) fair_leave(&q, &w[i]);
    ck_assert_int_eq(q.nkeys, 0);
    ck_assert_int_eq(q.last, -1);
    ck_assert_ptr_null(q.head);
}
END_TEST

/* the line empties while the key served last still has a request running: a burst of that key coming back
 * and another key's request after it, the other key goes first */
START_TEST(the_key_served_last_is_remembered_across_an_empty_line)
{
    fair_line q;
    fair_init(&q);
    fair_entry a0, a1, a2, b;
    fair_join(&q, &a0, "burst", &X);
    fair_served(&q, &a0);
    fair_leave(&q, &a0);
    ck_assert_int_eq(q.nkeys, 1);
    fair_join(&q, &a1, "burst", &X);
    fair_join(&q, &a2, "burst", &X);
    fair_join(&q, &b, "other", &X);
    ck_assert_ptr_eq(fair_next(&q), &b);
    fair_served(&q, &b);
    fair_leave(&q, &b);
    ck_assert_ptr_eq(fair_next(&q), &a1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fair_line");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, one_key_is_served_in_arrival_order);
    tcase_add_test(tc, turns_go_round_the_keys);
    tcase_add_test(tc, a_pooled_sandbox_goes_to_the_first_waiting_for_its_template);
    tcase_add_test(tc, an_empty_line_forgets_and_many_keys_fit);
    tcase_add_test(tc, the_key_served_last_is_remembered_across_an_empty_line);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
