#ifndef CUBE_CGROUP_SOCKETS_H
#define CUBE_CGROUP_SOCKETS_H

#include "err.h"

/* Socket buffers (TCP's and UDP's) come out of one node-wide budget (tcp_mem, udp_mem): past its hard limit
 * every socket of the node fails to grow ("TCP: out of memory"), the node's own services' too. Under cgroup
 * v2 a cgroup's socket memory is part of its memory; under v1 it is counted only where a cgroup has a
 * memory.kmem.tcp.limit_in_bytes (which then covers all its socket memory, UDP's too). So, under v1:
 *
 * cube_cgroup_sandbox_socket_limit is the share of a sandbox's memory limit its sockets may hold (an eighth,
 * at least 16 MB: about what a VM of that memory gets from its own kernel's defaults).
 *
 * cube_cgroup_cap_sandbox_sockets bounds all sandboxes' sockets together (the "cube" memory cgroup, made if
 * missing) at the node's pressure threshold (tcp_mem's and udp_mem's first figure), so sandboxes alone can
 * never push the node's sockets into pressure. *cap_bytes: what it set; 0 with nothing done where cgroup v1's
 * memory controller or its socket counter is absent (v2: nothing to do). -1 with err otherwise. */
unsigned long long cube_cgroup_sandbox_socket_limit(unsigned long long memory_bytes);
int cube_cgroup_cap_sandbox_sockets(unsigned long long *cap_bytes, cube_err *err);

#endif
