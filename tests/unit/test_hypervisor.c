/* cube-hypervisor's ns backend, for real: namespaces, overlay, cgroups, seccomp, pause, snapshot and fork,
 * teardown after SIGKILL. Each test starts cube-hypervisor processes (hv_sandbox.h). Needs root. What one
 * sandbox could take from the others through the kernel's node-wide counts: test_sandbox_sharing.c. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.pb-c.h"
#include "connect.h"
#include "disk.h"
#include "hypervisor.pb-c.h"
#include "rpc.h"
#include "testutil.h"
#include "timeutil.h"
#include "hv_sandbox.h"
#include "zygote.h"

/* --netns: the sandbox joins a namespace the node made (cube-net's slot), gets a sysfs for it, and cannot
 * reconfigure it (its root is not root of that namespace) */
/* A network namespace kept at <workdir>/name, as cube-net keeps a slot's (loopback up); its inode in *st. */
static void node_netns(const char *name, char *ns, size_t cap, struct stat *st)
{
    snprintf(ns, cap, "%s/%s", workdir, name);
    int fd = open(ns, O_CREAT | O_RDONLY, 0444);
    ck_assert_int_ge(fd, 0);
    close(fd);
    int host = open("/proc/thread-self/ns/net", O_RDONLY);
    ck_assert_int_eq(unshare(CLONE_NEWNET), 0);
    ck_assert_int_eq(mount("/proc/thread-self/ns/net", ns, NULL, MS_BIND, NULL), 0);
    int s = socket(AF_INET, SOCK_DGRAM, 0); /* lo up, as cube-net does: the node reaches the agent there */
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    ck_assert_int_eq(ioctl(s, SIOCGIFFLAGS, &ifr), 0);
    ifr.ifr_flags |= IFF_UP;
    ck_assert_int_eq(ioctl(s, SIOCSIFFLAGS, &ifr), 0);
    close(s);
    ck_assert_int_eq(setns(host, CLONE_NEWNET), 0);
    close(host);
    ck_assert_int_eq(stat(ns, st), 0);
}

START_TEST(joins_a_node_owned_network_namespace)
{
    char ns[300];
    struct stat st;
    node_netns("test-netns", ns, sizeof(ns), &st);
    sandbox sb;
    sb_start(&sb, "netns-join", "--netns", ns, NULL);
    char want[64];
    snprintf(want, sizeof(want), "net:[%lu]\n", (unsigned long)st.st_ino);
    expect_run(&sb, "readlink /proc/self/ns/net", want);
    expect_run(&sb, "ls /sys/class/net", "lo\n");
    expect_run(&sb, "cube-probe lo_setflags", "EPERM\n");
    sb_stop(&sb);
    /* without --netns the sandbox owns its (empty) namespace */
    sb_start(&sb, "netns-own", NULL);
    expect_run(&sb, "cube-probe lo_setflags", "ok\n");
    sb_stop(&sb);
    ck_assert_int_eq(umount2(ns, MNT_DETACH), 0);
    unlink(ns);
}
END_TEST

START_TEST(isolation_from_host_and_each_other)
{
    sandbox a, b;
    sb_start(&a, "iso-a", NULL);
    sb_start(&b, "iso-b", NULL);
    /* a host file, the host's processes and mounts stay out of view */
    char marker[300];
    snprintf(marker, sizeof(marker), "%s/host-marker", workdir);
    FILE *f = fopen(marker, "w");
    fputs("host", f);
    fclose(f);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "test -e %s && echo visible || echo hidden", marker);
    expect_run(&a, cmd, "hidden\n");
    expect_run(&a, "hostname", "iso-a\n");
    expect_run(&a, "cat /proc/1/cmdline", "/.cube/cube-agent");
    /* PID 1 is in the sandbox's own cgroups, and its cgroup namespace is rooted at them: inside, each
     * hierarchy reads "/" (the hypervisor makes the cgroups while PID 1 mounts its filesystems) */
    expect_run(
        &a,
        "while IFS= read -r l; do case \"$l\" in *:/) ;; *) echo \"$l\";; esac; done < /proc/1/cgroup; "
        "echo end",
        "end\n");
    char cgp[64], cgs[4096] = {0};
    snprintf(cgp, sizeof(cgp), "/proc/%d/cgroup", (int)a.init);
    FILE *cgf = fopen(cgp, "r");
    ck_assert_ptr_nonnull(cgf);
    ck_assert_uint_gt(fread(cgs, 1, sizeof(cgs) - 1, cgf), 0);
    fclose(cgf);
    ck_assert_msg(strstr(cgs, ":memory:/cube/iso-a\n") || strstr(cgs, "0::/cube/iso-a\n"), "PID 1 in %s",
                  cgs);
    run_result r;
    sb_run(&a, "ps -e -o pid= | wc -l", &r);
    ck_assert_msg(atoi(r.out) <= 4, "sandbox sees %s processes", r.out);
    sb_run(&a, "cat /proc/mounts", &r);
    ck_assert_msg(!strstr(r.out, workdir) || strstr(r.out, "lowerdir="), "host paths visible: %s", r.out);
    ck_assert_ptr_null(strstr(r.out, " /work"));
    /* the other sandbox: its files and processes are not here */
    expect_run(&b, "echo secret > /tmp/b-file; sleep 30 >/dev/null 2>&1 & echo started", "started\n");
    expect_run(&a, "test -e /tmp/b-file && echo visible || echo hidden", "hidden\n");
    expect_run(&a, "ps -e -o comm= | grep -c sleep || true", "0\n");
    sb_stop(&a);
    sb_stop(&b);
    unlink(marker);
}
END_TEST

/* What PID 1 shows of itself, whichever way it started: the agent's command line and environment, its name;
 * nothing of the node's environment (a zygote-forked agent was never exec'd: it scrubs what it inherited);
 * the hypervisor shows its own command line, not the zygote's. */
