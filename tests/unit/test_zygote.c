/* cube-zygote and its client (zygote.h): a child runs the command line it was sent, with the descriptors it
 * was sent at their places, watched through a pidfd; bad requests are refused without harm; concurrent
 * spawns each get their own answer; a child runs at its caller's priority; a zygote that dies is replaced.
 * The children here run `cube-hypervisor --help` or a bad command line (test_hypervisor runs real sandboxes
 * through it). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "zygote.h"
#include "zygote_proto.h"

static cube_zygote z;

static void up(void)
{
    cube_err err = {0};
    ck_assert_msg(cube_zygote_start(&z, getenv("CUBE_ZYGOTE_BIN"), &err) == 0, "%s", err.msg);
}

static void down(void)
{
    cube_zygote_stop(&z);
}

/* Spawns argv with its stderr on a pipe; returns what it wrote there and waits for its exit through the
 * pidfd. */
static void spawn_capture(char *const argv[], char *out, size_t cap)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    int fds[1] = {p[1]}, targets[1] = {2};
    pid_t pid;
    int pidfd;
    cube_err err = {0};
    ck_assert_msg(cube_zygote_spawn(&z, argv, fds, targets, 1, &pid, &pidfd, &err) == 0, "%s", err.msg);
    close(p[1]);
    ck_assert_int_gt(pid, 0);
    ck_assert_int_eq(fcntl(pidfd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(p[0], out + n, cap - 1 - n)) > 0) n += (size_t)k;
    out[n] = '\0';
    close(p[0]);
    struct pollfd pf = {pidfd, POLLIN, 0};
    ck_assert_int_eq(poll(&pf, 1, 10000), 1); /* it exited */
    close(pidfd);
    /* not this process's child: the zygote reaps it */
    ck_assert_int_eq(waitpid(pid, NULL, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
}

START_TEST(runs_the_command_line_with_its_descriptors)
{
    char out[8192];
    char *help[] = {"cube-hypervisor", "--help", NULL};
    spawn_capture(help, out, sizeof(out));
    ck_assert_msg(strstr(out, "usage: cube-hypervisor"), "got '%s'", out);
    /* a bad command line: the child says why and exits; the zygote goes on */
    char *bad[] = {"cube-hypervisor", "--id", "Not_Valid!", "--rootfs", "/", "--state", "/tmp", NULL};
    spawn_capture(bad, out, sizeof(out));
    ck_assert_msg(strstr(out, "--id 'Not_Valid!' must be"), "got '%s'", out);
    spawn_capture(help, out, sizeof(out));
    ck_assert_msg(strstr(out, "usage: cube-hypervisor"), "got '%s'", out);
}
END_TEST

/* malformed requests straight on the socket: each answered EINVAL, and the zygote still serves */
START_TEST(malformed_requests_are_refused)
{
    const char *bad[] = {"x", "ogyzXXXXXXXXXXXX", "ogyz\0\0\0\0\0\0\0\0no-terminator"};
    size_t len[] = {1, 16, 25};
    zygote_req h = {.magic = ZYGOTE_MAGIC, .nfds = 2}; /* claims descriptors it does not carry */
    char msg[64];
    memcpy(msg, &h, sizeof(h));
    memcpy(msg + sizeof(h), "cube-hypervisor", 16);
    for (int i = 0; i < 4; i++) {
        const void *m = i < 3 ? bad[i] : msg;
        size_t l = i < 3 ? len[i] : sizeof(h) + 16;
        ck_assert_int_eq(send(z.sock, m, l, 0), (ssize_t)l);
        zygote_reply r;
        ck_assert_int_eq(recv(z.sock, &r, sizeof(r), 0), (ssize_t)sizeof(r));
        ck_assert_int_le(r.pid, 0);
        ck_assert_int_eq(r.error, EINVAL);
    }
    char out[8192];
    char *help[] = {"cube-hypervisor", "--help", NULL};
    spawn_capture(help, out, sizeof(out));
    ck_assert_msg(strstr(out, "usage: cube-hypervisor"), "got '%s'", out);
}
END_TEST

static void *spawner(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++) {
        char out[8192];
        char *help[] = {"cube-hypervisor", "--help", NULL};
        spawn_capture(help, out, sizeof(out));
        if (!strstr(out, "usage: cube-hypervisor")) return (void *)1;
    }
    return NULL;
}

/* spawns from many threads: each reply meets its own request (each child writes to its caller's pipe) */
START_TEST(concurrent_spawns_each_get_their_own_child)
{
    pthread_t th[4];
    for (int i = 0; i < 4; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, spawner, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        ck_assert_ptr_null(rc);
    }
}
END_TEST

/* The nice value of a process the zygote forked (field 19 of /proc/PID/stat), once it is blocked writing to a
 * full pipe: past the point where the zygote's child sets it. */
