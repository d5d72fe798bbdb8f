/* cubelet: one per node; the pool and the lifecycle of the node's sandboxes. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "config.h"
#include "rpc.h"
#include "fsutil.h"
#include "cgroup_tune.h"
#include "cgroup_caps.h"
#include "cubelet.h"
#include "http.h"
#include "log.h"
#include "metrics.h"

static const cube_config_flag flags[] = {
    {"data", "cubelet.data", true, "data directory (default /var/lib/cube)"},
    {"listen", "cubelet.listen", true, "RPC address (default unix:<data>/run/cubelet.sock)"},
    {"master", "cubelet.master", true, "cube-master address (default unix:<data>/run/master.sock)"},
    {"node-id", "cubelet.node_id", true, "this node's name (default the hostname)"},
    {"pool-size", "cubelet.pool_size", true, "ready sandboxes kept per template (default 2)"},
    {"pool-max", "cubelet.pool_max", true,
     "the most ready sandboxes a template's pool grows to after a burst of creates (default 256)"},
    {"lxcfs", "cubelet.lxcfs", true,
     "an lxcfs mount: sandboxes' /proc/meminfo, cpuinfo, stat, uptime... show their own limits"},
    {"disk-mb", "cubelet.disk_mb", true,
     "each sandbox's disk (its writable layer), on the node's disk (default 1024)"},
    {"hypervisor", "cubelet.hypervisor", true, "cube-hypervisor binary (default: beside this one)"},
    {"agent", "cubelet.agent", true, "cube-agent binary (default: beside this one)"},
    {"zygote", "cubelet.zygote", true,
     "cube-zygote binary, the warm parent sandboxes are forked from (default: beside this one); off: exec "
     "cube-hypervisor and cube-agent for each sandbox"},
    {"agent-bundle", "cubelet.agent_bundle", true, "self-contained agent directory (deploy/agent-bundle)"},
    {"proxy-address", "cubelet.proxy_address", true,
     "host:port where this node's cube-proxy listens, for the other nodes' proxies (cluster)"},
    {"memory-reserve-mb", "cubelet.memory_reserve_mb", true,
     "memory the node keeps for itself: all sandboxes together are capped at the rest, and creates are "
     "refused while what is left for sandboxes is less than a sandbox's limit (default: a sixteenth of the "
     "node's memory, 256 to 2048)"},
    {"disk-reserve-mb", "cubelet.disk_reserve_mb", true,
     "disk the node keeps for itself on the data directory's filesystem: creates are refused while its free "
     "space less this is less than a sandbox's disk (default: a twentieth of it, 1024 to 10240)"},
    {"volume-mb", "cubelet.volume_mb", true,
     "each volume's size: a filesystem of its own, ENOSPC to writers when full (default 10240; 0: plain "
     "directories on the node's disk, bounded by nothing)"},
    {"net", "cubelet.net", true, "cube-net's RPC address (default: none, sandboxes get loopback only)"},
    {"metrics-port", "cubelet.metrics_port", true,
     "serve Prometheus /metrics on 127.0.0.1:PORT (default: off)"},
    {"cgroup-tuning", "cubelet.cgroup_tuning", true,
     "on (default): set favordynmods on the node's cgroup2 mount, sandbox starts no longer wait ~10 ms each "
     "for "
     "an RCU grace period; off: leave the mount as it is"},
    {"help", "cubelet.help", false, "this text"},
    {"tls-dir", "cubelet.tls_dir", true,
     "this machine's TLS identity (ca.pem, cert.pem, key.pem; deploy/tls-certs): links to other machines "
     "(host:port) use mutual TLS"},
    {0},
};

static int run(cube_config *cfg, int argc, char **argv)
{
    cube_err err = {0};
    int first;
    if (cube_config_parse_args(cfg, argc, argv, flags, &first, &err) < 0 || first != argc ||
        cube_rpc_tls_configure(cube_config_get(cfg, "cubelet.tls_dir", NULL), &err) < 0) {
        fprintf(stderr, "cubelet: %s\n", err.code ? err.msg : "unexpected argument");
        return 2;
    }
    const char *data = cube_config_get(cfg, "cubelet.data", "/var/lib/cube");
    char listen[4200], master_addr[4200], host[256] = "node", hv[PATH_MAX], agent[PATH_MAX], zygote[PATH_MAX];
    snprintf(listen, sizeof(listen), "unix:%s/run/cubelet.sock", data);
    snprintf(master_addr, sizeof(master_addr), "unix:%s/run/master.sock", data);
    gethostname(host, sizeof(host) - 1);
    cube_sibling_path("cube-hypervisor", "../cube-hypervisor/cube-hypervisor", hv, sizeof(hv));
    cube_sibling_path("cube-agent", "../cube-agent/cube-agent", agent, sizeof(agent));
    cube_sibling_path("cube-zygote", "../cube-hypervisor/cube-zygote", zygote, sizeof(zygote));
    long long pool, pool_max, disk_mb, volume_mb, reserve_mb, disk_reserve_mb,
        total_kb = cube_meminfo_kb("MemTotal");
    /* the data directory's filesystem keeps a twentieth, 1 to 10 GB, for the node (store, logs, templates) */
    struct statvfs data_fs;
    long long fs_mb = statvfs(data, &data_fs) == 0
                          ? (long long)((unsigned long long)data_fs.f_blocks * data_fs.f_frsize >> 20)
                          : 0;
    long long disk_reserve_default = fs_mb / 20 < 1024 ? 1024 : fs_mb / 20 > 10240 ? 10240 : fs_mb / 20;
    long long reserve_default =
        total_kb > 0 ? (long long)(cube_node_memory_reserve_default((unsigned long long)total_kb << 10) >> 20)
                     : 0;
    if (cube_config_get_int(cfg, "cubelet.pool_size", 2, 0, 1000, &pool, &err) < 0 ||
        cube_config_get_int(cfg, "cubelet.pool_max", 256, 0, 10000, &pool_max, &err) < 0 ||
        cube_config_get_int(cfg, "cubelet.disk_mb", 1024, 16, 1 << 22, &disk_mb, &err) < 0 ||
        cube_config_get_int(cfg, "cubelet.volume_mb", 10240, 0, 1 << 24, &volume_mb, &err) < 0 ||
        cube_config_get_int(cfg, "cubelet.memory_reserve_mb", reserve_default, 0,
                            total_kb > 0 ? total_kb >> 10 : 1LL << 40, &reserve_mb, &err) < 0 ||
        cube_config_get_int(cfg, "cubelet.disk_reserve_mb", disk_reserve_default, 0, 1LL << 40,
                            &disk_reserve_mb, &err) < 0) {
        fprintf(stderr, "cubelet: %s\n", err.msg);
        return 2;
    }
    if (volume_mb > 0 && volume_mb < 16) {
        fprintf(stderr, "cubelet: --volume-mb must be 0 (plain directories) or at least 16, got %lld\n",
                volume_mb);
        return 2;
    }
    cubelet_config cc = {
        .data_dir = data,
        .node_id = cube_config_get(cfg, "cubelet.node_id", host),
        .listen = cube_config_get(cfg, "cubelet.listen", listen),
        .master = cube_config_get(cfg, "cubelet.master", master_addr),
        .hypervisor_bin = cube_config_get(cfg, "cubelet.hypervisor", hv),
        .agent_bin = cube_config_get(cfg, "cubelet.agent", agent),
        .agent_bundle = cube_config_get(cfg, "cubelet.agent_bundle", NULL),
        .zygote_bin = cube_config_get(cfg, "cubelet.zygote", zygote),
        .net = cube_config_get(cfg, "cubelet.net", NULL),
        .proxy_address = cube_config_get(cfg, "cubelet.proxy_address", NULL),
        .pool_size = (int)pool,
        .pool_max = (int)pool_max,
        .disk_mb = (int)disk_mb,
        .memory_reserve_mb = reserve_mb,
        .disk_reserve_mb = disk_reserve_mb,
        .volume_mb = (int)volume_mb,
        .lxcfs = cube_config_get(cfg, "cubelet.lxcfs", NULL),
        .sandboxes_tmpfs = true,
    };
    const char *tuning = cube_config_get(cfg, "cubelet.cgroup_tuning", "on");
    if (strcmp(tuning, "on") != 0 && strcmp(tuning, "off") != 0) {
        fprintf(stderr, "cubelet: --cgroup-tuning must be on or off, got '%s'\n", tuning);
        return 2;
    }
    if (strcmp(tuning, "on") == 0 && cube_cgroup_favor_dynmods(&err) < 0) {
        cube_log_warn("cgroups not tuned: each sandbox start waits ~10 ms more", "err=\"%s\"", err.msg);
        cube_err_clear(&err);
    }
    unsigned long long socket_cap;
    if (cube_cgroup_cap_sandbox_sockets(&socket_cap, &err) < 0) {
        cube_log_warn("sandboxes' socket memory not bounded together: they may use up the node's",
                      "err=\"%s\"", err.msg);
        cube_err_clear(&err);
    } else if (socket_cap) {
        cube_log_info("sandboxes' socket memory bounded together", "cap_mb=%llu", socket_cap >> 20);
    }
    if (total_kb > 0 && reserve_mb > 0) {
        unsigned long long cap =
            ((unsigned long long)total_kb << 10) - ((unsigned long long)reserve_mb << 20);
        int rc = cube_cgroup_cap_sandbox_memory(cap, &err);
        if (rc < 0) {
            cube_log_warn("sandboxes' memory not bounded together: they may run the node out of memory",
                          "err=\"%s\"", err.msg);
            cube_err_clear(&err);
        } else if (rc > 0) {
            cube_log_info("sandboxes' memory bounded together", "cap_mb=%llu reserve_mb=%lld", cap >> 20,
                          reserve_mb);
        }
    }
    char probe[PATH_MAX + 32];
    snprintf(probe, sizeof(probe), "%s/proc/meminfo", cc.lxcfs ? cc.lxcfs : "");
    if (cc.lxcfs && access(probe, R_OK) < 0) {
        fprintf(stderr, "cubelet: --lxcfs %s is not an lxcfs mount (no %s)\n", cc.lxcfs, probe);
        return 2;
    }
    if (access(cc.hypervisor_bin, X_OK) < 0 || access(cc.agent_bin, X_OK) < 0) {
        fprintf(stderr, "cubelet: cube-hypervisor or cube-agent not found (%s, %s)\n", cc.hypervisor_bin,
                cc.agent_bin);
        return 2;
    }
    if (strcmp(cc.zygote_bin, "off") == 0) {
        cc.zygote_bin = NULL;
    } else if (access(cc.zygote_bin, X_OK) < 0) {
        if (cube_config_get(cfg, "cubelet.zygote", NULL)) {
            fprintf(stderr, "cubelet: --zygote %s: %s\n", cc.zygote_bin, strerror(errno));
            return 2;
        }
        cc.zygote_bin = NULL; /* none beside this one: exec as before */
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    static cubelet c;
    if (cubelet_init(&c, &cc, &err) < 0) {
        fprintf(stderr, "cubelet: %s\n", err.msg);
        return 1;
    }
    cube_rpc_server *srv = cube_rpc_server_start(cc.listen, cubelet_methods, &c, CUBELET_RPC_THREADS, &err);
    if (!srv) {
        fprintf(stderr, "cubelet: %s\n", err.msg);
        cubelet_stop(&c);
        return 1;
    }
    cubelet_start(&c);
    long long mport = 0;
    http_server *msrv = NULL;
    if (cube_config_get_int(cfg, "cubelet.metrics_port", 0, 0, 65535, &mport, &err) == 0 && mport &&
        !(msrv = cube_metrics_serve("127.0.0.1", (int)mport, &err)))
        cube_log_warn("no metrics listener", "err=\"%s\"", err.msg);
    cube_log_info("cubelet ready", "node=%s listen=%s master=%s pool=%lld", cc.node_id, cc.listen, cc.master,
                  pool);
    int sig;
    sigwait(&set, &sig);
    cube_log_info("cubelet stopping: sandboxes of this node go with it", "signal=%d", sig);
    http_server_stop(msrv);
    cube_rpc_server_stop(srv);
    cubelet_stop(&c);
    return 0;
}

int main(int argc, char **argv)
{
    cube_log_init("cubelet", -1);
    cube_config *cfg = cube_config_new();
    int rc = run(cfg, argc, argv);
    cube_config_free(cfg);
    return rc;
}
