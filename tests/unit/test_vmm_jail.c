/* The kvm backend's jail (vmm_jail.h), which needs no /dev/kvm to be tried: a child process jails itself
 * as the VMM does (after its control socket is serving) and then tries what the VMM does — and what a
 * compromised VMM would. The control socket must go on answering the test under the filter. A jail cannot be
 * undone, so each check runs in a child made for it; the child reports the first thing that went wrong. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "echo_service.h"
#include "rpc.h"
#include "testutil.h"
#include "vmm_jail.h"

static int report_fd;

/* In the child: say what went wrong and leave (_exit: no atexit work, which the filter would refuse). */
static void child_fail(const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ssize_t w = write(report_fd, msg, n > 0 ? (size_t)n : 0);
    (void)w;
    _exit(1);
}

#define EXPECT_ERRNO(call, want)                                                                             \
    do {                                                                                                     \
        errno = 0;                                                                                           \
        long r_ = (long)(call);                                                                              \
        if (r_ != -1 || errno != (want))                                                                     \
            child_fail("%s gave %ld errno %d, wanted -1 errno %d", #call, r_, errno, want);                  \
    } while (0)
#define EXPECT_OK(call)                                                                                      \
    do {                                                                                                     \
        if ((long)(call) < 0) child_fail("%s failed: errno %d", #call, errno);                               \
    } while (0)

/* Runs body in a child; the test fails with the child's report unless it exits 0. */
static void in_child(void (*body)(int cmd_fd, int ready_fd), void (*parent)(void))
{
    int rep[2], cmd[2], ready[2];
    signal(SIGPIPE, SIG_IGN); /* a child that is already gone does not read the go-ahead */
    ck_assert_int_eq(pipe(rep), 0);
    ck_assert_int_eq(pipe(cmd), 0);
    ck_assert_int_eq(pipe(ready), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(rep[0]);
        close(cmd[1]);
        close(ready[0]);
        report_fd = rep[1];
        body(cmd[0], ready[1]);
        _exit(0);
    }
    close(rep[1]);
    close(cmd[0]);
    close(ready[1]);
    char c;
    if (read(ready[0], &c, 1) == 1 && parent) parent();
    ssize_t w = write(cmd[1], "x", 1); /* the parent is done: the child may finish */
    (void)w;
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    char msg[256] = "";
    ssize_t n = read(rep[0], msg, sizeof(msg) - 1);
    if (n > 0) msg[n] = '\0';
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "jailed child: %s (status 0x%x)", msg, st);
    close(rep[0]);
    close(cmd[1]);
    close(ready[0]);
}

static void caps_body(int cmd_fd, int ready_fd)
{
    (void)cmd_fd;
    (void)ready_fd;
    cube_err err = {0};
    if (vmm_drop_caps(&err) < 0) child_fail("%s", err.msg);
    cap_t now = cap_get_proc();
    cap_t none = cap_init();
    if (!now || !none || cap_compare(now, none) != 0) child_fail("capabilities left after the drop");
    cap_free(now);
    cap_free(none);
    if (prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0) != 0)
        child_fail("CAP_SYS_ADMIN still in the bounding set");
    if (prctl(PR_CAPBSET_READ, CAP_NET_ADMIN, 0, 0, 0) != 0)
        child_fail("CAP_NET_ADMIN still in the bounding set");
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) child_fail("no_new_privs is not set");
    EXPECT_ERRNO(mount("none", "/mnt", "tmpfs", 0, NULL), EPERM);
    EXPECT_ERRNO(setgroups(0, NULL), EPERM); /* CAP_SETGID is gone */
}

START_TEST(jail_drops_every_capability)
{
    ck_assert_msg(geteuid() == 0, "the jail drops root's capabilities: run as root");
    in_child(caps_body, NULL);
}
END_TEST

static char dir[] = "/tmp/cube-jail-test-XXXXXX";
static char addr[128];

static void *thread_body(void *arg)
{
    return arg;
}

