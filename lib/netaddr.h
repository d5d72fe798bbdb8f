/* IPv4 addresses and CIDRs as users write them in network rules (E2B allowOut/denyOut). */
#ifndef CUBE_NETADDR_H
#define CUBE_NETADDR_H

#include <stdint.h>

#include "err.h"

/* Parses "a.b.c.d" or "a.b.c.d/n" into addr (network order, host bits cleared) and len; clear errors for
 * domain names, IPv6 and junk (EINVAL). */
int cube_parse_ipv4_prefix(const char *s, uint32_t *addr, uint8_t *len, cube_err *err);

/* Longest domain name in presentation form, without the trailing dot (RFC 1035: 253 characters). */
#define CUBE_DOMAIN_MAX 254

/* Parses a domain name as E2B's allowOut takes it: "api.example.com" or a wildcard "*.example.com" (which
 * matches every name under example.com, not example.com itself). Labels of letters, digits, '-' and '_',
 * 1..63 characters, 253 in all; one trailing dot allowed. Writes the lowercased name without the trailing
 * dot into out. A bare "*", a '*' anywhere else, an address or junk: EINVAL naming what is wrong. */
int cube_parse_domain_pattern(const char *s, char out[CUBE_DOMAIN_MAX], cube_err *err);

/* Whether name (as it came in a DNS question, a TLS SNI or an HTTP Host; any case, an optional trailing dot)
 * matches pattern (as cube_parse_domain_pattern wrote it). */
int cube_domain_match(const char *pattern, const char *name);

#endif
