/* A string's FNV-1a hash: spreads short keys (ids, addresses, names) over a table's buckets. Not for anything
 * a client could use to aim at one bucket on purpose where that matters. */
#ifndef CUBE_HASH_H
#define CUBE_HASH_H

#include <stdint.h>

static inline uint32_t cube_fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

#endif
