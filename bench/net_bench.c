/* cube-net benchmark: the time to hand out a network slot (in process, and over RPC as cubelet calls it),
 * the time to build one, and TCP throughput through a sandbox's slot with and without the BPF programs beside
 * a plain veth (iperf3). Runs inside network and mount namespaces of its own. Prints tab-separated rows. */
#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net.h"
#include "net.pb-c.h"
#include "net_internal.h"
#include "nl.h"
#include "rpc.h"
#include "service.h"
#include "timeutil.h"

static int node_ns;

static void die(const char *what, const cube_err *err)
{
    fprintf(stderr, "net_bench: %s: %s\n", what, err ? err->msg : strerror(errno));
    exit(1);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void print_pct(const char *name, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_d);
    printf("%s\t%.1f\t%.1f\n", name, v[n / 2], v[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1]);
}

static uint32_t ip4(const char *s)
{
    struct in_addr a;
    inet_pton(AF_INET, s, &a);
    return a.s_addr;
}

static void wait_ready(cube_net *n, int want)
{
    for (int i = 0; i < 600000; i++) {
        pthread_mutex_lock(&n->lock);
        int r = n->ready;
        pthread_mutex_unlock(&n->lock);
        if (r >= want) return;
        usleep(100);
    }
    die("pool never filled", NULL);
}

/* The pool full again and the kernel done with the released namespaces (their cleanup runs in a workqueue
 * after the last reference goes), so one phase's teardown does not run inside the next one's timings. */
static void settle(cube_net *n, int pool)
{
    wait_ready(n, pool);
    sleep(2);
}

static void set_pool(cube_net *n, int size)
{
    pthread_mutex_lock(&n->lock);
    n->cfg.pool_size = size;
    pthread_cond_signal(&n->refill);
    pthread_mutex_unlock(&n->lock);
}

/* Runs iperf3 inside namespace fd ns; for a client, returns the received rate in Gbit/s. */
static double iperf(int ns, const char *const *args, int wait_result, pid_t *server)
{
    int out[2];
    if (pipe(out) < 0) die("pipe", NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (setns(ns, CLONE_NEWNET) < 0) _exit(126);
        dup2(out[1], 1);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execvp("iperf3", (char *const *)args);
        _exit(127);
    }
    close(out[1]);
    if (!wait_result) {
        close(out[0]);
        *server = pid;
        usleep(300 * 1000); /* the server binds (benchmark setup only) */
        return 0;
    }
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(out[0], buf + len, cap - len - 1)) > 0) len += (size_t)r;
    buf[len] = '\0';
    close(out[0]);
    waitpid(pid, NULL, 0);
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    cJSON *end = cJSON_GetObjectItem(j, "end");
    cJSON *sum = cJSON_GetObjectItem(end, "sum_received");
    cJSON *bps = cJSON_GetObjectItem(sum, "bits_per_second");
    double g = cJSON_IsNumber(bps) ? bps->valuedouble / 1e9 : -1;
    cJSON_Delete(j);
    return g;
}

static double tcp_rate(int server_ns, const char *server_ip, int client_ns, int port)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    const char *sargs[] = {"iperf3", "-s", "-1", "-B", server_ip, "-p", p, NULL};
    pid_t srv = 0;
    iperf(server_ns, sargs, 0, &srv);
    const char *cargs[] = {"iperf3", "-c", server_ip, "-p", p, "-t", "3", "-J", NULL};
    double g = iperf(client_ns, cargs, 1, NULL);
    kill(srv, SIGTERM);
    waitpid(srv, NULL, 0);
    return g;
}

static int open_ns(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die(path, NULL);
    return fd;
}

