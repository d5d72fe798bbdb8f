/* The node's memory and the creates it takes (see cl_memory_admit). */
#include <errno.h>

#include "cubelet_internal.h"
#include "fsutil.h"
#include "metrics.h"

/* A sandbox's memory limit is promised, not set aside: idle sandboxes hold a few MB each, so a node takes
 * many more sandboxes than its memory would hold at their limits. But once what sandboxes use leaves the
 * node less than a new sandbox may use (beyond the node's own reserve), starting one more only squeezes
 * the running ones: past the cap on all sandboxes (main.c), the kernel ends a process of one of them, which
 * kept within its own limit. So such a create is refused, in words, while the node is that full: a busy
 * answer (EAGAIN) that the masters take to another node. */
int cl_memory_admit(const cubelet *c, const cl_template *tpl, unsigned n, cube_err *err)
{
    long long avail_kb = cube_meminfo_kb("MemAvailable");
    if (avail_kb < 0) return 0; /* no /proc/meminfo: nothing to go by */
    long long left_mb = avail_kb / 1024 - c->cfg.memory_reserve_mb;
    long long need_mb = (long long)tpl->memory_mb * (n ? n : 1);
    if (left_mb >= need_mb) return 0;
    cube_metric_add("cube_node_creates_refused_total{reason=\"memory\"}",
                    "Creates a node refused for want of memory", 1);
    return cube_err_set(
        err, EAGAIN,
        "node %s is out of memory for sandboxes: %lld MB left for them (%lld MB available, %lld "
        "MB kept for the node), and %s of template '%s' may use %lld MB; kill sandboxes you "
        "no longer need, or try again later",
        c->cfg.node_id ? c->cfg.node_id : "", left_mb > 0 ? left_mb : 0, avail_kb / 1024,
        c->cfg.memory_reserve_mb, n > 1 ? "the sandboxes" : "a sandbox", tpl->name, need_mb);
}
