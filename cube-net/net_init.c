/* cube-net start and stop: loading the programs, the uplink, adopting a previous cube-net's slots. */
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <linux/magic.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "audit.h"
#include "dns.h"
#include "egress.h"
#include "egress_mitm.h"
#include "egress_tls.h"
#include "bpf/net_maps.h"
#include "fsutil.h"
#include "hash.h"
#include "log.h"
#include "names.h"
#include "net.h"
#include "net_internal.h"
#include "nl.h"
#include "policy.h"
#include "sandbox_net.skel.h"
#include "uplink.h"

/* The namespaces' mount points live on a tmpfs of their own (cube_tmpfs_over_empty_dir): a slot's file is
 * made and removed with every sandbox (on the node's ext4, half of cube-net's CPU in a burst of creates). It
 * outlives a restart, which adopts what is in it, and goes at a stop that leaves no slot leased. */
static int ns_dir_tmpfs(cube_net *n, cube_err *err)
{
    int rc = cube_tmpfs_over_empty_dir(n->cfg.ns_dir, "cube-netns", "mode=0755,size=4m", err);
    if (rc > 0) n->ns_tmpfs = true;
    /* Private: a namespace's mount made there is not copied into other mount namespaces (on a host whose
     * mounts are shared, as systemd makes them: cube-zygote's, a slave of the node's, would get one for every
     * slot, and every sandbox's start would copy them). cubelet hands hypervisors their namespace as a
     * descriptor. Not a mount point (EINVAL: the directory was a tmpfs already): they propagate as the
     * host's do. */
    if (rc >= 0 && mount(NULL, n->cfg.ns_dir, NULL, MS_PRIVATE, NULL) < 0 && errno != EINVAL)
        cube_log_warn("slot namespaces' mounts stay shared", "dir=%s errno=%d", n->cfg.ns_dir, errno);
    return rc < 0 ? -1 : 0;
}

static int mkdir_p(const char *path, cube_err *err)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s", path);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", p);
        *s = c;
        if (!c) break;
    }
    return 0;
}

static int libbpf_quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    if (level == LIBBPF_DEBUG) return 0;
    /* bpf_tc_hook_create on an interface that already has its clsact qdisc (adoption): expected, said as an
     * error by the kernel's extended ack */
    if (strstr(fmt, "Kernel error message")) return 0;
    return vfprintf(stderr, fmt, ap);
}

static int load_programs(cube_net *n, cube_err *err)
{
    libbpf_set_print(libbpf_quiet);
    n->skel = sandbox_net__open();
    if (!n->skel) return cube_err_sys(err, errno, "open the BPF object");
    n->skel->rodata->sandbox_net = n->net;
    n->skel->rodata->sandbox_mask = n->mask;
    n->skel->bss->uplink_ifindex = (__u32)n->uplink_ifindex;
    /* steering to the node's resolver and egress proxy: only where sandboxes have a way out at all */
    n->skel->rodata->steer_mark = n->uplink_ifindex ? CN_STEER_MARK : 0;
    int rc = sandbox_net__load(n->skel);
    if (rc < 0) return cube_err_sys(err, -rc, "load the BPF programs (needs root and a kernel with BPF)");
    return 0;
}

/* Packets the programs steer to the node's sockets carry CN_STEER_MARK; this rule and table deliver them
 * locally (the assigned socket takes them, whatever their destination address). Shared by every cube-net of
 * the namespace (same rule, same table): added idempotently. */
static int steering_enable(cube_net *n, cube_err *err)
{
    cn_nl *nl = cn_nl_open(err);
    if (!nl) return -1;
    int rc = cn_nl_local_table_add(nl, CN_STEER_TABLE, err);
    if (rc == 0) rc = cn_nl_mark_rule_add(nl, CN_STEER_MARK, CN_STEER_TABLE, CN_STEER_PRIORITY, err);
    cn_nl_close(nl);
    if (rc < 0) return cube_err_prefix(err, "steering to the node's resolver and egress proxy");
    n->steering = true;
    return 0;
}

