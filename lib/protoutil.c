#include "protoutil.h"

void cube_hv_stats_copy(Cube__HvStats *dst, const Cube__HvStats *src)
{
    dst->cpu_count = src->cpu_count;
    dst->cpu_used_pct = src->cpu_used_pct;
    dst->mem_used = src->mem_used;
    dst->mem_total = src->mem_total;
    dst->mem_cache = src->mem_cache;
    dst->disk_used = src->disk_used;
    dst->disk_total = src->disk_total;
    dst->pids = src->pids;
    dst->state = src->state;
    dst->cpu_usage_ns = src->cpu_usage_ns;
    dst->sampled_at_ms = src->sampled_at_ms;
}
