/* cube-net handing a released slot out again (cube_net_release with vacated): only when nothing crossed its
 * link and, its TCP sockets destroyed, nothing is left in its namespace; otherwise, or when the caller does
 * not vouch that the sandbox's processes are gone, or with fresh_slots, the slot is torn down as before.
 * Each test runs in its own process inside a fresh network and mount namespace (the "node"). Needs root. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics.h"
#include "net.h"
#include "nl.h"
#include "testutil.h"

static char *dir;
static int node_ns = -1;
static cube_net net;

static void node_setup(void)
{
    ck_assert_int_eq(unshare(CLONE_NEWNS | CLONE_NEWNET), 0);
    ck_assert_int_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
    node_ns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    cube_err err = {0};
    cn_nl *node = cn_nl_open(&err);
    ck_assert_msg(node != NULL, "%s", err.msg);
    ck_assert_int_eq(cn_nl_link_up(node, 1, &err), 0);
    cn_nl_close(node);
    dir = cube_test_tmpdir();
}

static void net_start(bool fresh)
{
    static char state[512], nsd[512]; /* cube_net keeps these pointers */
    snprintf(state, sizeof(state), "%s/state", dir);
    snprintf(nsd, sizeof(nsd), "%s/ns", dir);
    cn_config cfg = {.state_dir = state,
                     .ns_dir = nsd,
                     .cidr = "10.201.0.0/24",
                     .ifprefix = "cr",
                     .node_deny = "169.254.0.0/16",
                     .pool_size = 1,
                     .fresh_slots = fresh};
    cube_err err = {0};
    ck_assert_msg(cube_net_init(&net, &cfg, &err) == 0, "cube_net_init: %s", err.msg);
    cube_net_start(&net);
}

static void lease(const char *name, cn_lease_info *li)
{
    cn_policy p = {.internet = true};
    cube_err err = {0};
    ck_assert_msg(cube_net_lease(&net, name, &p, li, &err) == 0, "lease %s: %s", name, err.msg);
}

static void release(const char *name, bool vacated)
{
    cube_err err = {0};
    ck_assert_int_eq(cube_net_release(&net, name, vacated, &err), 0);
    cube_net_wait_removed(&net);
}

static void enter(const char *netns)
{
    int fd = open(netns, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(setns(fd, CLONE_NEWNET), 0);
    close(fd);
}

static void leave(void)
{
    ck_assert_int_eq(setns(node_ns, CLONE_NEWNET), 0);
}

/* A socket made inside netns (this thread only, and back). */
static int socket_in(const char *netns, int family, int type)
{
    enter(netns);
    int fd = socket(family, type | SOCK_CLOEXEC, 0);
    leave();
    ck_assert_int_ge(fd, 0);
    return fd;
}

/* A namespace told apart from any other: its default TTL, a per-namespace setting, set to 77 (64 in a new
 * one). Inode numbers would not do: the kernel gives a gone namespace's number to the next. */
static void mark(const char *netns)
{
    enter(netns);
    int fd = open("/proc/sys/net/ipv4/ip_default_ttl", O_WRONLY | O_CLOEXEC);
    leave();
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "77", 2), 2);
    close(fd);
}

/* A per-namespace setting of netns, as a number. */
static int ns_sysctl(const char *netns, const char *path)
{
    enter(netns);
    FILE *f = fopen(path, "re");
    leave();
    ck_assert_ptr_nonnull(f);
    int v = 0;
    ck_assert_int_eq(fscanf(f, "%d", &v), 1);
    fclose(f);
    return v;
}

static bool marked(const char *netns)
{
    return ns_sysctl(netns, "/proc/sys/net/ipv4/ip_default_ttl") == 77;
}

/* Lines of /proc/net/<file> in the namespace netns, its header aside: the sockets a sandbox there would
 * see. */
static int proc_net_entries(const char *netns, const char *file)
{
    enter(netns);
    char p[64], line[512];
    snprintf(p, sizeof(p), "/proc/thread-self/net/%s", file);
    FILE *f = fopen(p, "re");
    leave();
    ck_assert_ptr_nonnull(f);
    int n = -1;
    while (fgets(line, sizeof(line), f)) n++;
    fclose(f);
    return n;
}

/* A loopback connection inside netns closed by its server side first, as a sandbox's agent is when the
 * sandbox is killed: the server's end stays in TIME_WAIT, holding the listening port's address. */
static void leave_time_wait(const char *netns, int port)
{
    int l = socket_in(netns, AF_INET, SOCK_STREAM), c = socket_in(netns, AF_INET, SOCK_STREAM);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(l, 1), 0);
    ck_assert_int_eq(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
    int s = accept(l, NULL, NULL);
    ck_assert_int_ge(s, 0);
    close(s); /* the server closes first */
    char b;
    ck_assert_int_eq(read(c, &b, 1), 0);
    close(c);
    close(l);
}

static bool metric_has(const char *needle)
{
    char *m = cube_metrics_render();
    bool found = m && strstr(m, needle) != NULL;
    free(m);
    return found;
}

