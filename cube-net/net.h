/* cube-net's core: the node's network slots. A slot is a network namespace (bind-mounted under ns_dir so it
 * outlives any process) joined to the node by a veth pair whose host side carries the sandbox_net BPF
 * programs. Slots are built ahead of time by a refill thread; a lease hands one out by writing its policy
 * into BPF maps, so the create path does no netlink work. A sandbox process joins the slot's namespace by
 * path.
 *
 * Addressing: the sandbox's eth0 has addr/32 from the node CIDR, a default route via 169.254.1.1 and a
 * permanent neighbour entry for it; the host side has a /32 route and a permanent neighbour entry back. No
 * ARP, and the namespace belongs to the node (not the sandbox's user namespace): a sandbox cannot change its
 * addresses, routes or neighbours, nor open raw sockets. */
#ifndef CUBE_NET_H
#define CUBE_NET_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "err.h"

typedef struct cn_prefix {
    uint32_t addr; /* network order, host bits cleared */
    uint8_t len;
} cn_prefix;

#define CN_MAX_POLICY_RULES 256
#define CN_MAX_POLICY_NAMES 64
#define CN_NAME_MAX         254 /* CUBE_DOMAIN_MAX */
#define CN_MAX_HEADER_RULES 16
#define CN_HEADER_VALUE_MAX 4096

/* E2B's egress policy: allowOut wins over denyOut; allow_internet_access=false is denyOut 0.0.0.0/0.
 * allowOut may name domains ("api.example.com", "*.example.com"): an address is allowed while one of those
 * names resolves to it through the node's resolver, and TCP 80/443 to it goes through the node's egress
 * proxy, which checks the name the connection carries (TLS SNI, HTTP Host). */
typedef struct cn_policy {
    bool internet;
    int n_allow, n_deny, n_names;
    cn_prefix allow[CN_MAX_POLICY_RULES];
    cn_prefix deny[CN_MAX_POLICY_RULES];
    char names[CN_MAX_POLICY_NAMES][CN_NAME_MAX];
    /* E2B egressProxy: every TCP connection the policy allows is tunnelled through this SOCKS5 server by the
     * node's egress proxy, and fails when it cannot be (never a direct connection instead) */
    struct {
        char address[CN_NAME_MAX + 8]; /* as given, "host:port" ("" for none) */
        uint32_t addr;                 /* the host's IPv4 address (network order), resolved when set */
        uint16_t port;                 /* host order */
        char username[256], password[256];
    } proxy;
    /* E2B network.rules: headers set on HTTPS requests to a host ("*." wildcards), by the node's egress proxy
     * (TLS terminated with the node's CA); one entry per header, in order */
    int n_rules;
    struct cn_header_rule {
        char host[CN_NAME_MAX];
        char header[128];
        char value[CN_HEADER_VALUE_MAX];
    } rules[CN_MAX_HEADER_RULES];
} cn_policy;

/* Parses "a.b.c.d" or "a.b.c.d/n" (host bits cleared); a clear error for names, IPv6, junk. */
int cn_parse_prefix(const char *s, cn_prefix *out, cube_err *err);
/* Adds each of list to the policy's allow (or deny) side: addresses and CIDRs either side, domain names
 * (and "*." wildcards) on the allow side only. */
int cn_policy_add(cn_policy *p, bool allow, const char *const *list, size_t n, cube_err *err);
/* Sets the policy's SOCKS5 egress proxy ("host:port"; a host name is resolved now, with the node's resolver
 * configuration); user and pass may be NULL (no authentication). */
int cn_policy_set_proxy(cn_policy *p, const char *address, const char *user, const char *pass, cube_err *err);
/* Adds a header rule (host: a name or "*." wildcard; header: an HTTP token; value: no control characters). */
int cn_policy_add_rule(cn_policy *p, const char *host, const char *header, const char *value, cube_err *err);
/* The host pattern whose rules apply to name: an exact one first, else the longest wildcard; NULL: none. */
const char *cn_policy_rule_host(const cn_policy *p, const char *name);
/* Whether one of the policy's names matches name (a DNS question, an SNI, a Host). */
bool cn_policy_allows_name(const cn_policy *p, const char *name);
/* The policy's name (pattern) that matches name, or NULL. */
const char *cn_policy_name_rule(const cn_policy *p, const char *name);
/* The policy's verdict for an address: allow wins over deny, then the default (internet access); names play
 * no part. */
