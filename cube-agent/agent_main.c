/* The agent's whole life, from its command line: what cube-agent's main runs, and what cube-zygote runs in a
 * sandbox's PID 1 in place of exec'ing cube-agent (see agent_main.h). */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "agent_main.h"
#include "children.h"
#include "config.h"
#include "interp.h"
#include "log.h"

static const cube_config_flag flags[] = {
    {"listen", "agent.listen", true, "address to listen on (default 0.0.0.0)"},
    {"envd-port", "agent.envd_port", true, "envd port (default 49983)"},
    {"interp-port", "agent.interp_port", true, "code interpreter port (default 49999; 0 disables)"},
    {"default-user", "agent.default_user", true, "user for requests that name none (default root)"},
    {"python", "agent.python", true, "python3 for the code interpreter (default /usr/bin/python3)"},
    {"node", "agent.node", true, "node for its javascript and typescript (default /usr/bin/node)"},
    {"ready-fd", "agent.ready_fd", true, "a descriptor to write one byte to (and close) once listening"},
    {"user-procs", "agent.user_procs", true,
     "processes each user may run (RLIMIT_NPROC of what the agent starts; default: no limit)"},
    {"help", "agent.help", false, "this text"},
    {0},
};

static void usage(void)
{
    fprintf(stderr, "usage: cube-agent [flags]\n");
    for (const cube_config_flag *f = flags; f->name; f++) fprintf(stderr, "  --%-14s %s\n", f->name, f->help);
}

int agent_main(int argc, char **argv)
{
    cube_log_init("cube-agent", -1);
    cube_err err = {0};
    cube_config *cfg = cube_config_new();
    int first = 0;
    if (cube_config_parse_args(cfg, argc, argv, flags, &first, &err) < 0 || first != argc) {
        fprintf(stderr, "cube-agent: %s\n", err.code ? err.msg : "unexpected argument");
        usage();
        return 2;
    }
    bool help = false;
    cube_config_get_bool(cfg, "agent.help", false, &help, &err);
    if (help) {
        usage();
        cube_config_free(cfg);
        return 0;
    }
    long long envd_port, interp_port, ready_fd, user_procs;
    if (cube_config_get_int(cfg, "agent.envd_port", 49983, 0, 65535, &envd_port, &err) < 0 ||
        cube_config_get_int(cfg, "agent.interp_port", 49999, 0, 65535, &interp_port, &err) < 0 ||
        cube_config_get_int(cfg, "agent.ready_fd", -1, -1, 1 << 20, &ready_fd, &err) < 0 ||
        cube_config_get_int(cfg, "agent.user_procs", 0, 0, 1 << 22, &user_procs, &err) < 0) {
        fprintf(stderr, "cube-agent: %s\n", err.msg);
        return 2;
    }
    children_set_nproc((long)user_procs);
    const char *listen = cube_config_get(cfg, "agent.listen", "0.0.0.0");

    /* signals are taken by sigwait below (SIGCHLD: children to reap); every thread inherits the blocked mask,
     * and every child the agent starts clears it */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (children_start() < 0) {
        fprintf(stderr, "cube-agent: cannot set up for its children\n");
        return 1;
    }
    static agent a;
    if (agent_init(&a, cube_config_get(cfg, "agent.default_user", "root"), &err) < 0) {
        fprintf(stderr, "cube-agent: %s\n", err.msg);
        return 1;
    }
    /* Both ports listen before the hypervisor is told: a client that connects at once waits in the queue
     * while the servers start, which they do after the word, beside the node's own steps of the create */
    int envd_fd = http_listen(listen, (int)envd_port, &err);
    if (envd_fd < 0) {
        fprintf(stderr, "cube-agent: envd: %s\n", err.msg);
        return 1;
    }
    int interp_fd = -1;
    interp *ip = NULL;
    if (interp_port) {
        ip = interp_new(cube_config_get(cfg, "agent.python", "/usr/bin/python3"),
                        cube_config_get(cfg, "agent.node", "/usr/bin/node"), &a);
        if ((interp_fd = http_listen(listen, (int)interp_port, &err)) < 0) {
            fprintf(stderr, "cube-agent: interpreter: %s\n", err.msg);
            return 1;
        }
    }
    if (ready_fd >= 0) { /* the hypervisor waits for this instead of polling /health */
        if (write((int)ready_fd, "r", 1) != 1)
            cube_log_warn("ready descriptor not writable", "fd=%lld", ready_fd);
        close((int)ready_fd);
    }
    http_server_opts eo = {.has_listen_fd = true, .listen_fd = envd_fd};
    http_server *envd = http_server_start_opts(listen, (int)envd_port, envd_routes, &a, &eo, &err);
    if (!envd) {
        fprintf(stderr, "cube-agent: envd: %s\n", err.msg);
        return 1;
    }
    http_server *isrv = NULL;
    if (interp_fd >= 0) {
        http_server_opts io = {.has_listen_fd = true, .listen_fd = interp_fd};
        if (!(isrv = http_server_start_opts(listen, (int)interp_port, interp_routes, ip, &io, &err))) {
            fprintf(stderr, "cube-agent: interpreter: %s\n", err.msg);
            return 1;
        }
    }
    cube_log_info("agent ready", "envd=%s:%d interpreter=%s:%d version=%s", listen, http_server_port(envd),
                  listen, isrv ? http_server_port(isrv) : 0, ENVD_VERSION);
    /* As a sandbox's PID 1, a stop comes from outside its PID namespace (the hypervisor), where the sender
     * has no pid in ours (si_pid 0). `kill 1` by code in the sandbox is not a stop, as SIGTERM to a VM's init
     * is not a power-off: the sandbox would end under its user (the SDK's calls then fail as "not running").
     */
    bool pid1 = getpid() == 1;
    siginfo_t si;
    int sig;
    for (;;) {
        sig = sigwaitinfo(&set, &si);
        if (sig < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (sig == SIGCHLD) {
            children_reap();
            continue;
        }
        if (pid1 && si.si_pid != 0) {
            cube_log_warn("a stop signal from inside the sandbox ignored", "signal=%d pid=%d", sig,
                          (int)si.si_pid);
            continue;
        }
        break;
    }
    cube_log_info("agent stopping", "signal=%d", sig);
    /* Processes the agent started go with it. The HTTP servers are not stopped one connection at a time:
     * a stream may be waiting for its next keepalive, and process exit closes every socket at once. */
    proc_kill_all(a.procs);
    interp_free(ip);
    cube_config_free(cfg);
    _exit(0);
}