static void seccomp_body(int cmd_fd, int ready_fd)
{
    cube_err err = {0};
    /* as the VMM: its control socket serves first, then the jail */
    cube_rpc_server *srv = cube_rpc_server_start(addr, echo_methods, NULL, 2, &err);
    if (!srv) child_fail("control socket: %s", err.msg);
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (vmm_jail(&err) < 0) child_fail("%s", err.msg);
    if (write(ready_fd, "r", 1) != 1) child_fail("ready");

    /* what the VMM does: files for snapshots, threads, KVM's ioctls (refused by /dev/null, not the filter) */
    char path[128];
    snprintf(path, sizeof(path), "%s/memory", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_OK(fd);
    EXPECT_OK(ftruncate(fd, 1 << 20));
    EXPECT_OK(pwrite(fd, "cube", 4, 4096));
    EXPECT_OK(fdatasync(fd));
    EXPECT_OK(close(fd));
    EXPECT_OK(unlink(path));
    pthread_t t;
    if (pthread_create(&t, NULL, thread_body, NULL) != 0) child_fail("pthread_create refused");
    pthread_join(t, NULL);
    EXPECT_ERRNO(ioctl(devnull, KVM_RUN, 0), ENOTTY);
    EXPECT_ERRNO(ioctl(devnull, KVM_GET_REGS, NULL), ENOTTY);
    EXPECT_OK(prctl(PR_SET_NAME, "vcpu0", 0, 0, 0));

    /* what a compromised VMM would reach for */
    EXPECT_ERRNO(fork(), EPERM);
    char *const argv[] = {"/bin/true", NULL};
    EXPECT_ERRNO(execve("/bin/true", argv, argv + 1), EPERM);
    EXPECT_ERRNO(socket(AF_UNIX, SOCK_STREAM, 0), EPERM);
    EXPECT_ERRNO(socket(AF_INET, SOCK_DGRAM, 0), EPERM);
    EXPECT_ERRNO(ioctl(devnull, KVM_SET_USER_MEMORY_REGION, NULL), EPERM); /* setup is over */
    EXPECT_ERRNO(ioctl(devnull, TIOCSTI, "x"), EPERM);
    EXPECT_ERRNO(ptrace(PTRACE_TRACEME, 0, NULL, NULL), EPERM);
    EXPECT_ERRNO(unshare(CLONE_NEWNS), EPERM);
    EXPECT_ERRNO(mount("none", "/mnt", "tmpfs", 0, NULL), EPERM);
    EXPECT_ERRNO(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), EPERM);
    EXPECT_ERRNO(kill(1, 0), EPERM);

    /* the test calls the control socket meanwhile; it is done when a byte comes */
    char c;
    if (read(cmd_fd, &c, 1) != 1) child_fail("waiting for the test");
    close(devnull);
    _exit(0); /* not cube_rpc_server_stop: exit as a SIGKILLed VMM would, the kernel cleans up */
}

static void call_control(void)
{
    cube_err err = {0};
    cube_rpc_client *c = cube_rpc_client_new(addr, &err);
    ck_assert_ptr_nonnull(c);
    for (int i = 0; i < 3; i++) {
        Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
        req.text = "under the filter";
        ProtobufCMessage *resp = NULL;
        cube_rpc_call_opts o = {.timeout_ms = 5000};
        ck_assert_msg(
            cube_rpc_call(c, ECHO_METHOD, &req.base, &cubetest__echo_reply__descriptor, &resp, &o, &err) == 0,
            "the jailed control socket did not answer: %s", err.msg);
        ck_assert_str_eq(((Cubetest__EchoReply *)resp)->text, "under the filter");
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    cube_rpc_client_free(c);
}

START_TEST(seccomp_allows_what_the_vmm_does_and_nothing_else)
{
    ck_assert_msg(geteuid() == 0, "the jail drops root's capabilities: run as root");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(addr, sizeof(addr), "unix:%s/control.sock", dir);
    in_child(seccomp_body, call_control);
    char sock[128];
    snprintf(sock, sizeof(sock), "%s/control.sock", dir);
    unlink(sock);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("vmm_jail");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, jail_drops_every_capability);
    tcase_add_test(tc, seccomp_allows_what_the_vmm_does_and_nothing_else);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
