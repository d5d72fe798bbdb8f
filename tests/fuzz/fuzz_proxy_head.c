/* cube-proxy's request head: the routing target from E2b-Sandbox-Id/Port headers or Host, and a signed file
 * URL's fields from its request line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *head = malloc(size + 1);
    if (!head) return 0;
    memcpy(head, data, size);
    head[size] = '\0'; /* the relay hands the parser a NUL-terminated head */
    proxy_target t;
    proxy_parse_target(head, "", &t);
    proxy_parse_target(head, "e2b.app", &t);
    proxy_signed_file f;
    proxy_parse_signed_file(head, &f);
    free(head);
    return 0;
}
