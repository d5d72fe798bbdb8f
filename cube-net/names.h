/* The addresses a sandbox's allowed names resolved to, as the node's resolver saw them: kept per slot (to
 * carry them over a policy update and to sweep them) and written into the BPF map cn_names under the slot's
 * policy generation. Every call is made with the cube_net lock held. */
#ifndef CUBE_NET_NAMES_H
#define CUBE_NET_NAMES_H

#include <stdbool.h>
#include <stdint.h>

#include "net.h"

#define CN_NAME_RECS_PER_SLOT 256 /* the oldest record goes first beyond this */
#define CN_NAME_TTL_MIN_S     30  /* an answer's TTL counts at least this long (apps connect right after) */
#define CN_NAME_TTL_MAX_S     3600
#define CN_NAME_IDLE_S        300 /* an expired record still carries established flows this long after use */

typedef struct cn_name_rec {
    uint32_t addr;      /* network order */
    int64_t expires_ns; /* CLOCK_MONOTONIC */
    char name[CN_NAME_MAX];
} cn_name_rec;

/* name resolved to addrs (network order) with ttl_s for slot idx: recorded and allowed under its generation.
 */
int cn_names_record(cube_net *n, int idx, const char *name, const uint32_t *addrs, int naddrs, uint32_t ttl_s,
                    cube_err *err);
/* Whether a live record of slot idx (of any of its allowed names) allows addr for a new connection. */
bool cn_names_fresh(const cube_net *n, int idx, uint32_t addr);
/* A policy update: the records the new policy still allows are written under gen (before the slot flips to
 * it); the others are dropped. */
int cn_names_carry(cube_net *n, int idx, uint32_t gen, const cn_policy *p, cube_err *err);
/* Removes the map entries of slot idx's records under gen. */
void cn_names_unwrite(cube_net *n, int idx, uint32_t gen);
/* Everything of slot idx: map entries under both generations and the records. */
void cn_names_forget(cube_net *n, int idx);
/* Drops records expired and unused for CN_NAME_IDLE_S, over all leased slots. */
void cn_names_sweep(cube_net *n);

/* The records outlive a restart of cube-net (a file beside the lease, <state>/slot-N.names): cn_names_save
 * writes every slot whose records changed since (taking the lock itself, writing outside it); cn_names_load
 * takes an adopted slot's back and allows their addresses again (lock held, or before the threads run). */
void cn_names_save(cube_net *n);
void cn_names_load(cube_net *n, int idx);
void cn_names_path(const cube_net *n, int idx, char *buf, size_t len);

#endif
