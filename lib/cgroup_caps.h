#ifndef CUBE_CGROUP_CAPS_H
#define CUBE_CGROUP_CAPS_H

#include "err.h"

/* What all sandboxes together may hold of the node (the "cube" cgroup, parent of every sandbox's), so that
 * sandboxes each within their own limits cannot together take what the node itself needs. */

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

/* Memory. Each sandbox's limit is a promise the node does not reserve (a pooled or idle sandbox holds a few
 * MB), so the limits of many add up past the node's memory. Without a cap on all of them, sandboxes that
 * grow within their limits run the node out: its page cache goes first (its services' binaries among it),
 * then the kernel's global OOM killer ends processes of any sandbox, or of the node. With it, the squeeze
 * stays among sandboxes (reclaim, then the OOM killer inside "cube"), and the node keeps its reserve.
 *
 * cube_node_memory_reserve_default: what the node keeps for itself by default: a sixteenth of its memory,
 * at least 256 MiB, at most 2 GiB.
 * cube_cgroup_cap_sandbox_memory sets the cap (cgroup v1: memory/cube/memory.limit_in_bytes; v2:
 * cube/memory.max), making "cube" if missing: 1. 0 with nothing done where no memory controller is there; -1
 * with err otherwise (EBUSY: sandboxes already hold more than the cap and the kernel could not reclaim it).
 */
unsigned long long cube_node_memory_reserve_default(unsigned long long total_bytes);
int cube_cgroup_cap_sandbox_memory(unsigned long long cap_bytes, cube_err *err);

#endif
