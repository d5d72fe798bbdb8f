/* The kvm backend: a sandbox is a microVM (kvm/vmm.h) running the template's disk image under its own guest
 * kernel; this process is its VMM, confined as vmm_jail.h says: its own cgroup from before the guest's first
 * page, then (once the control socket serves) no capabilities and a seccomp filter. The VMM cannot remove a
 * cgroup it is in, so its janitor does that once the VMM has exited (the lifeline closes with the process).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "boot.h"
#include "hv.h"
#include "janitor.h"
#include "vmm.h"
#include "vmm_jail.h"

#define VMM_OVERHEAD_MB                                                                                      \
    64 /* the VMM's own memory beside the guest's: threads, device buffers, the RPC server */
#define VMM_MAX_TASKS 64 /* vCPUs, the I/O thread and the control socket's threads */

typedef struct kvm_sandbox {
    vmm *vm;
    int console_fd;
    uint64_t mem_bytes;
    char overlay[4200];
    cgroup cg;
    pid_t janitor;
    int lifeline; /* open for the VMM's life: the janitor cleans up when it closes */
} kvm_sandbox;

/* The VMM's cgroup, made and joined; on failure nothing is left (or the janitor will remove it). */
static int join_cgroup(kvm_sandbox *k, const hv_spec *spec, cube_err *err)
{
    if (cgroup_init(&k->cg, spec->id, err) < 0) return -1;
    cg_limits lim = {.cpus = spec->limits.cpus,
                     .memory_mb = (k->mem_bytes >> 20) + VMM_OVERHEAD_MB,
                     .pids = VMM_MAX_TASKS};
    if (k->cg.ops->create(&k->cg, &lim, err) < 0) {
        k->cg.ops->destroy(&k->cg);
        return -1;
    }
    k->janitor = hv_janitor_start(k->cg.name, "", "", &k->lifeline, err);
    if (k->janitor < 0) {
        k->cg.ops->destroy(&k->cg);
        return -1;
    }
    return k->cg.ops->add(&k->cg, getpid(), err); /* failing, the janitor removes the group at exit */
}

static int kvm_available(cube_err *err)
{
    return vmm_available(err);
}

static int kvm_create(const hv_spec *spec, hv_sandbox **out, cube_err *err)
{
    if (!spec->kernel && !spec->restore)
        return cube_err_set(err, EINVAL,
                            "kvm backend: --kernel (a bzImage or vmlinux) or --restore is required");
    if (!spec->disk_image)
        return cube_err_set(err, EINVAL, "kvm backend: --disk (the template's ext4 root image) is required");
    kvm_sandbox *k = calloc(1, sizeof(*k));
    if (!k) return cube_err_set(err, ENOMEM, "out of memory");
    char console[4200];
    snprintf(console, sizeof(console), "%s/console.log", spec->state_dir);
    snprintf(k->overlay, sizeof(k->overlay), "%s/disk-overlay", spec->state_dir);
    k->console_fd = open(console, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0640);
    k->mem_bytes = (spec->limits.memory_mb ? spec->limits.memory_mb : 512) << 20;
    k->lifeline = -1;
    if (join_cgroup(k, spec, err) < 0) {
        if (k->console_fd >= 0) close(k->console_fd);
        free(k);
        return -1;
    }
    /* the operator's parameters last: the kernel takes the last of a repeated one */
    char cmdline[KB_CMDLINE_MAX + 1];
    snprintf(cmdline, sizeof(cmdline), "cube.id=%s%s%s", spec->id, spec->kernel_args ? " " : "",
             spec->kernel_args ? spec->kernel_args : ""); /* too long: vmm_create refuses it */
    int cpus = spec->limits.cpus ? (int)spec->limits.cpus : 1;
    vmm_config cfg = {
        .kernel = spec->kernel,
        .restore = spec->restore,
        .disk = spec->disk_image,
        .overlay = k->overlay,
        .cmdline = cmdline,
        .mem_bytes = k->mem_bytes,
        .vcpus = cpus > VMM_MAX_VCPUS ? VMM_MAX_VCPUS : cpus,
        .console_fd = k->console_fd,
        .tap_fd = -1, /* the guest's network is not wired to cube-net's slots yet */
    };
    if (vmm_create(&cfg, &k->vm, err) < 0) {
        /* the lifeline stays open: this process is in the cgroup, which its janitor removes after the exit
         * that follows a failed create */
        if (k->console_fd >= 0) close(k->console_fd);
        unlink(k->overlay);
        free(k);
        return -1;
    }
    *out = (hv_sandbox *)k;
    return 0;
}

/* No process of the guest exists on the host: the VMM (this process) stands for it. */
static pid_t kvm_init_pid(hv_sandbox *sb)
{
    (void)sb;
    return getpid();
}

static int kvm_pause(hv_sandbox *sb, cube_err *err)
{
    return vmm_pause(((kvm_sandbox *)sb)->vm, err);
}

static int kvm_resume(hv_sandbox *sb, cube_err *err)
{
    return vmm_resume(((kvm_sandbox *)sb)->vm, err);
}

static int kvm_snapshot(hv_sandbox *sb, const char *dir, bool *process_state, cube_err *err)
{
    *process_state = false;
    if (vmm_snapshot(((kvm_sandbox *)sb)->vm, dir, err) < 0) return -1;
    *process_state = true; /* the whole machine: memory, vCPUs, devices */
    return 0;
}

static int kvm_stats(hv_sandbox *sb, hv_stats *st, cube_err *err)
{
    kvm_sandbox *k = (kvm_sandbox *)sb;
    memset(st, 0, sizeof(*st));
    /* the VMM's cgroup holds the guest's memory and the vCPUs' time */
    return k->cg.ops->stats(&k->cg, &st->cg, err);
}

static int kvm_exit_status(hv_sandbox *sb)
{
    return vmm_stop_status(((kvm_sandbox *)sb)->vm, NULL) > 0 ? 1 : 0;
}

static void kvm_terminate(hv_sandbox *sb)
{
    cube_err err = {0};
    vmm_pause(((kvm_sandbox *)sb)->vm, &err); /* the guest runs no more; destroy frees it */
}

static int kvm_exit_fd(hv_sandbox *sb)
{
    return vmm_exit_fd(((kvm_sandbox *)sb)->vm);
}

static int kvm_jail(hv_sandbox *sb, cube_err *err)
{
    (void)sb;
    return vmm_jail(err);
}

static void kvm_destroy(hv_sandbox *sb)
{
    kvm_sandbox *k = (kvm_sandbox *)sb;
    if (!k) return;
    vmm_destroy(k->vm);
    if (k->console_fd >= 0) close(k->console_fd);
    unlink(k->overlay);
    free(k);
}

const hv_ops hv_kvm_ops = {
    .name = "kvm",
    .available = kvm_available,
    .create = kvm_create,
    .init_pid = kvm_init_pid,
    .pause = kvm_pause,
    .resume = kvm_resume,
    .snapshot = kvm_snapshot,
    .stats = kvm_stats,
    .exit_fd = kvm_exit_fd,
    .exit_status = kvm_exit_status,
    .terminate = kvm_terminate,
    .jail = kvm_jail,
    .destroy = kvm_destroy,
};