static void steering_disable(cube_net *n)
{
    cube_err err = {0};
    cn_nl *nl = cn_nl_open(&err);
    if (!nl) return;
    if (cn_nl_mark_rule_del(nl, CN_STEER_MARK, CN_STEER_TABLE, CN_STEER_PRIORITY, &err) < 0 ||
        cn_nl_local_table_del(nl, CN_STEER_TABLE, &err) < 0)
        cube_log_warn("steering not removed", "err=\"%s\"", err.msg);
    cn_nl_close(nl);
    n->steering = false;
}

/* Fills an LPM map of the node's (the operator's deny list, the private networks) from comma-separated CIDRs;
 * each also into out[] (up to max) when given. */
static int node_prefixes(int map_fd, const char *what, const char *csv, cn_prefix *out, int max, int *n_out,
                         cube_err *err)
{
    if (!csv || !*csv) return 0;
    char *list = strdup(csv), *save = NULL;
    if (!list) return cube_err_sys(err, ENOMEM, "%s", what);
    int rc = 0;
    for (char *t = strtok_r(list, ", ", &save); t && rc == 0; t = strtok_r(NULL, ", ", &save)) {
        cn_prefix p;
        if (cn_parse_prefix(t, &p, err) < 0) {
            rc = -1;
            break;
        }
        if (out && *n_out >= max) {
            rc = cube_err_set(err, E2BIG, "%s: more than %d networks", what, max);
            break;
        }
        if (out) out[(*n_out)++] = p;
        struct cn_node_key k = {.prefixlen = p.len, .addr = p.addr};
        __u8 one = 1;
        if (bpf_map_update_elem(map_fd, &k, &one, BPF_ANY) < 0) rc = cube_err_sys(err, errno, "%s", what);
    }
    free(list);
    return rc;
}

/* Slots found on disk: a leased one whose veth still exists is taken back (programs re-attached, policy
 * re-written); anything else is removed. */
static void adopt(cube_net *n, cn_nl *host)
{
    /* stale slots are removed together, at the end; listed in released[] (empty and unused until start) */
    int nstale = 0;
    for (int idx = 1; idx <= n->nslots; idx++) {
        char lp[4300], np[4300], name[16];
        snprintf(lp, sizeof(lp), "%s/slot-%d.lease", n->cfg.state_dir, idx);
        snprintf(np, sizeof(np), "%s/slot-%d", n->cfg.ns_dir, idx);
        cube_net_ifname(n, idx, name);
        cube_err err = {0};
        int have_lease = access(lp, F_OK) == 0, have_ns = access(np, F_OK) == 0;
        int ifx = cn_nl_link_index(host, name, &err);
        if (!have_lease && !have_ns && ifx <= 0) continue;
        cn_slot *s = &n->slots[idx];
        cn_policy *p = calloc(1, sizeof(*p));
        if (have_lease && have_ns && ifx > 0 && p &&
            cn_policy_load(lp, s->lease, sizeof(s->lease), &s->gen, p, &err) == 0) {
            s->host_ifindex = ifx;
            if (cube_net_attach(n, ifx, &err) == 0 && cube_net_apply(n, idx, s->gen, p, &err) == 0) {
                s->policy = p;
                cn_names_load(n, idx);
                s->state = CN_LEASED;
                cube_net_index_lease(n, idx);
                cube_log_info("network slot adopted", "slot=%d lease=%s", idx, s->lease);
                continue;
            }
        }
        cube_log_info("stale network slot removed", "slot=%d lease=%d ns=%d veth=%d err=\"%s\"", idx,
                      have_lease, have_ns, ifx > 0, err.msg);
        free(p);
        s->policy = NULL;
        n->released[nstale++] = idx;
    }
    if (nstale) cube_net_teardown(n, n->released, nstale, host);
    for (int i = 0; i < nstale; i++) n->slots[n->released[i]].lease[0] = '\0';
}

/* A namespace of cube-net's own that slots' namespaces are made from (n->parent_ns): a new namespace takes
 * the size of its TCP and UDP hash tables from the one it is made in, and by default shares the node's
 * (262,144 TCP buckets on 24 GiB). Tables of their own keep a sandbox's connections out of every other's
 * lookups, and make listing one namespace's sockets (scrub.c, when a slot is reused) a walk of its own small
 * table, not of the node's: ~2 ms a walk before. Left at -1 (slots made in the node's namespace, sharing
 * its tables) on kernels without these settings (before 6.2). */