START_TEST(pid1_shows_the_agent_and_nothing_of_the_node)
{
    sandbox a;
    sb_start(&a, "title-a", NULL);
    /* (bash alone: the test rootfs has no tr) */
    const char *words = "while IFS= read -r -d '' w; do printf '%s|' \"$w\"; done < ";
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "%s/proc/1/cmdline", words);
    run_result r;
    sb_run(&a, cmd, &r);
    ck_assert_msg(strncmp(r.out, "/.cube/cube-agent|--ready-fd=", 29) == 0 &&
                      strstr(r.out, "|--user-procs=960|"),
                  "PID 1 shows '%s'", r.out);
    expect_run(&a, "cat /proc/1/comm", "cube-agent\n");
    snprintf(cmd, sizeof(cmd), "%s/proc/1/environ", words);
    expect_run(&a, cmd, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|HOME=/root|");
    expect_run(&a, "env | grep -c CUBE_NODE_SECRET || true", "0\n");
    /* the whole of PID 1's memory, as its own root can read it */
    expect_run(&a, "cube-probe grep_mem 1 7a79676f74652d656e762d6d7573742d6e6f742d6c65616b", "absent\n");
    char p[64], buf[512] = {0};
    snprintf(p, sizeof(p), "/proc/%d/cmdline", a.hv);
    FILE *f = fopen(p, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    const char *base = strrchr(buf, '/');
    ck_assert_msg(n > 0 && strcmp(base ? base + 1 : buf, "cube-hypervisor") == 0 &&
                      strcmp(buf + strlen(buf) + 1, "--id") == 0,
                  "hypervisor shows '%s'", buf);
    sb_stop(&a);
}
END_TEST

START_TEST(root_inside_is_root_of_the_sandbox_only)
{
    sandbox a;
    sb_start(&a, "root-a", NULL);
    expect_run(&a, "id -u", "0\n");
    run_result r;
    sb_run(&a, "cat /proc/self/uid_map", &r);
    unsigned inside, host, count;
    ck_assert_msg(sscanf(r.out, "%u %u %u", &inside, &host, &count) == 3 && inside == 0 &&
                      host >= 0x40000000u && count == 65536,
                  "uid_map: %s", r.out);
    expect_run(&a, "echo hi > /etc/motd && chown user:user /etc/motd && stat -c %U /etc/motd", "user\n");
    expect_run(&a, "cube-probe bind80", "ok\n");
    /* the change is in the sandbox's own layer, not in the template */
    char p[400];
    snprintf(p, sizeof(p), "%s/etc/motd", rootfs);
    ck_assert(!path_exists(p));
    sb_stop(&a);
}
END_TEST

START_TEST(kernel_surfaces_are_refused)
{
    sandbox a;
    sb_start(&a, "kern-a", NULL);
    const char *refused[] = {"bpf",   "module", "kexec",  "perf",  "keyctl",  "userns",
                             "netns", "reboot", "swapon", "mknod", "io_uring"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "cube-probe %s", refused[i]);
        run_result r;
        sb_run(&a, cmd, &r);
        ck_assert_msg(strcmp(r.out, "ok\n") != 0 && r.out_len > 0, "%s was allowed", refused[i]);
    }
    /* (a mount namespace of its own is cheap and its own: allowed) */
    expect_run(&a, "cube-probe mntns", "ok\n");
    /* space allocated without being written (fallocate's unwritten extents) would take the node's disk only
     * when written, past the node's bound on what the sandbox may still write (hv_disk_set_room): refused
     * as a filesystem without it does, which posix_fallocate (libc writes the blocks) and holes punched
     * (they give space back) do not meet */
    expect_run(&a, "cube-probe fallocate alloc", "EOPNOTSUPP\n");
    expect_run(&a, "cube-probe fallocate keep", "EOPNOTSUPP\n");
    expect_run(&a, "cube-probe fallocate posix && stat -c %s /tmp/falloc", "ok\n1048576\n");
    expect_run(&a, "cube-probe fallocate punch", "ok\n");
    /* host kernel settings and devices */
    run_result r;
    sb_run(&a, "cube-probe write /proc/sys/vm/drop_caches 3", &r);
    ck_assert_msg(strcmp(r.out, "ok\n") != 0, "drop_caches writable");
    sb_run(&a, "cube-probe write /sys/kernel/mm/transparent_hugepage/enabled never", &r);
    ck_assert_msg(strcmp(r.out, "ok\n") != 0, "/sys writable");
    sb_run(&a, "cube-probe write /proc/sysrq-trigger h", &r);
    ck_assert_msg(strcmp(r.out, "ok\n") != 0, "sysrq-trigger writable");
    sb_run(&a, "ls /dev", &r);
    ck_assert_msg(!strstr(r.out, "vda") && !strstr(r.out, "sda") && !strstr(r.out, "kmsg") &&
                      !strstr(r.out, "mem\n"),
                  "host devices visible: %s", r.out);
    sb_stop(&a);
}
END_TEST

START_TEST(fork_and_memory_bombs_stay_inside)
{
    sandbox a;
    sb_start(&a, "bomb-a", "--pids", "64", "--memory-mb", "96", NULL);
    run_result r;
    int64_t t0 = cube_now_mono_ms();
    sb_run(&a, "cube-probe forkbomb", &r);
    int forks = atoi(r.out);
    ck_assert_msg(forks > 0 && forks < 64, "fork bomb made %d processes: %s", forks, r.out);
    ck_assert_ptr_nonnull(strstr(r.out, "EAGAIN"));
    sb_run(&a, "cube-probe memhog 400", &r);
    ck_assert_msg(strstr(r.status, "killed") != NULL || r.exit_code != 0, "memory hog survived: %s %s", r.out,
                  r.status);
    ck_assert_ptr_null(strstr(r.out, "survived"));
    /* the sandbox (and the host) still answer */
    expect_run(&a, "echo alive", "alive\n");
    ck_assert_int_lt(cube_now_mono_ms() - t0, 60000);
    sb_stop(&a);
}
END_TEST

