#include "keys.h"

#include <errno.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#include "id.h"
#include "log.h"
#include "timeutil.h"

/* the most a key's limit may be set to: far beyond what a cluster runs, and an integer JSON carries whole */
#define KEY_MAX_SANDBOXES_CAP 1000000

static void key_hash(const char *key, char out[65])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)key, strlen(key), d);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

int master_ensure_key(master *m, const char *key, const char *name, cube_err *err)
{
    char hash[65], id[64], found_name[128];
    uint32_t max = 0;
    key_hash(key, hash);
    if (m->st->ops->key_find(m->st, hash, id, found_name, &max, err) == 0) return 0;
    if (cube_id_new('k', id, 16, err) < 0) return -1;
    return m->st->ops->key_put(m->st, id, name, hash, cube_now_unix_ms(), 0, err);
}

int auth_key(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__AuthKeyRequest *req = reqp;
    Cube__AuthKeyResponse *out = respp;
    char hash[65], id[64], name[128];
    uint32_t max = 0;
    key_hash(req->key ? req->key : "", hash);
    if (m->st->ops->key_find(m->st, hash, id, name, &max, err) < 0) {
        if (err->code == ENOENT) cube_err_set(err, EKEYREJECTED, "Invalid API key");
        return -1;
    }
    out->key_id = cube_rpc_strdup(ctx, id);
    out->name = cube_rpc_strdup(ctx, name);
    out->max_sandboxes = max;
    return 0;
}

static int check_limit(uint32_t max, cube_err *err)
{
    if (max > KEY_MAX_SANDBOXES_CAP)
        return cube_err_set(err, EINVAL, "maxSandboxes must be within 0..%d (0: no limit)",
                            KEY_MAX_SANDBOXES_CAP);
    return 0;
}

int create_key(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__CreateKeyRequest *req = reqp;
    Cube__ApiKey *out = respp;
    if (check_limit(req->max_sandboxes, err) < 0) return -1;
    char secret[64] = "e2b_", id[32], hash[65];
    if (cube_token_hex(secret + 4, 20, err) < 0 || cube_id_new('k', id, 16, err) < 0) return -1;
    key_hash(secret, hash);
    int64_t now = cube_now_unix_ms();
    const char *name = req->name && *req->name ? req->name : "unnamed";
    if (m->st->ops->key_put(m->st, id, name, hash, now, req->max_sandboxes, err) < 0) return -1;
    out->key_id = cube_rpc_strdup(ctx, id);
    out->name = cube_rpc_strdup(ctx, name);
    out->created_at_ms = now;
    out->max_sandboxes = req->max_sandboxes;
    out->key = cube_rpc_strdup(ctx, secret);
    cube_log_info("audit", "action=key-create key=%s max_sandboxes=%u", id, req->max_sandboxes);
    return 0;
}

static Cube__ApiKey *key_copy(cube_rpc_ctx *ctx, const Cube__ApiKey *k)
{
    Cube__ApiKey *c = cube_rpc_alloc(ctx, sizeof(*c));
    if (!c) return NULL;
    cube__api_key__init(c);
    c->key_id = cube_rpc_strdup(ctx, k->key_id);
    c->name = cube_rpc_strdup(ctx, k->name);
    c->created_at_ms = k->created_at_ms;
    c->max_sandboxes = k->max_sandboxes;
    c->sandboxes = k->sandboxes;
    return c;
}

int list_keys(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)reqp;
    master *m = svc;
    Cube__ListKeysResponse *out = respp, tmp;
    if (m->st->ops->key_list(m->st, &tmp, err) < 0) return -1;
    out->keys = cube_rpc_alloc(ctx, (tmp.n_keys ? tmp.n_keys : 1) * sizeof(Cube__ApiKey *));
    for (size_t i = 0; out->keys && i < tmp.n_keys; i++)
        if ((out->keys[out->n_keys] = key_copy(ctx, tmp.keys[i]))) out->n_keys++;
    store_free_keys(&tmp);
    return 0;
}

int revoke_key(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    master *m = svc;
    const Cube__KeyRef *req = reqp;
    int rc = m->st->ops->key_revoke(m->st, req->key_id ? req->key_id : "", err);
    if (rc == 0) cube_log_info("audit", "action=key-revoke key=%s", req->key_id);
    return rc;
}

