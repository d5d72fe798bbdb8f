/* A pool's depth following demand (see pool_demand.h). */
#include "pool_demand.h"

/* The run that last_ms belongs to, once over (a quiet gap after it): recorded if it was a burst. */
static void end_run(pool_demand *d, int64_t now_ms)
{
    if (d->run_creates == 0 || now_ms - d->last_ms < POOL_QUIET_MS) return;
    if (d->last_ms - d->run_start_ms <= BURST_MAX_MS) {
        d->bursts[d->next_burst].end_ms = d->last_ms;
        d->bursts[d->next_burst].size = d->run_creates;
        d->next_burst = (d->next_burst + 1) % POOL_BURSTS_KEPT;
    }
    d->run_creates = 0;
}

void pool_demand_note(pool_demand *d, int64_t now_ms)
{
    end_run(d, now_ms);
    if (d->run_creates == 0) d->run_start_ms = now_ms;
    if (d->run_creates < 1 << 30) d->run_creates++;
    d->last_ms = now_ms;
}

bool pool_demand_busy(const pool_demand *d, int64_t now_ms)
{
    return d->run_creates > 0 && now_ms - d->last_ms < POOL_QUIET_MS;
}

int pool_demand_peak(pool_demand *d, int64_t now_ms)
{
    end_run(d, now_ms);
    int peak = 0;
    for (int i = 0; i < POOL_BURSTS_KEPT; i++)
        if (d->bursts[i].size > peak && now_ms - d->bursts[i].end_ms < POOL_DEMAND_SPAN_MS)
            peak = d->bursts[i].size;
    return peak;
}

int pool_demand_target(pool_demand *d, int64_t now_ms, int base, int max)
{
    if (base <= 0) return 0;
    if (pool_demand_busy(d, now_ms)) return base;
    int peak = pool_demand_peak(d, now_ms);
    if (peak > max) peak = max;
    return peak > base ? peak : base;
}
