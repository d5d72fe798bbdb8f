/* What one sandbox could take from the others, and from the node, through what the kernel counts per host
 * user or node-wide (inotify instances, descriptors in flight, socket memory, ptys): each test fills one
 * count from one sandbox and shows another sandbox, and the node, still get theirs. Real sandboxes
 * (hv_sandbox.h), exec'd and forked from cube-zygote. Needs root. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hv_sandbox.h"
#include "testutil.h"

/* What the kernel limits per user (inotify instances: 128 by default) a sandbox's processes hold is charged
 * to its own namespace's owner: one sandbox that takes every instance leaves other sandboxes (their agents'
 * watchDir) and the host's root theirs. */
START_TEST(per_user_kernel_limits_are_each_sandboxs_own)
{
    sandbox a, b;
    sb_start(&a, "ino-a", NULL);
    sb_start(&b, "ino-b", NULL);
    run_result r;
    sb_run(&a,
           "cube-probe inotify_fill > /tmp/fill 2>&1 & for i in $(seq 100); do [ -s /tmp/fill ] && break; "
           "sleep 0.1; done; cat /tmp/fill",
           &r);
    ck_assert_msg(atoi(r.out) > 0 && strstr(r.out, "EMFILE"), "filler: %s", r.out);
    expect_run(&a, "cube-probe inotify", "EMFILE\n"); /* its own are gone */
    expect_run(&b, "cube-probe inotify", "ok\n");
    int fd = inotify_init1(IN_CLOEXEC);
    ck_assert_msg(fd >= 0, "the host's root has no inotify instance left: %s", strerror(errno));
    close(fd);
    sb_stop(&a);
    sb_stop(&b);
}
END_TEST

/* Each sandbox runs as host uids of its own, so the kernel's per-user counts are its own: a sandbox that
 * holds thousands of descriptors in flight on a Unix socket (the kernel compares a sender's count with its
 * RLIMIT_NOFILE) leaves another sandbox's descriptor passing working. Its files stay the template's uids on
 * disk: root's inside show as root, and what it writes lands in its layer as the template's uids. */
START_TEST(each_sandbox_runs_as_host_uids_of_its_own)
{
    sandbox a, b;
    sb_start(&a, "uids-a", NULL);
    sb_start(&b, "uids-b", NULL);
    unsigned host[2];
    sandbox *both[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        char p[64];
        snprintf(p, sizeof(p), "/proc/%d/uid_map", both[i]->init);
        FILE *f = fopen(p, "r");
        ck_assert_ptr_nonnull(f);
        unsigned inside, count;
        ck_assert_int_eq(fscanf(f, "%u %u %u", &inside, &host[i], &count), 3);
        fclose(f);
        ck_assert_msg(inside == 0 && host[i] >= 0x40000000u, "sandbox %d maps 0 to %u", i, host[i]);
    }
    ck_assert_msg(host[0] != host[1], "both sandboxes run as host uid %u", host[0]);
    expect_run(&a, "stat -c %u:%g /etc/passwd /bin", "0:0\n0:0\n");
    expect_run(&a, "echo hi > /root/mine && chown 1000:1000 /root/mine && stat -c %u /root/mine", "1000\n");
    char p[700];
    struct stat st;
    snprintf(p, sizeof(p), "/proc/%d/root%s/rw/upper/root/mine", a.hv, a.state);
    ck_assert_msg(stat(p, &st) == 0, "%s: %s", p, strerror(errno));
    ck_assert_msg(st.st_uid == 101000 && st.st_gid == 101000, "the layer holds uid %u", (unsigned)st.st_uid);

    run_result r;
    sb_run(
        &a,
        "ulimit -n 8192 && { cube-probe fds_in_flight 4000 > /tmp/held 2>&1 & } && for i in $(seq 100); do "
        "[ -s /tmp/held ] && break; sleep 0.1; done; cat /tmp/held",
        &r);
    ck_assert_msg(strcmp(r.out, "4000 held\n") == 0, "sandbox a holds: %s %s", r.out, r.err);
    expect_run(&a, "ulimit -n 1024 && cube-probe send_fd", "ETOOMANYREFS\n"); /* its own count is full */
    expect_run(&b, "ulimit -n 1024 && cube-probe send_fd", "ok\n");
    sb_stop(&a);
    sb_stop(&b);
}
END_TEST

/* The node's socket memory in use, in bytes: /proc/net/sockstat's pages for proto (TCP or UDP), the whole
 * host's (the kernel's one count per protocol, whatever the network namespace). */
