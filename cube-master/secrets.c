#include "secrets.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cubelet.pb-c.h"
#include "id.h"
#include "log.h"
#include "master_nodes.h"
#include "secret_box.h"
#include "timeutil.h"

#define PLACEHOLDER        "${e2b.secrets."
#define SECRET_NAME_MAX    128
#define SECRET_VALUE_MAX   8192
#define METADATA_MAX       32
#define METADATA_KEY_MAX   128
#define METADATA_VALUE_MAX 1024
#define METADATA_TOTAL_MAX 8192
#define RULE_VALUE_MAX     16384 /* a header's value once its placeholders are filled */

/* E2B's rule: not empty, no '{', '}' or control characters (the name goes into a placeholder); lower-cased
 * into out; "sec_" is how ids start. */
static int secret_name(const char *in, char out[SECRET_NAME_MAX + 1], cube_err *err)
{
    size_t n = in ? strlen(in) : 0;
    if (n == 0 || n > SECRET_NAME_MAX)
        return cube_err_set(err, EINVAL, "name: 1 to %d bytes", SECRET_NAME_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x20 || c == 0x7f || c == '{' || c == '}')
            return cube_err_set(err, EINVAL, "name: no '{', '}' or control characters");
        out[i] = (char)tolower(c);
    }
    out[n] = '\0';
    if (strncmp(out, "sec_", 4) == 0)
        return cube_err_set(err, EINVAL, "name: the prefix sec_ is kept for ids");
    return 0;
}

/* A value goes into HTTP headers: no control characters but tab (nothing can be smuggled into a request). */
static int secret_value(const char *v, cube_err *err)
{
    size_t n = v ? strlen(v) : 0;
    if (n == 0 || n > SECRET_VALUE_MAX)
        return cube_err_set(err, EINVAL, "value: 1 to %d bytes", SECRET_VALUE_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return cube_err_set(err, EINVAL, "value: no control characters (it is sent in HTTP headers)");
    }
    return 0;
}

static int check_metadata(Cube__Secret__MetadataEntry **e, size_t n, cube_err *err)
{
    if (n > METADATA_MAX) return cube_err_set(err, EINVAL, "metadata: at most %d entries", METADATA_MAX);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t kl = e[i]->key ? strlen(e[i]->key) : 0, vl = e[i]->value ? strlen(e[i]->value) : 0;
        if (kl == 0 || kl > METADATA_KEY_MAX)
            return cube_err_set(err, EINVAL, "metadata: keys of 1 to %d bytes", METADATA_KEY_MAX);
        if (vl > METADATA_VALUE_MAX)
            return cube_err_set(err, EINVAL, "metadata[\"%.64s\"]: at most %d bytes", e[i]->key,
                                METADATA_VALUE_MAX);
        total += kl + vl;
    }
    if (total > METADATA_TOTAL_MAX)
        return cube_err_set(err, EINVAL, "metadata: at most %d bytes in all", METADATA_TOTAL_MAX);
    return 0;
}

static void aad_of(char out[96], const char *id, int64_t version)
{
    snprintf(out, 96, "%s:%lld", id, (long long)version);
}

/* Acquire: a key switched on while the master serves (tests do) is seen with its bytes. */
static int need_key(const master *m, cube_err *err)
{
    return __atomic_load_n(&m->has_secret_key, __ATOMIC_ACQUIRE)
               ? 0
               : cube_err_set(err, ENOTSUP, "secrets are off: cube-master has no --secrets-key");
}

/* The reply: everything but the sealed value. */
static void secret_reply(cube_rpc_ctx *ctx, Cube__Secret *out, const Cube__Secret *s)
{
    out->secret_id = cube_rpc_strdup(ctx, s->secret_id);
    out->name = cube_rpc_strdup(ctx, s->name);
    out->version = s->version;
    out->created_at_ms = s->created_at_ms;
    out->updated_at_ms = s->updated_at_ms;
    out->metadata = cube_rpc_alloc(ctx, (s->n_metadata ? s->n_metadata : 1) * sizeof(*out->metadata));
    for (size_t i = 0; out->metadata && i < s->n_metadata; i++) {
        Cube__Secret__MetadataEntry *e = cube_rpc_alloc(ctx, sizeof(*e));
        if (!e) break;
        cube__secret__metadata_entry__init(e);
        e->key = cube_rpc_strdup(ctx, s->metadata[i]->key);
        e->value = cube_rpc_strdup(ctx, s->metadata[i]->value);
        out->metadata[out->n_metadata++] = e;
    }
}

