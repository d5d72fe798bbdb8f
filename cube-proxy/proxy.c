#include "proxy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "json.h"
#include "log.h"
#include "metrics.h"
#include "master.pb-c.h"
#include "netns.h"
#include "redis.h"
#include "timeutil.h"
#include "tls.h"

/* the agent's ports: envd (guarded by the envd access token) and the code interpreter */
#define ENVD_PORT   49983
#define INTERP_PORT 49999

#define CONNECT_TIMEOUT_MS 3000

int proxy_init(proxy *p, const char *addr, int port, const char *master, const char *domain, cube_err *err)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->relay_lock, NULL);
    pthread_mutex_init(&p->lookup_lock, NULL);
    p->lookup_tokens = -1; /* full at the first lookup, whatever the limits are set to by then */
    snprintf(p->domain, sizeof(p->domain), "%s", domain ? domain : "");
    p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(p->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        return cube_err_set(err, EINVAL, "bad listen address '%s'", addr);
    if (bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(p->listen_fd, 1024) < 0)
        return cube_err_sys(err, errno, "listen on %s:%d", addr, port);
    socklen_t sl = sizeof(sa);
    getsockname(p->listen_fd, (struct sockaddr *)&sa, &sl);
    p->port = ntohs(sa.sin_port);
    return cube_rpc_failover_init(&p->masters, master, err);
}

/* Case-insensitive header lookup in a raw head; copies the trimmed value. */
static int header(const char *head, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            const char *v = h + nl + 1;
            while (*v == ' ' || *v == '\t') v++;
            const char *end = strstr(v, "\r\n");
            size_t len = end ? (size_t)(end - v) : strlen(v);
            while (len && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
            if (len >= cap) len = cap - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return 0;
        }
    }
    return -1;
}

int proxy_parse_target(const char *head, const char *domain, proxy_target *t)
{
    char id[128], port[16], host[256];
    memset(t, 0, sizeof(*t));
    if (header(head, "E2b-Sandbox-Id", id, sizeof(id)) == 0 &&
        header(head, "E2b-Sandbox-Port", port, sizeof(port)) == 0) {
        char *end;
        long p = strtol(port, &end, 10);
        if (*end || p <= 0 || p > 65535 || strlen(id) >= sizeof(t->sandbox_id)) return -1;
        snprintf(t->sandbox_id, sizeof(t->sandbox_id), "%s", id);
        t->port = (uint16_t)p;
        return 0;
    }
    /* Host: <port>-<id>.<domain>[:port] */
    if (header(head, "Host", host, sizeof(host)) < 0) return -1;
    char *colon = strchr(host, ':');
    if (colon) *colon = '\0';
    char *dash = strchr(host, '-'), *dot = strchr(host, '.');
    if (!dash || !dot || dash > dot) return -1;
    if (domain && *domain && strcasecmp(dot + 1, domain) != 0) return -1;
    *dash = *dot = '\0';
    char *end;
    long p = strtol(host, &end, 10);
    if (*end || p <= 0 || p > 65535 || strlen(dash + 1) == 0 || strlen(dash + 1) >= sizeof(t->sandbox_id))
        return -1;
    snprintf(t->sandbox_id, sizeof(t->sandbox_id), "%s", dash + 1);
    t->port = (uint16_t)p;
    return 0;
}

/* A whole response for the client (the relay sends it, then closes): JSON {"code","message"}; with the CORS
 * headers of a console's request, so that its page can read why. */
static void reply_json(proxy_route *r, int status, const char *reason, const char *msg)
{
    char *body = cube_json_error_body(status, msg);
    r->reply = proxy_format_reply(status, reason, "application/json", body ? body : "", r->resp_headers,
                                  &r->reply_len);
    free(body);
}

void proxy_set_console_origins(proxy *p, const char *origins)
{
    snprintf(p->console_origins, sizeof(p->console_origins), "%s", origins ? origins : "");
}

