/* cube-hypervisor: one process per sandbox. The isolation backends sit behind one ops table; nothing above it
 * knows which runs. A sandbox is created when the process starts (its spec is the command line) and answered
 * for over the control socket until it stops. */
#ifndef CUBE_HV_H
#define CUBE_HV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cgroup.h"
#include "err.h"

typedef struct hv_spec {
    const char *id;        /* sandbox id: also the hostname and the cgroup name */
    const char *rootfs;    /* template rootfs directory: the lowest, read-only layer */
    const char *layers;    /* optional "dirA:dirB" stacked above rootfs (restore, fork); may be NULL */
    const char *state_dir; /* per-sandbox directory, created by the caller */
    const char *agent_bin; /* host path of cube-agent, bind-mounted read-only at /.cube/cube-agent */
    /* or a self-contained agent directory (cube-agent, its libraries in lib/, the loader as ld.so), mounted
     * at
     * /.cube: the agent then runs whatever libc the template has, or none */
    const char *agent_bundle;
    /* a network namespace to join (cube-net's slot for this sandbox, owned by the node so the sandbox cannot
     * reconfigure it); NULL: a new one with only loopback */
    const char *netns;
    int netns_fd;      /* the same, already open (a descriptor > 2: it wins over netns); 0 or -1: none */
    char *const *argv; /* PID 1; NULL: the agent */
    char *const *envp;
    /* A container's process (cube-shim): its working directory, user, hostname, stdio (host fds made its
     * 0/1/2) and a start gate (PID 1 execs only after a byte arrives on start_fd; EOF: it exits). NULL /
     * false: the defaults (/, root, the id, inherited, no gate). */
    const char *cwd;
    const char *hostname;
    bool has_user, has_stdio, has_start;
    uid_t uid;
    gid_t gid;
    int stdio_fds[3];
    int start_fd;
    cg_limits limits;
    uint64_t disk_mb; /* size of the writable layer */
    /* ns backend: an empty ext4 image of disk_mb (hv_disk_template) the writable layer is a copy of; NULL: a
     * tmpfs */
    const char *disk_template;
    int disk_fd; /* ns backend: a disk prepared ahead (hv_disk_prepare, a descriptor > 2) placed instead of a
                  * copy of disk_template; 0 or -1: none */
    /* ns backend: an lxcfs mount; the sandbox's /proc/meminfo, cpuinfo, stat, uptime, loadavg, diskstats and
     * swaps come from it (its own limits, not the node's). NULL: the kernel's */
    const char *lxcfs;
    /* kvm backend: the guest kernel and the template's root disk image (ext4), or a snapshot directory to
     * clone from instead of booting */
    const char *kernel;
    const char *disk_image;
    const char *restore;
    const char *kernel_args; /* kvm: appended to the guest kernel's command line; may be NULL */
    uid_t uid_base;          /* root inside is this host uid */
    uint32_t uid_count;
} hv_spec;

typedef struct hv_stats {
    cg_stats cg;
    uint64_t disk_used, disk_total;
    uint64_t disk_pending; /* hv_disk_pending */
} hv_stats;

typedef struct hv_sandbox hv_sandbox;

typedef struct hv_ops {
    const char *name;
    /* 0 when this host can run the backend, else -1 with the reason in err. */
    int (*available)(cube_err *err);
    int (*create)(const hv_spec *spec, hv_sandbox **out, cube_err *err);
    pid_t (*init_pid)(hv_sandbox *sb);
    int (*pause)(hv_sandbox *sb, cube_err *err);
    int (*resume)(hv_sandbox *sb, cube_err *err);
    /* Copies the writable layer to dir (paused meanwhile); *process_state says whether processes were saved.
     */
    int (*snapshot)(hv_sandbox *sb, const char *dir, bool *process_state, cube_err *err);
    /* Returns the sandbox in place to a snapshot's files: its processes end, its writable layer is emptied
     * and stacked over layers, and a new PID 1 starts with the rest of spec (the one it was created with).
     * NULL: the backend cannot. On failure the sandbox no longer runs. */
    int (*rollback)(hv_sandbox *sb, const hv_spec *spec, const char *layers, cube_err *err);
    int (*stats)(hv_sandbox *sb, hv_stats *st, cube_err *err);
    /* A descriptor that becomes readable when the sandbox ends by itself, where that is not PID 1's SIGCHLD
     * (a microVM's guest shutting down); NULL for backends whose end is PID 1's exit. */
    int (*exit_fd)(hv_sandbox *sb);
    /* Once exit_fd fired: this process's exit status, 0 when the guest powered off or reset itself, 1 when
     * it failed (a crash, or an instruction the host's KVM cannot run). NULL: 0. */
    int (*exit_status)(hv_sandbox *sb);
    /* Kills every process of the sandbox now (a paused one too), leaving the teardown to destroy: Stop's
     * caller learns that the sandbox no longer runs before the slower cleanup. */
    void (*terminate)(hv_sandbox *sb);
    /* Called once the control socket serves: confines this process for the rest of its life (the kvm
     * backend's jail). NULL: nothing to do. */
    int (*jail)(hv_sandbox *sb, cube_err *err);
    /* A descriptor of this process holding a clone of the sandbox's disk (a detached mount, see disk.h), for
     * the node to take with pidfd_getfd before it stops the sandbox and reuse once the sandbox is gone; -1:
     * none (a tmpfs writable layer, a microVM). NULL: never. */
    int (*disk_keep_fd)(hv_sandbox *sb);
    /* Bounds what the sandbox may still write to its disk (disk.h, hv_disk_set_room); NULL: no disk of its
     * own to bound (a microVM's). */
    int (*disk_room)(hv_sandbox *sb, bool limited, uint64_t writable_bytes, cube_err *err);
    /* Kills everything, removes mounts and cgroups. Idempotent; frees sb. */
    void (*destroy)(hv_sandbox *sb);
} hv_ops;

extern const hv_ops hv_ns_ops;
/* ns backend: when set (cube-zygote sets it to the agent's main), a sandbox's PID 1 runs the agent from the
 * image it already has, loaded and initialised, instead of exec'ing /.cube/cube-agent. NULL: exec. */
extern int (*hv_builtin_agent)(int argc, char **argv);
extern const hv_ops hv_kvm_ops;

/* "auto": kvm when /dev/kvm works and a guest (kernel and disk image) is given, else ns. Logs the choice. */
const hv_ops *hv_backend_pick(const char *name, bool guest_given, cube_err *err);

#endif
