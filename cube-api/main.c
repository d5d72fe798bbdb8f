/* cube-api: E2B's REST API (E2B_API_URL points here). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "api.h"
#include "config.h"
#include "rpc.h"
#include "log.h"

static const cube_config_flag flags[] = {
    {"data", "api.data", true, "data directory (default /var/lib/cube)"},
    {"listen", "api.listen", true, "address (default 127.0.0.1)"},
    {"port", "api.port", true, "port (default 3000, E2B's local default)"},
    {"master", "api.master", true,
     "cube-master address, or several comma-separated (failover) (default unix:<data>/run/master.sock)"},
    {"volume-port", "api.volume_port", true,
     "port of the volume content API, streamed (E2B_VOLUME_API_URL) (default <port + 5>; 0: none)"},
    {"share-port", "api.share_port", false, "let several cube-apis listen on the same port (SO_REUSEPORT)"},
    {"domain", "api.domain", true, "domain returned for sandboxes (default none)"},
    {"sandbox-url", "api.sandbox_url", true,
     "where the web console (/console) reaches sandboxes: cube-proxy's URL (E2B_SANDBOX_URL), or :PORT for "
     "that "
     "port on the host the console was opened at (default :<port + 1>, as deploy/cube lays them out)"},
    {"max-conns", "api.max_conns", true, "client connections in all (default: from the open-file limit)"},
    {"max-conns-per-addr", "api.max_conns_per_addr", true,
     "client connections per address (default: no cap)"},
    {"idle-timeout-s", "api.idle_timeout_s", true,
     "a connection silent this long (head, body or between requests) is closed (default 30)"},
    {"workers", "api.workers", true, "threads running requests (default 64)"},
    {"tls-dir", "api.tls_dir", true,
     "this machine's TLS identity (ca.pem, cert.pem, key.pem; deploy/tls-certs): links to other machines "
     "(host:port) use mutual TLS"},
    {0},
};

/* The edge's limits: one epoll thread holds the connections, a fixed pool runs requests (each may wait on a
 * master for a create); the connection cap follows the open-file limit, raised to its hard maximum. */
static int edge_opts(cube_config *cfg, http_server_opts *o, cube_err *err)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    long long fds =
        getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long long)rl.rlim_cur : 65536;
    long long v, def = fds > 256 ? fds - 128 : 128;
    if (cube_config_get_int(cfg, "api.max_conns", def > 65536 ? 65536 : def, 1, 1 << 20, &v, err) < 0)
        return -1;
    o->max_conns = (unsigned)v;
    if (cube_config_get_int(cfg, "api.max_conns_per_addr", 0, 0, 1 << 20, &v, err) < 0) return -1;
    o->max_per_addr = (unsigned)v;
    if (cube_config_get_int(cfg, "api.idle_timeout_s", 30, 0, 86400, &v, err) < 0) return -1;
    o->idle_timeout_s = (unsigned)v;
    if (cube_config_get_int(cfg, "api.workers", 64, 1, 4096, &v, err) < 0) return -1;
    o->workers = (int)v;
    o->fair_header =
        "X-API-KEY"; /* callers take turns for the workers: one key's burst does not hold the rest */
    return 0;
}

int main(int argc, char **argv)
{
    cube_log_init("cube-api", -1);
    cube_config *cfg = cube_config_new();
    cube_err err = {0};
    int first, rc = 0;
    long long port, volume_port;
    static api a;
    http_server *srv = NULL, *vsrv = NULL;
    http_server_opts opts = {0};
    if (cube_config_parse_args(cfg, argc, argv, flags, &first, &err) < 0 || first != argc ||
        cube_config_get_int(cfg, "api.port", 3000, 0, 65535, &port, &err) < 0 ||
        cube_config_get_int(cfg, "api.volume_port", port ? (port + 5) % 65536 : 0, 0, 65535, &volume_port,
                            &err) < 0 ||
        edge_opts(cfg, &opts, &err) < 0 ||
        cube_rpc_tls_configure(cube_config_get(cfg, "api.tls_dir", NULL), &err) < 0) {
        fprintf(stderr, "cube-api: %s\n", err.code ? err.msg : "unexpected argument");
        rc = 2;
        goto out;
    }
    char master[4200];
    snprintf(master, sizeof(master), "unix:%s/run/master.sock",
             cube_config_get(cfg, "api.data", "/var/lib/cube"));
    snprintf(a.domain, sizeof(a.domain), "%s", cube_config_get(cfg, "api.domain", ""));
    char proxy_port[16];
    snprintf(proxy_port, sizeof(proxy_port), ":%lld", port + 1);
    snprintf(a.console_sandbox_url, sizeof(a.console_sandbox_url), "%s",
             cube_config_get(cfg, "api.sandbox_url", proxy_port));
    pthread_mutex_init(&a.auth_lock, NULL);
    int have_masters =
        cube_rpc_failover_init(&a.masters, cube_config_get(cfg, "api.master", master), &err) == 0;
    cube_config_get_bool(cfg, "api.share_port", false, &opts.share_port, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    srv = have_masters ? http_server_start_opts(cube_config_get(cfg, "api.listen", "127.0.0.1"), (int)port,
                                                api_routes, &a, &opts, &err)
                       : NULL;
    if (!srv) {
        fprintf(stderr, "cube-api: %s\n", err.msg);
        rc = 1;
        goto out;
    }
    if (volume_port) {
        /* a thread per connection: a file streams through it in chunks, each one call to the volume's node */
        http_server_opts vopts = {.share_port = opts.share_port, .max_conns = 256, .idle_timeout_s = 60};
        vsrv = http_server_start_opts(cube_config_get(cfg, "api.listen", "127.0.0.1"), (int)volume_port,
                                      api_volume_routes, &a, &vopts, &err);
        if (!vsrv) {
            fprintf(stderr, "cube-api: volume port %lld: %s\n", volume_port, err.msg);
            http_server_stop(srv);
            rc = 1;
            goto out;
        }
    }
    cube_log_info(
        "api ready", "port=%d volume_port=%d master=%s max_conns=%u per_addr=%u idle_timeout_s=%u workers=%d",
        http_server_port(srv), vsrv ? http_server_port(vsrv) : 0, cube_rpc_client_target(a.masters.c[0]),
        opts.max_conns, opts.max_per_addr, opts.idle_timeout_s, opts.workers);
    int sig;
    sigwait(&set, &sig);
    if (vsrv) http_server_stop(vsrv);
    http_server_stop(srv);
out:
    cube_rpc_failover_free(&a.masters);
    cube_config_free(cfg);
    return rc;
}
