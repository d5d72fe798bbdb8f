#include "proxy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
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

#include "json.h"
#include "log.h"
#include "metrics.h"
#include "master.pb-c.h"
#include "netns.h"
#include "redis.h"

#define HEAD_MAX 65536

int proxy_init(proxy *p, const char *addr, int port, const char *master, const char *domain, cube_err *err)
{
    memset(p, 0, sizeof(*p));
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

static void write_all(int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        b += w;
        n -= (size_t)w;
    }
}

static void reply_json(int fd, int status, const char *reason, const char *msg)
{
    char *body = cube_json_error_body(status, msg);
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: "
                     "close\r\n\r\n",
                     status, reason, body ? strlen(body) : 0);
    write_all(fd, head, (size_t)n);
    if (body) write_all(fd, body, strlen(body));
    free(body);
}

void proxy_use_redis(proxy *p, const char *redis_addr)
{
    p->routes = cube_redis_new(redis_addr);
}

void proxy_set_node(proxy *p, const char *node_id)
{
    snprintf(p->node_id, sizeof(p->node_id), "%s", node_id ? node_id : "");
}

/* The route a master published ("STATE AUTO_RESUME NODE NETNS"); 0, or -1 for a miss, a tombstone or no
 * Redis. */
static int resolve_cached(proxy *p, const char *id, char *netns, size_t cap, char node[64], int *paused,
                          int *auto_resume)
{
    if (!p->routes) return -1;
    redisReply *r = cube_redis_cmd(p->routes, "HGET cube:routes %s", id);
    int state = 0, ar = 0, off = 0, rc = -1;
    if (r && r->type == REDIS_REPLY_STRING && sscanf(r->str, "%d %d %63s %n", &state, &ar, node, &off) == 3 &&
        off > 0 && strncmp(r->str + off, "/proc/", 6) == 0) {
        snprintf(netns, cap, "%s", r->str + off);
        *paused = state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED;
        *auto_resume = ar;
        rc = 0;
    }
    if (r) freeReplyObject(r);
    cube_metric_add(rc == 0 ? "cube_proxy_route_lookups_total{source=\"redis\"}"
                            : "cube_proxy_route_lookups_total{source=\"master\"}",
                    "Where sandbox routes came from", 1);
    return rc;
}

