/* cube-net for real: its BPF programs loaded with libbpf and attached to real veths, in namespaces this test
 * creates. Each test runs in its own process (Check's fork) inside a fresh "node" network namespace and a
 * private mount namespace, with an "uplink" namespace behind the node holding two outside networks:
 * 198.51.100.1 and 203.0.113.1 (the world and its probes: helpers/net_world.h). Traffic goes only between
 * those namespaces: isolation, egress policy by address and by name, caps, restarts, what release leaves.
 * Needs root. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dns.h"
#include "metrics.h"
#include "net.h"
#include "nl.h"
#include "net_world.h"
#include "testutil.h"

START_TEST(sandboxes_cannot_reach_each_other)
{
    net_start(2);
    cn_lease_info a, b;
    lease("sb-a", policy(true, NULL, NULL), &a);
    lease("sb-b", policy(true, NULL, NULL), &b);
    ck_assert_str_ne(a.address, b.address);
    int tl = listener(-1, b.netns, SOCK_STREAM, 7000), ul = listener(-1, b.netns, SOCK_DGRAM, 7001);
    /* the servers are up: B reaches itself, and A reaches the outside */
    ck_assert(can_connect(b.netns, b.address, 7000));
    ck_assert(udp_reaches(b.netns, b.address, 7001, ul));
    ck_assert(can_connect(a.netns, ALLOWED_IP, PORT));
    ck_assert(ping_answers(a.netns, ALLOWED_IP));
    /* but not each other, by any protocol */
    ck_assert(!can_connect(a.netns, b.address, 7000));
    ck_assert(!udp_reaches(a.netns, b.address, 7001, ul));
    ck_assert(!ping_answers(a.netns, b.address));
    cn_stats st;
    cube_err err = {0};
    ck_assert_int_eq(cube_net_stats(&net, "sb-a", &st, &err), 0);
    ck_assert_uint_ge(st.dropped, 3);
    ck_assert_uint_gt(st.tx_packets, 0);
    ck_assert_uint_gt(st.rx_packets, 0);
    close(tl);
    close(ul);
    cube_net_stop(&net);
}
END_TEST

START_TEST(sandbox_cannot_reach_the_node)
{
    net_start(1);
    cn_lease_info a;
    lease("sb-a", policy(true, NULL, NULL), &a);
    int l = listener(node_ns, NULL, SOCK_STREAM, 7100);
    int ul = listener(node_ns, NULL, SOCK_DGRAM, 7101);
    ck_assert(!can_connect(a.netns, NODE_IP, 7100));
    ck_assert(!can_connect(a.netns, a.gateway, 7100));
    ck_assert(!udp_reaches(a.netns, NODE_IP, 7101, ul));
    ck_assert(!ping_answers(a.netns, NODE_IP));
    /* the operator's deny list holds whatever the sandbox's policy says */
    cube_err err = {0};
    cn_policy p = policy(true, "169.254.169.254", NULL);
    ck_assert_int_eq(cube_net_update(&net, "sb-a", &p, &err), 0);
    ck_assert(!can_connect(a.netns, "169.254.169.254", 80));
    close(l);
    close(ul);
    cube_net_stop(&net);
}
END_TEST

/* The node's connection table is every sandbox's: one sandbox's new flows beyond its cap are dropped, and
 * another sandbox's still go out. (Without the cap, one sandbox sending UDP from fresh ports fills the
 * table, 262144 flows by default, and every sandbox's new connections are dropped.) */
