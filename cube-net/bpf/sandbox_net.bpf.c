// SPDX-License-Identifier: GPL-2.0
/* The sandbox network policy, attached at TC on the host side of each sandbox's veth:
 *   from_sandbox (ingress of the host veth): anti-spoofing, no other sandbox, no address of the node, the
 *     operator's deny list, then the sandbox's allow/deny lists (allow wins, as in E2B), then its default;
 *   to_sandbox (egress of the host veth): only IPv4 for the sandbox's own address, never from another
 * sandbox. Everything else is dropped and counted; refusals and (optionally) allowed new connections go to a
 * ring buffer for audit. Policy changes are map updates; the programs are never reloaded for them. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "net_maps.h"

char LICENSE[] SEC("license") = "GPL";

/* set by cube-net before load: the node's sandbox range (network order) */
const volatile __u32 sandbox_net = 0;
const volatile __u32 sandbox_mask = 0;
/* the interface sandboxes may leave through (0: none, no egress at all) */
volatile __u32 uplink_ifindex = 0;
/* the packet mark that a policy-routing rule delivers locally (to the socket the program assigned) */
const volatile __u32 steer_mark = 0;

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, CN_MAX_SLOTS);
    __type(key, __u32); /* ifindex of the host-side veth */
    __type(value, struct cn_slot_cfg);
} cn_slots SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, CN_MAX_RULES);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct cn_rule_key);
    __type(value, __u8);
} cn_allow SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, CN_MAX_RULES);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct cn_rule_key);
    __type(value, __u8);
} cn_deny SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 1024);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct cn_node_key);
    __type(value, __u8);
} cn_node_deny SEC(".maps");

/* what a sandbox's internet access does not cover (CN_PRIVATE_NETS): only its allow entries reach there */
struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 1024);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct cn_node_key);
    __type(value, __u8);
} cn_private SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, CN_MAX_NAME_ADDRS);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct cn_name_key);
    __type(value, struct cn_name_val);
} cn_names SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_SOCKMAP);
    __uint(max_entries, CN_SOCK_MAX);
    __type(key, __u32);
    __type(value, __u64);
} cn_socks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, CN_MAX_SLOTS);
    __type(key, __u32);
    __type(value, struct cn_counters);
} cn_stats SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 18);
} cn_events SEC(".maps");

static __always_inline void count_drop(__u32 slot, int denied)
{
    struct cn_counters *c = bpf_map_lookup_elem(&cn_stats, &slot);
    if (!c) return;
    c->dropped++;
    if (denied) c->denied++;
}

static __always_inline void audit(__u32 slot, const struct iphdr *ip, void *l4, void *end, __u8 reason,
                                  int only_syn)
{
    __u16 sport = 0, dport = 0;
    if (ip->protocol == IPPROTO_TCP) {
        struct tcphdr *t = l4;
        if ((void *)(t + 1) > end) return;
        /* one record per connection attempt, not per packet */
        if (!t->syn || t->ack) return;
        sport = bpf_ntohs(t->source);
        dport = bpf_ntohs(t->dest);
    } else if (ip->protocol == IPPROTO_UDP) {
        struct udphdr *u = l4;
        if ((void *)(u + 1) > end) return;
        sport = bpf_ntohs(u->source);
        dport = bpf_ntohs(u->dest);
        if (only_syn) return;
    } else if (only_syn) {
        return;
    }
    struct cn_event *e = bpf_ringbuf_reserve(&cn_events, sizeof(*e), 0);
    if (!e) return; /* full: the drop counter still counts it */
    e->slot = slot;
    e->saddr = ip->saddr;
    e->daddr = ip->daddr;
    e->sport = sport;
    e->dport = dport;
    e->proto = ip->protocol;
    e->reason = reason;
    e->pad[0] = e->pad[1] = 0;
    bpf_ringbuf_submit(e, 0);
}

static __always_inline int refuse(__u32 slot, const struct iphdr *ip, void *l4, void *end, __u8 reason)
{
    count_drop(slot, reason == CN_DROP_POLICY || reason == CN_DROP_NODE_DENY);
    audit(slot, ip, l4, end, reason, 0);
    return TC_ACT_SHOT;
}

/* the slot of the interface the packet is on (none: an interface being built or torn down) */
static __always_inline struct cn_slot_cfg *slot_of(const struct __sk_buff *skb)
{
    __u32 ifindex = skb->ifindex;
    return bpf_map_lookup_elem(&cn_slots, &ifindex);
}

/* a packet that passed: counted in the slot's tx (from the sandbox) or rx (to it) */
static __always_inline int pass(__u32 slot, const struct __sk_buff *skb, int tx)
{
    struct cn_counters *c = bpf_map_lookup_elem(&cn_stats, &slot);
    if (c) {
        if (tx) {
            c->tx_packets++;
            c->tx_bytes += skb->len;
        } else {
            c->rx_packets++;
            c->rx_bytes += skb->len;
        }
    }
    return TC_ACT_OK;
}

