/* The envd server's route table (port 49983). */
#include <string.h>

#include "agent.h"

void envd_health(agent *a, http_req *req);
void envd_init(agent *a, http_req *req);
void envd_envs(agent *a, http_req *req);
void envd_metrics(agent *a, http_req *req);
void envd_files_get(agent *a, http_req *req);
void envd_files_post(agent *a, http_req *req);
int envd_files_upload(agent *a, http_req *req, const char *data, size_t len);

static void process_service(agent *a, http_req *req)
{
    const char *m = req->url + strlen("/process.Process/");
    if (strcmp(m, "Start") == 0)
        envd_process_start(a, req);
    else if (strcmp(m, "Connect") == 0)
        envd_process_connect(a, req);
    else
        envd_process_unary(a, req);
}

static void filesystem_service(agent *a, http_req *req)
{
    const char *m = req->url + strlen("/filesystem.Filesystem/");
    if (strcmp(m, "WatchDir") == 0)
        envd_fs_watch(a, req);
    else
        envd_fs_unary(a, req);
}

#define HANDLER(fn)                                                                                          \
    static void route_##fn(void *svc, http_req *req)                                                         \
    {                                                                                                        \
        fn(svc, req);                                                                                        \
    }
HANDLER(envd_health)
HANDLER(envd_init)
HANDLER(envd_envs)
HANDLER(envd_metrics)
HANDLER(envd_files_get)
HANDLER(envd_files_post)
HANDLER(process_service)
HANDLER(filesystem_service)

static int route_files_upload(void *svc, http_req *req, const char *data, size_t len)
{
    return envd_files_upload(svc, req, data, len);
}

const http_route envd_routes[] = {
    {"GET", "/health", route_envd_health, NULL},
    {"POST", "/init", route_envd_init, NULL},
    {"GET", "/envs", route_envd_envs, NULL},
    {"GET", "/metrics", route_envd_metrics, NULL},
    {"GET", "/files", route_envd_files_get, NULL},
    {"POST", "/files", route_envd_files_post, route_files_upload},
    {"POST", "/process.Process/", route_process_service, NULL},
    {"POST", "/filesystem.Filesystem/", route_filesystem_service, NULL},
    {0},
};