START_TEST(one_sandbox_cannot_fill_the_nodes_connection_table)
{
    flows_cap = 16;
    net_start(2);
    cn_lease_info a, b;
    lease("flood", policy(true, NULL, NULL), &a);
    lease("quiet", policy(true, NULL, NULL), &b);
    int rx = listener_at_udp(uplink_ns, ALLOWED_IP, 7201);
    int arrived = 0;
    for (int i = 0; i < 40; i++) arrived += udp_reaches(a.netns, ALLOWED_IP, 7201, rx); /* a new flow each */
    ck_assert_msg(arrived >= 14 && arrived <= 16, "%d of 40 new flows went out with a cap of 16", arrived);
    ck_assert(udp_reaches(b.netns, ALLOWED_IP, 7201, rx));
    ck_assert(can_connect(b.netns, ALLOWED_IP, PORT));
    ck_assert(!can_connect(a.netns, ALLOWED_IP, PORT)); /* its own new ones wait for its flows to end */
    close(rx);
    cube_net_stop(&net);
    flows_cap = 0;
}
END_TEST

START_TEST(egress_follows_allow_and_deny_lists)
{
    net_start(2);
    cn_lease_info a, b, c;
    /* allow_internet_access=false with one allowed network (allowOut wins over the implied deny) */
    lease("only-allowed", policy(false, "198.51.100.0/24", NULL), &a);
    ck_assert(can_connect(a.netns, ALLOWED_IP, PORT));
    ck_assert(!can_connect(a.netns, DENIED_IP, PORT));
    /* masqueraded out of the uplink: the outside sees the node's address (once the echo server took it) */
    for (int i = 0; i < 100 && !last_peer.sin_addr.s_addr; i++) usleep(10 * 1000);
    ck_assert_str_eq(inet_ntoa(last_peer.sin_addr), NODE_IP);
    /* internet on, one network denied */
    lease("deny-one", policy(true, NULL, "203.0.113.0/24"), &b);
    ck_assert(can_connect(b.netns, ALLOWED_IP, PORT));
    ck_assert(!can_connect(b.netns, DENIED_IP, PORT));
    /* no internet, nothing allowed */
    lease("none", policy(false, NULL, NULL), &c);
    ck_assert(!can_connect(c.netns, ALLOWED_IP, PORT));
    ck_assert(!ping_answers(c.netns, ALLOWED_IP));
    /* refused connections are counted and audited */
    cn_stats st;
    cube_err err = {0};
    ck_assert_int_eq(cube_net_stats(&net, "only-allowed", &st, &err), 0);
    ck_assert_uint_ge(st.denied, 1);
    usleep(600 * 1000); /* the audit thread drains the ring buffer */
    char *m = cube_metrics_render();
    ck_assert_msg(strstr(m, "cube_net_audit_events_total{verdict=\"deny\",reason=\"policy\"}") != NULL, "%s",
                  m);
    free(m);
    cube_net_stop(&net);
}
END_TEST

/* A metric's value from the registry (0 when absent). */
static double metric_value(const char *name)
{
    char *m = cube_metrics_render();
    double v = 0;
    size_t nl = strlen(name);
    for (const char *p = m; p && *p;) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ' ') v = strtod(p + nl + 1, NULL);
        const char *e = strchr(p, '\n');
        p = e ? e + 1 : NULL;
    }
    free(m);
    return v;
}

/* One sandbox refusing itself a flood (every refused datagram is a record): its lines in the node's log are
 * capped a second, the rest counted and said in one line, so that it cannot fill the node's disk. */
START_TEST(audit_lines_are_capped_per_sandbox)
{
    net_start(1);
    cn_lease_info a;
    lease("flood", policy(false, NULL, NULL), &a);
    int s = ns_socket(a.netns, -1, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = ip4(DENIED_IP)};
    for (int i = 0; i < 3000; i++) sendto(s, "x", 1, 0, (struct sockaddr *)&to, sizeof(to));
    close(s);
    for (int i = 0; i < 40 && metric_value("cube_net_audit_suppressed_total") < 2000; i++) usleep(100 * 1000);
    double lines = metric_value("cube_net_audit_lines_total");
    double suppressed = metric_value("cube_net_audit_suppressed_total");
    ck_assert_msg(lines >= 1 && lines <= 60, "%.0f audit lines logged", lines);
    ck_assert_msg(suppressed >= 2000, "%.0f audit records counted as suppressed", suppressed);
    cube_net_stop(&net);
}
END_TEST

