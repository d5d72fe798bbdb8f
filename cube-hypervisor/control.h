/* The control socket: the cube.Hypervisor RPC service over one running sandbox. */
#ifndef CUBE_HV_CONTROL_H
#define CUBE_HV_CONTROL_H

#include <pthread.h>

#include "hv.h"
#include "rpc.h"

typedef struct hv_control {
    const hv_ops *ops;
    hv_sandbox *sb;
    const hv_spec *spec; /* what the sandbox was created with (a rollback starts its PID 1 again from it) */
    char id[64];
    pthread_mutex_t lock; /* one lifecycle call at a time; PID 1 changes only under it (rollback) */
    int stop_fd;          /* eventfd: Stop asks the main thread to tear down */
    int stopping;
    pid_t init_pid; /* atomic: the sandbox's PID 1 now (Info answers it without waiting for the lock) */
    uint64_t last_cpu_ns;
    int64_t last_sample_ns;
} hv_control;

extern const cube_rpc_method hv_control_methods[];

#endif