START_TEST(vacated_quiet_slot_is_handed_out_again)
{
    net_start(false);
    cn_lease_info a, b;
    lease("first", &a);
    /* a TCP table of its own (negative: the node's, shared), so that listing its sockets is cheap */
    ck_assert_int_eq(ns_sysctl(a.netns, "/proc/sys/net/ipv4/tcp_ehash_entries"), 1024);
    mark(a.netns);
    leave_time_wait(a.netns, 49983);
    ck_assert_int_ge(proc_net_entries(a.netns, "tcp"), 1);
    release("first", true);
    lease("second", &b);
    /* the same namespace, veth and address, with nothing of the first tenant's connections in it */
    ck_assert_str_eq(b.netns, a.netns);
    ck_assert_str_eq(b.address, a.address);
    ck_assert_str_eq(b.host_ifname, a.host_ifname);
    ck_assert(marked(b.netns));
    ck_assert_int_eq(proc_net_entries(b.netns, "tcp"), 0);
    ck_assert(metric_has("cube_net_slots_reused_total 1"));
    /* the port the first tenant's server held is free for the next one's, without SO_REUSEADDR */
    int l = socket_in(b.netns, AF_INET, SOCK_STREAM);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(49983)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind: %s", strerror(errno));
    close(l);
    release("second", true); /* reused again: ready */
    cube_net_stop(&net);     /* and a ready slot goes at stop, reused or not */
    ck_assert_int_eq(if_nametoindex(a.host_ifname), 0);
}
END_TEST

START_TEST(slot_is_rebuilt_unless_vacated_quiet_and_empty)
{
    net_start(false);
    cn_lease_info t, s, f;
    /* a packet crossed the link: the address is known outside (a peer, the node's connection tracking) */
    lease("traffic", &t);
    int u = socket_in(t.netns, AF_INET, SOCK_DGRAM);
    struct sockaddr_in out = {.sin_family = AF_INET, .sin_port = htons(9)};
    inet_pton(AF_INET, "192.0.2.9", &out.sin_addr);
    ck_assert_int_eq(sendto(u, "x", 1, 0, (struct sockaddr *)&out, sizeof(out)), 1);
    close(u);
    mark(t.netns);
    release("traffic", true);
    ck_assert(metric_has("cube_net_slots_renewed_total{reason=\"traffic\"} 1"));
    /* a socket some process still holds in the namespace: not vacated, whatever the caller said */
    lease("socket", &s);
    mark(s.netns);
    int held = socket_in(s.netns, AF_INET, SOCK_DGRAM);
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = htons(5000)};
    ck_assert_int_eq(bind(held, (struct sockaddr *)&any, sizeof(any)), 0);
    release("socket", true);
    ck_assert(metric_has("cube_net_slots_renewed_total{reason=\"sockets\"} 1"));
    close(held);
    /* nor a listener (not listed by the dumps: counted by the namespace's sockstat) */
    cn_lease_info l;
    lease("listener", &l);
    mark(l.netns);
    int lis = socket_in(l.netns, AF_INET6, SOCK_STREAM);
    struct sockaddr_in6 any6 = {.sin6_family = AF_INET6, .sin6_port = htons(8080)};
    ck_assert_int_eq(bind(lis, (struct sockaddr *)&any6, sizeof(any6)), 0);
    ck_assert_int_eq(listen(lis, 1), 0);
    release("listener", true);
    ck_assert(metric_has("cube_net_slots_renewed_total{reason=\"sockets\"} 2"));
    close(lis);
    /* the caller does not vouch that the sandbox's processes are gone */
    lease("unsure", &f);
    mark(f.netns);
    release("unsure", false);
    ck_assert(!metric_has("cube_net_slots_reused_total"));
    /* each went: a new lease gets a namespace built for it */
    cn_lease_info n;
    lease("next", &n);
    ck_assert(!marked(n.netns));
    cube_net_stop(&net);
}
END_TEST

static int ready_slots(void)
{
    pthread_mutex_lock(&net.lock);
    int r = net.ready;
    pthread_mutex_unlock(&net.lock);
    return r;
}

/* Released slots are kept ready whatever the pool's size (the burst that released them is usually followed by
 * as many leases), and the extras go once leases stop for a few seconds. */
START_TEST(extras_go_in_a_quiet)
{
    net_start(false);
    cn_lease_info li[3];
    const char *names[3] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) lease(names[i], &li[i]);
    for (int i = 0; i < 3; i++) release(names[i], true);
    ck_assert_int_ge(ready_slots(), 3);
    for (int i = 0; i < 3; i++) ck_assert_int_gt(if_nametoindex(li[i].host_ifname), 0);
    for (int waited = 0; ready_slots() > 1 && waited < 100; waited++) usleep(100 * 1000);
    ck_assert_int_eq(ready_slots(), 1); /* the pool's size */
    cube_net_wait_removed(&net);
    int left = 0;
    for (int i = 0; i < 3; i++) left += if_nametoindex(li[i].host_ifname) > 0;
    ck_assert_int_le(left, 1);
    cube_net_stop(&net);
}
END_TEST

START_TEST(fresh_slots_are_never_reused)
{
    net_start(true);
    cn_lease_info a, b;
    lease("first", &a);
    mark(a.netns);
    release("first", true);
    ck_assert_int_ne(access(a.netns, F_OK), 0);
    lease("second", &b);
    ck_assert(!marked(b.netns));
    ck_assert(!metric_has("cube_net_slots_reused_total"));
    cube_net_stop(&net);
}
END_TEST

int main(void)
{
    if (geteuid() != 0) {
        printf("SKIP test_net_reuse: needs root to create namespaces and load BPF programs\n");
        return 77;
    }
    Suite *s = suite_create("net_reuse");
    TCase *tc = tcase_create("reuse");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, node_setup, NULL);
    tcase_add_test(tc, vacated_quiet_slot_is_handed_out_again);
    tcase_add_test(tc, slot_is_rebuilt_unless_vacated_quiet_and_empty);
    tcase_add_test(tc, extras_go_in_a_quiet);
    tcase_add_test(tc, fresh_slots_are_never_reused);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
