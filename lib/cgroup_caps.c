/* What all sandboxes together may hold: memory, and socket memory under cgroup v1 (cgroup_caps.h). */
#include "cgroup_caps.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"

unsigned long long cube_cgroup_sandbox_socket_limit(unsigned long long memory_bytes)
{
    unsigned long long share = memory_bytes / 8;
    return share < (16ULL << 20) ? 16ULL << 20 : share;
}

/* the first of the three page counts of tcp_mem or udp_mem, in bytes; 0 when unreadable */
static unsigned long long pressure_bytes(const char *path)
{
    FILE *f = fopen(path, "re");
    unsigned long long pages = 0;
    if (f) {
        if (fscanf(f, "%llu", &pages) != 1) pages = 0;
        fclose(f);
    }
    return pages * (unsigned long long)sysconf(_SC_PAGESIZE);
}

#define V1_MEMORY "/sys/fs/cgroup/memory"

int cube_cgroup_cap_sandbox_sockets(unsigned long long *cap_bytes, cube_err *err)
{
    *cap_bytes = 0;
    if (access(V1_MEMORY "/memory.kmem.tcp.limit_in_bytes", F_OK) < 0) return 0;
    unsigned long long tcp = pressure_bytes("/proc/sys/net/ipv4/tcp_mem"),
                       udp = pressure_bytes("/proc/sys/net/ipv4/udp_mem");
    unsigned long long cap = tcp && udp ? (tcp < udp ? tcp : udp) : tcp ? tcp : udp;
    if (!cap) return cube_err_set(err, EIO, "cannot read the node's socket memory thresholds");
    if (mkdir(V1_MEMORY "/cube", 0755) < 0 && errno != EEXIST)
        return cube_err_sys(err, errno, "mkdir " V1_MEMORY "/cube");
    char v[32];
    snprintf(v, sizeof(v), "%llu", cap);
    if (cube_write_string(V1_MEMORY "/cube/memory.kmem.tcp.limit_in_bytes", v, err) < 0) return -1;
    *cap_bytes = cap;
    return 0;
}

unsigned long long cube_node_memory_reserve_default(unsigned long long total_bytes)
{
    unsigned long long r = total_bytes / 16;
    if (r < (256ULL << 20)) r = 256ULL << 20;
    if (r > (2048ULL << 20)) r = 2048ULL << 20;
    return r;
}

#define V2_ROOT "/sys/fs/cgroup"

int cube_cgroup_cap_sandbox_memory(unsigned long long cap_bytes, cube_err *err)
{
    const char *dir, *file;
    if (access(V1_MEMORY "/memory.limit_in_bytes", F_OK) == 0) {
        dir = V1_MEMORY "/cube";
        file = V1_MEMORY "/cube/memory.limit_in_bytes";
    } else if (access(V2_ROOT "/cgroup.controllers", F_OK) == 0) {
        dir = V2_ROOT "/cube";
        file = V2_ROOT "/cube/memory.max";
        /* the memory controller handed down to "cube" (as cube-hypervisor does for sandboxes) */
        cube_write_string(V2_ROOT "/cgroup.subtree_control", "+memory", NULL);
    } else {
        return 0;
    }
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", dir);
    if (access(file, F_OK) < 0) return 0; /* v2 without the memory controller */
    char v[32];
    snprintf(v, sizeof(v), "%llu", cap_bytes);
    return cube_write_string(file, v, err) < 0 ? -1 : 1;
}