static int nice_of(pid_t pid);
static int nice_when_blocked(pid_t pid)
{
    char path[64], buf[512];
    for (int i = 0; i < 10000; i++) {
        snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
        FILE *f = fopen(path, "re");
        bool writing = f && fgets(buf, sizeof(buf), f) && strncmp(buf, "1 ", 2) == 0;
        if (f) fclose(f);
        if (writing) break;
        usleep(1000);
    }
    return nice_of(pid);
}

/* field 19 of /proc/PID/stat */
static int nice_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f));
    fclose(f);
    char *p = strrchr(buf, ')');
    ck_assert_ptr_nonnull(p);
    int nice = 99;
    /* after ")": state is field 3, nice field 19 */
    ck_assert_int_eq(
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %d", &nice), 1);
    return nice;
}

/* a child runs at its caller's priority, not the zygote's: a pool refill's thread is at nice 10 and the
 * sandbox it starts must yield as it does; a create's thread is at 0 */
START_TEST(a_child_runs_at_its_callers_priority)
{
    int want[] = {10, 0, 19};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(setpriority(PRIO_PROCESS, (id_t)gettid(), want[i]), 0);
        int p[2];
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        /* full, so that the child's first write of its usage blocks */
        ck_assert_int_eq(fcntl(p[1], F_SETFL, O_NONBLOCK), 0);
        char junk[4096] = {0};
        while (write(p[1], junk, sizeof(junk)) > 0) {
        }
        ck_assert_int_eq(fcntl(p[1], F_SETFL, 0), 0);
        char *help[] = {"cube-hypervisor", "--help", NULL};
        int fds[1] = {p[1]}, targets[1] = {2};
        pid_t pid;
        int pidfd;
        cube_err err = {0};
        ck_assert_msg(cube_zygote_spawn(&z, help, fds, targets, 1, &pid, &pidfd, &err) == 0, "%s", err.msg);
        close(p[1]);
        ck_assert_int_eq(nice_when_blocked(pid), want[i]);
        ck_assert_int_eq(nice_of(z.pid), 0); /* it forked at the caller's value, and is back at its own */
        while (read(p[0], junk, sizeof(junk)) > 0) {
        }
        close(p[0]);
        struct pollfd pf = {pidfd, POLLIN, 0};
        ck_assert_int_eq(poll(&pf, 1, 10000), 1);
        close(pidfd);
    }
    /* a value a caller cannot have is refused */
    zygote_req h = {.magic = ZYGOTE_MAGIC, .nice = 20};
    char msg[64];
    memcpy(msg, &h, sizeof(h));
    memcpy(msg + sizeof(h), "cube-hypervisor", 16);
    ck_assert_int_eq(send(z.sock, msg, sizeof(h) + 16, 0), (ssize_t)(sizeof(h) + 16));
    zygote_reply r;
    ck_assert_int_eq(recv(z.sock, &r, sizeof(r), 0), (ssize_t)sizeof(r));
    ck_assert_int_eq(r.error, EINVAL);
    setpriority(PRIO_PROCESS, (id_t)gettid(), 0);
}
END_TEST

START_TEST(a_dead_zygote_is_replaced)
{
    pid_t first = z.pid;
    ck_assert_int_eq(kill(first, SIGKILL), 0);
    char *help[] = {"cube-hypervisor", "--help", NULL};
    int fds[1] = {2}, targets[1] = {2};
    pid_t pid;
    int pidfd;
    cube_err err = {0};
    /* the first spawn finds it gone; it was started less than a second ago, so it is not replaced yet */
    ck_assert_int_eq(cube_zygote_spawn(&z, help, fds, targets, 1, &pid, &pidfd, &err), -1);
    ck_assert_int_eq(err.code, ECONNRESET);
    z.started_ms -= 1000; /* a second later */
    char out[8192];
    spawn_capture(help, out, sizeof(out));
    ck_assert_msg(strstr(out, "usage: cube-hypervisor"), "got '%s'", out);
    ck_assert_int_ne(z.pid, first);
}
END_TEST

int main(void)
{
    if (!getenv("CUBE_ZYGOTE_BIN")) {
        printf("SKIP test_zygote: CUBE_ZYGOTE_BIN is not set\n");
        return 77;
    }
    Suite *s = suite_create("zygote");
    TCase *tc = tcase_create("spawn");
    tcase_add_checked_fixture(tc, up, down);
    tcase_add_test(tc, runs_the_command_line_with_its_descriptors);
    tcase_add_test(tc, malformed_requests_are_refused);
    tcase_add_test(tc, concurrent_spawns_each_get_their_own_child);
    tcase_add_test(tc, a_child_runs_at_its_callers_priority);
    tcase_add_test(tc, a_dead_zygote_is_replaced);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
