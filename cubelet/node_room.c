/* The node's memory and disk, and the creates it takes (see cl_room_admit). */
#include <errno.h>
#include <sys/statvfs.h>

#include "cubelet_internal.h"
#include "fsutil.h"
#include "metrics.h"

/* A sandbox's memory limit is promised, not set aside: idle sandboxes hold a few MB each, so a node takes
 * many more sandboxes than its memory would hold at their limits. But once what sandboxes use leaves the
 * node less than a new sandbox may use (beyond the node's own reserve), starting one more only squeezes
 * the running ones: past the cap on all sandboxes (main.c), the kernel ends a process of one of them, which
 * kept within its own limit. */
static int memory_admit(const cubelet *c, const cl_template *tpl, unsigned n, cube_err *err)
{
    long long avail_kb = cube_meminfo_kb("MemAvailable");
    if (avail_kb < 0) return 0; /* no /proc/meminfo: nothing to go by */
    long long left_mb = avail_kb / 1024 - c->cfg.memory_reserve_mb;
    long long need_mb = (long long)tpl->memory_mb * n;
    if (left_mb >= need_mb) return 0;
    cube_metric_add("cube_node_creates_refused_total{reason=\"memory\"}",
                    "Creates a node refused for want of memory or disk", 1);
    return cube_err_set(
        err, EAGAIN,
        "node %s is out of memory for sandboxes: %lld MB left for them (%lld MB available, %lld "
        "MB kept for the node), and %s of template '%s' may use %lld MB; kill sandboxes you "
        "no longer need, or try again later",
        c->cfg.node_id ? c->cfg.node_id : "", left_mb > 0 ? left_mb : 0, avail_kb / 1024,
        c->cfg.memory_reserve_mb, n > 1 ? "the sandboxes" : "a sandbox", tpl->name, need_mb);
}

/* Disks too: each sandbox's disk is a sparse image on the node's disk that takes space as it is written.
 * When the node's filesystem fills, a sandbox's writes still find room in its own filesystem but not behind
 * it: they are lost (the kernel says "potential data loss"; the writer's fsync may not). So no sandbox is
 * started on a node whose free space, beyond its reserve, is less than the sandbox's disk. */
static int disk_admit(const cubelet *c, const cl_template *tpl, unsigned n, cube_err *err)
{
    struct statvfs vfs;
    if (statvfs(c->cfg.data_dir, &vfs) < 0) return 0;
    long long free_mb = (long long)((unsigned long long)vfs.f_bavail * vfs.f_frsize >> 20);
    long long left_mb = free_mb - c->cfg.disk_reserve_mb;
    long long need_mb = (long long)(tpl->disk_mb > 0 ? tpl->disk_mb : cl_node_disk_mb(c)) * n;
    if (left_mb >= need_mb) return 0;
    cube_metric_add("cube_node_creates_refused_total{reason=\"disk\"}",
                    "Creates a node refused for want of memory or disk", 1);
    return cube_err_set(
        err, EAGAIN,
        "node %s is out of disk for sandboxes: %lld MB left for them (%lld MB free, %lld MB kept "
        "for the node), and %s of template '%s' may write %lld MB; kill sandboxes you no longer "
        "need, or try again later",
        c->cfg.node_id ? c->cfg.node_id : "", left_mb > 0 ? left_mb : 0, free_mb, c->cfg.disk_reserve_mb,
        n > 1 ? "the sandboxes" : "a sandbox", tpl->name, need_mb);
}

int cl_room_admit(const cubelet *c, const cl_template *tpl, unsigned n, cube_err *err)
{
    if (n == 0) n = 1;
    return memory_admit(c, tpl, n, err) < 0 || disk_admit(c, tpl, n, err) < 0 ? -1 : 0;
}
