/* rpc_echo_server ADDRESS: serves the test Echo service until SIGTERM/SIGINT; prints "ready <port>" on stdout
 * once it listens, so the test knows when to call. */
#include <signal.h>
#include <stdio.h>

#include "echo_service.h"
#include "log.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s ADDRESS\n", argv[0]);
        return 2;
    }
    cube_log_init("rpc_echo_server", -1);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* server threads inherit the mask; sigwait below takes them */
    cube_err err = {0};
    cube_rpc_server *srv = cube_rpc_server_start(argv[1], echo_methods, NULL, 4, &err);
    if (!srv) {
        fprintf(stderr, "rpc_echo_server: %s\n", err.msg);
        return 1;
    }
    printf("ready %d\n", cube_rpc_server_port(srv));
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    cube_rpc_server_stop(srv);
    return 0;
}