static long read_count(sandbox *sb)
{
    char p[128], buf[64] = {0};
    snprintf(p, sizeof(p), "/proc/%d/root/tmp/count", sb->init);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    char *ok = fgets(buf, sizeof(buf), f);
    fclose(f);
    return ok ? atol(buf) : -1;
}

START_TEST(pause_freezes_and_resume_continues)
{
    sandbox a;
    sb_start(&a, "pause-a", NULL);
    expect_run(&a,
               "(i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; "
               "sleep 0.02; done) >/dev/null 2>&1 & echo started",
               "started\n");
    msleep(300);
    ck_assert_int_gt(read_count(&a), 0);
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    hv_call_empty(&a, "/cube.Hypervisor/Pause");
    long frozen = read_count(&a);
    msleep(400);
    ck_assert_int_eq(read_count(&a), frozen);
    ck_assert_msg(hv_call(&a, "/cube.Hypervisor/Stats", &e.base, &cube__hv_stats__descriptor, &resp, &err) ==
                      0,
                  "%s", err.msg);
    ck_assert_int_eq(((Cube__HvStats *)resp)->state, CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED);
    protobuf_c_message_free_unpacked(resp, NULL);
    hv_call_empty(&a, "/cube.Hypervisor/Resume");
    msleep(400);
    ck_assert_int_gt(read_count(&a), frozen);
    sb_stop(&a);
}
END_TEST

/* Context switches of every thread of pid so far (voluntary and not). */
static long ctx_switches(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    DIR *d = opendir(path);
    ck_assert_ptr_nonnull(d);
    long total = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        char st[128], line[256];
        snprintf(st, sizeof(st), "/proc/%d/task/%s/status", pid, de->d_name);
        FILE *f = fopen(st, "re");
        long v;
        while (f && fgets(line, sizeof(line), f))
            if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1 ||
                sscanf(line, "nonvoluntary_ctxt_switches: %ld", &v) == 1)
                total += v;
        if (f) fclose(f);
    }
    closedir(d);
    return total;
}

START_TEST(an_idle_sandbox_costs_no_cpu)
{
    /* a pooled sandbox waits for its claim: neither its hypervisor nor its agent wakes meanwhile (gRPC's
     * timers woke each hypervisor twice a second) */
    sandbox a;
    sb_start(&a, "idle-a", NULL);
    nanosleep(&(struct timespec){0, 300 * 1000000}, NULL); /* the start's last steps settle */
    long hv0 = ctx_switches(a.hv), agent0 = ctx_switches(a.init);
    nanosleep(&(struct timespec){3, 0}, NULL);
    long hv = ctx_switches(a.hv) - hv0, agent = ctx_switches(a.init) - agent0;
    ck_assert_msg(hv <= 1 && agent <= 1, "idle for 3 s: hypervisor woke %ld times, agent %ld", hv, agent);
    sb_stop(&a);
}
END_TEST

START_TEST(stats_report_usage)
{
    sandbox a;
    sb_start(&a, "stats-a", "--disk-mb", "256", NULL);
    expect_run(&a, "dd if=/dev/zero of=/tmp/blob bs=1M count=8 2>/dev/null; echo done", "done\n");
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    ck_assert_msg(hv_call(&a, "/cube.Hypervisor/Stats", &e.base, &cube__hv_stats__descriptor, &resp, &err) ==
                      0,
                  "%s", err.msg);
    Cube__HvStats *st = (Cube__HvStats *)resp;
    ck_assert_uint_gt(st->mem_used, 0);
    ck_assert_uint_ge(st->pids, 1);
    ck_assert_uint_eq(st->disk_total, 256ull << 20);
    ck_assert_uint_ge(st->disk_used, 8ull << 20);
    ck_assert_int_eq(st->state, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING);
    protobuf_c_message_free_unpacked(resp, NULL);
    ck_assert_int_eq(hv_call(&a, "/cube.Hypervisor/Info", &e.base, &cube__hv_info__descriptor, &resp, &err),
                     0);
    ck_assert_str_eq(((Cube__HvInfo *)resp)->backend, "ns");
    ck_assert_int_eq(((Cube__HvInfo *)resp)->init_pid, a.init);
    protobuf_c_message_free_unpacked(resp, NULL);
    sb_stop(&a);
}
END_TEST

START_TEST(snapshot_then_fork_diverges)
{
    sandbox parent, child;
    sb_start(&parent, "snap-p", NULL);
    expect_run(&parent, "echo from-parent > /root/state.txt; echo ok", "ok\n");
    char snap[600];
    snprintf(snap, sizeof(snap), "%s/snap-1", workdir);
    Cube__HvSnapshotRequest req = CUBE__HV_SNAPSHOT_REQUEST__INIT;
    req.dir = snap;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    ck_assert_msg(hv_call(&parent, "/cube.Hypervisor/Snapshot", &req.base,
                          &cube__hv_snapshot_response__descriptor, &resp, &err) == 0,
                  "%s", err.msg);
    ck_assert(!((Cube__HvSnapshotResponse *)resp)->has_process_state);
    protobuf_c_message_free_unpacked(resp, NULL);
    sb_start(&child, "snap-c", "--layers", snap, NULL);
    expect_run(&child, "cat /root/state.txt", "from-parent\n");
    expect_run(&child, "echo from-child > /root/state.txt; cat /root/state.txt", "from-child\n");
    expect_run(&parent, "cat /root/state.txt", "from-parent\n");
    sb_stop(&child);
    sb_stop(&parent);
}
END_TEST

static pid_t rollback_to(sandbox *sb, const char *layers)
{
    Cube__HvRollbackRequest req = CUBE__HV_ROLLBACK_REQUEST__INIT;
    req.layers = (char *)layers;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    ck_assert_msg(
        hv_call(sb, "/cube.Hypervisor/Rollback", &req.base, &cube__hv_info__descriptor, &resp, &err) == 0,
        "%s", err.msg);
    pid_t pid = ((Cube__HvInfo *)resp)->init_pid;
    protobuf_c_message_free_unpacked(resp, NULL);
    return pid;
}