START_TEST(live_policy_update_keeps_allowed_flows)
{
    net_start(1);
    cn_lease_info a;
    lease("sb", policy(false, "198.51.100.0/24", NULL), &a);
    int s = tcp_connect(a.netns, ALLOWED_IP, PORT, 1000);
    ck_assert_int_ge(s, 0);
    ck_assert(echo_ok(s, "before"));
    ck_assert(!can_connect(a.netns, DENIED_IP, PORT));
    cube_err err = {0};
    cn_policy p = policy(false, "198.51.100.0/24", NULL);
    const char *more = "203.0.113.0/24";
    ck_assert_int_eq(cn_policy_add(&p, true, &more, 1, &err), 0);
    ck_assert_int_eq(cube_net_update(&net, "sb", &p, &err), 0);
    ck_assert(echo_ok(s, "during")); /* the established flow went on */
    ck_assert(can_connect(a.netns, DENIED_IP, PORT));
    /* and back: 203.0.113.0/24 refused again, the 198.51.100.0/24 flow still fine */
    p = policy(false, "198.51.100.0/24", "203.0.113.0/24");
    ck_assert_int_eq(cube_net_update(&net, "sb", &p, &err), 0);
    ck_assert(!can_connect(a.netns, DENIED_IP, PORT));
    ck_assert(echo_ok(s, "after"));
    close(s);
    cube_net_stop(&net);
}
END_TEST

static int count_mounts_under(const char *prefix)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strstr(line, prefix)) n++;
    if (f) fclose(f);
    return n;
}

static int link_exists(const char *name)
{
    cube_err err = {0};
    cn_nl *nl = cn_nl_open(&err);
    int idx = cn_nl_link_index(nl, name, &err);
    cn_nl_close(nl);
    return idx > 0;
}

static int nft_table_exists(void)
{
    struct nft_ctx *c = nft_ctx_new(NFT_CTX_DEFAULT);
    nft_ctx_buffer_output(c);
    nft_ctx_buffer_error(c);
    int rc = nft_run_cmd_from_buffer(c, "list table ip cube_cn");
    nft_ctx_free(c);
    return rc == 0;
}

/* Whether the node's IPv6 routing table names the link (/proc/net/ipv6_route: the device is the last column).
 */
static bool ipv6_routes_via(const char *ifname)
{
    FILE *f = fopen("/proc/net/ipv6_route", "re");
    if (!f) return false;
    char line[512], dev[64];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found =
            sscanf(line, "%*s %*s %*s %*s %*s %*s %*s %*s %*s %63s", dev) == 1 && strcmp(dev, ifname) == 0;
    fclose(f);
    return found;
}

START_TEST(release_and_stop_leave_nothing)
{
    net_start(1);
    cn_lease_info a;
    lease("gone", policy(true, NULL, NULL), &a);
    ck_assert(link_exists(a.host_ifname));
    /* the host side carries IPv4 only: no link-local address, no routes in the node's IPv6 table */
    ck_assert_msg(!ipv6_routes_via(a.host_ifname), "%s has IPv6 routes", a.host_ifname);
    ck_assert(nft_table_exists());
    char ns[4300];
    snprintf(ns, sizeof(ns), "%s", a.netns);
    cube_err err = {0};
    ck_assert_int_eq(cube_net_release(&net, "gone", false, &err), 0);
    /* the lease is gone at once; its veth and namespace go on the refill thread */
    ck_assert_int_ne(cube_net_stats(&net, "gone", &(cn_stats){0}, &err), 0);
    cube_net_wait_removed(&net);
    ck_assert(!link_exists(a.host_ifname));
    ck_assert_int_ne(access(ns, F_OK), 0);
    ck_assert_int_ne(cube_net_stats(&net, "gone", &(cn_stats){0}, &err), 0);
    ck_assert_int_eq(cube_net_release(&net, "gone", false, &err), 0); /* twice: still fine */
    cube_net_stop(&net);
    char nsd[512];
    snprintf(nsd, sizeof(nsd), "%s/ns/", dir);
    ck_assert_int_eq(count_mounts_under(nsd), 0);
    for (int i = 1; i < 8; i++) {
        char n[16];
        snprintf(n, sizeof(n), "cn%d", i);
        ck_assert_msg(!link_exists(n), "%s left behind", n);
    }
    ck_assert(!nft_table_exists());
}
END_TEST

