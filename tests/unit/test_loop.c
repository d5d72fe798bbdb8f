#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "loop.h"
#include "testutil.h"
#include "timeutil.h"

typedef struct state {
    int reads;
    int order[8];
    int norder;
    int fds[2];
    int other[2];
    uint64_t timer_to_cancel;
} state;

static void on_read(cube_loop *loop, int fd, int events, void *arg)
{
    state *st = arg;
    char c;
    ck_assert(events & CUBE_LOOP_READ);
    ck_assert_int_eq(read(fd, &c, 1), 1);
    st->reads++;
    /* deleting another watcher whose event is in the same batch must be safe */
    cube_loop_del_fd(loop, st->other[0]);
    cube_loop_del_fd(loop, fd);
    cube_loop_stop(loop);
}

static void must_not_run_fd(cube_loop *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)fd;
    (void)events;
    state *st = arg;
    st->reads += 100;
}

START_TEST(fd_events_and_safe_delete)
{
    cube_err err = {0};
    cube_loop *loop = cube_loop_new(&err);
    ck_assert_ptr_nonnull(loop);
    state st = {0};
    ck_assert_int_eq(pipe(st.fds), 0);
    ck_assert_int_eq(pipe(st.other), 0);
    ck_assert_int_eq(write(st.fds[1], "x", 1), 1);
    ck_assert_int_eq(write(st.other[1], "y", 1), 1);
    /* register `other` first with a higher fd? Either order: whichever fires first deletes the other */
    ck_assert_int_eq(cube_loop_add_fd(loop, st.fds[0], CUBE_LOOP_READ, on_read, &st, &err), 0);
    ck_assert_int_eq(cube_loop_add_fd(loop, st.other[0], CUBE_LOOP_READ, must_not_run_fd, &st, &err), 0);
    ck_assert_int_eq(cube_loop_add_fd(loop, st.fds[0], CUBE_LOOP_READ, on_read, &st, &err), -1);
    ck_assert_int_eq(cube_loop_run(loop, &err), 0);
    /* either on_read ran and removed `other` before it fired, or `other` fired first (+100) and then on_read
     */
    ck_assert(st.reads == 1 || st.reads == 101);
    cube_loop_free(loop);
    close(st.fds[0]);
    close(st.fds[1]);
    close(st.other[0]);
    close(st.other[1]);
}
END_TEST

static void record(cube_loop *loop, void *arg)
{
    state *st = arg;
    (void)loop;
    st->order[st->norder] = st->norder;
    st->norder++;
}

static state *tagged_state;
static void record_tag(cube_loop *loop, void *arg)
{
    (void)loop;
    tagged_state->order[tagged_state->norder++] = (int)(intptr_t)arg;
}

static void record_and_stop(cube_loop *loop, void *arg)
{
    record(loop, arg);
    cube_loop_stop(loop);
}

static void must_not_run(cube_loop *loop, void *arg)
{
    (void)loop;
    state *st = arg;
    st->norder += 100;
}

static void cancel_other(cube_loop *loop, void *arg)
{
    state *st = arg;
    cube_loop_del_timer(loop, st->timer_to_cancel);
}

START_TEST(timers_fire_in_order_and_cancel)
{
    cube_err err = {0};
    cube_loop *loop = cube_loop_new(&err);
    state st = {0};
    int64_t t0 = cube_now_mono_ms();
    tagged_state = &st;
    cube_loop_add_timer(loop, 30, record_tag, (void *)(intptr_t)30);
    cube_loop_add_timer(loop, 10, record_tag, (void *)(intptr_t)10);
    cube_loop_add_timer(loop, 5, cancel_other, &st);
    st.timer_to_cancel = cube_loop_add_timer(loop, 20, must_not_run, &st);
    cube_loop_add_timer(loop, 60, record_and_stop, &st);
    ck_assert_int_eq(cube_loop_run(loop, &err), 0);
    ck_assert_int_eq(st.norder, 3);
    ck_assert_int_eq(st.order[0], 10);
    ck_assert_int_eq(st.order[1], 30);
    ck_assert_int_ge(cube_now_mono_ms() - t0, 60);
    cube_loop_free(loop);
}
END_TEST

static void *post_from_thread(void *arg)
{
    cube_loop *loop = arg;
    static state st;
    cube_err err = {0};
    for (int i = 0; i < 5; i++) cube_loop_post(loop, record, &st, &err);
    cube_loop_post(loop, record_and_stop, &st, &err);
    return &st;
}

START_TEST(post_from_another_thread)
{
    cube_err err = {0};
    cube_loop *loop = cube_loop_new(&err);
    pthread_t th;
    pthread_create(&th, NULL, post_from_thread, loop);
    ck_assert_int_eq(cube_loop_run(loop, &err), 0);
    void *r;
    pthread_join(th, &r);
    state *st = r;
    ck_assert_int_eq(st->norder, 6);
    cube_loop_free(loop);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("loop");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, fd_events_and_safe_delete);
    tcase_add_test(tc, timers_fire_in_order_and_cancel);
    tcase_add_test(tc, post_from_another_thread);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
