/* cube-proxy: the node's entry for SDK traffic into sandboxes (E2B_SANDBOX_URL points here). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "config.h"
#include "rpc.h"
#include "log.h"
#include "proxy.h"

static const cube_config_flag flags[] = {
    {"data", "proxy.data", true, "data directory (default /var/lib/cube)"},
    {"listen", "proxy.listen", true, "address (default 127.0.0.1)"},
    {"port", "proxy.port", true, "port (default 3001)"},
    {"master", "proxy.master", true, "cube-master address (default unix:<data>/run/master.sock)"},
    {"domain", "proxy.domain", true, "sandbox domain for Host routing (default: any)"},
    {"node-id", "proxy.node_id", true,
     "in a cluster, the node this proxy serves; sandboxes elsewhere go to their node's proxy"},
    {"console-origin", "proxy.console_origin", true,
     "origins of the web console (cube-api's /console), comma-separated, e.g. http://127.0.0.1:3000: its "
     "page "
     "may call the sandboxes' agent across origins (CORS); default none"},
    {"redis", "proxy.redis", true, "Redis with the cluster's sandbox routes (unix:/path or host:port)"},
    {"max-conns", "proxy.max_conns", true, "client connections in all (default: from the open-file limit)"},
    {"max-conns-per-addr", "proxy.max_conns_per_addr", true,
     "client connections per address (default: max-conns)"},
    {"head-timeout-ms", "proxy.head_timeout_ms", true, "time for a request head to arrive (default 10000)"},
    {"idle-timeout-ms", "proxy.idle_timeout_ms", true,
     "a relayed connection with no byte either way is closed (default 900000)"},
    {"workers", "proxy.workers", true, "threads routing requests (default 16)"},
    {"signed-lookups", "proxy.signed_lookups", true,
     "signed file URLs (uploadUrl/downloadUrl with no sandbox named) looked up a second (default 100)"},
    {"tls-dir", "proxy.tls_dir", true,
     "this machine's TLS identity (ca.pem, cert.pem, key.pem; deploy/tls-certs): links to other machines "
     "(host:port) use mutual TLS"},
    {0},
};

/* Every descriptor the hard limit allows: each relayed connection holds two. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int limits_from(cube_config *cfg, proxy_limits *l, cube_err *err)
{
    proxy_limits_default(l);
    long long v;
    if (cube_config_get_int(cfg, "proxy.max_conns", l->max_conns, 1, 1 << 20, &v, err) < 0) return -1;
    l->max_conns = (int)v;
    if (cube_config_get_int(cfg, "proxy.max_conns_per_addr", l->max_conns, 1, 1 << 20, &v, err) < 0)
        return -1;
    l->max_per_addr = (int)v;
    if (cube_config_get_int(cfg, "proxy.head_timeout_ms", l->head_timeout_ms, 100, 3600000, &v, err) < 0)
        return -1;
    l->head_timeout_ms = (int)v;
    if (cube_config_get_int(cfg, "proxy.idle_timeout_ms", l->idle_timeout_ms, 1000, 86400000, &v, err) < 0)
        return -1;
    l->idle_timeout_ms = (int)v;
    if (cube_config_get_int(cfg, "proxy.workers", l->workers, 1, 1024, &v, err) < 0) return -1;
    l->workers = (int)v;
    if (cube_config_get_int(cfg, "proxy.signed_lookups", l->signed_lookups_per_s, 1, 1000000, &v, err) < 0)
        return -1;
    l->signed_lookups_per_s = (int)v;
    return 0;
}

static proxy px;

static void *signals(void *arg)
{
    sigset_t *set = arg;
    int sig;
    sigwait(set, &sig);
    proxy_stop(&px);
    return NULL;
}

int main(int argc, char **argv)
{
    cube_log_init("cube-proxy", -1);
    cube_config *cfg = cube_config_new();
    cube_err err = {0};
    int first;
    if (cube_config_parse_args(cfg, argc, argv, flags, &first, &err) < 0 || first != argc ||
        cube_rpc_tls_configure(cube_config_get(cfg, "proxy.tls_dir", NULL), &err) < 0) {
        fprintf(stderr, "cube-proxy: %s\n", err.code ? err.msg : "unexpected argument");
        cube_config_free(cfg);
        return 2;
    }
    long long port;
    raise_nofile();
    proxy_limits limits;
    if (cube_config_get_int(cfg, "proxy.port", 3001, 0, 65535, &port, &err) < 0 ||
        limits_from(cfg, &limits, &err) < 0) {
        fprintf(stderr, "cube-proxy: %s\n", err.msg);
        cube_config_free(cfg);
        return 2;
    }
    char master[4200];
    snprintf(master, sizeof(master), "unix:%s/run/master.sock",
             cube_config_get(cfg, "proxy.data", "/var/lib/cube"));
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (proxy_init(&px, cube_config_get(cfg, "proxy.listen", "127.0.0.1"), (int)port,
                   cube_config_get(cfg, "proxy.master", master), cube_config_get(cfg, "proxy.domain", ""),
                   &err) < 0) {
        fprintf(stderr, "cube-proxy: %s\n", err.msg);
        cube_config_free(cfg);
        return 1;
    }
    px.limits = limits;
    const char *tls_dir = cube_config_get(cfg, "proxy.tls_dir", NULL);
    if (tls_dir && *tls_dir && proxy_use_tls(&px, tls_dir, &err) < 0) {
        fprintf(stderr, "cube-proxy: %s\n", err.msg);
        cube_config_free(cfg);
        return 1;
    }
    const char *redis = cube_config_get(cfg, "proxy.redis", NULL);
    if (redis) proxy_use_redis(&px, redis);
    proxy_set_node(&px, cube_config_get(cfg, "proxy.node_id", ""));
    proxy_set_console_origins(&px, cube_config_get(cfg, "proxy.console_origin", ""));
    pthread_t th;
    pthread_create(&th, NULL, signals, &set);
    cube_log_info("proxy ready", "port=%d max_conns=%d per_addr=%d head_timeout_ms=%d workers=%d", px.port,
                  limits.max_conns, limits.max_per_addr, limits.head_timeout_ms, limits.workers);
    int rc = proxy_serve(&px, &err) < 0 ? 1 : 0;
    if (rc) fprintf(stderr, "cube-proxy: %s\n", err.msg);
    cube_config_free(cfg);
    return rc;
}
