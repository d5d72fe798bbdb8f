/* cube-net's resolver: a sandbox's query (parsed, refused in place) and an upstream's answer to it. The
 * input is a query and an answer, split at the first byte's value. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192) return 0;
    size_t split = data[0];
    data++;
    size--;
    if (split > size) split = size;
    uint8_t *query = malloc(split ? split : 1), *answer = malloc(size - split ? size - split : 1);
    uint8_t *out = malloc(split ? split : 1);
    if (!query || !answer || !out) abort();
    memcpy(query, data, split);
    memcpy(answer, data + split, size - split);
    cn_dns_question q = {0};
    if (cn_dns_parse_query(query, split, &q) == 0) {
        if (cn_dns_reply_empty(query, split, 5, out) > split) abort();
        uint32_t addrs[8], ttl;
        int n = cn_dns_parse_answer(answer, size - split, &q, addrs, 8, &ttl);
        if (n > 8) abort();
    } else {
        uint32_t addrs[8], ttl;
        snprintf(q.name, sizeof(q.name), "example.com");
        q.qtype = 1;
        cn_dns_parse_answer(answer, size - split, &q, addrs, 8, &ttl);
    }
    free(query);
    free(answer);
    free(out);
    return 0;
}
