/* IPv4 prefixes (see netaddr.h). */
#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

int cube_parse_domain_pattern(const char *s, char out[CUBE_DOMAIN_MAX], cube_err *err)
{
    if (!s || !*s) return cube_err_set(err, EINVAL, "empty domain name");
    size_t n = strlen(s);
    if (n > 1 && s[n - 1] == '.') n--;
    const char *p = s;
    size_t o = 0;
    if (n >= 2 && p[0] == '*' && p[1] == '.') {
        out[o++] = '*';
        out[o++] = '.';
        p += 2;
        n -= 2;
    } else if (n == 1 && *p == '*') {
        return cube_err_set(err, EINVAL,
                            "'*' alone would match every name: give a domain, e.g. '*.example.com'");
    }
    if (n == 0 || n > CUBE_DOMAIN_MAX - 1 - o)
        return cube_err_set(err, EINVAL, "'%.64s' is not a domain name (1..253 characters)", s);
    size_t label = 0;
    int letters = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '.') {
            if (label == 0) return cube_err_set(err, EINVAL, "'%.64s': empty label in a domain name", s);
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_') {
            letters = 1;
            label++;
        } else if (c >= '0' && c <= '9') {
            label++;
        } else if (c == '*') {
            return cube_err_set(err, EINVAL, "'%.64s': a wildcard is only allowed as the first label ('*.')",
                                s);
        } else {
            return cube_err_set(err, EINVAL, "'%.64s' is not a domain name (character '%c')", s, c);
        }
        if (label > 63) return cube_err_set(err, EINVAL, "'%.64s': a label is longer than 63 characters", s);
        out[o++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    if (label == 0) return cube_err_set(err, EINVAL, "'%.64s': empty label in a domain name", s);
    /* all digits and dots is an address, never a name (and "1.2.3.4.5" is a typo, not a host) */
    if (!letters) return cube_err_set(err, EINVAL, "'%.64s' is not an IPv4 address, CIDR or domain name", s);
    out[o] = '\0';
    return 0;
}

int cube_domain_match(const char *pattern, const char *name)
{
    size_t n = strlen(name);
    if (n > 1 && name[n - 1] == '.') n--;
    if (pattern[0] == '*' && pattern[1] == '.') {
        size_t sl = strlen(pattern + 1); /* ".example.com" */
        return n > sl && strncasecmp(name + n - sl, pattern + 1, sl) == 0;
    }
    return strlen(pattern) == n && strncasecmp(name, pattern, n) == 0;
}