bool cn_policy_allows_addr(const cn_policy *p, uint32_t addr);
/* The same for a connection to addr, as the BPF program gives it: internet access does not cover the
 * private networks (n of them, CN_PRIVATE_NETS), which only an allow entry opens. */
bool cn_policy_allows_dest(const cn_policy *p, uint32_t addr, const cn_prefix *private_nets, int n);

/* One sandbox's flows are tracked in the node's conntrack table, which every sandbox shares (its limit,
 * nf_conntrack_max, 262144 by default): uncapped, one sandbox sending UDP from fresh ports filled it and
 * every other sandbox's new connections were dropped. */
#define CN_FLOWS_PER_SANDBOX 8192

/* Addresses that are not the internet: private networks (RFC 1918, carrier-grade NAT's RFC 6598, where
 * clouds keep internal services and metadata: 100.100.100.200), "this network", loopback, IETF protocol
 * assignments, multicast and reserved. A sandbox with internet access reached the operator's own networks
 * (databases, the cluster's Redis and MySQL, the infrastructure's resolver) as if they were the internet. */
#define CN_PRIVATE_NETS                                                                                      \
    "0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,127.0.0.0/8,172.16.0.0/12,192.0.0.0/24,192.168.0.0/16,224.0.0.0/4,"  \
    "240.0.0.0/4"
#define CN_MAX_PRIVATE_NETS 64

typedef struct cn_config {
    const char *state_dir;    /* leases, one file a slot */
    const char *ns_dir;       /* the slots' namespace bind mounts */
    const char *cidr;         /* the node's sandbox range, e.g. 10.200.0.0/16 */
    const char *uplink;       /* interface sandboxes leave through (masqueraded), or NULL: no egress at all */
    const char *node_deny;    /* operator's comma-separated CIDRs no sandbox may reach, whatever its policy */
    const char *private_nets; /* comma-separated CIDRs a sandbox's internet access does not cover: reached
                               * only where its allowOut names them (NULL: CN_PRIVATE_NETS; "": none) */
    const char *ifprefix;  /* host-side interface names: <ifprefix><slot> (default "cn"; one per cube-net on a
                            * host) */
    int pool_size;         /* slots kept ready */
    int flows_per_sandbox; /* connections (tracked flows) each sandbox may have open through the uplink at
                            * once; more are dropped. 0: the default, CN_FLOWS_PER_SANDBOX */
    bool fresh_slots;      /* never reuse a released slot as it is: each sandbox gets a namespace and veth
                            * built for it (see cube_net_release) */
    bool audit_allowed;    /* log allowed new connections too (denied ones always are) */
    const char *dns;       /* the resolver sandboxes' names go to, "ADDR[:PORT]" (NULL: the node's own, from
                            * /etc/resolv.conf); with an uplink only */
    const char
        *upstream_ca; /* extra CAs (PEM file) the egress proxy trusts for servers, beside the system's */
} cn_config;

typedef enum { CN_FREE, CN_BUILDING, CN_READY, CN_LEASED, CN_RELEASING } cn_state;

typedef struct cn_slot {
    cn_state state;
    int host_ifindex;
    uint32_t addr; /* network order */
    uint32_t gen;
    char lease[64];
    cn_policy *policy; /* while leased */
    int next_lease;    /* the lease index's chain */
    bool indexed;
    struct cn_name_rec *seen; /* what the policy's names resolved to (names.c) */
    int n_seen;
    bool names_dirty; /* seen changed since it was last saved */
    /* its audit lines this second (audit.c: at most CN_AUDIT_LINES_PER_SEC, the rest counted) */
    int64_t audit_window_ms;
    int audit_lines;
    uint64_t audit_suppressed;
    char audit_lease[64]; /* whose records those were (the slot may be another sandbox's by the time they are
                           * said) */
} cn_slot;

typedef struct cn_lease_info {
    char netns[4200];
    char host_ifname[16];
    char address[16];
    char gateway[16];
} cn_lease_info;

typedef struct cn_stats {
    uint64_t tx_bytes, tx_packets, rx_bytes, rx_packets, dropped, denied;
} cn_stats;

struct sandbox_net;
struct ring_buffer;
struct cn_dns;
struct cn_egress;