static void slot_parent(cube_net *n)
{
    cube_err err = {0};
    if (unshare(CLONE_NEWNET) < 0) {
        cube_log_warn("slots share the node's socket tables", "err=\"%s\"", strerror(errno));
        return;
    }
    int fd = -1;
    if (cube_write_string("/proc/sys/net/ipv4/tcp_child_ehash_entries", "1024", &err) == 0 &&
        cube_write_string("/proc/sys/net/ipv4/udp_child_hash_entries", "256", &err) == 0)
        fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    cn_return_home(n->host_ns);
    if (fd < 0)
        cube_log_warn("slots share the node's socket tables", "err=\"%s\"",
                      err.code ? err.msg : strerror(errno));
    n->parent_ns = fd;
}

int cube_net_init(cube_net *n, const cn_config *cfg, cube_err *err)
{
    memset(n, 0, sizeof(*n));
    n->cfg = *cfg;
    n->host_ns = n->parent_ns = -1;
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->refill, NULL);
    pthread_cond_init(&n->removed, NULL);
    pthread_cond_init(&n->mitm_done, NULL);
    if (!cfg->ifprefix || !*cfg->ifprefix) n->cfg.ifprefix = "cn";
    if (strlen(n->cfg.ifprefix) > 9)
        return cube_err_set(err, EINVAL, "interface prefix '%s' is too long", n->cfg.ifprefix);
    for (const char *p = n->cfg.ifprefix; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
            return cube_err_set(err, EINVAL, "interface prefix '%s': lowercase letters and digits only",
                                n->cfg.ifprefix);
    cn_prefix range;
    if (cn_parse_prefix(cfg->cidr, &range, err) < 0) return cube_err_prefix(err, "sandbox CIDR");
    if (range.len < 16 || range.len > 30)
        return cube_err_set(err, EINVAL, "sandbox CIDR %s: the prefix must be /16../30", cfg->cidr);
    n->net = range.addr;
    n->mask = htonl(~0u << (32 - range.len));
    n->nslots = (1 << (32 - range.len)) - 2;
    if (n->nslots > CN_MAX_SLOTS - 1) n->nslots = CN_MAX_SLOTS - 1;
    n->slots = calloc((size_t)n->nslots + 1, sizeof(*n->slots));
    n->ready_stack = calloc((size_t)n->nslots + 1, sizeof(*n->ready_stack));
    n->released = calloc((size_t)n->nslots + 1, sizeof(*n->released));
    n->vacated = calloc((size_t)n->nslots + 1, sizeof(*n->vacated));
    /* a group number of its own, far from the small ones people give links by hand */
    n->dead_group = (cube_fnv1a(n->cfg.ifprefix) & 0x3fffffffu) | 0x40000000u;
    if (!n->slots || !n->ready_stack || !n->released || !n->vacated)
        return cube_err_sys(err, ENOMEM, "slots");
    for (int i = 1; i <= n->nslots; i++) n->slots[i].addr = htonl(ntohl(n->net) + (uint32_t)i);
    if (mkdir_p(cfg->state_dir, err) < 0 || mkdir_p(cfg->ns_dir, err) < 0 || ns_dir_tmpfs(n, err) < 0)
        return -1;
    n->host_ns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (n->host_ns < 0) return cube_err_sys(err, errno, "open the node's network namespace");
    slot_parent(n);
    if (cfg->uplink && *cfg->uplink) {
        n->uplink_ifindex = (int)if_nametoindex(cfg->uplink);
        if (!n->uplink_ifindex)
            return cube_err_set(err, ENODEV, "uplink interface '%s' not found", cfg->uplink);
    }
    const char *priv = n->cfg.private_nets ? n->cfg.private_nets : CN_PRIVATE_NETS;
    if (load_programs(n, err) < 0 ||
        node_prefixes(bpf_map__fd(n->skel->maps.cn_node_deny), "node deny list", n->cfg.node_deny, NULL, 0,
                      NULL, err) < 0 ||
        node_prefixes(bpf_map__fd(n->skel->maps.cn_private), "private networks", priv, n->private_nets,
                      CN_MAX_PRIVATE_NETS, &n->n_private_nets, err) < 0)
        return -1;
    if (n->uplink_ifindex &&
        cn_uplink_enable(n->cfg.ifprefix, cfg->uplink, cfg->cidr,
                         cfg->flows_per_sandbox > 0 ? cfg->flows_per_sandbox : CN_FLOWS_PER_SANDBOX, err) < 0)
        return -1;
    if (n->uplink_ifindex &&
        (steering_enable(n, err) < 0 || cn_dns_open(n, err) < 0 || cn_egress_open(n, err) < 0))
        return -1;
    if (n->uplink_ifindex) {
        char ca_dir[4200];
        snprintf(ca_dir, sizeof(ca_dir), "%s/ca", cfg->state_dir);
        if (!(n->tls = cn_tls_open(ca_dir, cfg->upstream_ca, err))) return cube_err_prefix(err, "egress TLS");
    }
    cn_nl *host = cn_nl_open(err);
    if (!host) return -1;
    adopt(n, host);
    cn_nl_close(host);
    if (cn_audit_open(n, err) < 0) return -1;
    return 0;
}

