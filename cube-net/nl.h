/* rtnetlink requests cube-net needs, over libmnl: one socket per network namespace (a netlink socket acts in
 * the namespace it was created in). Every call waits for the kernel's ack and returns 0 or -1 with err set.
 */
#ifndef CUBE_NET_NL_H
#define CUBE_NET_NL_H

#include <stdint.h>

#include "err.h"

typedef struct cn_nl cn_nl;

/* A socket in the calling thread's current network namespace. */
cn_nl *cn_nl_open(cube_err *err);
void cn_nl_close(cn_nl *nl);

/* A veth pair: host side `name` (MAC host_mac) here, peer `peer_name` with ifindex peer_index and MAC
 * peer_mac in the namespace netns_fd. Returns the host side's ifindex. */
int cn_nl_add_veth(cn_nl *nl, const char *name, const uint8_t host_mac[6], const char *peer_name,
                   int peer_index, const uint8_t peer_mac[6], int netns_fd, cube_err *err);
int cn_nl_link_up(cn_nl *nl, int ifindex, cube_err *err);
int cn_nl_link_del(cn_nl *nl, int ifindex, cube_err *err);
/* Puts ifindex in link group `group` (IFLA_GROUP). */
int cn_nl_link_set_group(cn_nl *nl, int ifindex, uint32_t group, cube_err *err);
/* Deletes every link in group at once: the kernel unregisters them as one batch, with one wait for RCU
 * readers, where deleting them one by one waits that long for each. None there is not an error. */
int cn_nl_group_del(cn_nl *nl, uint32_t group, cube_err *err);
/* The ifindex of a link by name, or 0 when there is none. */
int cn_nl_link_index(cn_nl *nl, const char *name, cube_err *err);
/* addr/prefix on ifindex (IPv4, network order). */
int cn_nl_addr_add(cn_nl *nl, int ifindex, uint32_t addr, int prefix, cube_err *err);
/* dst/prefix via gw (0: directly on the link) out of ifindex, in the main table. */
int cn_nl_route_add(cn_nl *nl, int ifindex, uint32_t dst, int prefix, uint32_t gw, cube_err *err);
/* A permanent neighbour entry: no ARP on the sandbox links. */
int cn_nl_neigh_add(cn_nl *nl, int ifindex, uint32_t addr, const uint8_t mac[6], cube_err *err);
/* "Everything is local" in table (route type local, 0.0.0.0/0 on lo) and a rule sending packets with mark to
 * that table at priority: how packets steered by the BPF programs reach the node's sockets. Replaces what is
 * there (idempotent); the _del calls remove them (missing ones are not an error). */
int cn_nl_local_table_add(cn_nl *nl, uint32_t table, cube_err *err);
int cn_nl_local_table_del(cn_nl *nl, uint32_t table, cube_err *err);
int cn_nl_mark_rule_add(cn_nl *nl, uint32_t mark, uint32_t table, uint32_t priority, cube_err *err);
int cn_nl_mark_rule_del(cn_nl *nl, uint32_t mark, uint32_t table, uint32_t priority, cube_err *err);

#endif
