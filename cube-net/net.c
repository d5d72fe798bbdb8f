/* cube-net's core (see net.h): building, leasing, releasing and adopting network slots. */
#include "net.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpf/net_maps.h"
#include "hash.h"
#include "log.h"
#include "names.h"
#include "metrics.h"
#include "nl.h"
#include "net_internal.h"
#include "policy.h"
#include "scrub.h"
#include "sandbox_net.skel.h"
#include "timeutil.h"
#include "fsutil.h"
#include "uplink.h"

#define GATEWAY "169.254.1.1"
/* Ready slots beyond the pool's size (released ones kept for reuse) go after this long without a lease. */
#define CN_TRIM_QUIET_MS 5000
#define PEER_IFINDEX     2 /* eth0 in a fresh namespace: lo is 1 */

static const uint8_t host_mac[6] = {0x02, 0xcb, 0xff, 0xff, 0xff, 0x01};

static void slot_mac(uint32_t addr, uint8_t mac[6])
{
    const uint8_t *a = (const uint8_t *)&addr;
    mac[0] = 0x02;
    mac[1] = 0xcb;
    memcpy(mac + 2, a, 4);
}

void cube_net_ifname(const cube_net *n, int idx, char name[16])
{
    snprintf(name, 16, "%s%d", n->cfg.ifprefix, idx);
}

static void ns_path(const cube_net *n, int idx, char *buf, size_t len)
{
    snprintf(buf, len, "%s/slot-%d", n->cfg.ns_dir, idx);
}

static void lease_path(const cube_net *n, int idx, char *buf, size_t len)
{
    snprintf(buf, len, "%s/slot-%d.lease", n->cfg.state_dir, idx);
}

static void fill_info(const cube_net *n, int idx, cn_lease_info *out)
{
    ns_path(n, idx, out->netns, sizeof(out->netns));
    cube_net_ifname(n, idx, out->host_ifname);
    inet_ntop(AF_INET, &n->slots[idx].addr, out->address, sizeof(out->address));
    snprintf(out->gateway, sizeof(out->gateway), GATEWAY);
}

/* The slot's host side gets the two programs (replacing whatever a previous cube-net attached). */
int cube_net_attach(cube_net *n, int ifindex, cube_err *err)
{
    DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
                        .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);
    int rc = bpf_tc_hook_create(&hook);
    if (rc < 0 && rc != -EEXIST) return cube_err_sys(err, -rc, "clsact qdisc on ifindex %d", ifindex);
    struct {
        enum bpf_tc_attach_point at;
        struct bpf_program *prog;
    } att[2] = {{BPF_TC_INGRESS, n->skel->progs.from_sandbox}, {BPF_TC_EGRESS, n->skel->progs.to_sandbox}};
    for (int i = 0; i < 2; i++) {
        hook.attach_point = att[i].at;
        DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = 1, .priority = 1, .flags = BPF_TC_F_REPLACE,
                            .prog_fd = bpf_program__fd(att[i].prog));
        rc = bpf_tc_attach(&hook, &opts);
        if (rc < 0) return cube_err_sys(err, -rc, "attach %s", bpf_program__name(att[i].prog));
    }
    return 0;
}

/* Removes whatever exists of slot idx: rules, map entry, veth, namespace mount, lease file. Never fails
 * halfway silently: what cannot be removed is logged. */
void cube_net_detach(cube_net *n, int idx)
{
    cn_slot *s = &n->slots[idx];
    if (s->host_ifindex > 0) {
        __u32 ifx = (__u32)s->host_ifindex;
        bpf_map_delete_elem(bpf_map__fd(n->skel->maps.cn_slots), &ifx);
    }
    if (s->policy) {
        int afd = bpf_map__fd(n->skel->maps.cn_allow), dfd = bpf_map__fd(n->skel->maps.cn_deny);
        cn_rules_delete(afd, dfd, idx, s->gen, s->policy);
        free(s->policy);
        s->policy = NULL;
    }
    cn_names_forget(n, idx);
    char p[4300];
    cn_names_path(n, idx, p, sizeof(p));
    unlink(p);
    lease_path(n, idx, p, sizeof(p));
    unlink(p);
    s->gen = 0;
}