/* Hands a new flow's packet to one of the node's sockets: assigned to it, and marked so that the node's
 * routing delivers it locally. Returns -1 when the socket is not there (the node runs no resolver or proxy).
 */
static __always_inline int steer(struct __sk_buff *skb, __u32 which)
{
    if (!steer_mark) return -1;
    struct bpf_sock *sk = bpf_map_lookup_elem(&cn_socks, &which);
    if (!sk) return -1;
    long rc = bpf_sk_assign(skb, sk, 0);
    bpf_sk_release(sk);
    if (rc) return -1;
    skb->mark = steer_mark;
    return 0;
}

/* A later packet of a steered TCP flow: delivered locally only to the connection the proxy accepted (an
 * exact 4-tuple match), never to whatever else listens on the node. */
static __always_inline int steer_established(struct __sk_buff *skb, const struct iphdr *ip,
                                             const struct tcphdr *t)
{
    if (!steer_mark) return -1;
    struct bpf_sock_tuple tup = {0};
    tup.ipv4.saddr = ip->saddr;
    tup.ipv4.daddr = ip->daddr;
    tup.ipv4.sport = t->source;
    tup.ipv4.dport = t->dest;
    struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &tup, sizeof(tup.ipv4), BPF_F_CURRENT_NETNS, 0);
    if (!sk) return -1;
    int ok = sk->state != BPF_TCP_LISTEN;
    bpf_sk_release(sk);
    if (!ok) return -1;
    skb->mark = steer_mark;
    return 0;
}

static __always_inline __u16 csum_fold(__s64 sum)
{
    __u64 s = (__u64)sum;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__u16)~s;
}

/* Turns a TCP SYN from the sandbox (plain IPv4 header) into the RST|ACK its destination would send, and sends
 * it back to the sandbox. */
static __always_inline int reset_back(struct __sk_buff *skb)
{
    const __u32 len = sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr);
    if (bpf_skb_change_tail(skb, len, 0)) return TC_ACT_SHOT; /* the SYN's options go */
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct tcphdr *t = (void *)(ip + 1);
    if ((void *)(t + 1) > end) return TC_ACT_SHOT;
    __u8 mac[ETH_ALEN];
    __builtin_memcpy(mac, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
    __be32 a = ip->saddr;
    ip->saddr = ip->daddr;
    ip->daddr = a;
    ip->tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct tcphdr));
    ip->ttl = 64;
    ip->id = 0;
    ip->frag_off = 0;
    ip->check = 0;
    ip->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0));
    __be16 p = t->source;
    t->source = t->dest;
    t->dest = p;
    __u32 seq = bpf_ntohl(t->seq);
    t->ack_seq = bpf_htonl(seq + 1); /* the SYN counts as one */
    t->seq = 0;
    /* flags and data offset: doff 5, RST|ACK */
    ((__u8 *)t)[12] = 5 << 4;
    ((__u8 *)t)[13] = 0x14;
    t->window = 0;
    t->urg_ptr = 0;
    t->check = 0;
    struct {
        __be32 saddr, daddr;
        __u8 zero, proto;
        __be16 len;
    } pseudo = {.saddr = ip->saddr, .daddr = ip->daddr, .proto = IPPROTO_TCP, .len = bpf_htons(sizeof(*t))};
    __s64 sum = bpf_csum_diff(0, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
    sum = bpf_csum_diff(0, 0, (__be32 *)t, sizeof(*t), (__u32)sum);
    t->check = csum_fold(sum);
    return bpf_redirect(skb->ifindex, 0);
}

