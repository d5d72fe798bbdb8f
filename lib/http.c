#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "metrics.h"

struct http_server {
    struct MHD_Daemon *daemon;
    const http_route *routes;
    void *svc;
    int port;
};

const char *http_header(http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_query(http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

void http_reply(http_req *req, unsigned status, struct MHD_Response *resp)
{
    if (req->replied) {
        if (resp) MHD_destroy_response(resp);
        return;
    }
    req->replied = 1;
    req->status = status;
    req->resp = resp;
}

void http_reply_bytes(http_req *req, unsigned status, const char *content_type, const void *data, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (r && content_type) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    http_reply(req, status, r);
}

void http_reply_json(http_req *req, unsigned status, const char *json)
{
    http_reply_bytes(req, status, "application/json", json, strlen(json));
}

void http_reply_cjson(http_req *req, unsigned status, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    http_reply_json(req, status, s ? s : "{}");
    free(s);
}

void http_reply_empty(http_req *req, unsigned status)
{
    http_reply(req, status, MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT));
}

void http_reply_error(http_req *req, unsigned status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *body = cube_json_error_body((int)status, msg);
    http_reply_json(req, status, body ? body : "{}");
    free(body);
}

static const http_route *find_route(const http_server *s, const char *method, const char *url,
                                    int *path_known)
{
    *path_known = 0;
    for (const http_route *r = s->routes; r->path; r++) {
        size_t n = strlen(r->path);
        int match = strcmp(r->path, url) == 0 ||
                    (n > 1 && r->path[n - 1] == '/' && strncmp(r->path, url, n) == 0 && url[n] != '\0');
        if (!match) continue;
        *path_known = 1;
        if (strcmp(r->method, method) == 0) return r;
    }
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size,
                                  void **con_cls)
{
    (void)version;
    http_server *s = cls;
    http_req *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof(*req));
        if (!req) return MHD_NO;
        req->conn = conn;
        req->method = method;
        req->url = url;
        *con_cls = req;
        int known;
        req->route = find_route(s, method, url, &known);
        if (!req->route) {
            if (known)
                http_reply_error(req, 405, "method %s not allowed on %s", method, url);
            else
                http_reply_error(req, 404, "no such endpoint: %s %s", method, url);
        }
        return MHD_YES; /* MHD calls again with the body (or with none) */
    }
    if (*upload_size > 0) {
        if (!req->replied) {
            if (req->route->upload) {
                req->route->upload(s->svc, req, upload_data, *upload_size);
            } else if (req->body_len + *upload_size > HTTP_MAX_BUFFERED_BODY) {
                http_reply_error(req, 413, "request body larger than %u bytes", HTTP_MAX_BUFFERED_BODY);
            } else {
                if (req->body_len + *upload_size + 1 > req->body_cap) {
                    size_t cap = req->body_cap ? req->body_cap : 4096;
                    while (cap < req->body_len + *upload_size + 1) cap *= 2;
                    char *nb = realloc(req->body, cap);
                    if (!nb) return MHD_NO;
                    req->body = nb;
                    req->body_cap = cap;
                }
                memcpy(req->body + req->body_len, upload_data, *upload_size);
                req->body_len += *upload_size;
                req->body[req->body_len] = '\0';
            }
        }
        *upload_size = 0; /* consumed (or discarded after an error reply) */
        return MHD_YES;
    }
    if (!req->replied) req->route->handler(s->svc, req);
    if (!req->replied) http_reply_error(req, 500, "handler gave no reply");
    if (!req->resp) return MHD_NO;
    char metric[96];
    snprintf(metric, sizeof(metric), "cube_http_requests_total{code=\"%u\"}", req->status);
    cube_metric_add(metric, "HTTP requests answered, by status", 1);
    enum MHD_Result rc = MHD_queue_response(conn, req->status, req->resp);
    MHD_destroy_response(req->resp);
    req->resp = NULL;
    return rc;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    http_req *req = *con_cls;
    if (!req) return;
    if (req->state && req->state_free) req->state_free(req->state);
    if (req->resp) MHD_destroy_response(req->resp);
    free(req->body);
    free(req);
    *con_cls = NULL;
}

http_server *http_server_start(const char *addr, int port, const http_route *routes, void *svc, cube_err *err)
{
    return http_server_start_shared(addr, port, routes, svc, false, err);
}

http_server *http_server_start_shared(const char *addr, int port, const http_route *routes, void *svc,
                                      bool share_port, cube_err *err)
{
    http_server *s = calloc(1, sizeof(*s));
    if (!s) return cube_err_set(err, ENOMEM, "http: out of memory"), NULL;
    s->routes = routes;
    s->svc = svc;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        free(s);
        return cube_err_set(err, EINVAL, "http: bad listen address '%s'", addr), NULL;
    }
    /* the option only when sharing: given as 0 it would also drop MHD's default SO_REUSEADDR, and a restart
     * would then wait out its old connections' TIME_WAIT */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (share_port)
        s->daemon =
            MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &sa,
                             MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
                             (unsigned)0, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    else
        s->daemon = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
                                     &sa, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0, MHD_OPTION_END);
    if (!s->daemon) {
        free(s);
        return cube_err_set(err, EADDRINUSE, "http: cannot listen on %s:%d", addr, port), NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : port;
    return s;
}

int http_server_port(const http_server *s)
{
    return s->port;
}

void http_server_stop(http_server *s)
{
    if (!s) return;
    MHD_stop_daemon(s->daemon);
    free(s);
}
