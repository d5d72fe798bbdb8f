/* cube-net: one per node; network slots and their eBPF egress policy, for cubelet. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "rpc.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "net.h"
#include "service.h"

static const cube_config_flag flags[] = {
    {"data", "net.data", true, "data directory (default /var/lib/cube): leases in <data>/net"},
    {"listen", "net.listen", true, "RPC address (default unix:<data>/run/net.sock)"},
    {"cidr", "net.cidr", true, "the node's sandbox range (default 10.200.0.0/16)"},
    {"uplink", "net.uplink", true,
     "interface sandboxes reach the outside through, masqueraded (default: none)"},
    {"deny", "net.deny", true,
     "comma-separated CIDRs no sandbox may reach whatever its policy (default 169.254.0.0/16)"},
    {"private", "net.private", true,
     "comma-separated CIDRs a sandbox's internet access does not cover, reached only where its allowOut "
     "names "
     "them (default: private, shared, loopback, multicast and reserved IPv4; '' for none)"},
    {"ifprefix", "net.ifprefix", true,
     "host-side interface name prefix (default cn); one per cube-net on a host"},
    {"pool-size", "net.pool_size", true, "network slots kept ready (default 8)"},
    {"audit-allowed", "net.audit_allowed", false, "log allowed new connections too"},
    {"flows-per-sandbox", "net.flows_per_sandbox", true,
     "connections each sandbox may have open through the uplink at once (default 8192)"},
    {"fresh-slots", "net.fresh_slots", false,
     "build every sandbox a new namespace and veth (default: a slot its sandbox left with no traffic and no "
     "socket is handed out again)"},
    {"upstream-ca", "net.upstream_ca", true,
     "PEM file of extra CAs the egress proxy trusts for servers it injects headers on the way to"},
    {"dns", "net.dns", true,
     "ADDR[:PORT] of the resolver sandboxes' names go to (default: the node's, from /etc/resolv.conf)"},
    {"metrics-port", "net.metrics_port", true, "serve Prometheus /metrics on 127.0.0.1:PORT (default: off)"},
    {"help", "net.help", false, "this text"},
    {"tls-dir", "net.tls_dir", true,
     "this machine's TLS identity (ca.pem, cert.pem, key.pem; deploy/tls-certs): links to other machines "
     "(host:port) use mutual TLS"},
    {0},
};

static int run(cube_config *cfg, int argc, char **argv)
{
    cube_err err = {0};
    int first;
    if (cube_config_parse_args(cfg, argc, argv, flags, &first, &err) < 0 || first != argc ||
        cube_rpc_tls_configure(cube_config_get(cfg, "net.tls_dir", NULL), &err) < 0) {
        fprintf(stderr, "cube-net: %s\n", err.code ? err.msg : "unexpected argument");
        return 2;
    }
    if (cube_config_get(cfg, "net.help", NULL)) {
        printf("usage: cube-net [flags]\n");
        for (const cube_config_flag *f = flags; f->name; f++) printf("  --%-14s %s\n", f->name, f->help);
        return 0;
    }
    const char *data = cube_config_get(cfg, "net.data", "/var/lib/cube");
    char listen[4200], state[4200], nsdir[4200];
    snprintf(listen, sizeof(listen), "unix:%s/run/net.sock", data);
    snprintf(state, sizeof(state), "%s/net", data);
    snprintf(nsdir, sizeof(nsdir), "%s/net/ns", data);
    long long pool, mport = 0, flows = CN_FLOWS_PER_SANDBOX;
    bool audit = false, fresh = false;
    if (cube_config_get_int(cfg, "net.pool_size", 8, 0, 4096, &pool, &err) < 0 ||
        cube_config_get_int(cfg, "net.metrics_port", 0, 0, 65535, &mport, &err) < 0 ||
        cube_config_get_int(cfg, "net.flows_per_sandbox", CN_FLOWS_PER_SANDBOX, 1, 1 << 24, &flows, &err) <
            0 ||
        cube_config_get_bool(cfg, "net.audit_allowed", false, &audit, &err) < 0 ||
        cube_config_get_bool(cfg, "net.fresh_slots", false, &fresh, &err) < 0) {
        fprintf(stderr, "cube-net: %s\n", err.msg);
        return 2;
    }
    cn_config nc = {
        .state_dir = state,
        .ns_dir = nsdir,
        .cidr = cube_config_get(cfg, "net.cidr", "10.200.0.0/16"),
        .uplink = cube_config_get(cfg, "net.uplink", NULL),
        .node_deny = cube_config_get(cfg, "net.deny", "169.254.0.0/16"),
        .private_nets = cube_config_get(cfg, "net.private", CN_PRIVATE_NETS),
        .ifprefix = cube_config_get(cfg, "net.ifprefix", "cn"),
        .pool_size = (int)pool,
        .flows_per_sandbox = (int)flows,
        .audit_allowed = audit,
        .fresh_slots = fresh,
        .dns = cube_config_get(cfg, "net.dns", NULL),
        .upstream_ca = cube_config_get(cfg, "net.upstream_ca", NULL),
    };
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    static cube_net n;
    if (cube_net_init(&n, &nc, &err) < 0) {
        fprintf(stderr, "cube-net: %s\n", err.msg);
        cube_net_stop(&n);
        return 1;
    }
    cube_rpc_server *srv =
        cube_rpc_server_start(cube_config_get(cfg, "net.listen", listen), cube_net_methods, &n, 16, &err);
    if (!srv) {
        fprintf(stderr, "cube-net: %s\n", err.msg);
        cube_net_stop(&n);
        return 1;
    }
    cube_net_start(&n);
    http_server *msrv = NULL;
    if (mport && !(msrv = cube_metrics_serve("127.0.0.1", (int)mport, &err)))
        cube_log_warn("no metrics listener", "err=\"%s\"", err.msg);
    cube_log_info("cube-net ready", "cidr=%s uplink=%s pool=%lld", nc.cidr, nc.uplink ? nc.uplink : "-",
                  pool);
    int sig;
    sigwait(&set, &sig);
    cube_log_info("cube-net stopping: leased slots stay for the next start", "signal=%d", sig);
    http_server_stop(msrv);
    cube_rpc_server_stop(srv);
    cube_net_stop(&n);
    return 0;
}

int main(int argc, char **argv)
{
    cube_log_init("cube-net", -1);
    cube_config *cfg = cube_config_new();
    int rc = run(cfg, argc, argv);
    cube_config_free(cfg);
    return rc;
}
