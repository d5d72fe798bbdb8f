/* How deep a template's pool should be now. A node keeps its configured pool (--pool-size) at least; after a
 * burst of creates the pool follows it: its target is the largest burst of the last minute (a burst of 200
 * asks for 200 ready for the next one), capped by --pool-max, the memory the node lends to idle sandboxes. A
 * minute after the last burst the target is back at the configured size and the refill thread lets the extra
 * idle sandboxes go.
 *
 * A burst is a run of creates with no quiet second inside it, over within BURST_MAX_MS. A longer run is a
 * stream (a steady rate, back-to-back rounds, a churn): refills serve it as fast as the node can start
 * sandboxes whatever the depth, so a stream raises nothing; a deeper pool would only make each create
 * dearer (every sandbox the node holds adds to the kernel's work for each new one: mount namespace copies,
 * cgroup teardown). While creates come (busy), refills keep the configured size only and no idle sandbox is
 * let go (pool_demand_busy): the pool grows in the quiet after a burst, and shrinks only in a quiet.
 * Pure arithmetic: the caller holds whatever lock guards it. */
#ifndef CUBE_CUBELET_POOL_DEMAND_H
#define CUBE_CUBELET_POOL_DEMAND_H

#include <stdbool.h>
#include <stdint.h>

#define POOL_DEMAND_SPAN_MS 60000 /* how long a burst raises the target */
#define POOL_QUIET_MS       1000  /* a gap this long ends a run of creates */
#define BURST_MAX_MS        3000  /* a run longer than this is a stream, not a burst */
#define POOL_BURSTS_KEPT    16

typedef struct pool_demand {
    int64_t last_ms;      /* the latest create (0: none yet) */
    int64_t run_start_ms; /* when the run of creates that last_ms belongs to began */
    int run_creates;      /* creates in that run */
    struct {
        int64_t end_ms;
        int size;
    } bursts[POOL_BURSTS_KEPT]; /* the latest bursts, a ring */
    int next_burst;
} pool_demand;

/* One create (pooled or cold) at now_ms. */
void pool_demand_note(pool_demand *d, int64_t now_ms);
/* Whether creates are coming now (one within POOL_QUIET_MS). */
bool pool_demand_busy(const pool_demand *d, int64_t now_ms);
/* The largest burst that ended within the last POOL_DEMAND_SPAN_MS (the run now ending counts once it is
 * over); 0 if none. */
int pool_demand_peak(pool_demand *d, int64_t now_ms);
/* base when nothing is asked (a template that keeps no pool keeps none) or while creates come, else the
 * largest recent burst up to max. */
int pool_demand_target(pool_demand *d, int64_t now_ms, int base, int max);

#endif
