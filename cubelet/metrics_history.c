#include "metrics_history.h"

void metrics_history_add(metrics_history *h, metrics_sample *x, uint64_t cpu_ns, int64_t mono_ns)
{
    if (h->every < 1) h->every = 1;
    if (h->last_mono_ns && ++h->skipped < h->every) return;
    h->skipped = 0;
    /* CPU over the whole interval since the last kept sample */
    x->cpu_pct = 0;
    if (h->last_mono_ns && mono_ns > h->last_mono_ns && cpu_ns >= h->last_cpu_ns)
        x->cpu_pct = (float)(100.0 * (double)(cpu_ns - h->last_cpu_ns) / (double)(mono_ns - h->last_mono_ns));
    h->last_cpu_ns = cpu_ns;
    h->last_mono_ns = mono_ns;
    if (h->n ==
        METRICS_HISTORY_MAX) { /* halve: pairs become one (their CPU averaged), sample half as often */
        for (int i = 0; i < METRICS_HISTORY_MAX / 2; i++) {
            float cpu = (h->s[2 * i].cpu_pct + h->s[2 * i + 1].cpu_pct) / 2;
            h->s[i] = h->s[2 * i + 1];
            h->s[i].cpu_pct = cpu;
        }
        h->n = METRICS_HISTORY_MAX / 2;
        h->every *= 2;
    }
    h->s[h->n++] = *x;
}
