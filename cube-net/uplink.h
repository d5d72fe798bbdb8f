/* The node's uplink: IPv4 forwarding on, and sandbox traffic masqueraded out of one interface (an nftables
 * table of cube-net's own, through libnftables). Only when the operator names an uplink. */
#ifndef CUBE_NET_UPLINK_H
#define CUBE_NET_UPLINK_H

#include "err.h"

int cn_uplink_enable(const char *uplink, const char *cidr, cube_err *err);
void cn_uplink_disable(void);
/* Writes value to a sysctl file of the calling thread's network namespace. */
int cn_sysctl(const char *path, const char *value, cube_err *err);

#endif
