/* A pool's depth following demand (see pool_demand.h). */
#include "pool_demand.h"

#include <string.h>

/* Moves the ring to now's second, zeroing the seconds that passed without a claim. */
static void advance(pool_demand *d, int64_t now_ms)
{
    int64_t now = now_ms / 1000;
    if (now <= d->sec) return;
    if (now - d->sec >= POOL_DEMAND_SPAN_S) {
        memset(d->per_sec, 0, sizeof(d->per_sec));
    } else {
        for (int64_t s = d->sec + 1; s <= now; s++) d->per_sec[s % POOL_DEMAND_SPAN_S] = 0;
    }
    d->sec = now;
}

void pool_demand_note(pool_demand *d, int64_t now_ms)
{
    advance(d, now_ms);
    uint16_t *slot = &d->per_sec[d->sec % POOL_DEMAND_SPAN_S];
    if (*slot < UINT16_MAX) (*slot)++;
}

int pool_demand_peak(pool_demand *d, int64_t now_ms, int window_s)
{
    advance(d, now_ms);
    if (window_s < 1) window_s = 1;
    if (window_s > POOL_DEMAND_SPAN_S) window_s = POOL_DEMAND_SPAN_S;
    int peak = 0, sum = 0;
    /* oldest to newest: a sliding sum over window_s seconds */
    for (int i = 0; i < POOL_DEMAND_SPAN_S; i++) {
        int64_t s = d->sec - (POOL_DEMAND_SPAN_S - 1) + i;
        sum += d->per_sec[((s % POOL_DEMAND_SPAN_S) + POOL_DEMAND_SPAN_S) % POOL_DEMAND_SPAN_S];
        if (i >= window_s) {
            int64_t out = s - window_s;
            sum -= d->per_sec[((out % POOL_DEMAND_SPAN_S) + POOL_DEMAND_SPAN_S) % POOL_DEMAND_SPAN_S];
        }
        if (sum > peak) peak = sum;
    }
    return peak;
}

int pool_demand_target(pool_demand *d, int64_t now_ms, int base, int max)
{
    if (base <= 0) return 0;
    int peak = pool_demand_peak(d, now_ms, PEAK_WINDOW_S);
    if (peak > max) peak = max;
    return peak > base ? peak : base;
}
