/* How deep a template's pool should be now. A node keeps its configured pool (--pool-size) at least; while
 * creates come faster, the pool follows them: its target is the most claims seen in any PEAK_WINDOW_S seconds
 * of the last minute (a burst of 50 asks for 50 ready for the next one), capped by --pool-max, the memory the
 * node lends to idle sandboxes. A minute after the last burst the target is back at the configured size and
 * the refill thread lets the extra idle sandboxes go. Pure arithmetic over a ring of per-second counts: the
 * caller holds whatever lock guards it. */
#ifndef CUBE_CUBELET_POOL_DEMAND_H
#define CUBE_CUBELET_POOL_DEMAND_H

#include <stdint.h>

#define POOL_DEMAND_SPAN_S 60
#define PEAK_WINDOW_S      10

typedef struct pool_demand {
    uint16_t per_sec[POOL_DEMAND_SPAN_S]; /* claims in each second, a ring */
    int64_t sec;                          /* the monotonic second the newest slot counts */
} pool_demand;

/* One claim (a create, pooled or cold) at now_ms. */
void pool_demand_note(pool_demand *d, int64_t now_ms);
/* The most claims in any window_s consecutive seconds of the last minute. */
int pool_demand_peak(pool_demand *d, int64_t now_ms, int window_s);
/* base when nothing is asked (a template that keeps no pool keeps none), else the peak up to max. */
int pool_demand_target(pool_demand *d, int64_t now_ms, int base, int max);

#endif
