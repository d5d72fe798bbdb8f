/* IPv4 prefixes (see netaddr.h). */
#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cube_parse_ipv4_prefix(const char *s, uint32_t *addr, uint8_t *plen, cube_err *err)
{
    char buf[64];
    if (!s || !*s) return cube_err_set(err, EINVAL, "empty address in network rules");
    if (strlen(s) >= sizeof(buf))
        return cube_err_set(err, EINVAL, "'%.40s...' is not an IPv4 address or CIDR", s);
    snprintf(buf, sizeof(buf), "%s", s);
    if (strchr(buf, ':'))
        return cube_err_set(err, EINVAL, "'%s': IPv6 is not supported (sandboxes have IPv4 only)", s);
    long len = 32;
    char *slash = strchr(buf, '/');
    if (slash) {
        *slash = '\0';
        char *end;
        errno = 0;
        len = strtol(slash + 1, &end, 10);
        if (errno || end == slash + 1 || *end || len < 0 || len > 32)
            return cube_err_set(err, EINVAL, "'%s': the prefix length must be 0..32", s);
    }
    struct in_addr a;
    if (inet_pton(AF_INET, buf, &a) != 1) {
        for (const char *p = buf; *p; p++)
            if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
                return cube_err_set(err, EINVAL,
                                    "'%s': domain names are not supported in network rules; give IPv4 "
                                    "addresses or CIDRs",
                                    s);
        return cube_err_set(err, EINVAL, "'%s' is not an IPv4 address or CIDR", s);
    }
    uint32_t mask = len ? htonl(~0u << (32 - len)) : 0;
    *addr = a.s_addr & mask;
    *plen = (uint8_t)len;
    return 0;
}
