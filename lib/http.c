#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "json.h"
#include "metrics.h"

struct http_server {
    struct MHD_Daemon *daemon;
    const http_route *routes;
    void *svc;
    int port;
    /* event-driven mode: requests whose body is in wait here for a handler thread */
    pthread_t *workers;
    int nworkers;
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    fair_line queue;         /* requests whose body is in, waiting for a handler thread */
    const char *fair_header; /* the header they take turns by (NULL: one line, in order) */
    bool qstop;
};

/* Request state beyond what handlers see: where it is in the event-driven hand-off. */
enum { REQ_READING, REQ_QUEUED, REQ_HANDLED };

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
    if (s->nworkers && !req->replied && req->stage == REQ_READING) {
        /* the body is in: a handler thread runs it while MHD's thread serves the other connections */
        pthread_mutex_lock(&s->qlock);
        bool queued = !s->qstop; /* stopping: no thread would resume it, so it runs here */
        if (queued) {
            req->stage = REQ_QUEUED;
            MHD_suspend_connection(conn);
            fair_join(&s->queue, &req->fe, s->fair_header ? http_header(req, s->fair_header) : NULL, NULL);
            pthread_cond_signal(&s->qcond);
        }
        pthread_mutex_unlock(&s->qlock);
        if (queued) return MHD_YES;
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

static void *worker(void *arg)
{
    http_server *s = arg;
    pthread_mutex_lock(&s->qlock);
    for (;;) {
        while (!s->queue.head && !s->qstop) pthread_cond_wait(&s->qcond, &s->qlock);
        if (!s->queue.head) break;
        fair_entry *next = fair_next(&s->queue);
        http_req *req = (http_req *)((char *)next - offsetof(http_req, fe));
        fair_served(&s->queue, next);
        fair_leave(&s->queue, next);
        pthread_mutex_unlock(&s->qlock);
        if (!req->replied) req->route->handler(s->svc, req);
        req->stage = REQ_HANDLED;
        MHD_resume_connection(req->conn); /* MHD calls on_request again, which sends the reply */
        pthread_mutex_lock(&s->qlock);
    }
    pthread_mutex_unlock(&s->qlock);
    return NULL;
}

static void stop_workers(http_server *s)
{
    pthread_mutex_lock(&s->qlock);
    s->qstop = true;
    pthread_cond_broadcast(&s->qcond);
    pthread_mutex_unlock(&s->qlock);
    for (int i = 0; i < s->nworkers; i++) pthread_join(s->workers[i], NULL);
    free(s->workers);
    s->workers = NULL;
    s->nworkers = 0;
}

int http_listen(const char *addr, int port, cube_err *err)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        return cube_err_set(err, EINVAL, "http: bad listen address '%s'", addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) return cube_err_sys(err, errno, "http: socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)); /* as MHD does for its own */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, SOMAXCONN) < 0) {
        int e = errno;
        close(fd);
        return cube_err_set(err, e == EADDRINUSE ? EADDRINUSE : e, "http: cannot listen on %s:%d: %s", addr,
                            port, strerror(e));
    }
    return fd;
}

http_server *http_server_start(const char *addr, int port, const http_route *routes, void *svc, cube_err *err)
{
    return http_server_start_shared(addr, port, routes, svc, false, err);
}

http_server *http_server_start_shared(const char *addr, int port, const http_route *routes, void *svc,
                                      bool share_port, cube_err *err)
{
    http_server_opts o = {.share_port = share_port};
    return http_server_start_opts(addr, port, routes, svc, &o, err);
}

http_server *http_server_start_opts(const char *addr, int port, const http_route *routes, void *svc,
                                    const http_server_opts *opts, cube_err *err)
{
    http_server *s = calloc(1, sizeof(*s));
    if (!s) return cube_err_set(err, ENOMEM, "http: out of memory"), NULL;
    s->routes = routes;
    s->svc = svc;
    pthread_mutex_init(&s->qlock, NULL);
    pthread_cond_init(&s->qcond, NULL);
    fair_init(&s->queue);
    s->fair_header = opts->fair_header;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        free(s);
        return cube_err_set(err, EINVAL, "http: bad listen address '%s'", addr), NULL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (opts->workers > 0) {
        flags |= MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
        s->workers = calloc((size_t)opts->workers, sizeof(*s->workers));
        if (!s->workers) {
            free(s);
            return cube_err_set(err, ENOMEM, "http: out of memory"), NULL;
        }
        for (; s->nworkers < opts->workers; s->nworkers++)
            if (pthread_create(&s->workers[s->nworkers], NULL, worker, s) != 0) break;
        if (s->nworkers == 0) {
            free(s->workers);
            free(s);
            return cube_err_set(err, EAGAIN, "http: cannot start handler threads"), NULL;
        }
    } else {
        flags |= MHD_USE_THREAD_PER_CONNECTION;
    }
    struct MHD_OptionItem o[8];
    int n = 0;
    if (opts->has_listen_fd)
        o[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, opts->listen_fd, NULL};
    else
        o[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &sa};
    o[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s};
    o[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)opts->idle_timeout_s, NULL};
    if (opts->max_conns)
        o[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, (intptr_t)opts->max_conns, NULL};
    if (opts->max_per_addr)
        o[n++] =
            (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)opts->max_per_addr, NULL};
    /* the option only when sharing: given as 0 it would also drop MHD's default SO_REUSEADDR, and a restart
     * would then wait out its old connections' TIME_WAIT */
    if (opts->share_port) o[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL};
    o[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    s->daemon = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, o,
                                 MHD_OPTION_END);
    if (!s->daemon) {
        stop_workers(s);
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
    /* handlers first (a suspended connection is resumed by its worker), then the daemon */
    stop_workers(s);
    MHD_stop_daemon(s->daemon);
    pthread_mutex_destroy(&s->qlock);
    pthread_cond_destroy(&s->qcond);
    free(s);
}
