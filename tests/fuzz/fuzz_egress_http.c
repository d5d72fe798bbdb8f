/* cube-net's egress proxy: the HTTP/1 request stream of a sandbox, rewritten for header rules. The first byte
 * sets how the rest is cut into the pieces the proxy would read. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "egress_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 18) return 0;
    size_t piece = (size_t)data[0] + 1;
    data++;
    size--;
    static const char *const names[] = {"Authorization", "X-Key"};
    static const char *const values[] = {"Bearer secret", "v"};
    cn_http_rw *rw = malloc(sizeof(*rw));
    if (!rw) return 0;
    cn_http_rw_init(rw, "api.example.com", 2, names, values);
    cn_buf out = {0};
    for (size_t off = 0; off < size;) {
        size_t n = size - off < piece ? size - off : piece;
        uint8_t *copy = malloc(n); /* exactly n bytes: reads past the piece are caught */
        if (!copy) break;
        memcpy(copy, data + off, n);
        int st = cn_http_rw_feed(rw, copy, n, &out);
        free(copy);
        off += n;
        if (st) {
            if (st != 400 && st != 421 && st != 431 && st != 500) abort();
            break;
        }
        out.len = 0;
    }
    cn_buf_free(&out);
    free(rw);
    return 0;
}
