/* When a sandbox agent's short HTTP answer is complete (lib/netns.h): bytes the sandbox chose. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "netns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1); /* exactly its bytes, no terminator: a read-past shows */
    if (!buf) return 0;
    memcpy(buf, data, size);
    cube_http_answer_complete(buf, size);
    free(buf);
    return 0;
}
