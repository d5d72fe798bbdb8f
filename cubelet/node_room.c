/* The node's memory and disk, and the creates it takes (see cl_room_admit). */
#include <errno.h>
#include <stdio.h>
#include <sys/statvfs.h>

#include "cubelet_internal.h"
#include "fsutil.h"
#include "hypervisor.pb-c.h"
#include "metrics.h"

/* Refuses n sandboxes of tpl, each of which may take need_mb of what the node has `have_mb` (less its
 * reserve): "busy" (EAGAIN), which masters take to another node, in words with the figures. */
static int refuse(const cubelet *c, const cl_template *tpl, unsigned n, const char *what, long long have_mb,
                  const char *have, long long reserve_mb, const char *verb, long long need_mb, cube_err *err)
{
    long long left_mb = have_mb - reserve_mb;
    char metric[96];
    snprintf(metric, sizeof(metric), "cube_node_creates_refused_total{reason=\"%s\"}", what);
    cube_metric_add(metric, "Creates a node refused for want of memory or disk", 1);
    return cube_err_set(
        err, EAGAIN,
        "node %s is out of %s for sandboxes: %lld MB left for them (%lld MB %s, %lld MB kept for "
        "the node), and %s of template '%s' may %s %lld MB; kill sandboxes you no longer need, "
        "or try again later",
        c->cfg.node_id ? c->cfg.node_id : "", what, left_mb > 0 ? left_mb : 0, have_mb, have, reserve_mb,
        n > 1 ? "the sandboxes" : "a sandbox", tpl->name, verb, need_mb);
}

/* What the node has now, MB: MemAvailable (-1: unknown) and its data directory's free space (-1: unknown). */
typedef struct node_have {
    long long memory_mb, disk_mb;
} node_have;

static node_have have_now(const cubelet *c)
{
    node_have h = {-1, -1};
    long long avail_kb = cube_meminfo_kb("MemAvailable");
    struct statvfs vfs;
    if (avail_kb >= 0) h.memory_mb = avail_kb / 1024;
    if (statvfs(c->cfg.data_dir, &vfs) == 0)
        h.disk_mb = (long long)((unsigned long long)vfs.f_bavail * vfs.f_frsize >> 20);
    return h;
}

void cl_room_left(const cubelet *c, long long *memory_mb, long long *disk_mb)
{
    node_have h = have_now(c);
    *memory_mb = h.memory_mb >= 0 ? h.memory_mb - c->cfg.memory_reserve_mb : 0;
    *disk_mb = h.disk_mb >= 0 ? h.disk_mb - c->cfg.disk_reserve_mb : 0;
}

/* Memory: a sandbox's limit is promised, not set aside (idle sandboxes hold a few MB each), so a node takes
 * many more sandboxes than its memory would hold at their limits. But once what sandboxes use leaves the
 * node less than a new sandbox may use (beyond the node's own reserve), starting one more only squeezes the
 * running ones: past the cap on all sandboxes (main.c), the kernel ends a process of one of them, which
 * kept within its own limit.
 * Disk: each sandbox's disk is a sparse image on the node's disk that takes space as it is written; a node
 * whose free space (beyond its reserve) is less than a sandbox's disk starts none (metrics_sampler.c bounds
 * the running ones' writes while the node's disk is short). */
int cl_room_admit(const cubelet *c, const cl_template *tpl, unsigned n, cube_err *err)
{
    if (n == 0) n = 1;
    node_have h = have_now(c);
    long long need_mb = (long long)tpl->memory_mb * n;
    if (h.memory_mb >= 0 && h.memory_mb - c->cfg.memory_reserve_mb < need_mb)
        return refuse(c, tpl, n, "memory", h.memory_mb, "available", c->cfg.memory_reserve_mb, "use", need_mb,
                      err);
    need_mb = (long long)(tpl->disk_mb > 0 ? tpl->disk_mb : cl_node_disk_mb(c)) * n;
    if (h.disk_mb >= 0 && h.disk_mb - c->cfg.disk_reserve_mb < need_mb)
        return refuse(c, tpl, n, "disk", h.disk_mb, "free", c->cfg.disk_reserve_mb, "write", need_mb, err);
    return 0;
}

int cl_room_for_copy(const cubelet *c, const char *control, const char *what, cube_err *err)
{
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    cube_err serr = {0};
    if (cube_rpc_call_once(control, "/cube.Hypervisor/Stats", &e.base, &cube__hv_stats__descriptor, &resp,
                           5000, &serr) < 0)
        return 0; /* not known: the copy itself will say if it does not fit */
    long long used_mb = (long long)(((const Cube__HvStats *)resp)->disk_used >> 20);
    protobuf_c_message_free_unpacked(resp, NULL);
    long long free_mb = have_now(c).disk_mb, left_mb = free_mb - c->cfg.disk_reserve_mb;
    if (free_mb < 0) return 0;
    if (left_mb >= used_mb) return 0;
    cube_metric_add("cube_node_copies_refused_total", "Snapshots and forks a node refused for want of disk",
                    1);
    return cube_err_set(
        err, EAGAIN,
        "node %s is out of disk for a copy of %s: its files take %lld MB, %lld MB are left "
        "(%lld MB free, %lld MB kept for the node); delete snapshots or templates you no longer "
        "need, or try again later",
        c->cfg.node_id ? c->cfg.node_id : "", what, used_mb, left_mb > 0 ? left_mb : 0, free_mb,
        c->cfg.disk_reserve_mb);
}
