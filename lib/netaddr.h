/* IPv4 addresses and CIDRs as users write them in network rules (E2B allowOut/denyOut). */
#ifndef CUBE_NETADDR_H
#define CUBE_NETADDR_H

#include <stdint.h>

#include "err.h"

/* Parses "a.b.c.d" or "a.b.c.d/n" into addr (network order, host bits cleared) and len; clear errors for
 * domain names, IPv6 and junk (EINVAL). */
int cube_parse_ipv4_prefix(const char *s, uint32_t *addr, uint8_t *len, cube_err *err);

#endif