/* The sandbox's network namespace from its agent address "netns:/proc/PID/ns/net:PORT". */
static int resolve(proxy *p, const char *id, char *netns, size_t cap, char node[64], int *paused,
                   int *auto_resume, cube_err *err)
{
    if (resolve_cached(p, id, netns, cap, node, paused, auto_resume) == 0) return 0;
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
        snprintf(netns, cap, "%s", a + 6);
        char *last = strrchr(netns, ':');
        if (last) *last = '\0';
        *paused = sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED;
        *auto_resume = sb->auto_resume;
        snprintf(node, 64, "%s", sb->node_id ? sb->node_id : "");
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* Rewrites the head for the sandbox: one request per upstream connection (Connection: close), unless the
 * client asks for an Upgrade, which then owns the connection. Returns a malloc'd head. */
static char *upstream_head(const char *head, size_t head_len, int upgrade)
{
    char *out = malloc(head_len + 64);
    if (!out) return NULL;
    size_t o = 0;
    const char *line = head;
    const char *end = head + head_len;
    while (line < end) {
        const char *nl = strstr(line, "\r\n");
        if (!nl) break;
        size_t len = (size_t)(nl - line);
        if (len == 0) break; /* blank line: end of head */
        int drop = !upgrade &&
                   (strncasecmp(line, "Connection:", 11) == 0 || strncasecmp(line, "Keep-Alive:", 11) == 0 ||
                    strncasecmp(line, "Proxy-Connection:", 17) == 0);
        if (!drop) {
            memcpy(out + o, line, len + 2);
            o += len + 2;
        }
        line = nl + 2;
    }
    if (!upgrade) {
        memcpy(out + o, "Connection: close\r\n", 19);
        o += 19;
    }
    memcpy(out + o, "\r\n", 2);
    o += 2;
    out[o] = '\0';
    return out;
}

/* Relays both ways until both sides are done. */
static void pump(int a, int b, const char *pending, size_t pending_len)
{
    if (pending_len) write_all(b, pending, pending_len);
    char buf[65536];
    int a_open = 1, b_open = 1;
    while (b_open) {
        struct pollfd fds[2] = {{a, a_open ? POLLIN : 0, 0}, {b, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (a_open && fds[0].revents) {
            ssize_t n = read(a, buf, sizeof(buf));
            if (n > 0) {
                write_all(b, buf, (size_t)n);
            } else {
                a_open = 0;
                shutdown(b, SHUT_WR); /* the request is complete: let the sandbox finish its answer */
            }
        }
        if (fds[1].revents) {
            ssize_t n = read(b, buf, sizeof(buf));
            if (n <= 0) break;
            write_all(a, buf, (size_t)n);
        }
    }
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
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        cube_err_sys(err, errno, "connect %s", hostport);
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

static void *serve_conn(void *arg)
{
    proxy *p = ((void **)arg)[0];
    int fd = (int)(intptr_t)((void **)arg)[1];
    free(arg);
    char *head = malloc(HEAD_MAX + 1);
    size_t len = 0;
    char *end = NULL;
    while (head && len < HEAD_MAX) {
        ssize_t n = read(fd, head + len, HEAD_MAX - len);
        if (n <= 0) break;
        len += (size_t)n;
        head[len] = '\0';
        if ((end = strstr(head, "\r\n\r\n"))) break;
    }
    if (!head || !end) {
        if (head && len > 0)
            reply_json(fd, len >= HEAD_MAX ? 431 : 400, "Bad Request", "malformed request head");
        goto out;
    }
    size_t head_len = (size_t)(end - head) + 4;
    proxy_target t;
    if (proxy_parse_target(head, p->domain, &t) < 0) {
        if (strncmp(head, "GET /metrics ", 13) == 0) {
            char *text = cube_metrics_render();
            char h[200];
            int hl = snprintf(
                h, sizeof(h),
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %zu\r\n"
                "Connection: close\r\n\r\n",
                text ? strlen(text) : 0);
            write_all(fd, h, (size_t)hl);
            if (text) write_all(fd, text, strlen(text));
            free(text);
        } else if (strncmp(head, "GET /health ", 12) == 0) {
            const char *ok =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: "
                "close\r\n\r\n{\"ok\":true}";
            write_all(fd, ok, strlen(ok));
        } else {
            reply_json(
                fd, 400, "Bad Request",
                "no sandbox named: send E2b-Sandbox-Id and E2b-Sandbox-Port, or Host <port>-<id>.<domain>");
        }
        goto out;
    }
    char netns[128], msg[512], node[64] = "";
    int paused = 0, auto_resume = 0;
    cube_err err = {0};
    if (resolve(p, t.sandbox_id, netns, sizeof(netns), node, &paused, &auto_resume, &err) < 0) {
        snprintf(msg, sizeof(msg), "sandbox %s: %s", t.sandbox_id,
                 err.code == ENOENT ? "not found" : err.msg);
        reply_json(fd, 502, "Bad Gateway", msg);
        goto out;
    }
    if (*p->node_id && *node && strcmp(node, p->node_id) != 0) {
        /* on another node: one hop to that node's proxy, which serves it like a local request (a request
         * that already made its hop is not sent on again) */
        char hop[8], addr[300];
        if (header(head, "X-Cube-Hop", hop, sizeof(hop)) == 0) {
            snprintf(msg, sizeof(msg), "sandbox %s is not on node %s", t.sandbox_id, p->node_id);
            reply_json(fd, 502, "Bad Gateway", msg);
            goto out;
        }
        int up = node_proxy(p, node, addr, sizeof(addr), &err) < 0 ? -1 : tcp_connect(addr, &err);
        if (up < 0) {
            snprintf(msg, sizeof(msg), "sandbox %s on node %s: %s", t.sandbox_id, node, err.msg);
            reply_json(fd, 502, "Bad Gateway", msg);
            goto out;
        }
        cube_metric_add("cube_proxy_forwarded_total", "Connections forwarded to another node's proxy", 1);
        /* the head with the hop mark, then the rest as it comes */
        const char *eol = strstr(head, "\r\n");
        write_all(up, head, (size_t)(eol - head) + 2);
        write_all(up, "X-Cube-Hop: 1\r\n", 15);
        write_all(up, eol + 2, len - (size_t)(eol + 2 - head));
        pump(fd, up, NULL, 0);
        goto out;
    }
    if (paused && auto_resume) { /* the first request wakes it (lifecycle.autoResume) */
        Cube__SetTimeoutRequest rr = CUBE__SET_TIMEOUT_REQUEST__INIT;
        rr.sandbox_id = t.sandbox_id;
        ProtobufCMessage *resp = NULL;
        cube_rpc_call_opts o = {.timeout_ms = 30000};
        if (cube_rpc_failover_call(&p->masters, "/cube.Master/ResumeSandbox", &rr.base,
                                   &cube__get_sandbox_response__descriptor, &resp, &o, &err) == 0) {
            protobuf_c_message_free_unpacked(resp, NULL);
            paused = 0;
        }
    }
    if (paused) {
        snprintf(msg, sizeof(msg), "sandbox %s is paused: resume it (Sandbox.connect) first", t.sandbox_id);
        reply_json(fd, 502, "Bad Gateway", msg);
        goto out;
    }
    cube_metric_add("cube_proxy_connections_total", "Connections relayed into sandboxes", 1);
    int up = cube_netns_connect(netns, t.port, &err);
    if (up < 0) {
        snprintf(msg, sizeof(msg), "sandbox %s port %u: %s", t.sandbox_id, t.port, err.msg);
        reply_json(fd, 502, "Bad Gateway", msg);
        goto out;
    }
    char upg[64];
    char *uh = upstream_head(head, head_len, header(head, "Upgrade", upg, sizeof(upg)) == 0);
    if (uh) {
        write_all(up, uh, strlen(uh));
        pump(fd, up, head + head_len, len - head_len);
    }
    free(uh);
    close(up);
out:
    free(head);
    close(fd);
    return NULL;
}

void proxy_serve(proxy *p)
{
    while (!p->stopping) {
        int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (p->stopping) break;
            cube_log_warn("accept failed", "errno=%d", errno);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        void **arg = malloc(2 * sizeof(void *));
        pthread_t th;
        if (!arg) {
            close(fd);
            continue;
        }
        arg[0] = p;
        arg[1] = (void *)(intptr_t)fd;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (pthread_create(&th, &attr, serve_conn, arg) != 0) {
            free(arg);
            close(fd);
        }
        pthread_attr_destroy(&attr);
    }
}

void proxy_stop(proxy *p)
{
    p->stopping = 1;
    shutdown(p->listen_fd, SHUT_RDWR);
}