/* Rollback: the sandbox's files go back to a snapshot's (or to the template's), its processes end and a new
 * agent answers, in the same network namespace, under the same hypervisor and control socket */
START_TEST(rollback_returns_to_a_snapshot_in_place)
{
    char ns[300], snap[600];
    struct stat st;
    node_netns("rollback-netns", ns, sizeof(ns), &st);
    sandbox a;
    sb_start(&a, "rb-a", "--netns", ns, NULL);
    expect_run(&a, "echo one > /root/state.txt; sleep 1000 >/dev/null 2>&1 & echo ok", "ok\n");
    snprintf(snap, sizeof(snap), "%s/rb-snap", workdir);
    Cube__HvSnapshotRequest sr = CUBE__HV_SNAPSHOT_REQUEST__INIT;
    sr.dir = snap;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    ck_assert_msg(hv_call(&a, "/cube.Hypervisor/Snapshot", &sr.base, &cube__hv_snapshot_response__descriptor,
                          &resp, &err) == 0,
                  "%s", err.msg);
    protobuf_c_message_free_unpacked(resp, NULL);
    expect_run(&a, "echo two > /root/state.txt; touch /root/later; echo ok", "ok\n");

    pid_t old = a.init;
    a.init = rollback_to(&a, snap);
    ck_assert_int_ne(a.init, old);
    ck_assert_msg(kill(old, 0) < 0, "the old PID 1 survived the rollback");
    const char *count_sleeps = "n=0; for c in /proc/[0-9]*/comm; do [ \"$(cat $c)\" = sleep ] && n=$((n+1)); "
                               "done; echo $n";
    expect_run(&a, "cat /root/state.txt; ls /root", "one\nstate.txt\n");
    expect_run(&a, count_sleeps, "0\n");
    char want[64];
    snprintf(want, sizeof(want), "net:[%lu]\n", (unsigned long)st.st_ino);
    expect_run(&a, "readlink /proc/self/ns/net", want);
    /* Info answers the new PID 1 (a restarted cubelet adopts by it) */
    Cube__Empty e = CUBE__EMPTY__INIT;
    ck_assert_int_eq(hv_call(&a, "/cube.Hypervisor/Info", &e.base, &cube__hv_info__descriptor, &resp, &err),
                     0);
    ck_assert_int_eq(((Cube__HvInfo *)resp)->init_pid, a.init);
    protobuf_c_message_free_unpacked(resp, NULL);

    /* again, to the template's own files; a paused sandbox too */
    expect_run(&a, "echo three > /root/state.txt; echo ok", "ok\n");
    hv_call_empty(&a, "/cube.Hypervisor/Pause");
    a.init = rollback_to(&a, "");
    expect_run(&a, "ls /root | wc -l", "0\n");
    /* the old layers are gone from the sandbox's disk; a stop still leaves nothing */
    char aside[700]; /* (the disk is mounted in the hypervisor's mount namespace only: looked at there) */
    snprintf(aside, sizeof(aside), "/proc/%d/root%s/rw/rolled-back", (int)a.hv, a.state);
    ck_assert_msg(!path_exists(aside), "%s survived", aside);
    sb_stop(&a);
    assert_nothing_left(&a);
    ck_assert_int_eq(umount2(ns, MNT_DETACH), 0);
    unlink(ns);
}
END_TEST

/* A rollback that cannot start the new PID 1 (its layers are gone) says why; the sandbox then ends, leaving
 * nothing behind */
START_TEST(a_failed_rollback_ends_the_sandbox_cleanly)
{
    sandbox a;
    sb_start(&a, "rb-fail", NULL);
    expect_run(&a, "echo ok", "ok\n");
    char missing[600];
    snprintf(missing, sizeof(missing), "%s/no-such-layer", workdir);
    Cube__HvRollbackRequest req = CUBE__HV_ROLLBACK_REQUEST__INIT;
    req.layers = missing;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    ck_assert_int_eq(
        hv_call(&a, "/cube.Hypervisor/Rollback", &req.base, &cube__hv_info__descriptor, &resp, &err), -1);
    ck_assert_msg(strstr(err.msg, "no-such-layer") && strstr(err.msg, "No such file"), "%s", err.msg);
    hv_wait(&a);
    assert_nothing_left(&a);
}
END_TEST

START_TEST(sigkill_of_the_hypervisor_leaves_nothing)
{
    sandbox a;
    sb_start(&a, "kill-a", NULL);
    expect_run(&a, "sleep 100 >/dev/null 2>&1 & echo started", "started\n");
    kill(a.hv, SIGKILL);
    hv_wait(&a);
    assert_nothing_left(&a);
}
END_TEST

/* The hypervisor's children, as /proc lists them (its threads' together), into pids; their count. */
static int hv_children(pid_t hv, pid_t *pids, int cap)
{
    char p[64], buf[4096];
    snprintf(p, sizeof(p), "/proc/%d/task", hv);
    DIR *d = opendir(p);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(buf, sizeof(buf), "/proc/%d/task/%s/children", hv, e->d_name);
        FILE *f = fopen(buf, "r");
        if (!f) continue;
        for (int pid; n < cap && fscanf(f, "%d", &pid) == 1;) pids[n++] = pid;
        fclose(f);
    }
    closedir(d);
    return n;
}

/* A zygote's sandbox has no janitor process: the zygote holds the lifeline. Killed with SIGKILL, the zygote
 * cleans up after it all the same (sigkill_of_the_hypervisor_leaves_nothing runs in that case too). */
START_TEST(a_zygote_sandbox_has_no_janitor_process)
{
    sandbox a;
    sb_start(&a, "zj-a", NULL);
    pid_t kids[8];
    int n = hv_children(a.hv, kids, 8);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(kids[0], a.init);
    sb_stop(&a);
    assert_nothing_left(&a);
}
END_TEST

