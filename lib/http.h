/* HTTP servers on libmicrohttpd (cube-api, and the agent's envd and code interpreter): a route table, request
 * state that lives from the first callback to MHD's completion notice, bodies buffered (JSON) or streamed to
 * an upload callback (files), and one reply per request. Thread-per-connection mode, so a streaming
 * response's reader may block waiting for process output. */
#ifndef CUBE_AGENT_HTTP_H
#define CUBE_AGENT_HTTP_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"
#include "fair_line.h"

#define HTTP_MAX_BUFFERED_BODY (8u << 20)

typedef struct http_req http_req;
typedef struct http_server http_server;

/* Called once the whole body has arrived; must reply (http_reply_*) before returning. */
typedef void (*http_handler)(void *svc, http_req *req);
/* Receives the body in pieces instead of buffering it; returns -1 after replying with an error, which ends
 * the upload. Called with len == 0 never. */
typedef int (*http_upload)(void *svc, http_req *req, const char *data, size_t len);

typedef struct http_route {
    const char *method;
    const char *path; /* exact, or a prefix when it ends with '/' and is longer than "/" */
    http_handler handler;
    http_upload upload; /* optional */
} http_route;

struct http_req {
    struct MHD_Connection *conn;
    const http_route *route;
    const char *method;
    const char *url;
    char *body;
    size_t body_len, body_cap;
    void *state; /* the route's own, freed with state_free at completion */
    void (*state_free)(void *state);
    unsigned status;
    struct MHD_Response *resp;
    int replied;
    int stage;     /* the server's (event-driven hand-off) */
    fair_entry fe; /* its place in the server's queue for a handler thread */
};

const char *http_header(http_req *req, const char *name);
const char *http_query(http_req *req, const char *name);

/* Takes ownership of resp. A second reply for the same request is ignored. */
void http_reply(http_req *req, unsigned status, struct MHD_Response *resp);
void http_reply_bytes(http_req *req, unsigned status, const char *content_type, const void *data, size_t len);
void http_reply_json(http_req *req, unsigned status, const char *json);
/* Replies with a cJSON tree, compact; takes ownership of o. */
typedef struct cJSON cJSON;
void http_reply_cjson(http_req *req, unsigned status, cJSON *o);
void http_reply_empty(http_req *req, unsigned status);
/* {"code": status, "message": msg} — the shape E2B's REST-style endpoints (/files, /init) use. */
void http_reply_error(http_req *req, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* How a server holds its connections. Thread-per-connection (the default, zero value) suits the agent, whose
 * streaming responses block waiting for process output. An edge facing many clients (cube-api) sets
 * `workers`: one epoll thread holds every connection (an idle one costs a socket and some memory, no thread)
 * and a fixed pool of that many threads runs the handlers (the connection is suspended meanwhile); upload
 * routes and streaming replies are not for that mode. */
typedef struct http_server_opts {
    bool share_port;         /* several processes on one addr:port (SO_REUSEPORT) */
    int workers;             /* > 0: event-driven with this many handler threads */
    unsigned max_conns;      /* 0: no cap (beyond the open-file limit) */
    unsigned max_per_addr;   /* 0: no cap per client address */
    unsigned idle_timeout_s; /* a connection with no byte in (request head, body, or between keep-alive
                              * requests) this long is closed; 0: never */
    bool has_listen_fd;      /* serve listen_fd (from http_listen, taken over) instead of binding addr:port */
    int listen_fd;
    /* with workers: requests wait for a handler thread in turns by this header's value (X-API-KEY: one
     * caller's burst delays another's request by a turn, not by the burst); NULL: first come, first served */
    const char *fair_header;
} http_server_opts;

/* A listening TCP socket on addr:port, for a server started later (http_server_opts.listen_fd): clients
 * that connect meanwhile wait in its queue. -1 with err. */
int http_listen(const char *addr, int port, cube_err *err);

http_server *http_server_start_opts(const char *addr, int port, const http_route *routes, void *svc,
                                    const http_server_opts *opts, cube_err *err);

/* Listens on addr:port (port 0 picks one: http_server_port). routes ends with a zeroed entry. */
http_server *http_server_start(const char *addr, int port, const http_route *routes, void *svc,
                               cube_err *err);
/* The same, and with share_port several processes may listen on addr:port (SO_REUSEPORT; the kernel spreads
 * connections between them). */
http_server *http_server_start_shared(const char *addr, int port, const http_route *routes, void *svc,
                                      bool share_port, cube_err *err);
int http_server_port(const http_server *s);
void http_server_stop(http_server *s);

#endif
