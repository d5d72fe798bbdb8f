/* cube-net's egress proxy: the name in a sandbox's first bytes (TLS ClientHello SNI, HTTP Host). The first
 * byte picks the parser; every prefix of the rest is tried as the proxy would see it arrive. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "egress_head.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > CN_HEAD_MAX + 1) return 0;
    int tls = data[0] & 1;
    data++;
    size--;
    /* a copy of exactly size bytes: reads past it are caught */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    char name[254];
    for (size_t len = size > 64 ? size - 64 : 0; len <= size; len++) {
        int rc = tls ? cn_tls_sni(buf, len, name, sizeof(name)) : cn_http_host(buf, len, name, sizeof(name));
        if (rc == 1 && strlen(name) >= sizeof(name)) abort();
    }
    free(buf);
    return 0;
}