/* The zygote dies under a running sandbox: its hypervisor starts a janitor process of its own, which cleans
 * up when the hypervisor is killed in turn. */
START_TEST(a_sandbox_outlives_its_zygote_and_still_leaves_nothing)
{
    sandbox a;
    sb_start(&a, "zj-b", NULL);
    kill(zygote.pid, SIGKILL);
    pid_t kids[8];
    int n = 0;
    for (int i = 0; i < 300 && (n = hv_children(a.hv, kids, 8)) < 2; i++) msleep(10);
    ck_assert_int_eq(n, 2); /* PID 1 and the janitor that replaced the zygote */
    expect_run(&a, "echo still", "still\n");
    kill(a.hv, SIGKILL);
    hv_wait(&a);
    assert_nothing_left(&a);
}
END_TEST

START_TEST(stop_leaves_nothing)
{
    sandbox a;
    sb_start(&a, "stop-a", NULL);
    expect_run(&a, "sleep 100 >/dev/null 2>&1 & echo started", "started\n");
    sb_stop(&a);
    assert_nothing_left(&a);
}
END_TEST

/* A paused sandbox's hypervisor told to end by SIGTERM (what the node does when Stop does not answer, and a
 * service stop): its frozen processes are thawed to die, so the teardown does not sit out its wait for PID
 * 1's exit (5 s) before falling back to the cgroups' kill loop; nothing is left. */
START_TEST(sigterm_of_a_paused_sandbox_leaves_nothing)
{
    sandbox a;
    sb_start(&a, "term-paused", NULL);
    expect_run(&a, "sleep 100 >/dev/null 2>&1 & echo started", "started\n");
    hv_call_empty(&a, "/cube.Hypervisor/Pause");
    int64_t t0 = cube_now_mono_ms();
    kill(a.hv, SIGTERM);
    hv_wait(&a);
    int64_t took = cube_now_mono_ms() - t0;
    ck_assert_msg(took < 4000, "the teardown of a paused sandbox took %lld ms: its processes were not thawed",
                  (long long)took);
    assert_nothing_left(&a);
}
END_TEST

/* auto runs ns when kvm cannot run the sandbox: without /dev/kvm even with a guest given (a kvm attempt would
 * fail on the missing kernel), and with /dev/kvm when no guest is given */
START_TEST(auto_falls_back_to_ns_without_kvm)
{
    sandbox sb;
    if (access("/dev/kvm", R_OK | W_OK) == 0)
        sb_start(&sb, "auto-ns", NULL);
    else
        sb_start(&sb, "auto-ns", "--kernel", "/nonexistent/vmlinuz", "--disk", "/nonexistent/root.img", NULL);
    ck_assert_int_gt(sb.init, 0);
    ck_assert_int_ne(sb.init, sb.hv); /* a real PID 1 of its own: the ns backend */
    sb_stop(&sb);
}
END_TEST

/* Runs a shell command; its output (stdout and whatever it redirects) goes to out. Returns its exit status.
 */
static int run_capture(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    return WEXITSTATUS(pclose(p));
}

/* A sandbox's disk is mounted in its hypervisor's mount namespace only (in the node's, one mount per
 * sandbox would make every new sandbox's start copy them all); the node takes the hypervisor's clone of it
 * (pidfd_getfd) to reuse it once the sandbox is gone. */
