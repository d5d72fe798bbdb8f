/* A guest's physical memory as the VMM sees it: one mapping from guest physical address 0. Every access a
 * guest can steer (a descriptor's address, a buffer's length) goes through gmem_ptr, which refuses ranges
 * that leave the guest's memory: a guest can point the device model anywhere, never outside its own RAM. */
#ifndef CUBE_KVM_GUEST_MEM_H
#define CUBE_KVM_GUEST_MEM_H

#include <stddef.h>
#include <stdint.h>

typedef struct gmem {
    uint8_t *base;
    uint64_t size;
} gmem;

/* The host address of [gpa, gpa + len), or NULL when any of it is outside guest memory. */
static inline void *gmem_ptr(const gmem *m, uint64_t gpa, uint64_t len)
{
    if (gpa > m->size || len > m->size - gpa) return NULL;
    return m->base + gpa;
}

#endif