/* The veths and namespaces of k slots (detached already): the slow part, a wait for RCU readers in the
 * kernel for each link deleted. The veths are put in this cube-net's group of dead links and deleted as one
 * group, one wait for the whole batch: deleted one by one (~30 ms each on a small VM) they came slower than a
 * churn of creates released them, and the namespaces left behind made every later create slower (each one
 * is a mount every new sandbox's mount namespace copies). */
static void remove_slots(cube_net *n, const int *idx, int k, cn_nl *nl)
{
    cube_err err = {0};
    int grouped = 0;
    for (int i = 0; i < k; i++) {
        cn_slot *s = &n->slots[idx[i]];
        char name[16];
        cube_net_ifname(n, idx[i], name);
        int ifx = s->host_ifindex > 0 ? s->host_ifindex : cn_nl_link_index(nl, name, &err);
        if (ifx > 0 && cn_nl_link_set_group(nl, ifx, n->dead_group, &err) == 0) {
            grouped++;
        } else if (ifx > 0 && err.code != ENODEV && cn_nl_link_del(nl, ifx, &err) < 0 && err.code != ENODEV) {
            cube_log_warn("veth not removed", "slot=%d err=\"%s\"", idx[i], err.msg);
        }
        s->host_ifindex = 0;
    }
    if (grouped && cn_nl_group_del(nl, n->dead_group, &err) < 0) {
        cube_log_warn("dead veths not removed as a group: one by one", "err=\"%s\"", err.msg);
        for (int i = 0; i < k; i++) {
            char name[16];
            cube_net_ifname(n, idx[i], name);
            int ifx = cn_nl_link_index(nl, name, &err);
            if (ifx > 0 && cn_nl_link_del(nl, ifx, &err) < 0 && err.code != ENODEV)
                cube_log_warn("veth not removed", "slot=%d err=\"%s\"", idx[i], err.msg);
        }
    }
    for (int i = 0; i < k; i++) {
        char p[4300];
        ns_path(n, idx[i], p, sizeof(p));
        if (umount2(p, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
            cube_log_warn("namespace not unmounted", "slot=%d path=%s errno=%d", idx[i], p, errno);
        unlink(p);
    }
}

void cube_net_teardown(cube_net *n, const int *idx, int k, cn_nl *nl)
{
    for (int i = 0; i < k; i++) cube_net_detach(n, idx[i]);
    remove_slots(n, idx, k, nl);
}

/* The host side of a slot carries IPv4 only (the sandbox side has IPv6 off from birth, its namespace's
 * default). Left on, IPv6 gave each host veth, once up, a link-local address, routes in the node's IPv6 table
 * and multicast reports, and every link added or removed walked that table: work for each create and kill
 * that grew with the sandboxes the node holds. Turned off before the link goes up, none of it happens. A node
 * without IPv6 has no such file: nothing to do. */
static void host_ipv6_off(const char *ifname)
{
    char p[96];
    snprintf(p, sizeof(p), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", ifname);
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    if (write(fd, "1", 1) != 1)
        cube_log_warn("IPv6 stays on for a slot's host link", "ifname=%s errno=%d", ifname, errno);
    close(fd);
}

void cn_return_home(int host_ns)
{
    if (setns(host_ns, CLONE_NEWNET) < 0) { /* cannot happen with a valid fd */
        cube_log_error("cannot return to the node's network namespace", "errno=%d", errno);
        abort();
    }
}

/* Builds slot idx: a namespace with lo and eth0 configured, the veth's host side routed and filtered. Runs on
 * the calling thread, which it moves into the new namespace and back. */
static int build(cube_net *n, int idx, cn_nl *host, cube_err *err)
{
    cn_slot *s = &n->slots[idx];
    char p[4300];
    ns_path(n, idx, p, sizeof(p));
    int fd = open(p, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (fd < 0) return cube_err_sys(err, errno, "create %s", p);
    close(fd);
    int nsfd = -1;
    cn_nl *inner = NULL;
    /* made from cube-net's parent namespace, for socket tables of its own (net_init.c: slot_parent) */
    if ((n->parent_ns >= 0 && setns(n->parent_ns, CLONE_NEWNET) < 0) || unshare(CLONE_NEWNET) < 0) {
        cube_err_sys(err, errno, "new network namespace");
        cn_return_home(n->host_ns); /* out of the parent namespace */
        unlink(p);
        return -1;
    }
    int rc = -1;
    if (mount("/proc/thread-self/ns/net", p, NULL, MS_BIND, NULL) < 0) {
        cube_err_sys(err, errno, "bind the namespace at %s", p);
    } else if ((nsfd = open(p, O_RDONLY | O_CLOEXEC)) < 0) {
        cube_err_sys(err, errno, "open %s", p);
    } else if (cube_write_string("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1", err) == 0 &&
               cube_write_string("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1", err) == 0 &&
               /* the sandbox's root is not root of this namespace: let it bind low ports and ping */
               cube_write_string("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0", err) == 0 &&
               cube_write_string("/proc/sys/net/ipv4/ping_group_range", "0 2147483647", err) == 0 &&
               (inner = cn_nl_open(err)) != NULL) {
        rc = 0;
    }
    cn_return_home(n->host_ns);
    if (rc < 0) goto fail;
    rc = -1;
    uint8_t mac[6];
    slot_mac(s->addr, mac);
    char name[16];
    cube_net_ifname(n, idx, name);
    uint32_t gw;
    inet_pton(AF_INET, GATEWAY, &gw);
    int ifx = cn_nl_add_veth(host, name, host_mac, "eth0", PEER_IFINDEX, mac, nsfd, err);
    if (ifx < 0) goto fail;
    s->host_ifindex = ifx;
    host_ipv6_off(name);
    if (cn_nl_link_up(host, ifx, err) < 0 || cn_nl_route_add(host, ifx, s->addr, 32, 0, err) < 0 ||
        cn_nl_neigh_add(host, ifx, s->addr, mac, err) < 0 || cn_nl_link_up(inner, 1, err) < 0 ||
        cn_nl_link_up(inner, PEER_IFINDEX, err) < 0 ||
        cn_nl_addr_add(inner, PEER_IFINDEX, s->addr, 32, err) < 0 ||
        cn_nl_route_add(inner, PEER_IFINDEX, gw, 32, 0, err) < 0 ||
        cn_nl_neigh_add(inner, PEER_IFINDEX, gw, host_mac, err) < 0 ||
        cn_nl_route_add(inner, PEER_IFINDEX, 0, 0, gw, err) < 0 || cube_net_attach(n, ifx, err) < 0)
        goto fail;
    /* fresh counters for the new tenant of this index */
    int ncpu = libbpf_num_possible_cpus();
    struct cn_counters *zero = calloc((size_t)(ncpu > 0 ? ncpu : 1), sizeof(*zero));
    __u32 key = (__u32)idx;
    if (zero) bpf_map_update_elem(bpf_map__fd(n->skel->maps.cn_stats), &key, zero, BPF_ANY);
    free(zero);
    rc = 0;
fail:
    cn_nl_close(inner);
    if (nsfd >= 0) close(nsfd);
    if (rc < 0) {
        cube_err_prefix(err, "slot %d", idx);
        cube_net_teardown(n, &idx, 1, host);
    }
    return rc;
}

/* Slot idx (built, or released and found reusable) to the ready stack; lock held. */
static void make_ready(cube_net *n, int idx)
{
    n->slots[idx].state = CN_READY;
    n->ready_stack[n->ready++] = idx;
}

/* Picks a free index and builds it; lock held on entry and exit (dropped while building). Returns the index
 * (CN_READY) or -1. */
static int build_one(cube_net *n, cn_nl *host, cube_err *err)
{
    int idx = -1;
    for (int i = 0; i < n->nslots; i++) {
        int c = (n->cursor + i) % n->nslots + 1;
        if (n->slots[c].state == CN_FREE) {
            idx = c;
            break;
        }
    }
    if (idx < 0) return cube_err_set(err, ENOSPC, "no free address in %s", n->cfg.cidr);
    n->cursor = idx % n->nslots;
    n->slots[idx].state = CN_BUILDING;
    pthread_mutex_unlock(&n->lock);
    int64_t t0 = cube_now_mono_ns();
    int rc = build(n, idx, host, err);
    cube_metric_observe("cube_net_slot_build_seconds", "time to build a network slot",
                        (double)(cube_now_mono_ns() - t0) / 1e9);
    pthread_mutex_lock(&n->lock);
    if (rc < 0) {
        n->slots[idx].state = CN_FREE;
        return -1;
    }
    make_ready(n, idx);
    return idx;
}

/* Whether nothing crossed slot idx's link since it was built or last handed out again: its programs'
 * counters, both ways and drops included, are still zero (build zeroes them; a slot is reused only while
 * they stay so). */
static bool link_quiet(cube_net *n, int idx)
{
    int ncpu = libbpf_num_possible_cpus();
    struct cn_counters *c = ncpu > 0 ? calloc((size_t)ncpu, sizeof(*c)) : NULL;
    __u32 key = (__u32)idx;
    bool quiet = c && bpf_map_lookup_elem(bpf_map__fd(n->skel->maps.cn_stats), &key, c) == 0;
    for (int i = 0; quiet && i < ncpu; i++) quiet = !c[i].tx_packets && !c[i].rx_packets && !c[i].dropped;
    free(c);
    return quiet;
}

/* Whether released slot idx, vacated by its sandbox, can serve the next one as it is (cube_net_release says
 * when); lock not held. Its TCP sockets are destroyed on the way. */
static bool slot_reusable(cube_net *n, int idx)
{
    const char *why = NULL;
    if (!link_quiet(n, idx)) {
        why = "traffic";
    } else {
        char p[4300];
        ns_path(n, idx, p, sizeof(p));
        int fd = open(p, O_RDONLY | O_CLOEXEC), left = 0;
        cube_err err = {0};
        if (fd < 0 || cn_scrub_sockets(fd, n->host_ns, &left, &err) < 0) {
            cube_log_warn("released slot not checked: torn down", "slot=%d err=\"%s\"", idx,
                          fd < 0 ? strerror(errno) : err.msg);
            why = "unchecked";
        } else if (left > 0) {
            why = "sockets";
        }
        if (fd >= 0) close(fd);
    }
    if (!why) {
        cube_metric_add("cube_net_slots_reused_total", "released slots handed out again as they were", 1);
        return true;
    }
    char m[96];
    snprintf(m, sizeof(m), "cube_net_slots_renewed_total{reason=\"%s\"}", why);
    cube_metric_add(m, "released slots torn down for a new one although their sandbox left nothing running",
                    1);
    return false;
}

/* One of the slots released as vacated (lock held on entry and exit, dropped while it is looked at): its
 * index when it can serve the next sandbox as it is (still CN_RELEASING: the caller hands it out or makes it
 * ready), else 0 and it is queued to be torn down. */
static int take_vacated(cube_net *n)
{
    int idx = n->vacated[--n->nvacated];
    n->nremoving++; /* not idle yet for cube_net_wait_removed */
    pthread_mutex_unlock(&n->lock);
    bool ok = slot_reusable(n, idx);
    pthread_mutex_lock(&n->lock);
    n->nremoving--;
    pthread_cond_broadcast(&n->removed);
    if (ok) return idx;
    n->released[n->nreleased++] = idx;
    pthread_cond_signal(&n->refill);
    return 0;
}

/* Released slots (detached already, lock held on entry and exit): their veths and namespaces go, all that
 * were released by now in one batch (remove_slots), then the addresses are free again. */
static void remove_released(cube_net *n, cn_nl *host)
{
    while (n->nreleased > 0) {
        int k = n->nreleased, one;
        int *batch = malloc((size_t)k * sizeof(*batch));
        if (!batch) { /* short of memory: one at a time */
            k = 1;
            batch = &one;
        }
        n->nreleased -= k;
        memcpy(batch, n->released + n->nreleased, (size_t)k * sizeof(*batch));
        n->nremoving += k; /* counted until their namespaces are gone: wait_removed waits for these too */
        pthread_mutex_unlock(&n->lock);
        remove_slots(n, batch, k, host);
        pthread_mutex_lock(&n->lock);
        n->nremoving -= k;
        for (int i = 0; i < k; i++) {
            n->slots[batch[i]].state = CN_FREE; /* only now: the index's old veth is gone */
            n->slots[batch[i]].lease[0] = '\0';
        }
        if (batch != &one) free(batch);
    }
    pthread_cond_broadcast(&n->removed);
}

void *cube_net_refill_loop(void *arg)
{
    cube_net *n = arg;
    cube_err err = {0};
    /* building is background work: leases (the create path) go first on a busy node */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
    cn_nl *host = cn_nl_open(&err);
    if (!host) {
        cube_log_error("refill thread has no netlink socket", "err=\"%s\"", err.msg);
        return NULL;
    }
    pthread_mutex_lock(&n->lock);
    while (!n->stopping) {
        if (n->nvacated > 0) {
            /* a slot released as it was serves a later lease, whatever the pool's size: the creates that
             * released it are usually followed by as many (a burst's refill, a churn); extras go in a quiet
             */
            int idx = take_vacated(n);
            if (idx > 0) make_ready(n, idx);
            continue;
        }
        if (n->nreleased > 0) {
            remove_released(n, host);
            continue;
        }
        if (n->ready > n->cfg.pool_size) {
            int64_t quiet = cube_now_mono_ms() - n->last_lease_ms;
            if (quiet < CN_TRIM_QUIET_MS) {
                struct timespec dl = cube_timespec_after_ms(CLOCK_REALTIME, CN_TRIM_QUIET_MS - quiet);
                pthread_cond_timedwait(&n->refill, &n->lock, &dl);
                continue;
            }
            while (n->ready > n->cfg.pool_size) { /* back to the pool's size, as one batch */
                int idx = n->ready_stack[--n->ready];
                n->slots[idx].state = CN_RELEASING;
                n->released[n->nreleased++] = idx;
            }
            continue;
        }
        if (n->ready >= n->cfg.pool_size) {
            pthread_cond_wait(&n->refill, &n->lock);
            continue;
        }
        if (build_one(n, host, &err) < 0) {
            cube_log_warn("network slot not built", "err=\"%s\"", err.msg);
            /* a persistent failure (no addresses, no privileges) waits for the next lease or release */
            pthread_cond_wait(&n->refill, &n->lock);
        }
    }
    pthread_mutex_unlock(&n->lock);
    cn_nl_close(host);
    return NULL;
}

void cube_net_wait_removed(cube_net *n)
{
    pthread_mutex_lock(&n->lock);
    while ((n->nreleased > 0 || n->nremoving > 0 || n->nvacated > 0) && n->threads && !n->stopping)
        pthread_cond_wait(&n->removed, &n->lock);
    pthread_mutex_unlock(&n->lock);
}

static unsigned lease_bucket(const cube_net *n, const char *lease)
{
    return cube_fnv1a(lease) % (sizeof(n->lease_index) / sizeof(n->lease_index[0]));
}

/* The slot holding lease (lock held), or -1. */
static int find_lease(cube_net *n, const char *lease)
{
    for (int i = n->lease_index[lease_bucket(n, lease)]; i; i = n->slots[i].next_lease)
        if (strcmp(n->slots[i].lease, lease) == 0) return i;
    return -1;
}

void cube_net_index_lease(cube_net *n, int idx)
{
    unsigned b = lease_bucket(n, n->slots[idx].lease);
    n->slots[idx].next_lease = n->lease_index[b];
    n->lease_index[b] = idx;
    n->slots[idx].indexed = true;
}

static void unindex_lease(cube_net *n, int idx)
{
    if (!n->slots[idx].indexed) return;
    for (int *pp = &n->lease_index[lease_bucket(n, n->slots[idx].lease)]; *pp; pp = &n->slots[*pp].next_lease)
        if (*pp == idx) {
            *pp = n->slots[idx].next_lease;
            break;
        }
    n->slots[idx].indexed = false;
    n->slots[idx].next_lease = 0;
}

static int valid_lease(const char *lease, cube_err *err)
{
    size_t len = lease ? strlen(lease) : 0;
    if (len == 0 || len >= 64)
        return cube_err_set(err, EINVAL, "a lease name of 1..63 characters is required");
    for (const char *p = lease; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.'))
            return cube_err_set(err, EINVAL, "bad lease name '%s'", lease);
    return 0;
}

int cube_net_steer_to(cube_net *n, unsigned which, int fd, cube_err *err)
{
    __u32 k = which;
    __u64 v = (__u64)fd;
    int mfd = bpf_map__fd(n->skel->maps.cn_socks);
    if (fd < 0) return bpf_map_delete_elem(mfd, &k) < 0 && errno != ENOENT ? -1 : 0;
    if (bpf_map_update_elem(mfd, &k, &v, BPF_ANY) < 0) return cube_err_sys(err, errno, "the socket map");
    return 0;
}

int cube_net_slot_of_addr(const cube_net *n, uint32_t addr)
{
    long idx = (long)ntohl(addr) - (long)ntohl(n->net);
    if (idx < 1 || idx > n->nslots) return 0;
    const cn_slot *s = &n->slots[idx];
    return s->state == CN_LEASED && s->addr == addr && s->policy ? (int)idx : 0;
}

/* The slot's rules and its map entry, under generation gen: the map entry is written last, so the programs
 * see either the old complete policy or the new one. */
int cube_net_apply(cube_net *n, int idx, uint32_t gen, const cn_policy *p, cube_err *err)
{
    cn_slot *s = &n->slots[idx];
    int afd = bpf_map__fd(n->skel->maps.cn_allow), dfd = bpf_map__fd(n->skel->maps.cn_deny);
    if (cn_rules_write(afd, dfd, idx, gen, p, err) < 0) {
        cn_rules_delete(afd, dfd, idx, gen, p);
        return -1;
    }
    struct cn_slot_cfg cfg = {.slot = (__u32)idx,
                              .addr = s->addr,
                              .gen = gen,
                              .default_allow = p->internet,
                              .audit_allowed = n->cfg.audit_allowed,
                              .names = p->n_names > 0,
                              .socks = p->proxy.address[0] != '\0',
                              .rules = p->n_rules > 0};
    __u32 ifx = (__u32)s->host_ifindex;
    if (bpf_map_update_elem(bpf_map__fd(n->skel->maps.cn_slots), &ifx, &cfg, BPF_ANY) < 0) {
        int e = errno;
        cn_rules_delete(afd, dfd, idx, gen, p);
        return cube_err_sys(err, e, "write slot %d", idx);
    }
    return 0;
}

/* names need the node's resolver and egress proxy (an uplink and an upstream resolver) */
static int names_possible(const cube_net *n, const cn_policy *p, cube_err *err)
{
    if (p->n_rules && (!n->egress || !n->tls))
        return cube_err_set(err, EINVAL,
                            "header rules need the node's egress proxy, which this node does not run "
                            "(no uplink: sandboxes have no egress)");
    if (p->n_rules && p->proxy.address[0])
        return cube_err_set(err, EINVAL, "header rules together with an egress proxy are not supported yet");
    if (p->proxy.address[0] && !n->egress)
        return cube_err_set(err, EINVAL,
                            "an egress proxy needs the node's egress proxy, which this node does not run "
                            "(no uplink: sandboxes have no egress)");
    if (p->n_names && (!n->dns || !n->egress))
        return cube_err_set(
            err, EINVAL,
            "domain names in allowOut need the node's resolver, which this node does not run (%s)",
            n->uplink_ifindex ? "no upstream DNS server" : "no uplink: sandboxes have no egress");
    return 0;
}

int cube_net_lease(cube_net *n, const char *lease, const cn_policy *p, cn_lease_info *out, cube_err *err)
{
    if (valid_lease(lease, err) < 0 || names_possible(n, p, err) < 0) return -1;
    cn_policy *copy = malloc(sizeof(*copy));
    if (!copy) return cube_err_sys(err, ENOMEM, "policy");
    *copy = *p;
    pthread_mutex_lock(&n->lock);
    int idx = find_lease(n, lease);
    if (idx > 0) { /* a retried call: the same slot */
        fill_info(n, idx, out);
        pthread_mutex_unlock(&n->lock);
        free(copy);
        return 0;
    }
    idx = n->ready == 0 && n->nvacated > 0 ? take_vacated(n) : 0; /* far cheaper than building one */
    if (idx <= 0 && n->ready > 0) {
        idx = n->ready_stack[--n->ready];
    } else if (idx <= 0) {
        /* cold: nothing ready; build one on this thread (counted, so a pool too small shows) */
        cube_metric_add("cube_net_cold_slots_total", "slots built on the lease path (pool empty)", 1);
        cn_nl *host = cn_nl_open(err);
        idx = host ? build_one(n, host, err) : -1;
        cn_nl_close(host);
        if (idx < 0) {
            pthread_mutex_unlock(&n->lock);
            free(copy);
            return -1;
        }
        for (int i = 0; i < n->ready; i++) /* take this one off the ready stack */
            if (n->ready_stack[i] == idx) n->ready_stack[i] = n->ready_stack[--n->ready];
    }
    cn_slot *s = &n->slots[idx];
    n->last_lease_ms = cube_now_mono_ms();
    s->state = CN_LEASED;
    snprintf(s->lease, sizeof(s->lease), "%s", lease);
    cube_net_index_lease(n, idx);
    s->gen = 0;
    s->policy = copy;
    pthread_cond_signal(&n->refill);
    int rc = cube_net_apply(n, idx, 0, copy, err);
    char lp[4300];
    lease_path(n, idx, lp, sizeof(lp));
    if (rc == 0) rc = cn_policy_save(lp, lease, 0, copy, err);
    if (rc < 0) {
        /* a slot that may hold partial rules is never handed out again: it is torn down and rebuilt */
        s->state = CN_RELEASING;
        unindex_lease(n, idx);
        pthread_mutex_unlock(&n->lock);
        cube_err e2 = {0};
        cn_nl *host = cn_nl_open(&e2);
        pthread_mutex_lock(&n->lock);
        if (host) cube_net_teardown(n, &idx, 1, host);
        cn_nl_close(host);
        s->state = host ? CN_FREE : CN_RELEASING;
        s->lease[0] = '\0';
        pthread_mutex_unlock(&n->lock);
        return -1;
    }
    fill_info(n, idx, out);
    pthread_mutex_unlock(&n->lock);
    return 0;
}

int cube_net_update(cube_net *n, const char *lease, const cn_policy *p, cube_err *err)
{
    if (names_possible(n, p, err) < 0) return -1;
    cn_policy *copy = malloc(sizeof(*copy));
    if (!copy) return cube_err_sys(err, ENOMEM, "policy");
    *copy = *p;
    pthread_mutex_lock(&n->lock);
    int idx = find_lease(n, lease ? lease : "");
    if (idx < 0 || n->slots[idx].state != CN_LEASED) {
        pthread_mutex_unlock(&n->lock);
        free(copy);
        return cube_err_set(err, ENOENT, "no network lease '%s'", lease ? lease : "");
    }
    cn_slot *s = &n->slots[idx];
    uint32_t gen = s->gen + 1;
    /* addresses the new policy's names still allow go on being allowed (flows in progress, cached answers) */
    if (cn_names_carry(n, idx, gen, copy, err) < 0 || cube_net_apply(n, idx, gen, copy, err) < 0) {
        cn_names_unwrite(n, idx, gen);
        pthread_mutex_unlock(&n->lock);
        free(copy);
        return -1;
    }
    int afd = bpf_map__fd(n->skel->maps.cn_allow), dfd = bpf_map__fd(n->skel->maps.cn_deny);
    cn_names_unwrite(n, idx, s->gen);
    cn_rules_delete(afd, dfd, idx, s->gen, s->policy);
    free(s->policy);
    s->policy = copy;
    s->gen = gen;
    char lp[4300];
    lease_path(n, idx, lp, sizeof(lp));
    int rc = cn_policy_save(lp, lease, gen, copy, err);
    pthread_mutex_unlock(&n->lock);
    return rc;
}

int cube_net_release(cube_net *n, const char *lease, bool vacated, cube_err *err)
{
    pthread_mutex_lock(&n->lock);
    int idx = find_lease(n, lease ? lease : "");
    if (idx < 0 || n->slots[idx].state != CN_LEASED) {
        pthread_mutex_unlock(&n->lock);
        return 0;
    }
    /* at once: no rules, no lease (a restart would not adopt it), the name is free */
    n->slots[idx].state = CN_RELEASING;
    unindex_lease(n, idx);
    cube_net_detach(n, idx);
    if (vacated && !n->cfg.fresh_slots) {
        n->vacated[n->nvacated++] = idx;
        if (!n->threads && take_vacated(n) > 0) { /* no refill thread: looked at now */
            make_ready(n, idx);
            pthread_mutex_unlock(&n->lock);
            return 0;
        }
    } else {
        n->released[n->nreleased++] = idx;
    }
    if (n->threads) {
        /* the veth and namespace go on the refill thread: deleting them waits on the kernel (RCU), and the
         * caller (a sandbox's teardown, the next create right behind it) need not */
        pthread_cond_signal(&n->refill);
        pthread_mutex_unlock(&n->lock);
        return 0;
    }
    pthread_mutex_unlock(&n->lock);
    cn_nl *host = cn_nl_open(err);
    if (!host) return -1; /* left queued: removed at stop */
    pthread_mutex_lock(&n->lock);
    remove_released(n, host);
    pthread_mutex_unlock(&n->lock);
    cn_nl_close(host);
    return 0;
}

int cube_net_stats(cube_net *n, const char *lease, cn_stats *out, cube_err *err)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&n->lock);
    int idx = find_lease(n, lease ? lease : "");
    pthread_mutex_unlock(&n->lock);
    if (idx < 0) return cube_err_set(err, ENOENT, "no network lease '%s'", lease ? lease : "");
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return cube_err_set(err, EIO, "cannot count CPUs");
    struct cn_counters *per = calloc((size_t)ncpu, sizeof(*per));
    if (!per) return cube_err_sys(err, ENOMEM, "stats");
    __u32 key = (__u32)idx;
    if (bpf_map_lookup_elem(bpf_map__fd(n->skel->maps.cn_stats), &key, per) < 0) {
        int e = errno;
        free(per);
        return cube_err_sys(err, e, "read counters");
    }
    for (int i = 0; i < ncpu; i++) {
        out->tx_bytes += per[i].tx_bytes;
        out->tx_packets += per[i].tx_packets;
        out->rx_bytes += per[i].rx_bytes;
        out->rx_packets += per[i].rx_packets;
        out->dropped += per[i].dropped;
        out->denied += per[i].denied;
    }
    free(per);
    return 0;
}

void cube_net_each_lease(cube_net *n, void (*fn)(void *arg, const char *lease, const cn_lease_info *li),
                         void *arg)
{
    pthread_mutex_lock(&n->lock);
    for (int i = 1; i <= n->nslots; i++) {
        if (n->slots[i].state != CN_LEASED) continue;
        cn_lease_info li;
        fill_info(n, i, &li);
        fn(arg, n->slots[i].lease, &li);
    }
    pthread_mutex_unlock(&n->lock);
}
