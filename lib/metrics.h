/* Prometheus metrics for every service: counters, gauges and latency histograms in one process-wide registry,
 * rendered in the text exposition format at /metrics. A metric is named with its labels, e.g.
 * cube_metric_add("cube_rpc_calls_total{method=\"/cube.Master/GetSandbox\",code=\"0\"}", "RPC calls served",
 * 1). */
#ifndef CUBE_METRICS_H
#define CUBE_METRICS_H

#include <stdint.h>

#include "err.h"

void cube_metric_add(const char *name, const char *help, uint64_t n);
void cube_metric_set(const char *name, const char *help, double value);
/* Latency in seconds into fixed buckets (1 ms .. 10 s). */
void cube_metric_observe(const char *name, const char *help, double seconds);
/* Drops every gauge whose name starts with prefix (before re-setting a labelled family, e.g. pool depth). */
void cube_metric_clear(const char *prefix);
/* The whole registry as Prometheus text; caller frees. */
char *cube_metrics_render(void);

typedef struct http_server http_server;
typedef struct http_req http_req;
/* The GET /metrics handler, for services that already serve HTTP (an http_route handler; svc unused). */
void cube_metrics_http(void *svc, http_req *req);
/* A listener that answers GET /metrics (and /health) on addr:port, for services that speak no HTTP. */
http_server *cube_metrics_serve(const char *addr, int port, cube_err *err);

#endif
