/* Serving the metrics registry over HTTP (see metrics.h). Apart from the registry, so that a program that
 * only counts (cube-hypervisor, through the RPC layer) does not load the HTTP server's libraries. */
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "metrics.h"

void cube_metrics_http(void *svc, http_req *req)
{
    (void)svc;
    char *text = cube_metrics_render();
    http_reply_bytes(req, 200, "text/plain; version=0.0.4", text ? text : "", text ? strlen(text) : 0);
    free(text);
}

static void serve_health(void *svc, http_req *req)
{
    (void)svc;
    http_reply_json(req, 200, "{\"ok\":true}");
}

static const http_route metric_routes[] = {
    {"GET", "/metrics", cube_metrics_http, NULL},
    {"GET", "/health", serve_health, NULL},
    {0},
};

http_server *cube_metrics_serve(const char *addr, int port, cube_err *err)
{
    return http_server_start(addr, port, metric_routes, NULL, err);
}