static Cube__Secret *secret_lookup(master *m, const char *key, cube_err *err)
{
    char lower[SECRET_NAME_MAX + 1];
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > SECRET_NAME_MAX)
        return cube_err_set(err, ENOENT, "secret '%.128s' not found", key ? key : ""), NULL;
    for (size_t i = 0; i <= n; i++) lower[i] = (char)tolower((unsigned char)key[i]);
    return m->st->ops->secret_get(m->st, lower, err);
}

static void push_to_sandboxes(master *m, const char *name);

int create_secret(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__CreateSecretRequest *req = reqp;
    char name[SECRET_NAME_MAX + 1], rnd[24], id[32];
    if (need_key(m, err) < 0 || secret_name(req->name, name, err) < 0 || secret_value(req->value, err) < 0 ||
        check_metadata((Cube__Secret__MetadataEntry **)req->metadata, req->n_metadata, err) < 0 ||
        cube_id_new(0, rnd, 20, err) < 0)
        return -1;
    snprintf(id, sizeof(id), "sec_%s", rnd);
    Cube__Secret s = CUBE__SECRET__INIT;
    s.secret_id = id;
    s.name = name;
    s.version = 1;
    s.n_metadata = req->n_metadata;
    s.metadata = (Cube__Secret__MetadataEntry **)req->metadata; /* map entries pack alike in every message */
    s.created_at_ms = s.updated_at_ms = cube_now_unix_ms();
    char aad[96];
    aad_of(aad, id, s.version);
    if (secret_seal(m->secret_key, aad, req->value, strlen(req->value), &s.sealed_value.data,
                    &s.sealed_value.len, err) < 0)
        return -1;
    int rc = m->st->ops->secret_put(m->st, &s, err);
    free(s.sealed_value.data);
    if (rc < 0) return -1;
    cube_log_info("audit", "action=secret-create secret=%s name=%s", id, name);
    secret_reply(ctx, respp, &s);
    return 0;
}

int get_secret(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    const Cube__SecretRef *req = reqp;
    Cube__Secret *s = secret_lookup(svc, req->secret, err);
    if (!s) return -1;
    secret_reply(ctx, respp, s);
    cube__secret__free_unpacked(s, NULL);
    return 0;
}

int list_secrets(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)reqp;
    master *m = svc;
    Cube__ListSecretsResponse *out = respp;
    Cube__Secret **v;
    size_t n;
    if (m->st->ops->secret_list(m->st, &v, &n, err) < 0) return -1;
    out->secrets = cube_rpc_alloc(ctx, (n ? n : 1) * sizeof(*out->secrets));
    for (size_t i = 0; out->secrets && i < n; i++) {
        Cube__Secret *x = cube_rpc_alloc(ctx, sizeof(*x));
        if (!x) break;
        cube__secret__init(x);
        secret_reply(ctx, x, v[i]);
        out->secrets[out->n_secrets++] = x;
    }
    store_free_secrets(v, n);
    return 0;
}

/* A new version: sealed again (the version is part of what the seal binds), then every running sandbox whose
 * rules name the secret gets its headers with the new value before this answers. */
int update_secret(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__UpdateSecretRequest *req = reqp;
    if (need_key(m, err) < 0 || secret_value(req->value, err) < 0 ||
        (req->replace_metadata &&
         check_metadata((Cube__Secret__MetadataEntry **)req->metadata, req->n_metadata, err) < 0))
        return -1;
    for (int attempt = 0;; attempt++) {
        Cube__Secret *s = secret_lookup(m, req->secret, err);
        if (!s) return -1;
        int64_t was = s->version;
        Cube__Secret next = *s;
        next.version = was + 1;
        next.updated_at_ms = cube_now_unix_ms();
        if (req->replace_metadata) {
            next.n_metadata = req->n_metadata;
            next.metadata = (Cube__Secret__MetadataEntry **)req->metadata;
        }
        char aad[96];
        aad_of(aad, s->secret_id, next.version);
        int rc = secret_seal(m->secret_key, aad, req->value, strlen(req->value), &next.sealed_value.data,
                             &next.sealed_value.len, err);
        if (rc == 0) rc = m->st->ops->secret_update(m->st, &next, was, err);
        free(next.sealed_value.data);
        if (rc == 0) {
            cube_log_info("audit", "action=secret-update secret=%s name=%s version=%lld", s->secret_id,
                          s->name, (long long)next.version);
            next.sealed_value.data = NULL;
            next.sealed_value.len = 0;
            secret_reply(ctx, respp, &next);
            char name[SECRET_NAME_MAX + 1];
            snprintf(name, sizeof(name), "%s", s->name);
            cube__secret__free_unpacked(s, NULL);
            push_to_sandboxes(m, name);
            return 0;
        }
        cube__secret__free_unpacked(s, NULL);
        if (err->code != EBUSY || attempt == 3) return -1; /* another update won: build on its version */
        cube_err_clear(err);
    }
}