START_TEST(a_sandboxs_disk_stays_out_of_the_nodes_mounts)
{
    char dir[400], tpl[600];
    snprintf(dir, sizeof(dir), "%s/keep", workdir);
    cube_err err = {0};
    ck_assert_msg(hv_disk_template(dir, 64, tpl, sizeof(tpl), &err) == 0, "%s", err.msg);
    sandbox a;
    sb_start(&a, "disk-keep", "--disk-template", tpl, "--disk-mb", "64", NULL);
    expect_run(&a, "echo mine > /root/f; sync; echo ok", "ok\n");
    ck_assert_msg(!mounted_under(a.state), "the disk is mounted in the node's namespace");
    ck_assert_int_gt(a.keep_fd, 2);
    int pidfd = a.pidfd >= 0 ? a.pidfd : (int)syscall(SYS_pidfd_open, a.hv, 0);
    ck_assert_int_ge(pidfd, 0);
    int kept = (int)syscall(SYS_pidfd_getfd, pidfd, a.keep_fd, 0);
    ck_assert_msg(kept >= 0, "pidfd_getfd: %s", strerror(errno));
    if (pidfd != a.pidfd) close(pidfd);
    char got[16] = "";
    int f = openat(kept, "upper/root/f", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(f, 0);
    ck_assert_int_gt(read(f, got, sizeof(got) - 1), 0);
    close(f);
    ck_assert_str_eq(got, "mine\n");
    sb_stop(&a);
    assert_nothing_left(&a);
    /* the sandbox gone, its disk is the node's to empty and hand on */
    ck_assert_msg(hv_disk_renew(kept, &err) == 0, "%s", err.msg);
    ck_assert_int_lt(openat(kept, "upper/root/f", O_RDONLY | O_CLOEXEC), 0);
    close(kept);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static void set_disk_room(sandbox *sb, bool limited, uint64_t bytes)
{
    Cube__HvDiskRoom req = CUBE__HV_DISK_ROOM__INIT;
    req.limited = limited;
    req.writable_bytes = bytes;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    ck_assert_msg(
        hv_call(sb, "/cube.Hypervisor/SetDiskRoom", &req.base, &cube__empty__descriptor, &resp, &err) == 0,
        "%s", err.msg);
    protobuf_c_message_free_unpacked(resp, NULL);
}

/* What the sandbox sees free on its disk (its root's statfs is its writable layer's), in MB. */
static long long sandbox_free_mb(sandbox *sb)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/%d/root", (int)sb->init);
    struct statfs fs;
    ck_assert_int_eq(statfs(p, &fs), 0);
    return (long long)((unsigned long long)fs.f_bavail * (unsigned long long)fs.f_bsize >> 20);
}

/* A sandbox's disk is a sparse image on the node's disk: the node's filesystem (here a 48 MB tmpfs under a
 * 128 MB disk) can fill before the sandbox's own, and then the sandbox's writes are lost behind its
 * filesystem without its writer hearing of it. Bounded by the node (SetDiskRoom, cubelet's guard), the
 * writer gets ENOSPC at the bound instead, and what it wrote is whole; unbounded again, it writes on. */
START_TEST(a_disk_bounded_by_the_node_is_enospc_to_the_writer)
{
    char dir[400], tpl[600], cmd[700];
    snprintf(dir, sizeof(dir), "%s/small-node-disk", workdir);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    ck_assert_int_eq(mount("tmpfs", dir, "tmpfs", 0, "size=48m"), 0);
    cube_err err = {0};
    ck_assert_msg(hv_disk_template(dir, 128, tpl, sizeof(tpl), &err) == 0, "%s", err.msg);
    sandbox a;
    sb_start(&a, "disk-room", "--disk-template", tpl, "--disk-mb", "128", NULL);
    ck_assert_int_gt(sandbox_free_mb(&a), 100);
    set_disk_room(&a, true, 16 << 20);
    ck_assert_int_le(sandbox_free_mb(&a), 16);
    run_result r;
    sb_run(&a,
           "dd if=/dev/zero of=/root/big bs=1M count=64 conv=fsync 2>&1; echo rc=$?; sync; echo size=$(wc -c "
           "< /root/big)",
           &r);
    ck_assert_msg(strstr(r.out, "No space left on device") && !strstr(r.out, "rc=0"), "%s", r.out);
    const char *size = strstr(r.out, "size=");
    long long wrote = size ? atoll(size + 5) : -1;
    ck_assert_msg(wrote >= (15 << 20) && wrote <= (16 << 20), "wrote %lld: %s", wrote, r.out);
    struct statfs node;
    ck_assert_int_eq(statfs(dir, &node), 0);
    ck_assert_msg(node.f_bavail * node.f_bsize > (16ull << 20), "the node's disk filled: %llu bytes left",
                  (unsigned long long)(node.f_bavail * node.f_bsize));
    set_disk_room(&a, false, 0);
    ck_assert_int_gt(sandbox_free_mb(&a), 90);
    expect_run(&a, "dd if=/dev/zero of=/root/more bs=1M count=8 conv=fsync 2>/dev/null && echo ok", "ok\n");
    sb_stop(&a);
    assert_nothing_left(&a);
    ck_assert_int_eq(umount2(dir, MNT_DETACH), 0);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(bad_arguments_are_refused_clearly)
{
    const char *hv = getenv("CUBE_HV_BIN");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s --id bad --rootfs /nonexistent --state %s 2>&1", hv, workdir);
    char out[65536] = {0};
    ck_assert_int_eq(run_capture(cmd, out, sizeof(out)), 2);
    ck_assert_msg(strstr(out, "/nonexistent") != NULL, "%s", out);
    snprintf(cmd, sizeof(cmd), "%s --id 'Bad_ID' --rootfs %s --state %s 2>&1", hv, rootfs, workdir);
    ck_assert_int_eq(run_capture(cmd, out, sizeof(out)), 2);
    snprintf(cmd, sizeof(cmd), "%s --id kvm-x --rootfs %s --state %s --backend kvm 2>&1", hv, rootfs,
             workdir);
    ck_assert_int_ne(run_capture(cmd, out, sizeof(out)), 0);
    ck_assert_msg(strstr(out, "kvm backend") != NULL, "%s", out);
    if (access("/dev/kvm", R_OK | W_OK) < 0) { /* the words: one clear line */
        ck_assert_msg(strchr(out, '\n') == strrchr(out, '\n'), "more than one line: %s", out);
        ck_assert_msg(strstr(out, "/dev/kvm") != NULL, "%s", out);
    }
}
END_TEST

/* sha256 of a file via sha256sum, for the hand-made OCI layout */
static void sha256_of(const char *path, char hex[65])
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(fscanf(p, "%64s", hex), 1);
    pclose(p);
}

static void write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(content, f);
    fclose(f);
}

/* blobs/sha256/<hex> for a file; returns the hex */
static void add_blob(const char *layout, const char *file, char hex[65])
{
    sha256_of(file, hex);
    char cmd[1500];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s/blobs/sha256' && cp '%s' '%s/blobs/sha256/%s'", layout, file,
             layout, hex);
    ck_assert_int_eq(system(cmd), 0);
}

/* cube-template import NAME --data DATA FLAG PATH, its output (stderr too) into out; its exit status. */
static int import_as(const char *name, const char *data, const char *flag, const char *path, char *out,
                     size_t cap)
{
    char cmd[1600];
    snprintf(cmd, sizeof(cmd), "%s import %s --data '%s' %s '%s' 2>&1", getenv("CUBE_TEMPLATE_BIN"), name,
             data, flag, path);
    return run_capture(cmd, out, cap);
}

