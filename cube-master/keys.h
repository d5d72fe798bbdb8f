/* API keys in cube-master: the key RPCs over the store, and each key's sandbox limit held while creates and
 * forks are under way (the store's conditional add is what holds it between masters). */
#ifndef CUBE_MASTER_KEYS_H
#define CUBE_MASTER_KEYS_H

#include "master.h"

int auth_key(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int create_key(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int list_keys(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int revoke_key(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int set_key_limit(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);

/* Sandboxes a create or fork is making for a key, counted against its limit until they are recorded. */
typedef struct key_hold {
    int slot; /* -1: nothing held */
    uint32_t n;
    bool limited; /* the key has a limit: its sandboxes are recorded with sandbox_add_limited */
} key_hold;

/* Holds `want` of the key's limit for sandboxes about to be made: EDQUOT, naming the figures, when what the
 * key holds in the store and the creates of this master under way for it leave less. limit_hint is the limit
 * the caller's api read with the key (0: none): a key without one costs no store read. */
int key_hold_take(master *m, const char *key_id, uint32_t limit_hint, uint32_t want, key_hold *h,
                  cube_err *err);
/* Lets go of what h still holds (creates that failed before their record). */
void key_hold_drop(master *m, key_hold *h);
/* The record of a sandbox made under h, which then holds one place fewer. */
int key_hold_add(master *m, key_hold *h, const Cube__Sandbox *sb, cube_err *err);

#endif
