/* A handed-out sandbox's CPU, memory and disk over its life (E2B's metrics with start/end), sampled by the
 * node every METRICS_SAMPLE_MS. A bounded ring per sandbox: when full, every other sample goes and the
 * interval doubles, so the whole life fits in METRICS_HISTORY_MAX samples (finer for younger sandboxes). */
#ifndef CUBE_CUBELET_METRICS_HISTORY_H
#define CUBE_CUBELET_METRICS_HISTORY_H

#include <stdint.h>

#define METRICS_SAMPLE_MS   5000
#define METRICS_HISTORY_MAX 240

typedef struct metrics_sample {
    int64_t at_ms; /* Unix time */
    float cpu_pct; /* 100 = one CPU, over the interval before this sample */
    uint32_t cpu_count;
    uint64_t mem_used, mem_total, mem_cache, disk_used, disk_total;
} metrics_sample;

typedef struct metrics_history {
    metrics_sample s[METRICS_HISTORY_MAX];
    int n;
    int every;   /* one sample kept in this many taken */
    int skipped; /* taken since the last kept */
    /* at the last kept sample: the next one's CPU use is the difference */
    uint64_t last_cpu_ns;
    int64_t last_mono_ns;
} metrics_history;

/* Records a sample taken at mono_ns (monotonic) with cpu_ns the sandbox's cumulative CPU time; *x has the
 * rest (at_ms: Unix time) and gets cpu_pct when kept. The first sample is always kept (its CPU is 0: no
 * interval yet). */
void metrics_history_add(metrics_history *h, metrics_sample *x, uint64_t cpu_ns, int64_t mono_ns);

#endif