void cube_net_start(cube_net *n)
{
    pthread_create(&n->refill_thread, NULL, cube_net_refill_loop, n);
    pthread_create(&n->audit_thread, NULL, cn_audit_loop, n);
    if (n->dns) pthread_create(&n->dns_thread, NULL, cn_dns_loop, n);
    if (n->egress) pthread_create(&n->egress_thread, NULL, cn_egress_loop, n);
    n->threads = true;
}

void cube_net_stop(cube_net *n)
{
    pthread_mutex_lock(&n->lock);
    n->stopping = 1;
    pthread_cond_broadcast(&n->refill);
    pthread_mutex_unlock(&n->lock);
    if (n->threads) {
        pthread_join(n->refill_thread, NULL);
        pthread_join(n->audit_thread, NULL);
        if (n->dns) pthread_join(n->dns_thread, NULL);
        if (n->egress) pthread_join(n->egress_thread, NULL);
        n->threads = false;
    }
    cn_dns_close(n);
    cn_egress_close(n);
    cn_mitm_stop_all(n);
    cn_tls_close(n->tls);
    n->tls = NULL;
    if (n->slots) cn_names_save(n);
    cube_err err = {0};
    cn_nl *host = n->slots ? cn_nl_open(&err) : NULL;
    /* slots not leased are removed as one batch, listed in released[] (the refill thread is gone; a slot
     * other than free means init got as far as making that array) */
    int leased = 0, ndead = 0;
    for (int i = 1; host && i <= n->nslots; i++) {
        if (n->slots[i].state == CN_LEASED) {
            leased++;
            free(n->slots[i].policy);
            n->slots[i].policy = NULL;
            free(n->slots[i].seen); /* the entries stay with the attached programs' maps */
            n->slots[i].seen = NULL;
            n->slots[i].n_seen = 0;
        } else if (n->slots[i].state != CN_FREE) {
            n->released[ndead++] = i;
        }
    }
    if (ndead) cube_net_teardown(n, n->released, ndead, host);
    cn_nl_close(host);
    n->nreleased = n->nvacated = 0; /* torn down above, with every other slot not leased */
    if (!leased && n->uplink_ifindex) cn_uplink_disable(n->cfg.ifprefix);
    if (!leased && n->steering) steering_disable(n);
    if (!leased && n->ns_tmpfs && umount2(n->cfg.ns_dir, MNT_DETACH) == 0) n->ns_tmpfs = false;
    cn_audit_close(n);
    if (n->skel) sandbox_net__destroy(n->skel);
    n->skel = NULL;
    if (n->host_ns >= 0) close(n->host_ns);
    if (n->parent_ns >= 0) close(n->parent_ns);
    n->host_ns = n->parent_ns = -1;
    free(n->slots);
    n->slots = NULL;
    free(n->ready_stack);
    n->ready_stack = NULL;
    free(n->released);
    n->released = NULL;
    free(n->vacated);
    n->vacated = NULL;
}