START_TEST(oci_layout_template_runs)
{
    /* a hand-made OCI image: layer 1 a rootfs without cube-agent's libraries, layer 2 adds a file and whites
     * out another; the config sets Env and WorkingDir */
    char img[400], layout[400], cmd[2000], l1[450], l2[450], cfg[450], man[450], hex[65], h1[65], h2[65],
        hc[65];
    snprintf(img, sizeof(img), "%s/img", workdir);
    snprintf(layout, sizeof(layout), "%s/layout", workdir);
    snprintf(cmd, sizeof(cmd),
             "%s '%s/root' '' 0 && mkdir -p '%s/l2/etc' && echo 'from layer 2' > '%s/l2/etc/layer2.txt'"
             " && touch '%s/l2/etc/.wh.os-release' && tar -C '%s/root' -czf '%s/l1.tgz' . && tar -C '%s/l2' "
             "-cf '%s/l2.tar' .",
             getenv("CUBE_MKROOTFS"), img, img, img, img, img, img, img, img);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(l1, sizeof(l1), "%s/l1.tgz", img);
    snprintf(l2, sizeof(l2), "%s/l2.tar", img);
    add_blob(layout, l1, h1);
    add_blob(layout, l2, h2);
    snprintf(cfg, sizeof(cfg), "%s/config.json", img);
    write_file(cfg,
               "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"IMG_VAR=from-image\","
               "\"PATH=/usr/bin:/bin\"],\"WorkingDir\":\"/root\",\"User\":\"root\"}}");
    add_blob(layout, cfg, hc);
    snprintf(man, sizeof(man), "%s/manifest.json", img);
    char body[1200];
    snprintf(body, sizeof(body),
             "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/"
             "vnd.oci.image.config.v1+json\",\"digest\":"
             "\"sha256:%s\"},\"layers\":[{\"mediaType\":\"application/"
             "vnd.oci.image.layer.v1.tar+gzip\",\"digest\":"
             "\"sha256:%s\"},{\"mediaType\":\"application/"
             "vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:%s\"}]}",
             hc, h1, h2);
    write_file(man, body);
    add_blob(layout, man, hex);
    snprintf(body, sizeof(body), "{\"schemaVersion\":2,\"manifests\":[{\"digest\":\"sha256:%s\"}]}", hex);
    snprintf(cmd, sizeof(cmd), "%s/index.json", layout);
    write_file(cmd, body);
    snprintf(cmd, sizeof(cmd), "echo '{\"imageLayoutVersion\": \"1.0.0\"}' > '%s/oci-layout'", layout);
    ck_assert_int_eq(system(cmd), 0);

    /* import, twice: the second is the cached one */
    char data[400], tdir[600] = {0}, bundle[400];
    snprintf(data, sizeof(data), "%s/data", workdir);
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof(cmd), "%s import img --data '%s' --oci '%s'", getenv("CUBE_TEMPLATE_BIN"), data,
                 layout);
        FILE *p = popen(cmd, "r");
        ck_assert_ptr_nonnull(fgets(tdir, sizeof(tdir), p));
        ck_assert_int_eq(WEXITSTATUS(pclose(p)), 0);
    }
    tdir[strcspn(tdir, "\n")] = '\0';
    snprintf(cmd, sizeof(cmd), "grep -q from-image '%s/config.json'", tdir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(bundle, sizeof(bundle), "%s/bundle", workdir);
    snprintf(cmd, sizeof(cmd), "%s '%s' '%s'", getenv("CUBE_AGENT_BUNDLE_SH"), getenv("CUBE_AGENT_BIN"),
             bundle);
    ck_assert_int_eq(system(cmd), 0);

    char saved[sizeof(rootfs)];
    snprintf(saved, sizeof(saved), "%s", rootfs);
    snprintf(rootfs, sizeof(rootfs), "%s/rootfs", tdir);
    sandbox a;
    sb_start(&a, "oci-a", "--agent-bundle", bundle, NULL);
    snprintf(rootfs, sizeof(rootfs), "%s", saved);
    expect_run(&a, "cat /etc/layer2.txt", "from layer 2\n");
    expect_run(&a, "test -e /etc/os-release && echo present || echo whited-out", "whited-out\n");
    expect_run(&a,
               "id -u; test -e /usr/lib/x86_64-linux-gnu/libmicrohttpd.so.12 || echo no-agent-libs-in-image",
               "0\nno-agent-libs-in-image\n");
    sb_stop(&a);

    /* the same image as `docker save` writes it, and a plain directory */
    snprintf(
        cmd, sizeof(cmd),
        "cd '%s' && mkdir -p ds/l1 ds/l2 && gzip -dc l1.tgz > ds/l1/layer.tar && cp l2.tar ds/l2/layer.tar "
        "&& "
        "cp config.json ds/cfg.json && echo '[{\"Config\":\"cfg.json\",\"RepoTags\":[\"img:1\"],\"Layers\":"
        "[\"l1/layer.tar\",\"l2/layer.tar\"]}]' > ds/manifest.json && tar -C ds -cf ds.tar .",
        img);
    ck_assert_int_eq(system(cmd), 0);
    const char *kinds[][2] = {{"--docker-save", "ds.tar"}, {"--rootfs", "root"}};
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof(cmd), "%s import imp%d --data '%s' %s '%s/%s'", getenv("CUBE_TEMPLATE_BIN"), k,
                 data, kinds[k][0], img, kinds[k][1]);
        FILE *p = popen(cmd, "r");
        char dir[600] = {0};
        ck_assert_ptr_nonnull(fgets(dir, sizeof(dir), p));
        ck_assert_int_eq(WEXITSTATUS(pclose(p)), 0);
        dir[strcspn(dir, "\n")] = '\0';
        char f[900];
        snprintf(f, sizeof(f), "%s/rootfs/bin/bash", dir);
        ck_assert_msg(path_exists(f), "%s: no bin/bash", kinds[k][0]);
        snprintf(f, sizeof(f), "%s/rootfs/etc/layer2.txt", dir);
        ck_assert_int_eq(path_exists(f), k == 0); /* layer 2 only in the image */
        snprintf(f, sizeof(f), "%s/rootfs/etc/os-release", dir);
        ck_assert_int_eq(path_exists(f), k == 1); /* whited out in the image */
    }

    /* a layer that tries to write outside the rootfs is refused */
    snprintf(cmd, sizeof(cmd),
             "python3 -c \"import tarfile,io; t=tarfile.open('%s/evil.tar','w'); "
             "i=tarfile.TarInfo('../../escape.txt'); "
             "i.size=3; t.addfile(i, io.BytesIO(b'bad')); t.close()\"",
             img);
    ck_assert_int_eq(system(cmd), 0);
    char out[1024] = {0}, tarball[500];
    snprintf(tarball, sizeof(tarball), "%s/evil.tar", img);
    ck_assert_int_ne(import_as("evil", data, "--rootfs", tarball, out, sizeof(out)), 0);
    ck_assert_msg(strstr(out, "would leave the rootfs") != NULL, "%s", out);
    snprintf(cmd, sizeof(cmd), "%s/../escape.txt", workdir);
    ck_assert(!path_exists(cmd));

    /* an image whose files are symlinks to the host's: a layer pointing at a tarball on the host, a config at
     * a host file; neither is read (the names resolve inside the image) */
    snprintf(
        cmd, sizeof(cmd),
        "cd '%s' && mkdir -p hostside && echo secret > hostside/secret.txt && tar -C hostside -cf "
        "host-secret.tar secret.txt && rm -rf ds3 && mkdir -p ds3/l1 && ln -s '%s/host-secret.tar' "
        "ds3/l1/layer.tar && cp config.json ds3/cfg.json && echo '[{\"Config\":\"cfg.json\",\"Layers\":"
        "[\"l1/layer.tar\"]}]' > ds3/manifest.json && tar -C ds3 -cf ds3.tar . && rm -rf ds4 && mkdir ds4 "
        "&& ln -s /etc/hostname ds4/cfg.json && cp ds3/manifest.json ds4/ && tar -C ds4 -cf ds4.tar .",
        img, img);
    ck_assert_int_eq(system(cmd), 0);
    for (int k = 3; k <= 4; k++) {
        char name[32];
        snprintf(name, sizeof(name), "planted%d", k);
        snprintf(tarball, sizeof(tarball), "%s/ds%d.tar", img, k);
        ck_assert_msg(import_as(name, data, "--docker-save", tarball, out, sizeof(out)) != 0,
                      "ds%d imported: %s", k, out);
        snprintf(cmd, sizeof(cmd), "test -z \"$(find '%s' -name secret.txt)\"", data);
        ck_assert_msg(system(cmd) == 0, "a host file reached template planted%d", k);
    }

    /* a layer in a compression libarchive has no library for, with a "decompressor" planted by the layer
     * before: libarchive would run it (as root, in the chroot); the import refuses the layer instead */
    snprintf(
        cmd, sizeof(cmd),
        "cd '%s' && printf '#include <unistd.h>\\nint main(void){write(2,\"PLANTED-RAN\\\\n\",12);return "
        "1;}\\n' "
        "> planted.c && cc -static -o planted planted.c && rm -rf ds5 && mkdir -p ds5/p/usr/bin && cp "
        "planted "
        "ds5/p/usr/bin/lrzip && tar -C ds5/p -cf ds5/l1.tar usr && printf 'LRZI\\000\\006' > ds5/l2.tar && "
        "head -c 64 /dev/zero >> ds5/l2.tar && cp config.json ds5/cfg.json && echo "
        "'[{\"Config\":\"cfg.json\",\"Layers\":[\"l1.tar\",\"l2.tar\"]}]' > ds5/manifest.json && rm -rf "
        "ds5/p && tar -C ds5 -cf ds5.tar .",
        img);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(tarball, sizeof(tarball), "%s/ds5.tar", img);
    ck_assert_int_ne(import_as("planted5", data, "--docker-save", tarball, out, sizeof(out)), 0);
    ck_assert_msg(!strstr(out, "PLANTED-RAN"), "the image's own decompressor ran: %s", out);
}
END_TEST

