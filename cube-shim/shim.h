/* cube-shim's task service: one container per shim process, run as a cube-hypervisor sandbox (ns backend)
 * over the OCI bundle's rootfs and process. The shim is the parent of the hypervisor (whose exit status is
 * PID 1's) and of every exec'd process, so one reaper thread learns every exit. */
#ifndef CUBE_SHIM_H
#define CUBE_SHIM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ttrpc.h"

typedef struct shim_proc {
    char exec_id[128]; /* "" for the container's init */
    pid_t pid;         /* host pid of the process */
    pid_t waited;      /* the child the shim waits for: the hypervisor (init) or the exec helper */
    bool started, exited;
    int exit_status;
    int64_t exited_at_ns;
    char stdin_path[1024], stdout_path[1024], stderr_path[1024];
    char *spec_json; /* exec: the OCI process */
    struct shim_proc *next;
} shim_proc;

typedef struct shim {
    const char *ns;       /* containerd namespace */
    const char *ttrpc;    /* containerd's ttrpc address, for events */
    const char *hv_bin;   /* cube-hypervisor */
    char state_root[512]; /* /run/cube-shim */
    pthread_mutex_t lock;
    pthread_cond_t changed; /* a process exited or a child was added */
    bool created, deleted, paused, rootfs_mounted;
    char id[256], sandbox_id[64], bundle[4096], state_dir[600], control[700];
    int start_w; /* the init's start gate */
    shim_proc init;
    shim_proc *execs;
    int children; /* live children: the reaper sleeps while 0 */
    volatile bool stop;
    void *events; /* ttrpc_client to containerd, connected on first use */
} shim;

void shim_init(shim *s, const char *ns, const char *ttrpc_address, const char *hv_bin);
/* The reaper thread: waits for every child, records exits, wakes Wait calls, publishes TaskExit. */
void *shim_reaper(void *arg);

extern const ttrpc_method shim_methods[];

/* The sandbox id for a containerd (namespace, id): [a-z0-9-], stable. */
void shim_sandbox_id(const char *ns, const char *id, char out[32]);

#endif
