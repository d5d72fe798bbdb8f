/* cube-api: E2B's REST API (E2B_API_URL points here). */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "config.h"
#include "log.h"

static const cube_config_flag flags[] = {
    {"data", "api.data", true, "data directory (default /var/lib/cube)"},
    {"listen", "api.listen", true, "address (default 127.0.0.1)"},
    {"port", "api.port", true, "port (default 3000, E2B's local default)"},
    {"master", "api.master", true,
     "cube-master address, or several comma-separated (failover) (default unix:<data>/run/master.sock)"},
    {"share-port", "api.share_port", false, "let several cube-apis listen on the same port (SO_REUSEPORT)"},
    {"domain", "api.domain", true, "domain returned for sandboxes (default none)"},
    {0},
};

int main(int argc, char **argv)
{
    cube_log_init("cube-api", -1);
    cube_config *cfg = cube_config_new();
    cube_err err = {0};
    int first, rc = 0;
    long long port;
    static api a;
    http_server *srv = NULL;
    if (cube_config_parse_args(cfg, argc, argv, flags, &first, &err) < 0 || first != argc ||
        cube_config_get_int(cfg, "api.port", 3000, 0, 65535, &port, &err) < 0) {
        fprintf(stderr, "cube-api: %s\n", err.code ? err.msg : "unexpected argument");
        rc = 2;
        goto out;
    }
    char master[4200];
    snprintf(master, sizeof(master), "unix:%s/run/master.sock",
             cube_config_get(cfg, "api.data", "/var/lib/cube"));
    snprintf(a.domain, sizeof(a.domain), "%s", cube_config_get(cfg, "api.domain", ""));
    pthread_mutex_init(&a.auth_lock, NULL);
    int have_masters =
        cube_rpc_failover_init(&a.masters, cube_config_get(cfg, "api.master", master), &err) == 0;
    bool share = false;
    cube_config_get_bool(cfg, "api.share_port", false, &share, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    srv = have_masters ? http_server_start_shared(cube_config_get(cfg, "api.listen", "127.0.0.1"), (int)port,
                                                  api_routes, &a, share, &err)
                       : NULL;
    if (!srv) {
        fprintf(stderr, "cube-api: %s\n", err.msg);
        rc = 1;
        goto out;
    }
    cube_log_info("api ready", "port=%d master=%s", http_server_port(srv),
                  cube_rpc_client_target(a.masters.c[0]));
    int sig;
    sigwait(&set, &sig);
    http_server_stop(srv);
out:
    cube_rpc_failover_free(&a.masters);
    cube_config_free(cfg);
    return rc;
}