SEC("tc")
int from_sandbox(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct cn_slot_cfg *cfg = slot_of(skb);
    if (!cfg) return TC_ACT_SHOT;
    __u32 slot = cfg->slot;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return TC_ACT_SHOT;
    if (eth->h_proto != bpf_htons(ETH_P_IP)) {
        count_drop(slot, 0);
        return TC_ACT_SHOT;
    }
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->ihl < 5) {
        count_drop(slot, 0);
        return TC_ACT_SHOT;
    }
    void *l4 = (void *)ip + ip->ihl * 4;
    if (ip->saddr != cfg->addr) return refuse(slot, ip, l4, end, CN_DROP_SPOOF);
    __u32 daddr = ip->daddr;
    if ((daddr & sandbox_mask) == sandbox_net) return refuse(slot, ip, l4, end, CN_DROP_SANDBOX_NET);
    __u16 dport = 0;
    int tcp = ip->protocol == IPPROTO_TCP, new_flow = 1;
    if (tcp) {
        struct tcphdr *t = l4;
        if ((void *)(t + 1) > end) return refuse(slot, ip, l4, end, CN_DROP_NOT_IPV4);
        dport = bpf_ntohs(t->dest);
        new_flow = t->syn && !t->ack;
    } else if (ip->protocol == IPPROTO_UDP) {
        struct udphdr *u = l4;
        if ((void *)(u + 1) > end) return refuse(slot, ip, l4, end, CN_DROP_NOT_IPV4);
        dport = bpf_ntohs(u->dest);
    }
    /* names: every DNS query goes to the node's resolver, whatever server the sandbox asked (the resolver
     * answers for that server's address, and applies the policy to the names) */
    if (ip->protocol == IPPROTO_UDP && dport == 53 && steer(skb, CN_SOCK_DNS) == 0) return pass(slot, skb, 1);
    struct cn_node_key nk = {.prefixlen = 32, .addr = daddr};
    if (bpf_map_lookup_elem(&cn_node_deny, &nk)) return refuse(slot, ip, l4, end, CN_DROP_NODE_DENY);

    /* the kernel's own routing decides what "the node" is: a local or broadcast destination, or no
     * forwarding at all, means the packet would be delivered to the host */
    struct bpf_fib_lookup fib = {0};
    fib.family = 2; /* AF_INET */
    fib.tos = ip->tos;
    fib.l4_protocol = ip->protocol;
    /* tot_len stays 0: the kernel then checks the skb itself against the route's MTU (right for GSO
     * packets) and fills in the egress ifindex even when it answers FRAG_NEEDED */
    fib.ipv4_src = ip->saddr;
    fib.ipv4_dst = daddr;
    fib.ifindex = skb->ifindex;
    long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
    if (rc == BPF_FIB_LKUP_RET_NOT_FWDED) return refuse(slot, ip, l4, end, CN_DROP_HOST);
    /* forwarded, but only out of the uplink (its neighbour may still be unresolved, or the kernel will send
     * "fragmentation needed" itself) */
    if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH &&
         rc != BPF_FIB_LKUP_RET_FRAG_NEEDED) ||
        !uplink_ifindex || fib.ifindex != uplink_ifindex)
        return refuse(slot, ip, l4, end, CN_DROP_NO_UPLINK);

    __u32 tag = bpf_htonl(slot << 1 | (cfg->gen & 1));
    struct cn_rule_key k = {.prefixlen = 64, .tag = tag, .addr = daddr};
    int allow = 0;
    if (tcp && dport == 443 && cfg->rules) {
        /* header rules: the proxy sees every TLS connection's name (and decides, as for names) */
        struct tcphdr *t = l4;
        if ((void *)(t + 1) > end) return refuse(slot, ip, l4, end, CN_DROP_POLICY);
        if ((new_flow ? steer(skb, CN_SOCK_EGRESS) : steer_established(skb, ip, t)) == 0)
            return pass(slot, skb, 1);
    }
    if (bpf_map_lookup_elem(&cn_allow, &k)) {
        allow = 1;
    } else if (tcp && cfg->names && (dport == 80 || dport == 443)) {
        /* web traffic to an address not allowed as such: the proxy checks the name it carries */
        struct tcphdr *t = l4;
        if ((void *)(t + 1) > end) return refuse(slot, ip, l4, end, CN_DROP_POLICY);
        if ((new_flow ? steer(skb, CN_SOCK_EGRESS) : steer_established(skb, ip, t)) == 0)
            return pass(slot, skb, 1);
    } else {
        struct cn_name_key nk = {.tag = tag, .addr = daddr};
        struct cn_name_val *nv = bpf_map_lookup_elem(&cn_names, &nk);
        if (nv) {
            __u64 now = bpf_ktime_get_ns();
            /* a new flow needs a live record; an established TCP flow goes on past the TTL while in use */
            if (!new_flow && tcp) {
                nv->used_ns = now;
                allow = 1;
            } else if (now < nv->expires_ns) {
                allow = 1;
            }
        }
    }
    if (!allow) {
        if (bpf_map_lookup_elem(&cn_deny, &k))
            allow = 0;
        else
            allow = cfg->default_allow && !bpf_map_lookup_elem(&cn_private, &nk);
    }
    if (!allow) {
        if (tcp && new_flow && ip->ihl == 5) {
            /* a refused connection is refused at once (ECONNREFUSED), not left to time out */
            count_drop(slot, 1);
            audit(slot, ip, l4, end, CN_DROP_POLICY, 0);
            return reset_back(skb);
        }
        return refuse(slot, ip, l4, end, CN_DROP_POLICY);
    }
    if (cfg->audit_allowed) audit(slot, ip, l4, end, CN_ALLOW, 1);
    if (tcp && cfg->socks) {
        /* tunnelled on the node; without the proxy there is no way out (fails closed) */
        struct tcphdr *t = l4;
        if ((void *)(t + 1) > end) return refuse(slot, ip, l4, end, CN_DROP_POLICY);
        if ((new_flow ? steer(skb, CN_SOCK_EGRESS) : steer_established(skb, ip, t)) == 0)
            return pass(slot, skb, 1);
        return refuse(slot, ip, l4, end, CN_DROP_POLICY);
    }
    return pass(slot, skb, 1);
}

SEC("tc")
int to_sandbox(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct cn_slot_cfg *cfg = slot_of(skb);
    if (!cfg) return TC_ACT_SHOT;
    __u32 slot = cfg->slot;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->daddr != cfg->addr ||
        (ip->saddr & sandbox_mask) == sandbox_net) {
        count_drop(slot, 0);
        return TC_ACT_SHOT;
    }
    return pass(slot, skb, 0);
}
