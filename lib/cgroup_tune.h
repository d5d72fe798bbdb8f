/* Every sandbox start moves its first process into the sandbox's cgroups. By default each such move waits for
 * an RCU grace period (the kernel's cgroup_threadgroup_rwsem is taken for writing), 9-18 ms measured here per
 * start, with the CPU idle: in a burst of creates that idle time is most of the latency. The cgroup2 mount
 * option favordynmods (Linux 6.1) keeps that lock in the mode where a move costs ~0.1 ms, at a small cost to
 * fork and exit. The lock is global, so the option on the cgroup2 mount serves cgroup v1 moves too.
 *
 * cube_cgroup_favor_dynmods sets it on the node's cgroup2 mount, keeping the mount's other options; 0 when it
 * is set (or was already), -1 when it cannot be (no cgroup2 mount, an older kernel): sandboxes still start,
 * only slower, and the caller says so. */
#ifndef CUBE_CGROUP_TUNE_H
#define CUBE_CGROUP_TUNE_H

#include <stdbool.h>

#include "err.h"

int cube_cgroup_favor_dynmods(cube_err *err);

#endif
