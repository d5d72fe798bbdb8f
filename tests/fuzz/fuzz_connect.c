/* envd's Connect protocol as the agent reads it: one envelope, its JSON payload, base64 bytes fields. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "connect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t flags;
    const unsigned char *payload;
    size_t plen;
    const char *why;
    if (connect_envelope_parse(data, size, &flags, &payload, &plen, &why) == 0) {
        cJSON *j = cJSON_ParseWithLength((const char *)payload, plen);
        cJSON_Delete(j);
    }
    /* base64 as proto-JSON bytes arrive (stdin, pty input, file contents) */
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    size_t n;
    free(b64_decode(s, &n));
    free(s);
    return 0;
}