/* Released slots go together (their veths deleted as one group): every released veth and namespace goes,
 * one already gone by other hands does not stop the rest, a slot still leased keeps its veth, and the
 * addresses come back for new leases. */
START_TEST(released_slots_go_together)
{
    net_start(0);
    enum { N = 6 };
    cn_lease_info li[N];
    char names[N][16], ns[N][4300];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "batch-%d", i);
        lease(names[i], policy(true, NULL, NULL), &li[i]);
        snprintf(ns[i], sizeof(ns[i]), "%s", li[i].netns);
    }
    cube_err err = {0};
    cn_nl *nl = cn_nl_open(&err);
    ck_assert_ptr_nonnull(nl);
    int gone = cn_nl_link_index(nl, li[0].host_ifname, &err);
    ck_assert_int_gt(gone, 0);
    ck_assert_int_eq(cn_nl_link_del(nl, gone, &err), 0);
    cn_nl_close(nl);
    for (int i = 0; i < N - 1; i++) ck_assert_int_eq(cube_net_release(&net, names[i], false, &err), 0);
    cube_net_wait_removed(&net);
    for (int i = 0; i < N - 1; i++) {
        ck_assert_msg(!link_exists(li[i].host_ifname), "%s left behind", li[i].host_ifname);
        ck_assert_int_ne(access(ns[i], F_OK), 0);
    }
    ck_assert(link_exists(li[N - 1].host_ifname));
    ck_assert_int_eq(cube_net_stats(&net, names[N - 1], &(cn_stats){0}, &err), 0);
    for (int i = 0; i < N - 1; i++) lease(names[i], policy(true, NULL, NULL), &li[i]);
    for (int i = 0; i < N; i++) ck_assert(link_exists(li[i].host_ifname));
    cube_net_stop(&net);
}
END_TEST

START_TEST(restart_adopts_leases_and_their_policy)
{
    net_start(1);
    cn_lease_info a;
    lease("kept", policy(false, "198.51.100.0/24", NULL), &a);
    cube_net_stop(&net); /* leased slots stay */
    ck_assert(link_exists(a.host_ifname));
    ck_assert(can_connect(a.netns, ALLOWED_IP, PORT)); /* still filtered by the attached programs */
    ck_assert(!can_connect(a.netns, DENIED_IP, PORT));
    net_start(1);
    cn_lease_info again;
    lease("kept", policy(false, NULL, NULL), &again); /* the same lease: the same slot, policy unchanged */
    ck_assert_str_eq(again.address, a.address);
    ck_assert(can_connect(a.netns, ALLOWED_IP, PORT));
    ck_assert(!can_connect(a.netns, DENIED_IP, PORT));
    cube_err err = {0};
    ck_assert_int_eq(cube_net_release(&net, "kept", false, &err), 0);
    cube_net_stop(&net);
    ck_assert(!link_exists(a.host_ifname));
}
END_TEST