/* Gone for good: running sandboxes that named it stop getting the header (the request goes out without it).
 */
int delete_secret(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    master *m = svc;
    const Cube__SecretRef *req = reqp;
    Cube__Secret *s = secret_lookup(m, req->secret, err);
    if (!s) return -1;
    int rc = m->st->ops->secret_delete(m->st, s->secret_id, err);
    if (rc == 0) {
        cube_log_info("audit", "action=secret-delete secret=%s name=%s", s->secret_id, s->name);
        push_to_sandboxes(m, s->name);
    }
    cube__secret__free_unpacked(s, NULL);
    return rc;
}

/* The value of the secret named (len bytes at) name: malloc'd, free with secret_free; NULL + ENOENT. */
static char *secret_value_of(master *m, const char *name, size_t len, cube_err *err)
{
    char key[SECRET_NAME_MAX + 1];
    if (len == 0 || len > SECRET_NAME_MAX)
        return cube_err_set(err, ENOENT, "no secret named '%.*s'", (int)len, name), NULL;
    memcpy(key, name, len);
    key[len] = '\0';
    Cube__Secret *s = secret_lookup(m, key, err);
    if (!s) return NULL;
    char aad[96], *plain = NULL;
    size_t plain_len;
    aad_of(aad, s->secret_id, s->version);
    if (need_key(m, err) == 0)
        secret_open(m->secret_key, aad, s->sealed_value.data, s->sealed_value.len, &plain, &plain_len, err);
    cube__secret__free_unpacked(s, NULL);
    return plain;
}

/* value with each placeholder filled, into a new string; NULL + err (ENOENT: a secret that does not exist).
 */
static char *fill(master *m, const char *value, cube_err *err)
{
    size_t cap = strlen(value) + 1, len = 0;
    char *out = malloc(cap);
    if (!out) return cube_err_set(err, ENOMEM, "out of memory"), NULL;
    for (const char *p = value; *p;) {
        const char *ph = strstr(p, "${e2b.");
        size_t lit = ph ? (size_t)(ph - p) : strlen(p);
        const char *val = NULL;
        char *sv = NULL;
        size_t vl = 0, skip = lit;
        if (ph) {
            const char *end = strchr(ph, '}');
            if (strncmp(ph, PLACEHOLDER, strlen(PLACEHOLDER)) != 0 || !end) {
                cube_err_set(err, EINVAL, "only ${e2b.secrets.NAME} placeholders are supported");
                goto fail;
            }
            const char *nm = ph + strlen(PLACEHOLDER);
            if (!(sv = secret_value_of(m, nm, (size_t)(end - nm), err))) goto fail;
            val = sv;
            vl = strlen(sv);
            skip = (size_t)(end + 1 - p);
        }
        if (len + lit + vl + 1 > RULE_VALUE_MAX) {
            secret_free(sv);
            cube_err_set(err, EINVAL, "a header value with its secrets filled in is over %d bytes",
                         RULE_VALUE_MAX);
            goto fail;
        }
        if (len + lit + vl + 1 > cap) {
            size_t ncap = len + lit + vl + 1;
            char *n = malloc(ncap); /* not realloc: the old buffer may hold a value and is wiped first */
            if (!n) {
                secret_free(sv);
                cube_err_set(err, ENOMEM, "out of memory");
                goto fail;
            }
            memcpy(n, out, len);
            OPENSSL_cleanse(out, cap);
            free(out);
            out = n;
            cap = ncap;
        }
        memcpy(out + len, p, lit);
        len += lit;
        if (val) memcpy(out + len, val, vl);
        len += vl;
        secret_free(sv);
        p += skip;
    }
    out[len] = '\0';
    return out;
fail:
    OPENSSL_cleanse(out, cap);
    free(out);
    return NULL;
}

