/* HTTP/1 request rewriting for header rules (see egress_http.h). */
#include "egress_http.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_TRAILER, RAW };

static int put(cn_buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void cn_buf_free(cn_buf *b)
{
    if (b->data) memset(b->data, 0, b->cap); /* injected values */
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void cn_http_rw_init(cn_http_rw *rw, const char *host, int nrules, const char *const *names,
                     const char *const *values)
{
    memset(rw, 0, sizeof(*rw));
    rw->state = HEAD;
    rw->host = host;
    rw->nrules = nrules;
    rw->names = names;
    rw->values = values;
}

static bool name_is(const char *line, size_t nlen, const char *name)
{
    return strlen(name) == nlen && strncasecmp(line, name, nlen) == 0;
}

/* one complete head (head_len bytes, ending in the empty line): rewritten into out; the next state set */
static int rewrite_head(cn_http_rw *rw, cn_buf *out)
{
    char *h = rw->head, *end = rw->head + rw->head_len;
    char *eol = memchr(h, '\n', (size_t)(end - h));
    if (!eol || eol == h || eol[-1] != '\r') return 400;
    /* request line: METHOD SP target SP HTTP/1.x */
    char *sp1 = memchr(h, ' ', (size_t)(eol - h));
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || eol - 1 - (sp2 + 1) != 8 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) return 400;
    bool connect = sp1 - h == 7 && strncmp(h, "CONNECT", 7) == 0;
    if (put(out, h, (size_t)(eol + 1 - h)) < 0) return 500;
    bool chunked = false, upgrade = false, have_cl = false, have_host = false;
    uint64_t cl = 0;
    for (char *line = eol + 1; line < end;) {
        char *le = memchr(line, '\n', (size_t)(end - line));
        if (!le || le == line || le[-1] != '\r') return 400;
        size_t len = (size_t)(le - 1 - line);
        if (len == 0) break;                               /* the empty line */
        if (line[0] == ' ' || line[0] == '\t') return 400; /* obsolete folding: never guessed at */
        char *colon = memchr(line, ':', len);
        if (!colon || colon == line) return 400;
        size_t nlen = (size_t)(colon - line);
        for (size_t i = 0; i < nlen; i++)
            if (line[i] <= ' ' || line[i] == 0x7f) return 400; /* "Name :" and the like */
        char *v = colon + 1, *ve = line + len;
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        size_t vlen = (size_t)(ve - v);
        bool drop = false;
        for (int r = 0; r < rw->nrules && !drop; r++) drop = name_is(line, nlen, rw->names[r]);
        if (name_is(line, nlen, "host")) {
            if (have_host) return 400;
            have_host = true;
            size_t hl = vlen;
            char *c = memchr(v, ':', vlen);
            if (c) hl = (size_t)(c - v);
            if (strlen(rw->host) != hl || strncasecmp(v, rw->host, hl) != 0) return 421;
        } else if (name_is(line, nlen, "content-length")) {
            uint64_t n = 0;
            if (vlen == 0 || vlen > 18) return 400;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9') return 400;
                n = n * 10 + (uint64_t)(v[i] - '0');
            }
            if (have_cl && n != cl) return 400;
            have_cl = true;
            cl = n;
        } else if (name_is(line, nlen, "transfer-encoding")) {
            /* only chunked, last: anything else cannot be framed here */
            if (vlen < 7 || strncasecmp(ve - 7, "chunked", 7) != 0) return 400;
            chunked = true;
        } else if (name_is(line, nlen, "upgrade")) {
            upgrade = true;
        }
        if (!drop && put(out, line, (size_t)(le + 1 - line)) < 0) return 500;
        line = le + 1;
    }
    if (!have_host) return 421;
    if (chunked && have_cl) return 400; /* the smuggler's pair */
    for (int r = 0; r < rw->nrules; r++)
        if (put(out, rw->names[r], strlen(rw->names[r])) < 0 || put(out, ": ", 2) < 0 ||
            put(out, rw->values[r], strlen(rw->values[r])) < 0 || put(out, "\r\n", 2) < 0)
            return 500;
    if (put(out, "\r\n", 2) < 0) return 500;
    rw->requests++;
    if (connect || upgrade)
        rw->state = RAW;
    else if (chunked)
        rw->state = CHUNK_SIZE;
    else if (cl) {
        rw->state = BODY;
        rw->remaining = cl;
    } else
        rw->state = HEAD;
    return 0;
}

/* a line of the chunked framing (size or trailer): line_len bytes ending in '\n' */
static int chunk_line(cn_http_rw *rw, cn_buf *out)
{
    if (put(out, rw->line, rw->line_len) < 0) return 500;
    size_t n = rw->line_len;
    rw->line_len = 0;
    if (rw->state == CHUNK_TRAILER) {
        if (n <= 2) rw->state = HEAD; /* the empty line ends the message */
        return 0;
    }
    uint64_t size = 0;
    size_t i = 0;
    for (; i < n; i++) {
        char c = rw->line[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) break;
        if (i >= 15) return 400;
        size = size * 16 + (uint64_t)d;
    }
    if (i == 0 || (rw->line[i] != ';' && rw->line[i] != '\r' && rw->line[i] != ' ' && rw->line[i] != '\t'))
        return 400;
    if (size == 0) {
        rw->state = CHUNK_TRAILER;
    } else {
        rw->state = CHUNK_DATA;
        rw->remaining = size + 2; /* and its CRLF */
    }
    return 0;
}

int cn_http_rw_feed(cn_http_rw *rw, const uint8_t *in, size_t len, cn_buf *out)
{
    while (len) {
        switch (rw->state) {
        case RAW:
            return put(out, in, len) < 0 ? 500 : 0;
        case BODY:
        case CHUNK_DATA: {
            size_t n = rw->remaining < len ? (size_t)rw->remaining : len;
            if (put(out, in, n) < 0) return 500;
            rw->remaining -= n;
            in += n;
            len -= n;
            if (!rw->remaining) rw->state = rw->state == BODY ? HEAD : CHUNK_SIZE;
            break;
        }
        case CHUNK_SIZE:
        case CHUNK_TRAILER: {
            const uint8_t *nl = memchr(in, '\n', len);
            size_t n = nl ? (size_t)(nl - in) + 1 : len;
            if (rw->line_len + n > sizeof(rw->line)) return 400;
            memcpy(rw->line + rw->line_len, in, n);
            rw->line_len += n;
            in += n;
            len -= n;
            if (nl) {
                int st = chunk_line(rw, out);
                if (st) return st;
            }
            break;
        }
        default: { /* HEAD: up to the empty line */
            size_t n = 0;
            bool done = false;
            while (n < len && !done) {
                if (rw->head_len == sizeof(rw->head)) return 431;
                rw->head[rw->head_len++] = (char)in[n++];
                done = rw->head_len >= 4 && memcmp(rw->head + rw->head_len - 4, "\r\n\r\n", 4) == 0;
            }
            in += n;
            len -= n;
            if (done) {
                int st = rewrite_head(rw, out);
                memset(rw->head, 0, rw->head_len);
                rw->head_len = 0;
                if (st) return st;
            }
            break;
        }
        }
    }
    return 0;
}
