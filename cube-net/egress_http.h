/* The request side of an HTTP/1 connection the egress proxy injects headers into: request heads are parsed
 * and rewritten (the rule's headers replace any of the same name; the Host must be the name the connection
 * was allowed for), bodies pass through by their framing (Content-Length, chunked), an upgrade passes the
 * rest through untouched. Parses bytes a sandbox sends: fuzzed (tests/fuzz/fuzz_egress_http.c). */
#ifndef CUBE_NET_EGRESS_HTTP_H
#define CUBE_NET_EGRESS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define CN_HTTP_HEAD_MAX 65536

typedef struct cn_buf {
    uint8_t *data;
    size_t len, cap;
} cn_buf;

typedef struct cn_http_rw {
    int state;
    uint64_t remaining;
    char head[CN_HTTP_HEAD_MAX];
    size_t head_len;
    char line[1024];
    size_t line_len;
    const char *host; /* what every request's Host must be */
    int nrules;
    const char *const *names, *const *values;
    int requests; /* heads rewritten so far */
} cn_http_rw;

void cn_http_rw_init(cn_http_rw *rw, const char *host, int nrules, const char *const *names,
                     const char *const *values);
/* Takes in bytes from the sandbox; appends what goes upstream to out. 0, or an HTTP status the proxy answers
 * the sandbox with before closing (400 malformed or ambiguous, 421 another host, 431 head too large, 500 out
 * of memory). */
int cn_http_rw_feed(cn_http_rw *rw, const uint8_t *in, size_t len, cn_buf *out);
void cn_buf_free(cn_buf *b);

#endif