typedef struct cube_net {
    cn_config cfg;
    uint32_t net, mask; /* network order */
    int nslots;         /* usable slot indices are 1 .. nslots */
    cn_slot *slots;     /* [nslots + 1] */
    int host_ns;        /* the node's network namespace (where cube_net_init ran) */
    int parent_ns;      /* where slots' namespaces are made, for the hash tables they get (see net_init.c), or
                         * -1: made from host_ns */
    uint32_t
        dead_group; /* link group of released veths, deleted together (from ifprefix: one per cube-net) */
    int uplink_ifindex;
    cn_prefix private_nets[CN_MAX_PRIVATE_NETS]; /* cfg.private_nets, parsed (the egress proxy's check) */
    int n_private_nets;
    struct sandbox_net *skel;
    struct ring_buffer *events;
    pthread_mutex_t lock;
    pthread_cond_t refill;  /* a slot was leased or freed */
    pthread_cond_t removed; /* the refill thread emptied released[] */
    int ready;              /* slots in CN_READY: ready_stack[0 .. ready-1] */
    int *ready_stack;
    int nreleased; /* slots in CN_RELEASING whose veth and namespace are still to go: released[] */
    bool ns_tmpfs; /* ns_dir is a tmpfs this process mounted */
    int nremoving; /* popped from released[] and being torn down by the refill thread now */
    int *released;
    int nvacated; /* slots in CN_RELEASING released as vacated, to be reused or torn down: vacated[] */
    int64_t last_lease_ms; /* monotonic: ready slots beyond the pool's size go in a quiet */
    int *vacated;
    int lease_index[1024]; /* lease name hash -> first slot of its chain (0: none) */
    int cursor;            /* next index to try when building: addresses are reused as late as possible */
    int stopping;
    bool threads;
    bool steering;            /* the mark rule and local table are in place */
    int names_dirty_slots;    /* slots whose name records changed since they were saved (names.c) */
    struct cn_dns *dns;       /* the node's resolver for sandboxes (dns.c), with an uplink */
    struct cn_egress *egress; /* the egress proxy (egress.c), with an uplink */
    struct cn_tls *tls;       /* the node's egress CA (<state_dir>/ca) for header rules, with an uplink */
    int mitm_running;         /* connections with header rules, each on its thread (egress_mitm.c) */
    uint32_t mitm_addr[256];  /* the sandbox of each (CN_MITM_MAX_THREADS), for a per-sandbox cap */
    bool mitm_stopping;
    pthread_cond_t mitm_done;
    pthread_t refill_thread, audit_thread, dns_thread, egress_thread;
} cube_net;

/* Loads the BPF programs, sets up the uplink (forwarding + masquerade) if any, and adopts what a previous
 * cube-net left: leased slots get the new programs and their policies back; everything else is removed. */
int cube_net_init(cube_net *n, const cn_config *cfg, cube_err *err);
/* Starts the refill and audit threads. */
void cube_net_start(cube_net *n);
/* Stops the threads and removes unleased slots. Leased slots stay (their sandboxes run on, still filtered by
 * the attached programs) for the next cube-net to adopt; with none left, the uplink rules go too. */
void cube_net_stop(cube_net *n);

/* Hands out a slot to lease (idempotent for the same lease). */
int cube_net_lease(cube_net *n, const char *lease, const cn_policy *p, cn_lease_info *out, cube_err *err);
/* Replaces a lease's policy: new rules under the other generation bit, one map update flips to them. */
int cube_net_update(cube_net *n, const char *lease, const cn_policy *p, cube_err *err);
/* Removes the lease and its rules at once; the veth and the namespace go on the refill thread (inline when
 * the threads are not running), then the address is free again. Unknown leases are not an error.
 * vacated: the caller knows that no process is left in the slot's namespace (every process of the sandbox
 * has exited, as the sandbox's PID namespace ending proves). Such a slot is handed out again as it is,
 * unless fresh_slots, when nothing crossed its link since it was made ready (no outside party knows its
 * address, no connection tracked, no route or neighbour learned) and no socket is left in it once its TCP
 * ones (orphans, TIME_WAIT) are destroyed; else it is torn down. What the next sandbox can still see of the
 * last one is the namespace's cumulative counters (lo's bytes, /proc/net/snmp). */
int cube_net_release(cube_net *n, const char *lease, bool vacated, cube_err *err);
/* Returns once every released slot is reused or its veth and namespace are gone. */
void cube_net_wait_removed(cube_net *n);
int cube_net_stats(cube_net *n, const char *lease, cn_stats *out, cube_err *err);
/* The leases held, for reconciling with cubelet: calls fn for each. */
void cube_net_each_lease(cube_net *n, void (*fn)(void *arg, const char *lease, const cn_lease_info *li),
                         void *arg);

#endif
