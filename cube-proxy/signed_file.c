/* A signed file URL's fields, from the request line of a head (see proxy.h: proxy_parse_signed_file). */
#include <string.h>
#include <strings.h>

#include "proxy.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* s[0..n) form-decoded (%HH, '+' a space: what the agent's HTTP library does with a query) into out; -1 when
 * it does not fit, has a bad escape or decodes to a NUL. */
static int form_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (c == '\0' || o + 1 >= cap) return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

int proxy_parse_signed_file(const char *head, proxy_signed_file *f)
{
    memset(f, 0, sizeof(*f));
    const char *target;
    if (strncmp(head, "GET ", 4) == 0) {
        f->operation = "read";
        target = head + 4;
    } else if (strncmp(head, "POST ", 5) == 0) {
        f->operation = "write";
        target = head + 5;
    } else {
        return -1;
    }
    if (strncmp(target, "/files?", 7) != 0) return -1;
    const char *q = target + 7, *end = q + strcspn(q, " \r\n");
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        if (eq) {
            size_t kn = (size_t)(eq - q), vn = (size_t)(stop - eq - 1);
            char *dst = NULL;
            size_t cap = 0;
            if (kn == 4 && strncmp(q, "path", 4) == 0) {
                dst = f->path, cap = sizeof(f->path);
            } else if (kn == 8 && strncmp(q, "username", 8) == 0) {
                dst = f->username, cap = sizeof(f->username);
            } else if (kn == 9 && strncmp(q, "signature", 9) == 0) {
                dst = f->signature, cap = sizeof(f->signature);
            } else if (kn == 20 && strncmp(q, "signature_expiration", 20) == 0) {
                dst = f->expiration, cap = sizeof(f->expiration);
            }
            if (dst && form_decode(eq + 1, vn, dst, cap) < 0) return -1;
        }
        q = stop + 1;
    }
    return *f->signature ? 0 : 1;
}
