#include "sandbox_seccomp.h"

#include <errno.h>
#include <linux/falloc.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* What a sandbox may not ask of the host kernel: the surfaces that reach beyond its namespaces (modules,
 * kexec, bpf, perf, keyrings, handles to host files, userfaultfd, swap, reboot, the clock, the kernel log),
 * nested user namespaces, the usual first step of a kernel exploit, and io_uring, the source of most
 * kernel exploits of recent years (Docker's default profile refuses it too; libuv, Node's I/O, and the
 * others that use it fall back to plain syscalls on EPERM). Everything else is allowed, so that
 * root inside works as in an E2B VM. */
static const int denied[] = {
    SCMP_SYS(kexec_load),
    SCMP_SYS(kexec_file_load),
    SCMP_SYS(init_module),
    SCMP_SYS(finit_module),
    SCMP_SYS(delete_module),
    SCMP_SYS(bpf),
    SCMP_SYS(perf_event_open),
    SCMP_SYS(keyctl),
    SCMP_SYS(add_key),
    SCMP_SYS(request_key),
    SCMP_SYS(open_by_handle_at),
    SCMP_SYS(name_to_handle_at),
    SCMP_SYS(userfaultfd),
    SCMP_SYS(swapon),
    SCMP_SYS(swapoff),
    SCMP_SYS(reboot),
    SCMP_SYS(acct),
    SCMP_SYS(settimeofday),
    SCMP_SYS(clock_settime),
    SCMP_SYS(clock_adjtime),
    SCMP_SYS(adjtimex),
    SCMP_SYS(syslog),
    SCMP_SYS(iopl),
    SCMP_SYS(ioperm),
    SCMP_SYS(lookup_dcookie),
    SCMP_SYS(quotactl),
    SCMP_SYS(nfsservctl),
    SCMP_SYS(vm86),
    SCMP_SYS(vm86old),
    SCMP_SYS(uselib),
    SCMP_SYS(fsopen),
    SCMP_SYS(fsmount),
    SCMP_SYS(fspick),
    SCMP_SYS(move_mount),
    SCMP_SYS(open_tree),
    SCMP_SYS(mount_setattr),
    SCMP_SYS(io_uring_setup),
    SCMP_SYS(io_uring_enter),
    SCMP_SYS(io_uring_register),
};

/* The filter, compiled once per process image (libseccomp's compile is most of the cost of loading it): the
 * zygote compiles it before it forks any sandbox, so that a sandbox's PID 1 only installs it. */
static struct {
    pthread_once_t once;
    struct sock_filter *insns;
    unsigned short len;
    int error; /* an errno when it could not be compiled */
} compiled = {.once = PTHREAD_ONCE_INIT};

static void compile(void)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        compiled.error = ENOMEM;
        return;
    }
    int rc = 0;
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]) && rc == 0; i++)
        if (denied[i] >= 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), denied[i], 0);
    /* new namespaces of two kinds, by clone or unshare; clone3 hides its flags in memory, so it answers
     * ENOSYS and libc falls back to clone, which these rules can inspect:
     * - user namespaces (nested ones);
     * - network namespaces, as Docker's default profile refuses them: each takes the kernel's global network
     *   locks to make and a shared worker to free, and ~130 KB that no memory cgroup is charged for (3,000
     *   made by one sandbox took 645 MB of the node's memory, 250 MB of it the sandbox's) */
    static const unsigned long long ns_flags[] = {CLONE_NEWUSER, CLONE_NEWNET};
    for (size_t i = 0; i < sizeof(ns_flags) / sizeof(ns_flags[0]) && rc == 0; i++) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i]));
        if (rc == 0)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i]));
    }
    if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    /* fallocate that allocates: a sandbox's disk is a sparse image, and space allocated without being
     * written takes the node's disk only when it is written, past the bound the node sets on what a sandbox
     * may still write while its disk is short (hv_disk_set_room). Refused as by a filesystem without it
     * (EOPNOTSUPP: libc's posix_fallocate then writes the blocks, which the bound counts); punching holes
     * and collapsing ranges give space back and stay. (Kernel 6.18's overlayfs over the sandbox's idmapped
     * writable layer answers the same already; this holds it whatever the kernel does.) */
    if (rc == 0)
        rc =
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EOPNOTSUPP), SCMP_SYS(fallocate), 1,
                             SCMP_A1(SCMP_CMP_MASKED_EQ, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE, 0));
    /* the program as the kernel takes it, through a memory file (libseccomp 2.5 exports to a descriptor) */
    int fd = rc == 0 ? memfd_create("cube-seccomp", MFD_CLOEXEC) : -1;
    if (rc == 0 && fd < 0) rc = -errno;
    if (rc == 0) rc = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    off_t size = rc == 0 ? lseek(fd, 0, SEEK_END) : 0;
    if (rc == 0 && (size <= 0 || size % (off_t)sizeof(struct sock_filter) != 0 ||
                    size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS))
        rc = -EINVAL;
    struct sock_filter *insns = rc == 0 ? malloc((size_t)size) : NULL;
    if (rc == 0 && !insns) rc = -ENOMEM;
    if (rc == 0 && pread(fd, insns, (size_t)size, 0) != size) rc = -EIO;
    if (fd >= 0) close(fd);
    if (rc < 0) {
        free(insns);
        compiled.error = -rc;
        return;
    }
    compiled.insns = insns;
    compiled.len = (unsigned short)(size / (off_t)sizeof(struct sock_filter));
}

int sandbox_seccomp_prepare(cube_err *err)
{
    pthread_once(&compiled.once, compile);
    if (compiled.error) return cube_err_sys(err, compiled.error, "compile the seccomp filter");
    return 0;
}

int sandbox_seccomp_load(cube_err *err)
{
    if (sandbox_seccomp_prepare(err) < 0) return -1;
    struct sock_fprog prog = {.len = compiled.len, .filter = compiled.insns};
    /* no flags: what libseccomp's load does with its default attributes (no_new_privs is set by the caller)
     */
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return cube_err_sys(err, errno, "load seccomp filter");
    return 0;
}
