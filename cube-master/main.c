/* cube-master: the control plane's truth and scheduler. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "rpc.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "master.h"

static const cube_config_flag flags[] = {
    {"data", "master.data", true, "data directory (default /var/lib/cube)"},
    {"listen", "master.listen", true, "RPC address (default unix:<data>/run/master.sock)"},
    {"db", "master.db", true, "SQLite database (default <data>/cube.db)"},
    {"store", "master.store", true,
     "shared store for several masters: mysql://user[:pw]@host[:port]/db or mysql://user@unix(/sock)/db "
     "(default: the SQLite database)"},
    {"node-lost-ms", "master.node_lost_ms", true,
     "a node silent this long is lost: its sandboxes are reported gone (default 15000)"},
    {"orphan-after-ms", "master.orphan_after_ms", true,
     "a sandbox a node runs this long with no record is killed (default 60000)"},
    {"redis", "master.redis", true, "Redis for sandbox routes (unix:/path or host:port; default: none)"},
    {"api-key-file", "master.api_key_file", true, "bootstrap API key to register (default <data>/api-key)"},
    {"secrets-key", "master.secrets_key", true,
     "key file sealing secrets in the store, made when missing (default <data>/secrets.key); every master "
     "of one store needs the same file"},
    {"metrics-port", "master.metrics_port", true,
     "serve Prometheus /metrics on 127.0.0.1:PORT (default: off)"},
    {"help", "master.help", false, "this text"},
    {"tls-dir", "master.tls_dir", true,
     "this machine's TLS identity (ca.pem, cert.pem, key.pem; deploy/tls-certs): links to other machines "
     "(host:port) use mutual TLS"},
    {0},
};

static int run(cube_config *cfg, int argc, char **argv)
{
    cube_err err = {0};
    int first;
    if (cube_config_parse_args(cfg, argc, argv, flags, &first, &err) < 0 || first != argc ||
        cube_rpc_tls_configure(cube_config_get(cfg, "master.tls_dir", NULL), &err) < 0) {
        fprintf(stderr, "cube-master: %s\n", err.code ? err.msg : "unexpected argument");
        return 2;
    }
    const char *data = cube_config_get(cfg, "master.data", "/var/lib/cube");
    char path[4096], listen[4200], keyfile[4096];
    snprintf(path, sizeof(path), "%s/run", data);
    mkdir(data, 0755);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/cube.db", data);
    snprintf(listen, sizeof(listen), "unix:%s/run/master.sock", data);
    snprintf(keyfile, sizeof(keyfile), "%s/api-key", data);
    const char *url = cube_config_get(cfg, "master.store", NULL);
    store *st =
        url ? store_mysql_open(url, &err) : store_sqlite_open(cube_config_get(cfg, "master.db", path), &err);
    const char *redis = cube_config_get(cfg, "master.redis", NULL);
    if (st && redis) st = store_with_routes(st, redis, &err);
    if (!st) {
        fprintf(stderr, "cube-master: %s\n", err.msg);
        return 1;
    }
    master m;
    master_init(&m, st, &err);
    long long lost_ms;
    if (cube_config_get_int(cfg, "master.node_lost_ms", 15000, 2000, 3600000, &lost_ms, &err) < 0) {
        fprintf(stderr, "cube-master: %s\n", err.msg);
        st->ops->close(st);
        return 2;
    }
    m.node_lost_ms = lost_ms;
    long long orphan_ms;
    if (cube_config_get_int(cfg, "master.orphan_after_ms", 60000, 1000, 86400000, &orphan_ms, &err) < 0) {
        fprintf(stderr, "cube-master: %s\n", err.msg);
        st->ops->close(st);
        return 2;
    }
    m.orphan_after_ms = orphan_ms;
    char secrets_key[4200];
    snprintf(secrets_key, sizeof(secrets_key), "%s/secrets.key", data);
    if (secret_key_load(cube_config_get(cfg, "master.secrets_key", secrets_key), m.secret_key, &err) < 0) {
        fprintf(stderr, "cube-master: %s\n", err.msg);
        st->ops->close(st);
        return 1;
    }
    m.has_secret_key = true;
    FILE *kf = fopen(cube_config_get(cfg, "master.api_key_file", keyfile), "re");
    if (kf) {
        char key[256] = {0};
        if (fgets(key, sizeof(key), kf)) {
            key[strcspn(key, "\r\n")] = '\0';
            if (*key && master_ensure_key(&m, key, "bootstrap", &err) < 0)
                fprintf(stderr, "cube-master: bootstrap key: %s\n", err.msg);
        }
        fclose(kf);
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    const char *addr = cube_config_get(cfg, "master.listen", listen);
    cube_rpc_server *srv = cube_rpc_server_start(addr, master_methods, &m, 64, &err);
    if (!srv) {
        fprintf(stderr, "cube-master: %s\n", err.msg);
        st->ops->close(st);
        return 1;
    }
    master_start_reaper(&m);
    long long mport = 0;
    http_server *msrv = NULL;
    if (cube_config_get_int(cfg, "master.metrics_port", 0, 0, 65535, &mport, &err) == 0 && mport &&
        !(msrv = cube_metrics_serve("127.0.0.1", (int)mport, &err)))
        cube_log_warn("no metrics listener", "err=\"%s\"", err.msg);
    cube_log_info("master ready", "listen=%s store=%s", addr, st->ops->name);
    int sig;
    sigwait(&set, &sig);
    http_server_stop(msrv);
    cube_rpc_server_stop(srv);
    master_stop(&m);
    st->ops->close(st);
    return 0;
}

int main(int argc, char **argv)
{
    cube_log_init("cube-master", -1);
    cube_config *cfg = cube_config_new();
    int rc = run(cfg, argc, argv);
    cube_config_free(cfg);
    return rc;
}
