/* The node's kernel-wide counts that sandboxes share, raised at cubelet's start (cl_raise_node_limits). */
#include <limits.h>
#include <stdio.h>

#include "cubelet_internal.h"
#include "fsutil.h"
#include "log.h"

/* Node-wide counts that every sandbox draws on, each sandbox bounded only by its own limits (pids, memory:
 * the kernel charges each of these objects to the sandbox's memory cgroup). At the kernel's defaults a few
 * sandboxes at their limits took all of one, and then every other sandbox (and the node, for the first
 * two) was refused:
 * - pid_max (32768 below 32 CPUs): 32 sandboxes at their 1,024 processes, and the node itself forked nothing;
 * - threads-max (sized from memory: 192,735 on 24 GiB): 189 sandboxes of 1,024 idle threads (~50 MiB each);
 * - file-max (sized from memory: 2,466,239 on 24 GiB; unprivileged opens past it fail, ENFILE): three
 *   sandboxes holding a million descriptors each;
 * - epoll's max_user_watches (4% of memory) and pipe-user-pages-soft (64 MiB of pipe buffers, past which
 *   pipes get one page): counted per host uid, which every sandbox's `user` was before each had its own;
 * - aio-max-nr (65,536 AIO events reserved by io_setup, node-wide; an event's ring slot is 32 bytes of the
 *   sandbox's memory): one sandbox holding two io_setup(32768) left none, and every other sandbox's (and
 *   the node's) MariaDB or libaio program was refused. Without the cap, a sandbox's memory bounds it;
 * - pty/max (4,096, of which 3,072 for containers' devpts instances): each sandbox's own instance is capped
 *   at 1,024 (cube-hypervisor), and the node's count allows the kernel's most.
 * Raised as container hosts raise them (systemd sets file-max to the maximum at boot); a host that refuses
 * keeps its own, said. */
static const struct node_limit {
    const char *path;
    long long want; /* at least this; 0: none, the kernel's "no limit" for that one */
} node_limits[] = {
    {"/proc/sys/kernel/pid_max", 4194304},    {"/proc/sys/kernel/threads-max", 4194304},
    {"/proc/sys/fs/file-max", LLONG_MAX},     {"/proc/sys/fs/epoll/max_user_watches", LLONG_MAX},
    {"/proc/sys/fs/pipe-user-pages-soft", 0}, {"/proc/sys/fs/aio-max-nr", LLONG_MAX},
    {"/proc/sys/kernel/pty/max", 1048576},
};

void cl_raise_node_limits(void)
{
    for (size_t i = 0; i < sizeof(node_limits) / sizeof(node_limits[0]); i++) {
        const struct node_limit *l = &node_limits[i];
        FILE *f = fopen(l->path, "re");
        long long cur = -1;
        if (f) {
            if (fscanf(f, "%lld", &cur) != 1) cur = -1;
            fclose(f);
        }
        if (cur < 0 || (l->want ? cur >= l->want : cur == 0)) continue; /* absent, or already enough */
        cube_err err = {0};
        char v[32];
        snprintf(v, sizeof(v), "%lld\n", l->want);
        if (cube_write_string(l->path, v, &err) == 0)
            cube_log_info("raised a node-wide limit that sandboxes share", "path=%s from=%lld to=%lld",
                          l->path, cur, l->want);
        else
            cube_log_warn(
                "a node-wide limit stays low: a few sandboxes at their own limits can take all of it",
                "path=%s value=%lld err=\"%s\"", l->path, cur, err.msg);
    }
}
