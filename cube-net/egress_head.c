/* SNI and Host from a connection's first bytes (see egress_head.h). */
#include "egress_head.h"

#include <string.h>
#include <strings.h>

/* a name as the proxy compares it: letters, digits, '-', '_', '.'; lowercased; a trailing dot dropped */
static int copy_name(const uint8_t *s, size_t n, char *out, size_t cap)
{
    if (n && s[n - 1] == '.') n--;
    if (n == 0 || n >= cap) return -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 'A' && c <= 'Z') c = (uint8_t)(c - 'A' + 'a');
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            return -1;
        out[i] = (char)c;
    }
    out[n] = '\0';
    return 1;
}

static unsigned be16(const uint8_t *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

int cn_tls_sni(const uint8_t *buf, size_t len, char *out, size_t cap)
{
    if (len < 5) return len && buf[0] != 0x16 ? -1 : 0;
    if (buf[0] != 0x16 || buf[1] != 3) return -1; /* a handshake record, TLS */
    size_t rec = be16(buf + 3);
    if (rec < 4 || rec > 16384) return -1;
    if (len < 5 + rec) return 0;
    const uint8_t *h = buf + 5;
    if (h[0] != 1) return -1; /* ClientHello */
    size_t hs = (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    if (hs > rec - 4) return -1; /* split over records: not taken */
    /* offsets into the ClientHello body, each step checked against its end */
    const uint8_t *b = h + 4;
    size_t at = 2 + 32, end = hs; /* version, random */
    if (at + 1 > end) return -1;
    at += 1 + b[at]; /* session id */
    if (at + 2 > end) return -1;
    at += 2 + be16(b + at); /* cipher suites */
    if (at + 1 > end) return -1;
    at += 1 + b[at]; /* compression methods */
    if (at + 2 > end) return -1;
    size_t ext_end = at + 2 + be16(b + at);
    at += 2;
    if (ext_end > end) return -1;
    while (at + 4 <= ext_end) {
        unsigned type = be16(b + at);
        size_t elen = be16(b + at + 2);
        at += 4;
        if (at + elen > ext_end) return -1;
        if (type == 0) { /* server_name: a list of (type, name); the host_name entry */
            size_t q = at + 2, qend = at + elen;
            if (q > qend) return -1;
            while (q + 3 <= qend) {
                unsigned nt = b[q];
                size_t nl = be16(b + q + 1);
                q += 3;
                if (q + nl > qend) return -1;
                if (nt == 0) return copy_name(b + q, nl, out, cap);
                q += nl;
            }
            return -1;
        }
        at += elen;
    }
    return -1;
}

int cn_http_host(const uint8_t *buf, size_t len, char *out, size_t cap)
{
    /* the head ends at the first empty line; a name only from a complete head */
    const uint8_t *end = NULL;
    for (size_t i = 0; i + 3 < len && !end; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n')
            end = buf + i + 2;
    if (!end) {
        /* a method is letters then a space: anything else is not HTTP, whatever follows */
        for (size_t i = 0; i < len; i++) {
            if (buf[i] == ' ' && i > 0) break;
            if (buf[i] < 'A' || buf[i] > 'Z' || i > 16) return -1;
        }
        return len >= CN_HEAD_MAX ? -1 : 0;
    }
    const uint8_t *line = memchr(buf, '\n', (size_t)(end - buf));
    while (line && line + 1 < end) {
        line++;
        const uint8_t *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) break;
        size_t n = (size_t)(eol - line);
        if (n && line[n - 1] == '\r') n--;
        if (n > 5 && strncasecmp((const char *)line, "host:", 5) == 0) {
            const uint8_t *v = line + 5, *ve = line + n;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            const uint8_t *colon = memchr(v, ':', (size_t)(ve - v));
            if (colon) { /* a port: digits only */
                for (const uint8_t *d = colon + 1; d < ve; d++)
                    if (*d < '0' || *d > '9') return -1;
                ve = colon;
            }
            return copy_name(v, (size_t)(ve - v), out, cap);
        }
        line = eol;
    }
    return -1;
}