static bool console_origin(const proxy *p, const char *origin)
{
    size_t n = strlen(origin);
    for (const char *o = p->console_origins; n && *o;) {
        const char *comma = strchr(o, ',');
        size_t len = comma ? (size_t)(comma - o) : strlen(o);
        if (len == n && strncasecmp(o, origin, n) == 0) return true;
        o += len + (comma != NULL);
    }
    return false;
}

/* The console's cross-origin calls into the agent. A preflight names no sandbox (its custom headers are
 * not sent), so the proxy answers it itself; a request then gets the allowing headers on its answer.
 * Returns true when the request was answered here. */
static bool console_cors(proxy *p, const char *head, proxy_route *r)
{
    char origin[256], want[1024];
    if (!*p->console_origins || header(head, "Origin", origin, sizeof(origin)) < 0 ||
        !console_origin(p, origin))
        return false;
    for (const char *c = origin; *c; c++)
        if (*c < 0x21 || *c > 0x7e) return false; /* nothing that could end a header line */
    char *h = malloc(strlen(origin) + 64);
    if (!h) return false;
    sprintf(h, "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n", origin);
    r->resp_headers = h;
    if (strncmp(head, "OPTIONS ", 8) != 0 ||
        header(head, "Access-Control-Request-Method", want, sizeof(want)) < 0)
        return false;
    if (header(head, "Access-Control-Request-Headers", want, sizeof(want)) < 0) *want = '\0';
    for (char *c = want; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '-' || *c == ',' || *c == ' ')) *c = ' ';
    char extra[1600];
    snprintf(extra, sizeof(extra),
             "%sAccess-Control-Allow-Methods: GET, POST, PUT, DELETE\r\n"
             "Access-Control-Allow-Headers: %s\r\nAccess-Control-Max-Age: 600\r\n",
             h, *want ? want : "Content-Type");
    r->reply = proxy_format_reply(204, "No Content", "text/plain", "", extra, &r->reply_len);
    return true;
}

char *proxy_format_reply(int status, const char *reason, const char *content_type, const char *body,
                         const char *extra_headers, size_t *len)
{
    size_t bl = strlen(body), cap = bl + 512 + (extra_headers ? strlen(extra_headers) : 0);
    char *out = malloc(cap);
    if (!out) {
        *len = 0;
        return NULL;
    }
    int n = snprintf(
        out, cap, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
        status, reason, content_type, bl, extra_headers ? extra_headers : "");
    memcpy(out + n, body, bl);
    *len = (size_t)n + bl;
    return out;
}

void proxy_use_redis(proxy *p, const char *redis_addr)
{
    p->routes = cube_redis_new(redis_addr);
}

void proxy_set_node(proxy *p, const char *node_id)
{
    snprintf(p->node_id, sizeof(p->node_id), "%s", node_id ? node_id : "");
}

/* What routing a request needs to know of its sandbox. */
typedef struct route_info {
    char netns[128];
    char node[64];
    char traffic_token[64]; /* empty: public */
    int paused, auto_resume;
    char mask[256];     /* network.maskRequestHost: the Host the sandbox sees ("${PORT}": the port); "" */
    uint16_t https[64]; /* network.httpsPorts */
    int n_https;
} route_info;

static void https_ports_parse(route_info *ri, const char *list)
{
    ri->n_https = 0;
    for (const char *s = list; *s && ri->n_https < 64;) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        if (v > 0 && v < 65536) ri->https[ri->n_https++] = (uint16_t)v;
        s = *end == ',' ? end + 1 : end;
        if (*end != ',') break;
    }
}

/* The route a master published ("STATE AUTO_RESUME NODE NETNS[ TRAFFIC_TOKEN]"); 0, or -1 for a miss, a
 * tombstone or no Redis. */