START_TEST(bad_input_is_refused_clearly)
{
    cn_prefix p;
    cube_err err = {0};
    ck_assert_int_eq(cn_parse_prefix("10.0.0.0/8", &p, &err), 0);
    ck_assert_int_eq(p.len, 8);
    ck_assert_int_eq(cn_parse_prefix("10.1.2.3/8", &p, &err), 0);
    ck_assert_uint_eq(p.addr, ip4("10.0.0.0"));
    ck_assert_int_eq(cn_parse_prefix("example.com", &p, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "domain names are not supported"));
    ck_assert_int_eq(cn_parse_prefix("::1/128", &p, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "IPv6"));
    ck_assert_int_eq(cn_parse_prefix("1.2.3.4/33", &p, &err), -1);
    ck_assert_int_eq(cn_parse_prefix("1.2.3/8x", &p, &err), -1);
    ck_assert_int_eq(cn_parse_prefix("", &p, &err), -1);
    net_start(0);
    cn_lease_info li;
    cn_policy pol = policy(true, NULL, NULL);
    ck_assert_int_eq(cube_net_lease(&net, "bad/name", &pol, &li, &err), -1);
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_int_eq(cube_net_update(&net, "nobody", &pol, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    /* pool 0: the lease builds its slot itself */
    ck_assert_int_eq(cube_net_lease(&net, "cold", &pol, &li, &err), 0);
    ck_assert(can_connect(li.netns, ALLOWED_IP, PORT));
    cube_net_stop(&net);
}
END_TEST

START_TEST(refused_connections_fail_at_once)
{
    net_start(1);
    cn_lease_info a;
    lease("sb", policy(true, NULL, "203.0.113.0/24"), &a);
    ck_assert_int_eq(connect_errno(a.netns, ALLOWED_IP, PORT, 1000), 0);
    /* a reset in answer to the SYN: not a timeout */
    ck_assert_int_eq(connect_errno(a.netns, DENIED_IP, PORT, 1000), ECONNREFUSED);
    cube_net_stop(&net);
}
END_TEST

START_TEST(names_allow_what_they_resolve_to)
{
    net_start(1);
    cn_lease_info a;
    const char *names[] = {"allowed.test", "*.wild.test"};
    cn_policy p = policy(false, NULL, NULL);
    cube_err err = {0};
    ck_assert_msg(cn_policy_add(&p, true, names, 2, &err) == 0, "%s", err.msg);
    lease("names", p, &a);
    uint32_t addrs[8];
    int n = 0;
    /* nothing is reachable before a name resolves to it */
    ck_assert_int_eq(connect_errno(a.netns, ALLOWED_IP, PORT, 1000), ECONNREFUSED);
    /* names not allowed are refused at the node (no name leaves it for a sandbox that may reach nothing); a
     * query is answered by the node's resolver, as the server asked (9.9.9.9 is nowhere here) */
    ck_assert_int_eq(resolve(a.netns, "9.9.9.9", "other.test", addrs, &n), 5);
    ck_assert_int_eq(resolve(a.netns, "9.9.9.9", "wild.test", addrs, &n), 5); /* not the wildcard's apex */
    ck_assert_int_eq(resolve(a.netns, "9.9.9.9", "allowed.test", addrs, &n), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_uint_eq(addrs[0], ip4(ALLOWED_IP));
    /* the address is allowed now, for the sandbox that resolved it */
    ck_assert_int_eq(connect_errno(a.netns, ALLOWED_IP, PORT, 1000), 0);
    ck_assert_int_eq(connect_errno(a.netns, DENIED_IP, PORT, 1000), ECONNREFUSED);
    /* one address, two names: on the web ports the name on the connection decides */
    ck_assert(http_ok(a.netns, ALLOWED_IP, "allowed.test"));
    ck_assert(head_had("Host: allowed.test", 18));
    ck_assert(!http_ok(a.netns, ALLOWED_IP, "other.test"));
    ck_assert(tls_ok(a.netns, ALLOWED_IP, "allowed.test"));
    ck_assert(head_had("allowed.test", 12));
    ck_assert(!tls_ok(a.netns, ALLOWED_IP, "other.test"));
    ck_assert(!head_had("other.test", 10));
    /* a wildcard: its subdomains */
    ck_assert_int_eq(resolve(a.netns, "9.9.9.9", "A.Wild.Test", addrs, &n), 0);
    ck_assert_uint_eq(addrs[0], ip4(DENIED_IP));
    ck_assert(tls_ok(a.netns, DENIED_IP, "a.wild.test"));
    ck_assert_int_eq(connect_errno(a.netns, DENIED_IP, PORT, 1000), 0);
    /* a live update: the name gone, its addresses go with it; an established flow of an allowed one goes on
     */
    int s = tcp_connect(a.netns, ALLOWED_IP, PORT, 1000);
    ck_assert_int_ge(s, 0);
    cn_policy q = policy(false, NULL, NULL);
    const char *one[] = {"allowed.test"};
    ck_assert_int_eq(cn_policy_add(&q, true, one, 1, &err), 0);
    ck_assert_int_eq(cube_net_update(&net, "names", &q, &err), 0);
    ck_assert(echo_ok(s, "still"));
    close(s);
    ck_assert_int_eq(connect_errno(a.netns, ALLOWED_IP, PORT, 1000), 0);
    ck_assert_int_eq(connect_errno(a.netns, DENIED_IP, PORT, 1000), ECONNREFUSED);
    ck_assert(!tls_ok(a.netns, DENIED_IP, "a.wild.test"));
    usleep(300 * 1000);
    char *m = cube_metrics_render();
    ck_assert_msg(strstr(m, "cube_net_egress_connections_total{verdict=\"deny\"}") != NULL, "%s", m);
    ck_assert_msg(strstr(m, "cube_net_dns_queries_total{verdict=\"refused\"}") != NULL, "%s", m);
    free(m);
    cube_net_stop(&net);
}
END_TEST

/* Internet access is the internet: the operator's private networks behind the uplink are reached only where
 * a sandbox's allowOut names them, by address or by a name that resolves there; the resolver still answers.
 */
START_TEST(internet_access_is_the_public_internet)
{
    net_start(1);
    cn_lease_info a, b, c;
    lease("internet", policy(true, NULL, NULL), &a);
    ck_assert_int_eq(connect_errno(a.netns, ALLOWED_IP, PORT, 1000), 0);
    ck_assert_int_eq(connect_errno(a.netns, PRIVATE_IP, PORT, 1000), ECONNREFUSED);
    uint32_t addrs[8];
    int n = 0;
    ck_assert_int_eq(resolve(a.netns, "10.255.255.53", "allowed.test", addrs, &n),
                     0); /* a private resolver */
    /* named by address */
    lease("by-address", policy(true, "10.77.0.0/16", NULL), &b);
    ck_assert_int_eq(connect_errno(b.netns, PRIVATE_IP, PORT, 1000), 0);
    /* named by a name that resolves there; on the web ports, only under that name */
    cn_policy p = policy(true, NULL, NULL);
    const char *names[] = {"internal.test"};
    cube_err err = {0};
    ck_assert_int_eq(cn_policy_add(&p, true, names, 1, &err), 0);
    lease("by-name", p, &c);
    ck_assert_int_eq(connect_errno(c.netns, PRIVATE_IP, PORT, 1000), ECONNREFUSED);
    ck_assert_int_eq(resolve(c.netns, "9.9.9.9", "internal.test", addrs, &n), 0);
    ck_assert_uint_eq(addrs[0], ip4(PRIVATE_IP));
    ck_assert_int_eq(connect_errno(c.netns, PRIVATE_IP, PORT, 1000), 0);
    ck_assert(http_ok(c.netns, PRIVATE_IP, "internal.test"));
    ck_assert(!http_ok(c.netns, PRIVATE_IP, "allowed.test")); /* its internet access does not reach there */
    ck_assert(http_ok(c.netns, ALLOWED_IP, "allowed.test"));  /* and does reach the internet */
    cube_net_stop(&net);
}
END_TEST

START_TEST(name_rules_refuse_bad_input)
{
    cn_policy p = {0};
    cube_err err = {0};
    const char *star[] = {"*"}, *mid[] = {"a.*.test"}, *deny[] = {"evil.test"}, *ok[] = {"*.Example.COM."};
    ck_assert_int_eq(cn_policy_add(&p, true, star, 1, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "every name"));
    ck_assert_int_eq(cn_policy_add(&p, true, mid, 1, &err), -1);
    ck_assert_int_eq(cn_policy_add(&p, false, deny, 1, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "allowOut"));
    ck_assert_int_eq(cn_policy_add(&p, true, ok, 1, &err), 0);
    ck_assert_str_eq(p.names[0], "*.example.com");
    ck_assert(cn_policy_allows_name(&p, "api.example.com"));
    ck_assert(cn_policy_allows_name(&p, "A.B.EXAMPLE.com."));
    ck_assert(!cn_policy_allows_name(&p, "example.com"));
    ck_assert(!cn_policy_allows_name(&p, "badexample.com"));
}
END_TEST

START_TEST(restart_keeps_what_names_resolved_to)
{
    net_start(1);
    cn_lease_info a;
    cn_policy p = policy(false, NULL, NULL);
    const char *names[] = {"allowed.test"};
    cube_err err = {0};
    ck_assert_int_eq(cn_policy_add(&p, true, names, 1, &err), 0);
    lease("named", p, &a);
    uint32_t addrs[8];
    int n = 0;
    ck_assert_int_eq(resolve(a.netns, "9.9.9.9", "allowed.test", addrs, &n), 0);
    int s = tcp_connect(a.netns, ALLOWED_IP, PORT, 1000);
    ck_assert_int_ge(s, 0);
    cube_net_stop(&net);
    net_start(1);
    /* the flow in progress goes on, and the name's address is still allowed without a new lookup */
    ck_assert(echo_ok(s, "across a restart"));
    close(s);
    ck_assert_int_eq(connect_errno(a.netns, ALLOWED_IP, PORT, 1000), 0);
    ck_assert(tls_ok(a.netns, ALLOWED_IP, "allowed.test"));
    ck_assert(!tls_ok(a.netns, ALLOWED_IP, "other.test"));
    ck_assert_int_eq(cube_net_release(&net, "named", false, &err), 0);
    char path[600];
    snprintf(path, sizeof(path), "%s/state/slot-1.names", dir);
    ck_assert_int_ne(access(path, F_OK), 0); /* gone with the lease */
    cube_net_stop(&net);
}
END_TEST

int main(void)
{
    if (geteuid() != 0) {
        printf("SKIP test_net: needs root to create namespaces and load BPF programs\n");
        return 77;
    }
    Suite *s = suite_create("net");
    TCase *tc = tcase_create("cube-net");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, node_setup, NULL);
    tcase_add_test(tc, sandboxes_cannot_reach_each_other);
    tcase_add_test(tc, sandbox_cannot_reach_the_node);
    tcase_add_test(tc, egress_follows_allow_and_deny_lists);
    tcase_add_test(tc, internet_access_is_the_public_internet);
    tcase_add_test(tc, audit_lines_are_capped_per_sandbox);
    tcase_add_test(tc, one_sandbox_cannot_fill_the_nodes_connection_table);
    tcase_add_test(tc, live_policy_update_keeps_allowed_flows);
    tcase_add_test(tc, release_and_stop_leave_nothing);
    tcase_add_test(tc, released_slots_go_together);
    tcase_add_test(tc, restart_adopts_leases_and_their_policy);
    tcase_add_test(tc, restart_keeps_what_names_resolved_to);
    tcase_add_test(tc, bad_input_is_refused_clearly);
    tcase_add_test(tc, refused_connections_fail_at_once);
    tcase_add_test(tc, names_allow_what_they_resolve_to);
    tcase_add_test(tc, name_rules_refuse_bad_input);
    suite_add_tcase(s, tc);
    int rc = cube_run_suite(s);
    return rc;
}
