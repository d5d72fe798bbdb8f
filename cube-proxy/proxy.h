/* cube-proxy's core: routes SDK traffic into sandboxes. The target comes from the E2b-Sandbox-Id and
 * E2b-Sandbox-Port headers or from Host "<port>-<id>.<domain>"; the sandbox's address from cube-master. Bytes
 * are relayed as they come (streams, uploads, WebSocket after an Upgrade), never buffered whole. */
#ifndef CUBE_PROXY_H
#define CUBE_PROXY_H

#include <stdint.h>

#include "rpc.h"

typedef struct proxy {
    int listen_fd;
    int port;
    cube_rpc_failover masters; /* one or a cluster's several */
    struct cube_redis *routes; /* a cluster's route cache (cube:routes), asked before a master; or NULL */
    /* In a cluster, the node this proxy serves: a sandbox on another node is reached through that node's
     * proxy (one hop). Empty: every sandbox is reached from here (one machine). */
    char node_id[64];
    char domain[256];
    volatile int stopping;
} proxy;

typedef struct proxy_target {
    char sandbox_id[64];
    uint16_t port;
} proxy_target;

int proxy_init(proxy *p, const char *addr, int port, const char *master, const char *domain, cube_err *err);
/* Routes from Redis first (deploy: a cluster); a miss or an unreachable Redis falls back to the masters. */
void proxy_use_redis(proxy *p, const char *redis_addr);
/* This proxy serves node_id; sandboxes elsewhere are forwarded to their node's proxy
 * (NodeInfo.proxy_address). */
void proxy_set_node(proxy *p, const char *node_id);
/* Accepts until proxy_stop; one thread per connection. */
void proxy_serve(proxy *p);
void proxy_stop(proxy *p);

/* Parses the routing target out of a request head; 0, or -1 when it names none. Exposed for tests. */
int proxy_parse_target(const char *head, const char *domain, proxy_target *t);

#endif