int set_key_limit(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__KeyLimitRequest *req = reqp;
    Cube__ApiKey *out = respp;
    const char *id = req->key_id ? req->key_id : "";
    if (check_limit(req->max_sandboxes, err) < 0 ||
        m->st->ops->key_set_limit(m->st, id, req->max_sandboxes, err) < 0)
        return -1;
    cube_log_info("audit", "action=key-limit key=%s max_sandboxes=%u", id, req->max_sandboxes);
    /* the key as it stands now, with what it holds (a lower limit ends none of its sandboxes) */
    Cube__ListKeysResponse all;
    if (m->st->ops->key_list(m->st, &all, err) < 0) return -1;
    int rc = cube_err_set(err, ENOENT, "no API key '%s'", id);
    for (size_t i = 0; i < all.n_keys; i++) {
        if (strcmp(all.keys[i]->key_id, id) != 0) continue;
        Cube__ApiKey *c = key_copy(ctx, all.keys[i]);
        if (c) *out = *c, rc = 0, cube_err_clear(err);
    }
    store_free_keys(&all);
    return rc;
}

static int limit_err(cube_err *err, const char *key_id, uint32_t max, uint32_t held, uint32_t starting)
{
    char under_way[64] = "";
    if (starting) snprintf(under_way, sizeof(under_way), " and is starting %u", starting);
    return cube_err_set(
        err, EDQUOT,
        "API key %s may hold at most %u sandboxes at once (running or paused) and holds %u%s: "
        "kill the ones it no longer needs, or ask the operator for a higher limit",
        key_id, max, held, under_way);
}

int key_hold_take(master *m, const char *key_id, uint32_t limit_hint, uint32_t want, key_hold *h,
                  cube_err *err)
{
    h->slot = -1;
    h->n = 0;
    h->limited = false;
    if (!limit_hint || !key_id || !*key_id) return 0;
    uint32_t max = 0, held = 0;
    cube_err uerr = {0};
    /* the store is read under the lock, under which creates also record their sandboxes and let go of their
     * places (key_hold_add): each sandbox under way is counted once, in the store or here */
    pthread_mutex_lock(&m->keys_lock);
    if (m->st->ops->key_usage(m->st, key_id, &max, &held, &uerr) < 0 || !max) {
        pthread_mutex_unlock(&m->keys_lock);
        return 0; /* no limit (or revoked: the add decides) */
    }
    h->limited = true;
    int slot = -1, free_slot = -1;
    for (int i = 0; i < KEY_HOLD_SLOTS && slot < 0; i++) {
        if (strcmp(m->key_holds[i].key_id, key_id) == 0)
            slot = i;
        else if (free_slot < 0 && !m->key_holds[i].n)
            free_slot = i;
    }
    if (slot < 0 && free_slot >= 0) {
        slot = free_slot;
        snprintf(m->key_holds[slot].key_id, sizeof(m->key_holds[slot].key_id), "%s", key_id);
    }
    uint32_t starting = slot >= 0 ? m->key_holds[slot].n : 0;
    int rc = 0;
    if ((uint64_t)held + starting + want > max) {
        rc = limit_err(err, key_id, max, held, starting);
    } else if (slot >= 0) {
        m->key_holds[slot].n += want;
        h->slot = slot;
        h->n = want;
    } /* else every slot is held for other keys: nothing is held for this one, the store's add decides */
    if (slot >= 0 && !m->key_holds[slot].n) m->key_holds[slot].key_id[0] = '\0';
    pthread_mutex_unlock(&m->keys_lock);
    return rc;
}

/* With keys_lock: h lets go of n of its places (a slot left with none is free for another key). */
static void let_go(master *m, key_hold *h, uint32_t n)
{
    if (h->slot < 0 || !n) return;
    if (!(m->key_holds[h->slot].n -= n)) m->key_holds[h->slot].key_id[0] = '\0';
    if (!(h->n -= n)) h->slot = -1;
}

void key_hold_drop(master *m, key_hold *h)
{
    if (h->slot < 0) return;
    pthread_mutex_lock(&m->keys_lock);
    let_go(m, h, h->n);
    pthread_mutex_unlock(&m->keys_lock);
}

/* err (EDQUOT from the store's add: masters together reached the limit) reworded with the key's figures */
static void limit_reached(master *m, const char *key_id, cube_err *err)
{
    uint32_t max = 0, held = 0;
    cube_err uerr = {0};
    if (m->st->ops->key_usage(m->st, key_id, &max, &held, &uerr) == 0 && max)
        limit_err(err, key_id, max, held, 0);
}

int key_hold_add(master *m, key_hold *h, const Cube__Sandbox *sb, cube_err *err)
{
    int rc;
    if (!h->limited) {
        rc = m->st->ops->sandbox_add(m->st, sb, err);
    } else { /* recorded (or refused): its place here goes under the same lock */
        pthread_mutex_lock(&m->keys_lock);
        rc = m->st->ops->sandbox_add_limited(m->st, sb, err);
        let_go(m, h, h->n ? 1 : 0);
        pthread_mutex_unlock(&m->keys_lock);
    }
    if (rc < 0 && err->code == EDQUOT) limit_reached(m, sb->api_key_id, err);
    return rc;
}