int main(void)
{
    int rc = hv_sandbox_setup("test_hypervisor");
    if (rc) return rc;
    Suite *s = suite_create("hypervisor");
    TCase *tc = tcase_create("ns backend");
    tcase_set_timeout(tc, 120);
    const TTest *ns_cases[] = {
        isolation_from_host_and_each_other,
        pid1_shows_the_agent_and_nothing_of_the_node,
        auto_falls_back_to_ns_without_kvm,
        joins_a_node_owned_network_namespace,
        root_inside_is_root_of_the_sandbox_only,
        kernel_surfaces_are_refused,
        fork_and_memory_bombs_stay_inside,
        pause_freezes_and_resume_continues,
        stats_report_usage,
        an_idle_sandbox_costs_no_cpu,
        a_sandboxs_disk_stays_out_of_the_nodes_mounts,
        snapshot_then_fork_diverges,
        rollback_returns_to_a_snapshot_in_place,
        a_failed_rollback_ends_the_sandbox_cleanly,
        sigkill_of_the_hypervisor_leaves_nothing,
        stop_leaves_nothing,
        sigterm_of_a_paused_sandbox_leaves_nothing,
        oci_layout_template_runs,
    };
    int tc_count = (int)(sizeof(ns_cases) / sizeof(ns_cases[0]));
    for (int i = 0; i < tc_count; i++) tcase_add_test(tc, ns_cases[i]);
    tcase_add_test(tc, bad_arguments_are_refused_clearly);
    /* not from the zygote: the small node disk it mounts is made after the zygote's mount namespace was (the
     * bound is the same control call either way) */
    tcase_add_test(tc, a_disk_bounded_by_the_node_is_enospc_to_the_writer);
    suite_add_tcase(s, tc);
    TCase *tz = tcase_create("ns backend, forked from cube-zygote");
    tcase_set_timeout(tz, 120);
    tcase_add_unchecked_fixture(tz, zygote_up, zygote_down);
    for (int i = 0; i < tc_count; i++) tcase_add_test(tz, ns_cases[i]);
    tcase_add_test(tz, a_zygote_sandbox_has_no_janitor_process);
    suite_add_tcase(s, tz);
    /* its own zygote: the case kills it */
    TCase *tzd = tcase_create("ns backend, the zygote dies");
    tcase_set_timeout(tzd, 60);
    tcase_add_checked_fixture(tzd, zygote_up, zygote_down);
    tcase_add_test(tzd, a_sandbox_outlives_its_zygote_and_still_leaves_nothing);
    suite_add_tcase(s, tzd);
    rc = cube_run_suite(s);
    hv_sandbox_cleanup();
    return rc;
}
