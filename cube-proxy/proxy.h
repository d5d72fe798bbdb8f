/* cube-proxy's core: routes SDK traffic into sandboxes. The target comes from the E2b-Sandbox-Id and
 * E2b-Sandbox-Port headers or from Host "<port>-<id>.<domain>"; the sandbox's address from Redis or
 * cube-master. Bytes are relayed as they come (streams, uploads, WebSocket after an Upgrade), never buffered
 * whole.
 *
 * Two halves: the relay (relay.c) is one event loop that accepts, reads request heads under a deadline,
 * enforces the connection caps and pumps bytes both ways; routing a request (proxy.c: Redis, a master, the
 * sandbox's netns, a node proxy) may block, so a fixed pool of workers does it. Threads do not grow with
 * connections, and an idle or slow client costs a socket and a few KB. */
#ifndef CUBE_PROXY_H
#define CUBE_PROXY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "rpc.h"

/* The edge's limits (conventions: redis maxclients/timeout, nginx client_header_timeout). */
typedef struct proxy_limits {
    int head_timeout_ms; /* from accept to the end of the request head */
    int idle_timeout_ms; /* a relayed connection with no byte either way (streams send keepalives) */
    int max_conns;       /* in total; at the cap the oldest connection still sending its head makes room */
    int max_per_addr;    /* per client address, the same way; else 429 */
    int workers;         /* threads that route requests */
    int signed_lookups_per_s; /* signed file URLs looked up by signature (each costs a master a hash per
                                 sandbox), a second, in bursts of as many; beyond: 429 */
} proxy_limits;

typedef struct proxy {
    int listen_fd;
    proxy_limits limits;
    pthread_mutex_t relay_lock; /* proxy_stop (any thread) against the relay's teardown */
    struct proxy_relay *relay;
    struct proxy_tls *tls; /* TLS for hops between proxies (--tls-dir), or NULL: plain */
    int port;
    cube_rpc_failover masters; /* one or a cluster's several */
    struct cube_redis *routes; /* a cluster's route cache (cube:routes), asked before a master; or NULL */
    /* In a cluster, the node this proxy serves: a sandbox on another node is reached through that node's
     * proxy (one hop). Empty: every sandbox is reached from here (one machine). */
    char node_id[64];
    char domain[256];
    char console_origins[1024];  /* comma-separated: origins whose pages may call the agent's ports (CORS) */
    int stopping;                /* with relay_lock */
    pthread_mutex_t lookup_lock; /* the signed lookups' token bucket: */
    double lookup_tokens;
    int64_t lookup_ms;
} proxy;

typedef struct proxy_target {
    char sandbox_id[64];
    uint16_t port;
} proxy_target;

int proxy_init(proxy *p, const char *addr, int port, const char *master, const char *domain, cube_err *err);
/* Hops to and from other nodes' proxies use mutual TLS with the identity in dir (tls.h). */
int proxy_use_tls(proxy *p, const char *dir, cube_err *err);
/* Routes from Redis first (deploy: a cluster); a miss or an unreachable Redis falls back to the masters. */
void proxy_use_redis(proxy *p, const char *redis_addr);
/* This proxy serves node_id; sandboxes elsewhere are forwarded to their node's proxy
 * (NodeInfo.proxy_address). */
void proxy_set_node(proxy *p, const char *node_id);
/* The web console's origins (comma-separated, e.g. "http://127.0.0.1:3000"): pages from them may call the
 * agent's ports (envd, the code interpreter) across origins; nothing else is answered CORS. */
void proxy_set_console_origins(proxy *p, const char *origins);
/* Defaults sized to the process's open-file limit (two descriptors per relayed connection). */
void proxy_limits_default(proxy_limits *l);
/* Serves until proxy_stop (the relay's loop runs on the calling thread). -1 if it could not start. */
int proxy_serve(proxy *p, cube_err *err);
/* Any thread (not a signal handler: it takes a lock). */
void proxy_stop(proxy *p);

/* What routing one request gives the relay: an upstream connection and the bytes to send it first (the
 * rewritten head and whatever body came with it), or a whole reply for the client. */
typedef struct proxy_route {
    int up;                /* -1: none */
    struct ssl_st *up_ssl; /* a hop to another node's proxy over TLS, or NULL */
    char *send;
    size_t send_len;
    char *reply;
    size_t reply_len;
    char *resp_headers; /* "Name: v\r\n"... for the relay to add to the sandbox's answer (CORS), or NULL */
} proxy_route;

/* Routes one request; head[0..len) holds its head (head_len bytes, NUL-terminated there) and any bytes that
 * followed. Blocking (Redis, masters, connects): run by the relay's workers. */
void proxy_route_request(proxy *p, const char *head, size_t head_len, size_t len, bool peer_tls,
                         proxy_route *r);
/* "HTTP/1.1 status reason" with the body, Connection: close; extra_headers ("Name: v\r\n"...) may be NULL. */
char *proxy_format_reply(int status, const char *reason, const char *content_type, const char *body,
                         const char *extra_headers, size_t *len);

/* Parses the routing target out of a request head; 0, or -1 when it names none. Exposed for tests. */
int proxy_parse_target(const char *head, const char *domain, proxy_target *t);

/* The SDK's signed file URLs (uploadUrl/downloadUrl: GET or POST /files?path=&username=&signature=
 * [&signature_expiration=]) name no sandbox when the SDK has one address for all (E2B_SANDBOX_URL): a master
 * finds the sandbox whose token signed one (FindSignedFile). The query's fields, decoded. */
typedef struct proxy_signed_file {
    const char *operation; /* "read" (GET), "write" (POST) */
    char path[4096];
    char username[256];
    char signature[128];
    char expiration[32];
} proxy_signed_file;
/* 0: a signed /files request; 1: /files without a signature; -1: another request, or a query that does not
 * decode (a bad escape, a field too long). */
int proxy_parse_signed_file(const char *head, proxy_signed_file *f);

#endif