static int resolve_cached(proxy *p, const char *id, route_info *ri)
{
    if (!p->routes) return -1;
    redisReply *r = cube_redis_cmd(p->routes, "HGET cube:routes %s", id);
    int state = 0, ar = 0, n = 0, rc = -1;
    char https[512] = "";
    ri->traffic_token[0] = ri->mask[0] = '\0';
    ri->n_https = 0;
    if (r && r->type == REDIS_REPLY_STRING &&
        (n = sscanf(r->str, "%d %d %63s %127s %63s %255s %511s", &state, &ar, ri->node, ri->netns,
                    ri->traffic_token, ri->mask, https)) >= 4 &&
        strncmp(ri->netns, "/proc/", 6) == 0) {
        if (n < 5 || strcmp(ri->traffic_token, "-") == 0) ri->traffic_token[0] = '\0';
        if (n < 6 || strcmp(ri->mask, "-") == 0) ri->mask[0] = '\0';
        if (n >= 7) https_ports_parse(ri, https);
        ri->paused = state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED;
        ri->auto_resume = ar;
        rc = 0;
    }
    if (r) freeReplyObject(r);
    cube_metric_add(rc == 0 ? "cube_proxy_route_lookups_total{source=\"redis\"}"
                            : "cube_proxy_route_lookups_total{source=\"master\"}",
                    "Where sandbox routes came from", 1);
    return rc;
}

/* The sandbox's network namespace from its agent address "netns:/proc/PID/ns/net:PORT". */
static int resolve(proxy *p, const char *id, route_info *ri, cube_err *err)
{
    if (resolve_cached(p, id, ri) == 0) return 0;
    Cube__SandboxRef ref = CUBE__SANDBOX_REF__INIT;
    ref.sandbox_id = (char *)id;
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 5000};
    if (cube_rpc_failover_call(&p->masters, "/cube.Master/GetSandbox", &ref.base,
                               &cube__get_sandbox_response__descriptor, &resp, &o, err) < 0)
        return -1;
    Cube__Sandbox *sb = ((Cube__GetSandboxResponse *)resp)->sandbox;
    int rc = 0;
    const char *a = sb && sb->agent_address ? sb->agent_address : "";
    if (strncmp(a, "netns:", 6) != 0) {
        rc = cube_err_set(err, EHOSTUNREACH, "sandbox %s has no reachable address", id);
    } else {
        snprintf(ri->netns, sizeof(ri->netns), "%s", a + 6);
        char *last = strrchr(ri->netns, ':');
        if (last) *last = '\0';
        ri->paused = sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED;
        ri->auto_resume = sb->auto_resume;
        snprintf(ri->node, sizeof(ri->node), "%s", sb->node_id ? sb->node_id : "");
        snprintf(ri->traffic_token, sizeof(ri->traffic_token), "%s",
                 sb->traffic_access_token ? sb->traffic_access_token : "");
        const Cube__NetworkPolicy *np = sb->network;
        snprintf(ri->mask, sizeof(ri->mask), "%s", np && np->mask_request_host ? np->mask_request_host : "");
        ri->n_https = 0;
        for (size_t i = 0; np && i < np->n_https_ports && ri->n_https < 64; i++)
            ri->https[ri->n_https++] = (uint16_t)np->https_ports[i];
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* Rewrites the head for the sandbox: one request per upstream connection (Connection: close), unless the
 * client asks for an Upgrade, which then owns the connection. Returns a malloc'd head. */
static char *upstream_head(const char *head, size_t head_len, int upgrade, const char *host)
{
    char *out = malloc(head_len + 64 + (host ? strlen(host) + 8 : 0));
    if (!out) return NULL;
    size_t o = 0;
    const char *line = head;
    const char *end = head + head_len;
    while (line < end) {
        const char *nl = strstr(line, "\r\n");
        if (!nl) break;
        size_t len = (size_t)(nl - line);
        if (len == 0) break; /* blank line: end of head */
        int drop = (!upgrade &&
                    (strncasecmp(line, "Connection:", 11) == 0 || strncasecmp(line, "Keep-Alive:", 11) == 0 ||
                     strncasecmp(line, "Proxy-Connection:", 17) == 0)) ||
                   (host && strncasecmp(line, "Host:", 5) == 0);
        if (!drop) {
            memcpy(out + o, line, len + 2);
            o += len + 2;
        }
        line = nl + 2;
    }
    if (host) o += (size_t)sprintf(out + o, "Host: %s\r\n", host);
    if (!upgrade) {
        memcpy(out + o, "Connection: close\r\n", 19);
        o += 19;
    }
    memcpy(out + o, "\r\n", 2);
    o += 2;
    out[o] = '\0';
    return out;
}

/* The proxy of node_id: "host:port" into addr, from the node's liveness key in Redis (set by masters at every
 * heartbeat, gone when the node is lost), else from the masters' node list. */
static int node_proxy(proxy *p, const char *node_id, char *addr, size_t cap, cube_err *err)
{
    if (p->routes) {
        redisReply *r = cube_redis_cmd(p->routes, "GET cube:node:%s", node_id);
        bool hit = r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "-") != 0 && r->len < cap;
        if (hit) snprintf(addr, cap, "%s", r->str);
        if (r) freeReplyObject(r);
        cube_metric_add(hit ? "cube_proxy_node_lookups_total{source=\"redis\"}"
                            : "cube_proxy_node_lookups_total{source=\"master\"}",
                        "Where node proxy addresses came from", 1);
        if (hit) return 0;
    }
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 5000};
    if (cube_rpc_failover_call(&p->masters, "/cube.Master/ListNodes", &e.base,
                               &cube__list_nodes_response__descriptor, &resp, &o, err) < 0)
        return -1;
    const Cube__ListNodesResponse *l = (const Cube__ListNodesResponse *)resp;
    int rc = cube_err_set(err, EHOSTUNREACH, "node %s has no proxy address", node_id);
    for (size_t i = 0; i < l->n_nodes; i++)
        if (strcmp(l->nodes[i]->node_id, node_id) == 0 && l->nodes[i]->proxy_address &&
            *l->nodes[i]->proxy_address) {
            snprintf(addr, cap, "%s", l->nodes[i]->proxy_address);
            rc = 0;
            cube_err_clear(err);
        }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* A node proxy: connects within CONNECT_TIMEOUT_MS (a node that went away must not hold a worker long). */
