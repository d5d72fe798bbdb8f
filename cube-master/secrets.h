/* E2B secrets in cube-master: the Secret RPCs over the store (values sealed with the masters' key, never
 * returned), and the "${e2b.secrets.NAME}" placeholders of a sandbox's header rules resolved for its node. */
#ifndef CUBE_MASTER_SECRETS_H
#define CUBE_MASTER_SECRETS_H

#include "master.h"

int create_secret(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int get_secret(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int list_secrets(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int update_secret(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int delete_secret(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);

/* The policy a node gets for in: *out NULL when in names no secret (send in as it is), else a copy with each
 * placeholder replaced by the secret's current value (free with cube__network_policy__free_unpacked, which
 * leaves no copy of a value behind). A secret that does not exist is EINVAL naming the rule; with
 * drop_missing (a secret deleted under running sandboxes) the header is left out instead. */
int secrets_resolve_policy(master *m, const Cube__NetworkPolicy *in, bool drop_missing,
                           Cube__NetworkPolicy **out, cube_err *err);
void secrets_free_policy(Cube__NetworkPolicy *p);

#endif
