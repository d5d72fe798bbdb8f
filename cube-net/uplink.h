/* The node's uplink: IPv4 forwarding on, and sandbox traffic masqueraded out of one interface (an nftables
 * table of cube-net's own, through libnftables). Only when the operator names an uplink. */
#ifndef CUBE_NET_UPLINK_H
#define CUBE_NET_UPLINK_H

#include "err.h"

/* The nftables table is named after tag (the interface prefix), so cube-nets on one host keep apart. Each
 * source address in cidr (a sandbox) may have flows_max tracked flows forwarded at once; its new ones beyond
 * are dropped (a kernel without nftables' connlimit keeps no cap, said). */
int cn_uplink_enable(const char *tag, const char *uplink, const char *cidr, int flows_max, cube_err *err);
void cn_uplink_disable(const char *tag);

#endif