static long long sockstat_bytes(const char *proto)
{
    FILE *f = fopen("/proc/net/sockstat", "r");
    ck_assert_ptr_nonnull(f);
    char line[256];
    long long pages = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, proto, strlen(proto)) == 0 && line[strlen(proto)] == ':') {
            const char *m = strstr(line, " mem ");
            if (m) pages = atoll(m + 5);
        }
    fclose(f);
    ck_assert_int_ge(pages, 0);
    return pages * 4096;
}

/* Socket buffers are the sandbox's: data a sandbox sends to its own sockets and never reads is bounded by a
 * share of its memory limit (as a VM of that size bounds its own), not by the node's whole TCP and UDP
 * budget. Without that, a sandbox of 128 MB held the node's every TCP page (2.2 GB here: "TCP: out of
 * memory" for the node's own services) while its memory showed 18 MB used. */
START_TEST(socket_buffers_are_bounded_by_the_sandboxs_memory)
{
    sandbox a;
    sb_start(&a, "sockmem-a", "--memory-mb", "128", NULL);
    const char *protos[] = {"tcp", "udp"}, *stat_names[] = {"TCP", "UDP"};
    for (int i = 0; i < 2; i++) {
        long long before = sockstat_bytes(stat_names[i]);
        char cmd[256];
        snprintf(
            cmd, sizeof(cmd),
            "{ cube-probe sock_fill %s %d > /tmp/fill 2>&1 & echo $! > /tmp/fill.pid; } && for i in $(seq "
            "300); do [ -s /tmp/fill ] && break; sleep 0.1; done; cat /tmp/fill",
            protos[i], i ? 1000 : 200); /* (200 unread connections: ~800 MB unbounded, not all the node's) */
        run_result r;
        sb_run(&a, cmd, &r);
        ck_assert_msg(atoi(r.out) > 0, "%s filler: %s %s", protos[i], r.out, r.err);
        long long grew = sockstat_bytes(stat_names[i]) - before;
        if (grew >= (48LL << 20)) sb_stop(&a); /* what it holds goes before the failure is reported */
        ck_assert_msg(grew < (48LL << 20),
                      "%s: the sandbox's sockets hold %lld MB of the node's (filler: %s)", protos[i],
                      grew >> 20, r.out);
        expect_run(&a, "echo alive", "alive\n");
        expect_run(&a, "kill $(cat /tmp/fill.pid) && rm /tmp/fill && echo ended", "ended\n");
    }
    sb_stop(&a);
}
END_TEST

/* A sandbox's ptys are its own instance's, capped: one that opens all it can leaves other sandboxes (and the
 * node) their terminals. Before, it took the node's whole count for containers (3,072 of kernel.pty.max). */
START_TEST(a_sandbox_cannot_take_every_pty)
{
    sandbox a, b;
    sb_start(&a, "pty-a", NULL);
    sb_start(&b, "pty-b", NULL);
    run_result r;
    sb_run(&a,
           "ulimit -n 8192 && { cube-probe pty_fill > /tmp/ptys 2>&1 & } && for i in $(seq 100); do [ -s "
           "/tmp/ptys "
           "] && break; sleep 0.1; done; cat /tmp/ptys",
           &r);
    ck_assert_msg(strcmp(r.out, "1024 ENOSPC\n") == 0, "sandbox a opened: %s %s", r.out, r.err);
    expect_run(&b, "cube-probe pty", "ok\n");
    int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    ck_assert_msg(fd >= 0, "the node has no pty left: %s", strerror(errno));
    close(fd);
    sb_stop(&a);
    sb_stop(&b);
}
END_TEST

int main(void)
{
    int rc = hv_sandbox_setup("test_sandbox_sharing");
    if (rc) return rc;
    Suite *s = suite_create("sandbox sharing");
    const TTest *cases[] = {
        per_user_kernel_limits_are_each_sandboxs_own,
        each_sandbox_runs_as_host_uids_of_its_own,
        socket_buffers_are_bounded_by_the_sandboxs_memory,
        a_sandbox_cannot_take_every_pty,
    };
    TCase *tc = tcase_create("ns backend");
    tcase_set_timeout(tc, 120);
    TCase *tz = tcase_create("ns backend, forked from cube-zygote");
    tcase_set_timeout(tz, 120);
    tcase_add_unchecked_fixture(tz, zygote_up, zygote_down);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tcase_add_test(tc, cases[i]);
        tcase_add_test(tz, cases[i]);
    }
    suite_add_tcase(s, tc);
    suite_add_tcase(s, tz);
    rc = cube_run_suite(s);
    hv_sandbox_cleanup();
    return rc;
}
