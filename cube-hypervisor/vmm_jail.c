/* The VMM's jail (see vmm_jail.h). */
#include "vmm_jail.h"

#include <errno.h>
#include <linux/kvm.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/capability.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>

int vmm_drop_caps(cube_err *err)
{
    /* the bounding set first: dropping from it needs CAP_SETPCAP, which goes with the rest below */
    for (int c = 0; c <= CAP_LAST_CAP; c++)
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
            return cube_err_sys(err, errno, "drop capability %d from the bounding set", c);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return cube_err_sys(err, errno, "clear ambient capabilities");
    cap_t none = cap_init(); /* all three sets empty */
    if (!none) return cube_err_sys(err, errno, "cap_init");
    int rc = cap_set_proc(none);
    int e = errno;
    cap_free(none);
    if (rc < 0) return cube_err_sys(err, e, "drop capabilities");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return cube_err_sys(err, errno, "no_new_privs");
    return 0;
}

/* What the VMM's threads call once it runs: vCPUs (KVM_RUN, the snapshot's reads of state), the I/O thread
 * (poll, readv/writev on the tap), the control socket's gRPC server (epoll, accept, messages, timers,
 * threads), snapshots (files written, synced, copied), memory, signals, time, and exit. */
static const int allowed[] = {
    SCMP_SYS(read),
    SCMP_SYS(write),
    SCMP_SYS(readv),
    SCMP_SYS(writev),
    SCMP_SYS(pread64),
    SCMP_SYS(pwrite64),
    SCMP_SYS(close),
    SCMP_SYS(fstat),
    SCMP_SYS(newfstatat),
    SCMP_SYS(statx),
    SCMP_SYS(lseek),
    SCMP_SYS(openat),
    SCMP_SYS(ftruncate),
    SCMP_SYS(fsync),
    SCMP_SYS(fdatasync),
    SCMP_SYS(copy_file_range),
    SCMP_SYS(unlink),
    SCMP_SYS(mkdir), /* a snapshot's directory */
    SCMP_SYS(mkdirat),
    SCMP_SYS(unlinkat),
    SCMP_SYS(fcntl),
    SCMP_SYS(dup),
    SCMP_SYS(dup3),
    SCMP_SYS(pipe2),
    SCMP_SYS(eventfd2),
    SCMP_SYS(poll),
    SCMP_SYS(ppoll),
    SCMP_SYS(epoll_create1),
    SCMP_SYS(epoll_ctl),
    SCMP_SYS(epoll_wait),
    SCMP_SYS(epoll_pwait),
    SCMP_SYS(accept),
    SCMP_SYS(accept4),
    SCMP_SYS(recvmsg),
    SCMP_SYS(sendmsg),
    SCMP_SYS(recvfrom),
    SCMP_SYS(sendto),
    SCMP_SYS(shutdown),
    SCMP_SYS(getsockopt),
    SCMP_SYS(setsockopt),
    SCMP_SYS(getsockname),
    SCMP_SYS(getpeername),
    SCMP_SYS(futex),
    SCMP_SYS(set_robust_list),
    SCMP_SYS(rseq),
    SCMP_SYS(sched_yield),
    SCMP_SYS(sched_getaffinity),
    SCMP_SYS(nanosleep),
    SCMP_SYS(clock_nanosleep),
    SCMP_SYS(clock_gettime),
    SCMP_SYS(clock_getres),
    SCMP_SYS(gettimeofday),
    SCMP_SYS(timerfd_create),
    SCMP_SYS(timerfd_settime),
    SCMP_SYS(mmap),
    SCMP_SYS(munmap),
    SCMP_SYS(mremap),
    SCMP_SYS(mprotect),
    SCMP_SYS(madvise),
    SCMP_SYS(mincore), /* a snapshot of a clone: which of its pages it has */
    SCMP_SYS(brk),
    SCMP_SYS(membarrier),
    SCMP_SYS(getrandom),
    SCMP_SYS(rt_sigaction),
    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(rt_sigreturn),
    SCMP_SYS(sigaltstack),
    SCMP_SYS(tgkill),
    SCMP_SYS(getpid),
    SCMP_SYS(gettid),
    SCMP_SYS(getuid),
    SCMP_SYS(geteuid),
    SCMP_SYS(uname),
    SCMP_SYS(prlimit64),
    SCMP_SYS(wait4),
    SCMP_SYS(waitid),
    SCMP_SYS(exit),
    SCMP_SYS(exit_group),
};

/* ioctl requests: KVM's while the guest runs, while a snapshot reads its state and while a failed guest's
 * last instruction is looked up (KVM_TRANSLATE, for the log), and a terminal query (stdio's isatty); the
 * setup requests (memory regions, new vCPUs, irqfds) were made before the filter */
static const unsigned long ioctls[] = {
    KVM_RUN,       KVM_GET_REGS,  KVM_GET_SREGS,       KVM_GET_FPU,      KVM_GET_XCRS,
    KVM_GET_LAPIC, KVM_GET_MSRS,  KVM_GET_VCPU_EVENTS, KVM_GET_MP_STATE, KVM_GET_IRQCHIP,
    KVM_GET_PIT2,  KVM_GET_CLOCK, KVM_TRANSLATE,       TCGETS,           FIONBIO,
};

int vmm_seccomp_load(cube_err *err)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (!ctx) return cube_err_set(err, ENOMEM, "seccomp_init");
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1); /* every thread, the vCPUs' too */
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]) && rc == 0; i++)
        if (allowed[i] >= 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, allowed[i], 0);
    for (size_t i = 0; i < sizeof(ioctls) / sizeof(ioctls[0]) && rc == 0; i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)(unsigned int)ioctls[i]));
    /* threads, not processes */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    /* a thread may name itself, nothing else of prctl */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1, SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1, SCMP_A0(SCMP_CMP_EQ, PR_GET_NAME));
    if (rc == 0) rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc < 0) return cube_err_sys(err, -rc, "load the VMM's seccomp filter");
    return 0;
}

int vmm_jail(cube_err *err)
{
    if (vmm_drop_caps(err) < 0 || vmm_seccomp_load(err) < 0) return -1;
    return 0;
}
