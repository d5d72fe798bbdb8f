/* rpc_bench: unary round trip of cube's RPC layer, server in another process: on a unix socket (rpc_unix.c,
 * the services of one machine) and on TCP (gRPC C core, the links between machines), beside the floor they
 * are compared with: a raw ping-pong over a unix socket between two processes.
 * Prints one line per figure: "name<TAB>p50_us<TAB>p99_us". */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "echo_service.h"
#include "timeutil.h"

enum { WARMUP = 200, N = 5000 };

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, long long *ns, int n)
{
    qsort(ns, (size_t)n, sizeof(*ns), cmp_ll);
    printf("%s\t%.1f\t%.1f\n", name, ns[n / 2] / 1000.0, ns[n * 99 / 100] / 1000.0);
}

static void bench_rpc(long long *ns, bool tcp)
{
    char path[] = "/tmp/cube-bench-XXXXXX";
    if (!mkdtemp(path)) exit(1);
    char addr[128];
    if (tcp)
        snprintf(addr, sizeof(addr), "127.0.0.1:0");
    else
        snprintf(addr, sizeof(addr), "unix:%s/s.sock", path);
    int ready[2];
    if (pipe(ready) < 0) exit(1);
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]);
        cube_err err = {0};
        cube_rpc_server *srv = cube_rpc_server_start(addr, echo_methods, NULL, 1, &err);
        if (!srv) _exit(1);
        int port = cube_rpc_server_port(srv);
        if (write(ready[1], &port, sizeof(port)) != sizeof(port)) _exit(1);
        pause();
        _exit(0);
    }
    close(ready[1]);
    int port;
    if (read(ready[0], &port, sizeof(port)) != sizeof(port)) exit(1);
    if (tcp) snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    cube_err err = {0};
    cube_rpc_client *cl = cube_rpc_client_new(addr, &err);
    Cubetest__EchoRequest req = CUBETEST__ECHO_REQUEST__INIT;
    req.text = "ping";
    for (int i = 0; i < WARMUP + N; i++) {
        int64_t t0 = cube_now_mono_ns();
        ProtobufCMessage *resp = NULL;
        if (cube_rpc_call(cl, ECHO_METHOD, &req.base, &cubetest__echo_reply__descriptor, &resp, NULL, &err) <
            0) {
            fprintf(stderr, "rpc_bench: %s\n", err.msg);
            exit(1);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        if (i >= WARMUP) ns[i - WARMUP] = cube_now_mono_ns() - t0;
    }
    cube_rpc_client_free(cl);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    char sock[160];
    snprintf(sock, sizeof(sock), "%s/s.sock", path);
    unlink(sock);
    rmdir(path);
}

static void bench_raw(long long *ns)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) exit(1);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        char buf[64];
        ssize_t n;
        while ((n = read(sv[1], buf, sizeof(buf))) > 0)
            if (write(sv[1], buf, (size_t)n) != n) break;
        _exit(0);
    }
    close(sv[1]);
    char buf[64];
    for (int i = 0; i < WARMUP + N; i++) {
        int64_t t0 = cube_now_mono_ns();
        if (write(sv[0], "ping", 4) != 4 || read(sv[0], buf, sizeof(buf)) <= 0) exit(1);
        if (i >= WARMUP) ns[i - WARMUP] = cube_now_mono_ns() - t0;
    }
    close(sv[0]);
    waitpid(pid, NULL, 0);
}

int main(void)
{
    static long long ns[N];
    bench_rpc(ns, false);
    report("rpc unary round trip", ns, N);
    bench_rpc(ns, true);
    report("rpc unary round trip, gRPC over TCP", ns, N);
    bench_raw(ns);
    report("raw unix socket ping-pong", ns, N);
    return 0;
}