int main(void)
{
    if (geteuid() != 0) {
        printf("skipped\tneeds root\n");
        return 0;
    }
    if (unshare(CLONE_NEWNS | CLONE_NEWNET) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        die("namespaces", NULL);
    node_ns = open_ns("/proc/thread-self/ns/net");
    cube_err err = {0};
    cn_nl *node = cn_nl_open(&err);
    if (!node || cn_nl_link_up(node, 1, &err) < 0) die("node", &err);
    /* two peer namespaces: "uplink" (an outside network behind the node) and "plain" (one bare veth) */
    int peers[2];
    const char *names[2] = {"up0", "pl0"};
    const char *node_ips[2] = {"192.0.2.1", "192.0.3.1"}, *peer_ips[2] = {"192.0.2.2", "192.0.3.2"};
    for (int i = 0; i < 2; i++) {
        if (unshare(CLONE_NEWNET) < 0) die("peer namespace", NULL);
        peers[i] = open_ns("/proc/thread-self/ns/net");
        cn_nl *in = cn_nl_open(&err);
        if (setns(node_ns, CLONE_NEWNET) < 0 || !in) die("peer", &err);
        const uint8_t m1[6] = {2, 0, 0, 0, (uint8_t)i, 1}, m2[6] = {2, 0, 0, 0, (uint8_t)i, 2};
        int ifx = cn_nl_add_veth(node, names[i], m1, "eth0", 2, m2, peers[i], &err);
        if (ifx < 0 || cn_nl_link_up(node, ifx, &err) < 0 ||
            cn_nl_addr_add(node, ifx, ip4(node_ips[i]), 24, &err) < 0 || cn_nl_link_up(in, 1, &err) < 0 ||
            cn_nl_link_up(in, 2, &err) < 0 || cn_nl_addr_add(in, 2, ip4(peer_ips[i]), 24, &err) < 0)
            die("peer veth", &err);
        if (i == 0 && (cn_nl_addr_add(in, 1, ip4("198.51.100.1"), 32, &err) < 0 ||
                       cn_nl_route_add(node, ifx, ip4("198.51.100.0"), 24, ip4("192.0.2.2"), &err) < 0))
            die("outside network", &err);
        cn_nl_close(in);
    }
    char dir[] = "/tmp/cube-net-bench-XXXXXX";
    if (!mkdtemp(dir)) die("mkdtemp", NULL);
    char state[128], nsd[128];
    snprintf(state, sizeof(state), "%s/state", dir);
    snprintf(nsd, sizeof(nsd), "%s/ns", dir);
    int pool = getenv("NET_BENCH_POOL") ? atoi(getenv("NET_BENCH_POOL")) : 200;
    cn_config cfg = {.state_dir = state,
                     .ns_dir = nsd,
                     .cidr = "10.200.0.0/16",
                     .uplink = "up0",
                     .node_deny = "169.254.0.0/16",
                     .pool_size = pool};
    static cube_net n;
    if (cube_net_init(&n, &cfg, &err) < 0) die("cube_net_init", &err);
    int64_t t0 = cube_now_mono_ns();
    cube_net_start(&n);
    wait_ready(&n, pool);
    printf("slot_build_ms\t%.2f\n", (double)(cube_now_mono_ns() - t0) / 1e6 / pool);
    settle(&n, pool);

    /* 1. hand-out in process: the lease alone (refill held off while measuring) and in a burst with the
     * refill thread rebuilding beside it (on 2 cores the builds compete for CPU) */
    double *lat = calloc((size_t)pool, sizeof(double));
    cn_policy pol = {.internet = true};
    const char *deny[] = {"203.0.113.0/24", "10.0.0.0/8"};
    cn_policy_add(&pol, false, deny, 2, &err);
    for (int burst = 0; burst < 2; burst++) {
        for (int i = 0; i < pool; i++) {
            char lease[32];
            snprintf(lease, sizeof(lease), "bench-%d", i);
            cn_lease_info li;
            if (!burst && i == 0) set_pool(&n, 0);
            int64_t a = cube_now_mono_ns();
            if (cube_net_lease(&n, lease, &pol, &li, &err) < 0) die("lease", &err);
            lat[i] = (double)(cube_now_mono_ns() - a) / 1e3;
        }
        print_pct(burst ? "slot_handout_burst_us" : "slot_handout_us", lat, pool);
        set_pool(&n, pool);
        for (int i = 0; i < pool; i++) {
            char lease[32];
            snprintf(lease, sizeof(lease), "bench-%d", i);
            cube_net_release(&n, lease, false, &err);
        }
        settle(&n, pool);
    }
    /* 2. hand-out over RPC, as cubelet asks for it */
    char sock[200];
    snprintf(sock, sizeof(sock), "unix:%s/net.sock", dir);
    cube_rpc_server *srv = cube_rpc_server_start(sock, cube_net_methods, &n, 4, &err);
    cube_rpc_client *cl = srv ? cube_rpc_client_new(sock, &err) : NULL;
    if (!cl) die("rpc", &err);
    Cube__NetworkPolicy np = CUBE__NETWORK_POLICY__INIT;
    np.allow_internet_access = 1;
    np.n_deny_out = 2;
    np.deny_out = (char **)deny;
    for (int i = 0; i < pool; i++) {
        char lease[32];
        snprintf(lease, sizeof(lease), "rpc-%d", i);
        Cube__EnsureNetworkRequest r = CUBE__ENSURE_NETWORK_REQUEST__INIT;
        r.sandbox_id = lease;
        r.policy = &np;
        ProtobufCMessage *resp = NULL;
        cube_rpc_call_opts o = {.timeout_ms = 5000};
        if (i == 0) set_pool(&n, 0);
        int64_t a = cube_now_mono_ns();
        if (cube_rpc_call(cl, "/cube.Net/EnsureNetwork", &r.base, &cube__network_slot__descriptor, &resp, &o,
                          &err) < 0)
            die("EnsureNetwork", &err);
        lat[i] = (double)(cube_now_mono_ns() - a) / 1e3;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    print_pct("slot_handout_rpc_us", lat, pool);
    set_pool(&n, pool);
    for (int i = 0; i < pool; i++) {
        char lease[32];
        snprintf(lease, sizeof(lease), "rpc-%d", i);
        cube_net_release(&n, lease, false, &err);
    }
    cube_rpc_client_free(cl);
    cube_rpc_server_stop(srv);

    /* 3. throughput: plain veth; the slot path without programs; the slot path with them */
    cn_lease_info li;
    if (cube_net_lease(&n, "tput", &pol, &li, &err) < 0) die("lease", &err);
    int slot_ns = open_ns(li.netns);
    double plain[3], bare[3], bpf[3];
    int ifx = cn_nl_link_index(node, li.host_ifname, &err);
    for (int r = 0; r < 3; r++) {
        bpf[r] = tcp_rate(peers[0], "198.51.100.1", slot_ns, 5203 + 10 * r);
        plain[r] = tcp_rate(node_ns, "192.0.3.1", peers[1], 5201);
        DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifx,
                            .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);
        bpf_tc_hook_destroy(&hook);
        bare[r] = tcp_rate(peers[0], "198.51.100.1", slot_ns, 5202 + 10 * r);
        fprintf(stderr, "run %d: bpf %.2f plain %.2f bare %.2f\n", r, bpf[r], plain[r], bare[r]);
        if (cube_net_attach(&n, ifx, &err) < 0) die("re-attach", &err);
    }
    qsort(plain, 3, sizeof(double), cmp_d);
    qsort(bare, 3, sizeof(double), cmp_d);
    qsort(bpf, 3, sizeof(double), cmp_d);
    printf("tput_plain_gbps\t%.2f\n", plain[1]);
    printf("tput_slot_nobpf_gbps\t%.2f\n", bare[1]);
    printf("tput_slot_bpf_gbps\t%.2f\n", bpf[1]);
    cube_net_release(&n, "tput", false, &err);
    cube_net_stop(&n);
    cn_nl_close(node);
    free(lat);
    rmdir(nsd);
    char lp[256];
    snprintf(lp, sizeof(lp), "rm -rf '%s'", dir);
    if (system(lp) != 0) return 1;
    return 0;
}