void secrets_free_policy(Cube__NetworkPolicy *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n_rules; i++)
        if (p->rules[i]->value) OPENSSL_cleanse(p->rules[i]->value, strlen(p->rules[i]->value));
    cube__network_policy__free_unpacked(p, NULL);
}

int secrets_resolve_policy(master *m, const Cube__NetworkPolicy *in, bool drop_missing,
                           Cube__NetworkPolicy **out, cube_err *err)
{
    *out = NULL;
    bool any = false;
    for (size_t i = 0; in && i < in->n_rules && !any; i++)
        any = in->rules[i]->value && strstr(in->rules[i]->value, "${e2b.");
    if (!any) return 0;
    size_t len = protobuf_c_message_get_packed_size(&in->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return cube_err_set(err, ENOMEM, "out of memory");
    protobuf_c_message_pack(&in->base, buf);
    Cube__NetworkPolicy *p = cube__network_policy__unpack(NULL, len, buf);
    free(buf);
    if (!p) return cube_err_set(err, ENOMEM, "out of memory");
    size_t kept = 0;
    for (size_t i = 0; i < p->n_rules; i++) {
        Cube__HeaderRule *r = p->rules[i];
        if (!r->value || !strstr(r->value, "${e2b.")) {
            p->rules[kept++] = r;
            continue;
        }
        char *v = fill(m, r->value, err);
        if (!v && drop_missing && err->code == ENOENT) { /* deleted: this header is no longer sent */
            cube_err_clear(err);
            cube__header_rule__free_unpacked(r, NULL);
            continue;
        }
        if (!v) {
            cube_err_prefix(err, "network.rules[\"%.64s\"].%.64s", r->host, r->header);
            if (err->code == ENOENT) err->code = EINVAL;
            for (size_t k = i; k < p->n_rules; k++) p->rules[kept++] = p->rules[k];
            p->n_rules = kept;
            secrets_free_policy(p);
            return -1;
        }
        free(r->value);
        r->value = v;
        p->rules[kept++] = r;
    }
    p->n_rules = kept;
    *out = p;
    return 0;
}

static bool names_secret(const Cube__NetworkPolicy *p, const char *name)
{
    char ph[SECRET_NAME_MAX + 32];
    snprintf(ph, sizeof(ph), PLACEHOLDER "%s}", name);
    for (size_t i = 0; p && i < p->n_rules; i++) {
        /* names are matched as stored: lower-case (placeholders are looked up lower-cased) */
        const char *v = p->rules[i]->value;
        if (v && strcasestr(v, ph)) return true;
    }
    return false;
}

/* Every running or paused sandbox whose rules name the secret gets its policy again, filled with what the
 * secret is now (without the header once it is deleted). A node that cannot be reached is logged: its
 * sandboxes keep the old value until their next network update. */
static void push_to_sandboxes(master *m, const char *name)
{
    Cube__Sandbox **all;
    size_t n;
    cube_err err = {0};
    if (m->st->ops->sandbox_list(m->st, &all, &n, &err) < 0) {
        cube_log_warn("secret not pushed", "name=%s err=\"%s\"", name, err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        Cube__Sandbox *sb = all[i];
        if ((sb->state != CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING &&
             sb->state != CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED) ||
            !names_secret(sb->network, name))
            continue;
        Cube__NetworkPolicy *filled = NULL;
        cube_err e = {0};
        int rc = secrets_resolve_policy(m, sb->network, true, &filled, &e);
        node_link *l = rc == 0 ? node_link_get(m, sb->node_id, &e) : NULL;
        if (l) {
            Cube__NodeNetworkRequest nr = CUBE__NODE_NETWORK_REQUEST__INIT;
            nr.sandbox_id = sb->sandbox_id;
            nr.network = filled ? filled : sb->network;
            ProtobufCMessage *r = NULL;
            cube_rpc_call_opts o = {.timeout_ms = 30000};
            rc = cube_rpc_call(l->rpc, "/cube.Cubelet/UpdateNetwork", &nr.base, &cube__empty__descriptor, &r,
                               &o, &e);
            if (r) protobuf_c_message_free_unpacked(r, NULL);
            node_link_put(l);
        } else {
            rc = -1;
        }
        secrets_free_policy(filled);
        if (rc < 0)
            cube_log_warn("secret not pushed", "name=%s sandbox=%s err=\"%s\"", name, sb->sandbox_id, e.msg);
        else
            cube_log_info("audit", "action=secret-push name=%s sandbox=%s", name, sb->sandbox_id);
    }
    store_free_sandboxes(all, n);
}
