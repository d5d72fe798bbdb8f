/* A guest's virtqueue: the descriptor table and rings are whatever the guest wrote. The input's first bytes
 * set the queue (size, addresses), the rest is guest memory; every chain the device pops is read and written
 * back as a device would. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "virtq.h"

#define MEM 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 16) return 0;
    uint8_t *mem = calloc(1, MEM);
    if (!mem) return 0;
    memcpy(mem, data + 16, size - 16 > MEM ? MEM : size - 16);
    gmem m = {mem, MEM};
    virtq q = {0};
    q.num = (uint16_t)(1u << (data[0] % 9)); /* 1..256 */
    q.desc_gpa = (uint64_t)(data[1] | data[2] << 8) * 16 % MEM;
    q.avail_gpa = (uint64_t)(data[3] | data[4] << 8) * 2 % MEM;
    q.used_gpa = (uint64_t)(data[5] | data[6] << 8) * 4 % MEM;
    q.last_avail = (uint16_t)(data[7] | data[8] << 8);
    q.ready = true;
    cube_err err = {0};
    if (vq_validate(&q, &m, &err) == 0) {
        uint8_t scratch[4096];
        for (int i = 0; i < 512; i++) {
            vq_chain c;
            int rc = vq_pop(&q, &m, &c, &err);
            if (rc == 0) break;
            uint32_t len = 0;
            if (rc == 1) {
                size_t n = vq_read(&c, data[9], scratch, sizeof(scratch));
                len = (uint32_t)vq_write(&c, data[10], scratch, n);
                vq_readable_len(&c);
            }
            vq_push(&q, &m, c.head, len);
            vq_should_notify(&q, &m);
        }
    }
    free(mem);
    return 0;
}
