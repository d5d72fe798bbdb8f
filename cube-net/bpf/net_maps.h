/* What the sandbox network programs and cube-net share: map keys and values. Plain fixed-width types, so the
 * BPF object and the user-space loader read the same layout. */
#ifndef CUBE_NET_MAPS_H
#define CUBE_NET_MAPS_H

#include <linux/types.h>

#define CN_MAX_SLOTS 16384 /* network slots per node (addresses in the node CIDR) */
#define CN_MAX_RULES 65536 /* allow/deny prefixes over all slots */

/* The host-side interface of a slot (keyed by ifindex): which slot, its address, its policy generation. */
struct cn_slot_cfg {
    __u32 slot;
    __u32 addr;         /* the sandbox's IPv4 address, network order */
    __u32 gen;          /* policy generation: rule keys carry (slot << 1 | gen & 1) */
    __u8 default_allow; /* verdict when no rule matches: E2B allow_internet_access */
    __u8 audit_allowed; /* also log allowed new connections */
    __u8 names; /* the policy allows domain names: TCP 80/443 not allowed by address goes to the egress
                 * proxy, which checks the name on the connection */
    __u8 socks; /* an egress proxy (SOCKS5): every allowed TCP connection goes to the node's egress proxy,
                 * which tunnels it (or refuses it: never direct) */
    __u8 rules; /* header rules: TCP 443 goes to the egress proxy whatever the address (it may inject) */
    __u8 pad[3];
};

#define CN_MAX_NAME_ADDRS 65536 /* addresses allowed through names, over all slots */

/* An address that an allowed name resolved to for a slot (written by the node's resolver). */
struct cn_name_key {
    __u32 tag;  /* network order (slot << 1 | generation bit), as in cn_rule_key */
    __u32 addr; /* network order */
};

struct cn_name_val {
    __u64 expires_ns; /* CLOCK_MONOTONIC: new connections until then (the record's TTL) */
    __u64 used_ns;    /* last packet of an established flow (kept after expiry while in use) */
};

/* The node's sockets the programs steer to (a SOCKMAP: index -> socket in the node's namespace). */
enum cn_sock_index {
    CN_SOCK_DNS = 0,    /* UDP: every DNS query a sandbox sends */
    CN_SOCK_EGRESS = 1, /* TCP listener: connections the egress proxy decides (names) or tunnels (SOCKS5) */
    CN_SOCK_MAX = 2,
};

/* LPM key of a per-slot rule: the first 32 bits (slot tag) always match exactly. */
struct cn_rule_key {
    __u32 prefixlen; /* 32 + the CIDR's length */
    __u32 tag;       /* network order (slot << 1 | generation bit) */
    __u32 addr;      /* network order */
};

/* LPM key of a node-wide rule (the operator's deny list). */
struct cn_node_key {
    __u32 prefixlen;
    __u32 addr;
};

/* Counters per slot (per CPU), read by cube-net for Stats and /metrics. */
struct cn_counters {
    __u64 tx_bytes, tx_packets; /* from the sandbox, allowed */
    __u64 rx_bytes, rx_packets; /* to the sandbox, allowed */
    __u64 dropped;              /* every packet dropped, either way */
    __u64 denied;               /* of those, egress refused by policy */
};

enum cn_reason {
    CN_ALLOW = 0,
    CN_DROP_NOT_IPV4 = 1,
    CN_DROP_SPOOF = 2,
    CN_DROP_SANDBOX_NET = 3, /* another sandbox, or the node's sandbox range */
    CN_DROP_HOST = 4,        /* an address of the node itself */
    CN_DROP_NODE_DENY = 5,   /* the operator's deny list */
    CN_DROP_POLICY = 6,      /* the sandbox's own policy */
    CN_DROP_NO_UPLINK = 7,   /* forwarding is off: there is nowhere to go */
    CN_DROP_UNKNOWN_IF = 8,  /* an interface with no slot (being built or torn down) */
};

/* One audit record: a new connection attempt (TCP SYN) or a refused packet. */
struct cn_event {
    __u32 slot;
    __u32 saddr, daddr; /* network order */
    __u16 sport, dport; /* host order */
    __u8 proto;
    __u8 reason; /* enum cn_reason; CN_ALLOW for an allowed connection */
    __u8 pad[2];
};

#endif