static int tcp_connect(const char *hostport, cube_err *err)
{
    char host[256];
    snprintf(host, sizeof(host), "%s", hostport);
    char *colon = strrchr(host, ':');
    if (!colon) return cube_err_set(err, EINVAL, "bad proxy address %s", hostport);
    *colon = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return cube_err_set(err, EINVAL, "bad proxy address %s", hostport);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return cube_err_sys(err, errno, "socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        if (e == EINPROGRESS) {
            struct pollfd pf = {fd, POLLOUT, 0};
            int n = poll(&pf, 1, CONNECT_TIMEOUT_MS);
            socklen_t el = sizeof(e);
            if (n == 0)
                e = ETIMEDOUT;
            else if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
                e = errno;
        }
        if (e) {
            close(fd);
            return cube_err_sys(err, e, "connect %s", hostport);
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int proxy_use_tls(proxy *p, const char *dir, cube_err *err)
{
    p->tls = proxy_tls_load(dir, err);
    return p->tls ? 0 : -1;
}

/* A signed file URL that names no sandbox: the sandbox whose token signed it (a master knows), then the
 * request as if it had named it (the headers added, so that a hop to another node's proxy names it too). */
/* head[0..len) (a request head and what followed it) with the header lines add ("Name: v\r\n"...) right after
 * the request line; malloc'd and NUL-terminated, or NULL. */
static char *with_header_lines(const char *head, size_t len, const char *add)
{
    size_t first = (size_t)(strstr(head, "\r\n") - head) + 2, k = strlen(add);
    char *out = malloc(len + k + 1);
    if (!out) return NULL;
    memcpy(out, head, first);
    memcpy(out + first, add, k);
    memcpy(out + first + k, head + first, len - first);
    out[len + k] = '\0';
    return out;
}

/* Whether a signed lookup may go to a master now: a token bucket, refilled at signed_lookups_per_s. */
static bool lookup_allowed(proxy *p)
{
    double rate = p->limits.signed_lookups_per_s > 0 ? p->limits.signed_lookups_per_s : 1;
    int64_t now = cube_now_mono_ms();
    pthread_mutex_lock(&p->lookup_lock);
    if (p->lookup_tokens < 0) {
        p->lookup_tokens = rate;
    } else {
        p->lookup_tokens += (double)(now - p->lookup_ms) * rate / 1000.0;
        if (p->lookup_tokens > rate) p->lookup_tokens = rate;
    }
    p->lookup_ms = now;
    bool ok = p->lookup_tokens >= 1;
    if (ok) p->lookup_tokens -= 1;
    pthread_mutex_unlock(&p->lookup_lock);
    return ok;
}

static void route_signed_file(proxy *p, const char *head, size_t head_len, size_t len, bool peer_tls,
                              const proxy_signed_file *f, proxy_route *r)
{
    if (!lookup_allowed(p)) {
        cube_metric_add("cube_proxy_signed_files_refused_total",
                        "Signed file URLs refused for too many lookups a second", 1);
        reply_json(r, 429, "Too Many Requests", "too many signed file URLs to look up: retry in a second");
        return;
    }
    Cube__SignedFileRequest req = CUBE__SIGNED_FILE_REQUEST__INIT;
    req.path = (char *)f->path;
    req.operation = (char *)f->operation;
    req.username = (char *)f->username;
    req.expiration = (char *)f->expiration;
    req.signature = (char *)f->signature;
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 5000};
    cube_err err = {0};
    if (cube_rpc_failover_call(&p->masters, "/cube.Master/FindSignedFile", &req.base,
                               &cube__sandbox_ref__descriptor, &resp, &o, &err) < 0) {
        char msg[400];
        snprintf(msg, sizeof(msg), "signed file URL: %s", err.msg);
        if (err.code == ENOENT)
            reply_json(r, 401, "Unauthorized",
                       "no live sandbox signed this file URL: a wrong signature, or its sandbox is gone");
        else
            reply_json(r, 502, "Bad Gateway", msg);
        return;
    }
    const char *id = ((Cube__SandboxRef *)resp)->sandbox_id;
    char add[160];
    int k =
        snprintf(add, sizeof(add), "E2b-Sandbox-Id: %s\r\nE2b-Sandbox-Port: %d\r\n", id ? id : "", ENVD_PORT);
    char *nb = k > 0 && (size_t)k < sizeof(add) && id && *id ? with_header_lines(head, len, add) : NULL;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!nb) {
        reply_json(r, 503, "Service Unavailable", "out of memory");
        return;
    }
    cube_metric_add("cube_proxy_signed_files_total", "Signed file URLs routed by their signature", 1);
    free(r->resp_headers); /* routing the named request starts over (and finds the same CORS headers) */
    proxy_route_request(p, nb, head_len + (size_t)k, len + (size_t)k, peer_tls, r);
    free(nb);
}

