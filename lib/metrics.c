#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 10
static const double bucket_le[NBUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 10};

typedef enum { COUNTER, GAUGE, HISTOGRAM } kind;

typedef struct metric {
    char *name; /* with labels */
    char *help;
    kind k;
    double value; /* counter, gauge */
    uint64_t buckets[NBUCKETS];
    uint64_t count;
    double sum;
    struct metric *next;
} metric;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static metric *head, *tail;

/* With the lock: the metric, created where it belongs if new. */
static metric *get(const char *name, const char *help, kind k)
{
    for (metric *m = head; m; m = m->next)
        if (m->k == k && strcmp(m->name, name) == 0) return m;
    metric *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->name = strdup(name);
    m->help = strdup(help ? help : "");
    m->k = k;
    if (!m->name || !m->help) {
        free(m->name);
        free(m->help);
        free(m);
        return NULL;
    }
    /* after the last of its family (labels set apart, registered whenever they first happen): a family's
     * HELP and TYPE are written once, before all its members, or Prometheus refuses the whole scrape */
    size_t fl = strcspn(name, "{");
    metric *after = NULL;
    for (metric *x = head; x; x = x->next)
        if (strncmp(x->name, name, fl) == 0 && (x->name[fl] == '{' || x->name[fl] == '\0')) after = x;
    if (after) {
        m->next = after->next;
        after->next = m;
        if (tail == after) tail = m;
    } else if (tail) {
        tail->next = m;
        tail = m;
    } else {
        head = tail = m;
    }
    return m;
}

void cube_metric_add(const char *name, const char *help, uint64_t n)
{
    pthread_mutex_lock(&lock);
    metric *m = get(name, help, COUNTER);
    if (m) m->value += (double)n;
    pthread_mutex_unlock(&lock);
}

void cube_metric_set(const char *name, const char *help, double value)
{
    pthread_mutex_lock(&lock);
    metric *m = get(name, help, GAUGE);
    if (m) m->value = value;
    pthread_mutex_unlock(&lock);
}

void cube_metric_observe(const char *name, const char *help, double seconds)
{
    pthread_mutex_lock(&lock);
    metric *m = get(name, help, HISTOGRAM);
    if (m) {
        for (int i = 0; i < NBUCKETS; i++)
            if (seconds <= bucket_le[i]) m->buckets[i]++;
        m->count++;
        m->sum += seconds;
    }
    pthread_mutex_unlock(&lock);
}

void cube_metric_clear(const char *prefix)
{
    size_t pl = strlen(prefix);
    pthread_mutex_lock(&lock);
    metric *prev = NULL;
    for (metric *m = head, *next; m; m = next) {
        next = m->next;
        if (m->k == GAUGE && strncmp(m->name, prefix, pl) == 0) {
            if (prev)
                prev->next = next;
            else
                head = next;
            if (tail == m) tail = prev;
            free(m->name);
            free(m->help);
            free(m);
        } else {
            prev = m;
        }
    }
    pthread_mutex_unlock(&lock);
}

/* "name{labels}" -> family "name" and the label part (without braces, may be empty) */
static void split(const char *full, char *family, size_t fcap, const char **labels, size_t *llen)
{
    const char *brace = strchr(full, '{');
    size_t n = brace ? (size_t)(brace - full) : strlen(full);
    snprintf(family, fcap, "%.*s", (int)n, full);
    *labels = brace ? brace + 1 : "";
    *llen = brace ? strlen(brace + 1) - 1 : 0; /* drop the closing brace */
}

char *cube_metrics_render(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    char last_family[256] = "";
    pthread_mutex_lock(&lock);
    for (metric *m = head; m; m = m->next) {
        char family[256];
        const char *labels;
        size_t ll;
        split(m->name, family, sizeof(family), &labels, &ll);
        if (strcmp(family, last_family) != 0) {
            fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", family, m->help, family,
                    m->k == COUNTER ? "counter"
                    : m->k == GAUGE ? "gauge"
                                    : "histogram");
            snprintf(last_family, sizeof(last_family), "%s", family);
        }
        if (m->k != HISTOGRAM) {
            fprintf(f, "%s %.17g\n", m->name, m->value);
            continue;
        }
        for (int i = 0; i < NBUCKETS; i++)
            fprintf(f, "%s_bucket{%.*s%sle=\"%g\"} %llu\n", family, (int)ll, labels, ll ? "," : "",
                    bucket_le[i], (unsigned long long)m->buckets[i]);
        fprintf(f, "%s_bucket{%.*s%sle=\"+Inf\"} %llu\n", family, (int)ll, labels, ll ? "," : "",
                (unsigned long long)m->count);
        if (ll) {
            fprintf(f, "%s_sum{%.*s} %.9g\n%s_count{%.*s} %llu\n", family, (int)ll, labels, m->sum, family,
                    (int)ll, labels, (unsigned long long)m->count);
        } else {
            fprintf(f, "%s_sum %.9g\n%s_count %llu\n", family, m->sum, family, (unsigned long long)m->count);
        }
    }
    pthread_mutex_unlock(&lock);
    fclose(f);
    return buf;
}
