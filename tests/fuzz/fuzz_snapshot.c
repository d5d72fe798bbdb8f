/* A kvm snapshot file as restore reads it: sections checked before any is used. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    snap_file s;
    cube_err err = {0};
    if (snap_parse(&s, buf, size, &err) == 0) { /* takes buf */
        for (uint32_t i = 0; i < s.n; i++) snap_get(&s, s.secs[i].type, s.secs[i].id, s.secs[i].len);
        snap_close(&s);
    }
    return 0;
}