void proxy_route_request(proxy *p, const char *head, size_t head_len, size_t len, bool peer_tls,
                         proxy_route *r)
{
    memset(r, 0, sizeof(*r));
    r->up = -1;
    if (console_cors(p, head, r)) return;
    proxy_target t;
    if (proxy_parse_target(head, p->domain, &t) < 0) {
        proxy_signed_file sf;
        int signed_file = proxy_parse_signed_file(head, &sf);
        if (signed_file == 0) {
            route_signed_file(p, head, head_len, len, peer_tls, &sf, r);
        } else if (signed_file == 1) {
            reply_json(r, 400, "Bad Request",
                       "a file URL without a signature names no sandbox: send E2b-Sandbox-Id and "
                       "E2b-Sandbox-Port, or Host <port>-<id>.<domain>");
        } else if (strncmp(head, "GET /metrics ", 13) == 0) {
            char *text = cube_metrics_render();
            r->reply = proxy_format_reply(200, "OK", "text/plain; version=0.0.4", text ? text : "", NULL,
                                          &r->reply_len);
            free(text);
        } else if (strncmp(head, "GET /health ", 12) == 0) {
            r->reply =
                proxy_format_reply(200, "OK", "application/json", "{\"ok\":true}", NULL, &r->reply_len);
        } else {
            reply_json(
                r, 400, "Bad Request",
                "no sandbox named: send E2b-Sandbox-Id and E2b-Sandbox-Port, or Host <port>-<id>.<domain>");
        }
        return;
    }
    char msg[512], hopmark[8];
    if (p->tls && !peer_tls && header(head, "X-Cube-Hop", hopmark, sizeof(hopmark)) == 0) {
        reply_json(r, 403, "Forbidden", "a hop from another proxy must come over TLS here");
        return;
    }
    route_info ri = {0};
    cube_err err = {0};
    if (resolve(p, t.sandbox_id, &ri, &err) < 0) {
        snprintf(msg, sizeof(msg), "sandbox %s: %s", t.sandbox_id,
                 err.code == ENOENT ? "not found" : err.msg);
        reply_json(r, 502, "Bad Gateway", msg);
        return;
    }
    /* a private sandbox (allowPublicTraffic false): its ports answer only its traffic token; the agent's own
     * ports keep their own guard (the envd access token), which the SDK sends instead */
    if (*ri.traffic_token && t.port != ENVD_PORT && t.port != INTERP_PORT) {
        char got[80] = "";
        header(head, "e2b-traffic-access-token", got, sizeof(got));
        size_t n = strlen(ri.traffic_token);
        if (strlen(got) != n || CRYPTO_memcmp(got, ri.traffic_token, n) != 0) {
            cube_metric_add("cube_proxy_traffic_refused_total",
                            "Requests to private sandboxes without their traffic access token", 1);
            reply_json(r, 403, "Forbidden",
                       *got ? "wrong e2b-traffic-access-token for this sandbox"
                            : "this sandbox is private: send its e2b-traffic-access-token header");
            return;
        }
    }
    if (*p->node_id && *ri.node && strcmp(ri.node, p->node_id) != 0) {
        /* on another node: one hop to that node's proxy, which serves it like a local request (a request
         * that already made its hop is not sent on again) */
        char hop[8], addr[300];
        if (header(head, "X-Cube-Hop", hop, sizeof(hop)) == 0) {
            snprintf(msg, sizeof(msg), "sandbox %s is not on node %s", t.sandbox_id, p->node_id);
            reply_json(r, 502, "Bad Gateway", msg);
            return;
        }
        int up = node_proxy(p, ri.node, addr, sizeof(addr), &err) < 0 ? -1 : tcp_connect(addr, &err);
        if (up >= 0 &&
            p->tls) { /* the hop to another machine: mutual TLS, the peer checked for addr's host */
            char host[300];
            snprintf(host, sizeof(host), "%s", addr);
            char *colon = strrchr(host, ':');
            if (colon) *colon = '\0';
            fcntl(up, F_SETFL, fcntl(up, F_GETFL) & ~O_NONBLOCK);
            r->up_ssl = proxy_tls_connect(p->tls, up, host, CONNECT_TIMEOUT_MS, &err);
            if (!r->up_ssl) {
                close(up);
                up = -1;
            }
        }
        if (up < 0) {
            snprintf(msg, sizeof(msg), "sandbox %s on node %s: %s", t.sandbox_id, ri.node, err.msg);
            reply_json(r, 502, "Bad Gateway", msg);
            return;
        }
        cube_metric_add("cube_proxy_forwarded_total", "Connections forwarded to another node's proxy", 1);
        free(r->resp_headers); /* the node's proxy adds them to the sandbox's answer */
        r->resp_headers = NULL;
        /* the head with the hop mark, then the rest as it came */
        r->send = with_header_lines(head, len, "X-Cube-Hop: 1\r\n");
        if (!r->send) {
            close(up);
            reply_json(r, 503, "Service Unavailable", "out of memory");
            return;
        }
        r->send_len = len + 15;
        r->up = up;
        return;
    }
    if (ri.paused && ri.auto_resume) { /* the first request wakes it (lifecycle.autoResume) */
        Cube__SetTimeoutRequest rr = CUBE__SET_TIMEOUT_REQUEST__INIT;
        rr.sandbox_id = t.sandbox_id;
        ProtobufCMessage *resp = NULL;
        cube_rpc_call_opts o = {.timeout_ms = 30000};
        if (cube_rpc_failover_call(&p->masters, "/cube.Master/ResumeSandbox", &rr.base,
                                   &cube__get_sandbox_response__descriptor, &resp, &o, &err) == 0) {
            protobuf_c_message_free_unpacked(resp, NULL);
            ri.paused = 0;
        }
    }
    if (ri.paused) {
        snprintf(msg, sizeof(msg), "sandbox %s is paused: resume it (Sandbox.connect) first", t.sandbox_id);
        reply_json(r, 502, "Bad Gateway", msg);
        return;
    }
    if (t.port != ENVD_PORT && t.port != INTERP_PORT) { /* the user's own servers answer CORS their way */
        free(r->resp_headers);
        r->resp_headers = NULL;
    }
    cube_metric_add("cube_proxy_connections_total", "Connections relayed into sandboxes", 1);
    int up = cube_netns_connect(ri.netns, t.port, &err);
    if (up < 0) {
        snprintf(msg, sizeof(msg), "sandbox %s port %u: %s", t.sandbox_id, t.port, err.msg);
        reply_json(r, 502, "Bad Gateway", msg);
        return;
    }
    bool https = false;
    for (int i = 0; i < ri.n_https; i++) https |= ri.https[i] == t.port;
    if (https) { /* a port that serves HTTPS inside: the proxy speaks TLS to it */
        fcntl(up, F_SETFL, fcntl(up, F_GETFL) & ~O_NONBLOCK);
        r->up_ssl = proxy_tls_connect_sandbox(up, NULL, CONNECT_TIMEOUT_MS, &err);
        if (!r->up_ssl) {
            close(up);
            snprintf(msg, sizeof(msg), "sandbox %s port %u (HTTPS): %s", t.sandbox_id, t.port, err.msg);
            reply_json(r, 502, "Bad Gateway", msg);
            return;
        }
    }
    /* maskRequestHost: the Host the sandbox's server sees, "${PORT}" standing for the port */
    char host[300] = "";
    if (*ri.mask) {
        const char *ph = strstr(ri.mask, "${PORT}");
        if (ph)
            snprintf(host, sizeof(host), "%.*s%u%s", (int)(ph - ri.mask), ri.mask, t.port, ph + 7);
        else
            snprintf(host, sizeof(host), "%s", ri.mask);
    }
    char upg[64];
    char *uh =
        upstream_head(head, head_len, header(head, "Upgrade", upg, sizeof(upg)) == 0, *host ? host : NULL);
    size_t uhl = uh ? strlen(uh) : 0;
    r->send = uh ? realloc(uh, uhl + (len - head_len) + 1) : NULL;
    if (!r->send) {
        free(uh);
        if (r->up_ssl) SSL_free(r->up_ssl);
        r->up_ssl = NULL;
        close(up);
        reply_json(r, 503, "Service Unavailable", "out of memory");
        return;
    }
    memcpy(r->send + uhl, head + head_len, len - head_len);
    r->send_len = uhl + (len - head_len);
    r->up = up;
}
