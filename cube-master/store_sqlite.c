/* SQLite backend of the store: WAL, one connection guarded by a mutex (the master's load is a few thousand
 * writes a second at most; SQLite serialises writers anyway). */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

typedef struct sqlite_store {
    store base;
    sqlite3 *db;
    pthread_mutex_t lock;
} sqlite_store;

static const char *const schema[] = {
    /* version 1 */
    "CREATE TABLE api_keys(key_id TEXT PRIMARY KEY, name TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,"
    " created_at_ms INTEGER NOT NULL);"
    "CREATE TABLE sandboxes(sandbox_id TEXT PRIMARY KEY, state INTEGER NOT NULL, started_at_ms INTEGER NOT "
    "NULL,"
    " end_at_ms INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE INDEX sandboxes_end ON sandboxes(state, end_at_ms);",
    /* version 2 */
    "CREATE TABLE volumes(volume_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, data BLOB NOT NULL);",
    /* version 3 */
    "CREATE TABLE secrets(secret_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,"
    " data BLOB NOT NULL);",
    /* version 4 */
    "CREATE TABLE builds(build_id TEXT PRIMARY KEY, template_id TEXT NOT NULL, created_at_ms INTEGER NOT "
    "NULL,"
    " data BLOB NOT NULL);"
    "CREATE INDEX builds_template ON builds(template_id, created_at_ms);",
    /* version 5 */
    "CREATE TABLE snapshots(snapshot_id TEXT PRIMARY KEY, created_at_ms INTEGER NOT NULL, data BLOB NOT "
    "NULL);",
    /* version 6: keys' sandbox limits; sandboxes by the key that made them */
    "ALTER TABLE api_keys ADD COLUMN max_sandboxes INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE sandboxes ADD COLUMN api_key_id TEXT NOT NULL DEFAULT '';"
    "CREATE INDEX sandboxes_key ON sandboxes(api_key_id, state);",
};

static int db_err(sqlite_store *s, cube_err *err, const char *what)
{
    return cube_err_set(err, EIO, "store: %s: %s", what, sqlite3_errmsg(s->db));
}

static int migrate(sqlite_store *s, cube_err *err)
{
    sqlite3_stmt *st;
    int version = 0;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "version");
    if (sqlite3_step(st) == SQLITE_ROW) version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    for (int v = version; v < (int)(sizeof(schema) / sizeof(schema[0])); v++) {
        char *msg = NULL;
        char sql[4096];
        snprintf(sql, sizeof(sql), "BEGIN; %s PRAGMA user_version=%d; COMMIT;", schema[v], v + 1);
        if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
            cube_err_set(err, EIO, "store: migrate to version %d: %s", v + 1, msg ? msg : "?");
            sqlite3_free(msg);
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    return 0;
}

static int key_put(store *base, const char *key_id, const char *name, const char *hash, int64_t created,
                   uint32_t max_sandboxes, cube_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    do { /* break leaves the block; the lock is released below */
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db,
                               "INSERT OR IGNORE INTO api_keys(key_id, name, key_hash, created_at_ms, "
                               "max_sandboxes) VALUES(?,?,?,?,?)",
                               -1, &st, NULL) != SQLITE_OK) {
            rc = db_err(s, err, "insert key");
            break;
        }
        sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, hash, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, created);
        sqlite3_bind_int64(st, 5, max_sandboxes);
        if (sqlite3_step(st) != SQLITE_DONE) rc = db_err(s, err, "insert key");
        sqlite3_finalize(st);
    } while (0);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int key_find(store *base, const char *hash, char key_id[64], char name[128], uint32_t *max_sandboxes,
                    cube_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    do { /* break leaves the block; the lock is released below */
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db, "SELECT key_id, name, max_sandboxes FROM api_keys WHERE key_hash=?", -1,
                               &st, NULL) != SQLITE_OK) {
            rc = db_err(s, err, "find key");
            break;
        }
        sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            snprintf(key_id, 64, "%s", (const char *)sqlite3_column_text(st, 0));
            snprintf(name, 128, "%s", (const char *)sqlite3_column_text(st, 1));
            *max_sandboxes = (uint32_t)sqlite3_column_int64(st, 2);
        } else {
            rc = cube_err_set(err, ENOENT, "no such API key");
        }
        sqlite3_finalize(st);
    } while (0);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int key_list(store *base, Cube__ListKeysResponse *out, cube_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = 0;
    cube__list_keys_response__init(out);
    pthread_mutex_lock(&s->lock);
    do { /* break leaves the block; the lock is released below */
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db,
                               "SELECT k.key_id, k.name, k.created_at_ms, k.max_sandboxes, " STORE_HELD_BY(
                                   "k.key_id") " FROM api_keys k ORDER BY k.created_at_ms",
                               -1, &st, NULL) != SQLITE_OK) {
            rc = db_err(s, err, "list keys");
            break;
        }
        while (sqlite3_step(st) == SQLITE_ROW) {
            Cube__ApiKey *k = malloc(sizeof(*k));
            Cube__ApiKey **nk = realloc(out->keys, (out->n_keys + 1) * sizeof(*nk));
            if (!k || !nk) {
                free(k);
                if (nk) out->keys = nk;
                rc = cube_err_set(err, ENOMEM, "out of memory");
                break;
            }
            out->keys = nk;
            cube__api_key__init(k);
            k->key_id = strdup((const char *)sqlite3_column_text(st, 0));
            k->name = strdup((const char *)sqlite3_column_text(st, 1));
            k->created_at_ms = sqlite3_column_int64(st, 2);
            k->max_sandboxes = (uint32_t)sqlite3_column_int64(st, 3);
            k->sandboxes = (uint32_t)sqlite3_column_int64(st, 4);
            out->keys[out->n_keys++] = k;
        }
        sqlite3_finalize(st);
    } while (0);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void store_free_keys(Cube__ListKeysResponse *out)
{
    for (size_t i = 0; i < out->n_keys; i++) {
        free(out->keys[i]->key_id);
        free(out->keys[i]->name);
        free(out->keys[i]);
    }
    free(out->keys);
    out->keys = NULL;
    out->n_keys = 0;
}

static int exec_id(sqlite_store *s, const char *sql, const char *id, const char *what, cube_err *err)
{
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    do { /* break leaves the block; the lock is released below */
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
            rc = db_err(s, err, what);
            break;
        }
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_err(s, err, what);
        else if (sqlite3_changes(s->db) == 0)
            rc = cube_err_set(err, ENOENT, "%s: '%s' not found", what, id);
        sqlite3_finalize(st);
    } while (0);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int key_revoke(store *base, const char *key_id, cube_err *err)
{
    return exec_id((sqlite_store *)base, "DELETE FROM api_keys WHERE key_id=?", key_id, "revoke key", err);
}

static int key_set_limit(store *base, const char *key_id, uint32_t max_sandboxes, cube_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    do { /* break leaves the block; the lock is released below */
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db, "UPDATE api_keys SET max_sandboxes=? WHERE key_id=?", -1, &st, NULL) !=
            SQLITE_OK) {
            rc = db_err(s, err, "set key limit");
            break;
        }
        sqlite3_bind_int64(st, 1, max_sandboxes);
        sqlite3_bind_text(st, 2, key_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_err(s, err, "set key limit");
        else if (sqlite3_changes(s->db) == 0)
            rc = cube_err_set(err, ENOENT, "no API key '%s'", key_id);
        sqlite3_finalize(st);
    } while (0);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int key_usage(store *base, const char *key_id, uint32_t *max_sandboxes, uint32_t *held, cube_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    do { /* break leaves the block; the lock is released below */
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(
                s->db,
                "SELECT k.max_sandboxes, " STORE_HELD_BY("k.key_id") " FROM api_keys k WHERE k.key_id=?", -1,
                &st, NULL) != SQLITE_OK) {
            rc = db_err(s, err, "key usage");
            break;
        }
        sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            *max_sandboxes = (uint32_t)sqlite3_column_int64(st, 0);
            *held = (uint32_t)sqlite3_column_int64(st, 1);
        } else {
            rc = cube_err_set(err, ENOENT, "no API key '%s'", key_id);
        }
        sqlite3_finalize(st);
    } while (0);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* One statement over a packed sandbox: INSERT (an add) or a conditional UPDATE (a transition). */
static int sandbox_write(store *base, const Cube__Sandbox *sb, int expect_state, bool insert, cube_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    size_t len = protobuf_c_message_get_packed_size(&sb->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return cube_err_set(err, ENOMEM, "out of memory");
    protobuf_c_message_pack(&sb->base, buf);
    int rc = 0;
    const char *what = insert ? "add sandbox" : "update sandbox";
    pthread_mutex_lock(&s->lock);
    do { /* break leaves the block; the lock is released below */
        sqlite3_stmt *st;
        /* an add for a key holding its limit inserts nothing (a revoked key's limit is gone with it) */
        const char *sql = insert ? "INSERT INTO sandboxes(state, started_at_ms, end_at_ms, data, sandbox_id, "
                                   "api_key_id) SELECT ?1,?2,?3,?4,?5,?6 WHERE NOT EXISTS (SELECT 1 FROM "
                                   "api_keys k WHERE ?6<>'' AND k.key_id=?6 AND k.max_sandboxes>0 AND "
                                   "k.max_sandboxes<=" STORE_HELD_BY("k.key_id") ")"
                                 : "UPDATE sandboxes SET state=?, started_at_ms=?, end_at_ms=?, data=? "
                                   "WHERE sandbox_id=? AND state=?";
        if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
            rc = db_err(s, err, what);
            break;
        }
        sqlite3_bind_int(st, 1, sb->state);
        sqlite3_bind_int64(st, 2, sb->started_at_ms);
        sqlite3_bind_int64(st, 3, sb->end_at_ms);
        sqlite3_bind_blob(st, 4, buf, (int)len, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, sb->sandbox_id, -1, SQLITE_STATIC);
        if (!insert) sqlite3_bind_int(st, 6, expect_state);
        if (insert) sqlite3_bind_text(st, 6, sb->api_key_id ? sb->api_key_id : "", -1, SQLITE_STATIC);
        int step = sqlite3_step(st), missed = 0;
        if (step == SQLITE_CONSTRAINT)
            rc = cube_err_set(err, EEXIST, "sandbox '%s' exists already", sb->sandbox_id);
        else if (step != SQLITE_DONE)
            rc = db_err(s, err, what);
        else if (insert && sqlite3_changes(s->db) == 0)
            rc = cube_err_set(err, EDQUOT, "API key '%s' holds as many sandboxes as its limit",
                              sb->api_key_id);
        else if (!insert && sqlite3_changes(s->db) == 0)
            rc = missed = -1; /* told apart below: gone, or in another state */
        sqlite3_finalize(st);
        if (!missed) break;
        if (sqlite3_prepare_v2(s->db, "SELECT state FROM sandboxes WHERE sandbox_id=?", -1, &st, NULL) !=
            SQLITE_OK) {
            db_err(s, err, what);
            break;
        }
        sqlite3_bind_text(st, 1, sb->sandbox_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            cube_err_set(err, EBUSY, "sandbox '%s' changed state meanwhile (now %d, expected %d)",
                         sb->sandbox_id, sqlite3_column_int(st, 0), expect_state);
        else
            cube_err_set(err, ENOENT, "sandbox '%s' not found (it was removed meanwhile)", sb->sandbox_id);
        sqlite3_finalize(st);
    } while (0);
    pthread_mutex_unlock(&s->lock);
    free(buf);
    return rc;
}

static int sandbox_update(store *base, const Cube__Sandbox *sb, int expect_state, cube_err *err)
{
    return sandbox_write(base, sb, expect_state, false, err);
}

static int sandbox_add(store *base, const Cube__Sandbox *sb, cube_err *err)
{
    return sandbox_write(base, sb, 0, true, err);
}

static Cube__Sandbox *unpack_row(sqlite3_stmt *st, int col)
{
    return cube__sandbox__unpack(NULL, (size_t)sqlite3_column_bytes(st, col), sqlite3_column_blob(st, col));
}

static Cube__Sandbox *sandbox_get(store *base, const char *id, cube_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    Cube__Sandbox *out = NULL;
    pthread_mutex_lock(&s->lock);
    do { /* break leaves the block; the lock is released below */
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db, "SELECT data FROM sandboxes WHERE sandbox_id=?", -1, &st, NULL) !=
            SQLITE_OK) {
            db_err(s, err, "get sandbox");
            break;
        }
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            out = unpack_row(st, 0);
            if (!out) cube_err_set(err, EBADMSG, "sandbox '%s': stored record is corrupt", id);
        } else {
            cube_err_set(err, ENOENT, "sandbox '%s' not found", id);
        }
        sqlite3_finalize(st);
    } while (0);
    pthread_mutex_unlock(&s->lock);
    return out;
}

static int sandbox_delete(store *base, const char *id, cube_err *err)
{
    return exec_id((sqlite_store *)base, "DELETE FROM sandboxes WHERE sandbox_id=?", id, "sandbox", err);
}

static int select_many(sqlite_store *s, const char *sql, int64_t arg, int has_arg, Cube__Sandbox ***out,
                       size_t *n, cube_err *err)
{
    *out = NULL;
    *n = 0;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    do { /* break leaves the block; the lock is released below */
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
            rc = db_err(s, err, "list sandboxes");
            break;
        }
        if (has_arg) sqlite3_bind_int64(st, 1, arg);
        while (sqlite3_step(st) == SQLITE_ROW) {
            Cube__Sandbox *sb = unpack_row(st, 0);
            if (!sb) continue;
            Cube__Sandbox **nv = realloc(*out, (*n + 1) * sizeof(*nv));
            if (!nv) {
                cube__sandbox__free_unpacked(sb, NULL);
                rc = cube_err_set(err, ENOMEM, "out of memory");
                break;
            }
            *out = nv;
            (*out)[(*n)++] = sb;
        }
        sqlite3_finalize(st);
    } while (0);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int sandbox_list(store *base, Cube__Sandbox ***out, size_t *n, cube_err *err)
{
    return select_many((sqlite_store *)base, "SELECT data FROM sandboxes ORDER BY started_at_ms, sandbox_id",
                       0, 0, out, n, err);
}

static int sandbox_expired(store *base, int64_t now, Cube__Sandbox ***out, size_t *n, cube_err *err)
{
    return select_many((sqlite_store *)base, "SELECT data FROM sandboxes WHERE state=2 AND end_at_ms <= ?",
                       now, 1, out, n, err);
}

static int sandbox_claim(store *base, const char *id, int64_t seen_end, int64_t new_end, cube_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "UPDATE sandboxes SET end_at_ms=? WHERE sandbox_id=? AND end_at_ms=?", -1,
                           &st, NULL) != SQLITE_OK) {
        rc = db_err(s, err, "claim sandbox");
    } else {
        sqlite3_bind_int64(st, 1, new_end);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, seen_end);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_err(s, err, "claim sandbox");
        else if (sqlite3_changes(s->db) == 0)
            rc = cube_err_set(err, EBUSY, "sandbox '%s' was claimed by another master", id);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int volume_put(store *base, const Cube__Volume *v, cube_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    size_t len = protobuf_c_message_get_packed_size(&v->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return cube_err_set(err, ENOMEM, "out of memory");
    protobuf_c_message_pack(&v->base, buf);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "INSERT INTO volumes VALUES(?,?,?)", -1, &st, NULL) != SQLITE_OK) {
        rc = db_err(s, err, "put volume");
    } else {
        sqlite3_bind_text(st, 1, v->volume_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, v->name, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, buf, (int)len, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r == SQLITE_CONSTRAINT)
            rc = cube_err_set(err, EEXIST, "a volume named '%s' already exists", v->name);
        else if (r != SQLITE_DONE)
            rc = db_err(s, err, "put volume");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    free(buf);
    return rc;
}

/* The one row sql (one text parameter, used as ?1) selects, unpacked as desc; NULL + ENOENT when none. */
static ProtobufCMessage *get_packed(sqlite_store *s, const char *sql, const char *key,
                                    const ProtobufCMessageDescriptor *desc, const char *what, cube_err *err)
{
    ProtobufCMessage *out = NULL;
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_err(s, err, what);
    } else {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
            cube_err_set(err, ENOENT, "%s '%s' not found", what, key);
        else if (!(out = protobuf_c_message_unpack(desc, NULL, (size_t)sqlite3_column_bytes(st, 0),
                                                   sqlite3_column_blob(st, 0))))
            cube_err_set(err, EBADMSG, "%s '%s': stored record is corrupt", what, key);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    return out;
}

/* Every row sql selects, unpacked as desc (a corrupt one is skipped). */
static int list_packed(sqlite_store *s, const char *sql, const ProtobufCMessageDescriptor *desc,
                       ProtobufCMessage ***out, size_t *n, const char *what, cube_err *err)
{
    *out = NULL;
    *n = 0;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = db_err(s, err, what);
    } else {
        while (sqlite3_step(st) == SQLITE_ROW) {
            ProtobufCMessage *v = protobuf_c_message_unpack(desc, NULL, (size_t)sqlite3_column_bytes(st, 0),
                                                            sqlite3_column_blob(st, 0));
            if (!v) continue;
            ProtobufCMessage **nv = realloc(*out, (*n + 1) * sizeof(*nv));
            if (!nv) {
                protobuf_c_message_free_unpacked(v, NULL);
                rc = cube_err_set(err, ENOMEM, "out of memory");
                break;
            }
            *out = nv;
            (*out)[(*n)++] = v;
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static Cube__Volume *volume_get(store *base, const char *key, cube_err *err)
{
    return (Cube__Volume *)get_packed((sqlite_store *)base,
                                      "SELECT data FROM volumes WHERE volume_id=?1 OR name=?1", key,
                                      &cube__volume__descriptor, "volume", err);
}

static int volume_list(store *base, Cube__Volume ***out, size_t *n, cube_err *err)
{
    return list_packed((sqlite_store *)base, "SELECT data FROM volumes ORDER BY name",
                       &cube__volume__descriptor, (ProtobufCMessage ***)out, n, "list volumes", err);
}

static int volume_delete(store *base, const char *id, cube_err *err)
{
    return exec_id((sqlite_store *)base, "DELETE FROM volumes WHERE volume_id=?", id, "volume", err);
}

static int volume_update(store *base, const Cube__Volume *old, const Cube__Volume *nv, cube_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    size_t ol = protobuf_c_message_get_packed_size(&old->base),
           nl = protobuf_c_message_get_packed_size(&nv->base);
    uint8_t *ob = malloc(ol ? ol : 1), *nb = malloc(nl ? nl : 1);
    int rc = 0;
    if (!ob || !nb) {
        free(ob);
        free(nb);
        return cube_err_set(err, ENOMEM, "out of memory");
    }
    protobuf_c_message_pack(&old->base, ob);
    protobuf_c_message_pack(&nv->base, nb);
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "UPDATE volumes SET data=? WHERE volume_id=? AND data=?", -1, &st, NULL) !=
        SQLITE_OK) {
        rc = db_err(s, err, "update volume");
    } else {
        sqlite3_bind_blob(st, 1, nb, (int)nl, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, old->volume_id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, ob, (int)ol, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_err(s, err, "update volume");
        else if (sqlite3_changes(s->db) == 0)
            rc = cube_err_set(err, EBUSY, "volume '%s' changed meanwhile", old->volume_id);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    free(ob);
    free(nb);
    return rc;
}

static int build_delete_template(store *base, const char *template_id, cube_err *err)
{
    return exec_id((sqlite_store *)base, "DELETE FROM builds WHERE template_id=?", template_id, "builds of",
                   err);
}

/* INSERT of a packed record: sql binds the texts (1..nt), then at (an INTEGER time), then the blob;
 * EEXIST when key is taken. */
static int insert_packed(sqlite_store *s, const char *sql, const char *const *texts, int nt, int64_t at,
                         const ProtobufCMessage *m, const char *what, const char *key, cube_err *err)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return cube_err_set(err, ENOMEM, "out of memory");
    protobuf_c_message_pack(m, buf);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = db_err(s, err, what);
    } else {
        for (int i = 0; i < nt; i++) sqlite3_bind_text(st, i + 1, texts[i], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, nt + 1, at);
        sqlite3_bind_blob(st, nt + 2, buf, (int)len, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r == SQLITE_CONSTRAINT)
            rc = cube_err_set(err, EEXIST, "%s '%s' exists", what, key);
        else if (r != SQLITE_DONE)
            rc = db_err(s, err, what);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    free(buf);
    return rc;
}

static int build_put(store *base, const Cube__TemplateBuild *b, cube_err *err)
{
    const char *texts[] = {b->build_id, b->template_id};
    return insert_packed((sqlite_store *)base, "INSERT INTO builds VALUES(?,?,?,?)", texts, 2,
                         b->created_at_ms, &b->base, "build", b->build_id, err);
}

static Cube__TemplateBuild *build_get(store *base, const char *id, cube_err *err)
{
    return (Cube__TemplateBuild *)get_packed((sqlite_store *)base,
                                             "SELECT data FROM builds WHERE build_id=?1", id,
                                             &cube__template_build__descriptor, "build", err);
}

static int build_list(store *base, const char *template_id, Cube__TemplateBuild ***out, size_t *n,
                      cube_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    *out = NULL;
    *n = 0;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(
            s->db,
            "SELECT data FROM builds WHERE template_id=?1 ORDER BY created_at_ms DESC, rowid DESC "
            "LIMIT 50",
            -1, &st, NULL) != SQLITE_OK) {
        rc = db_err(s, err, "list builds");
    } else {
        sqlite3_bind_text(st, 1, template_id, -1, SQLITE_STATIC);
        while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
            Cube__TemplateBuild *b = cube__template_build__unpack(NULL, (size_t)sqlite3_column_bytes(st, 0),
                                                                  sqlite3_column_blob(st, 0));
            if (!b) continue; /* a corrupt record is skipped */
            Cube__TemplateBuild **nv = realloc(*out, (*n + 1) * sizeof(*nv));
            if (!nv) {
                cube__template_build__free_unpacked(b, NULL);
                rc = cube_err_set(err, ENOMEM, "out of memory");
                break;
            }
            *out = nv;
            (*out)[(*n)++] = b;
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static Cube__TemplateBuild *build_latest(store *base, const char *template_id, cube_err *err)
{
    return (Cube__TemplateBuild *)get_packed(
        (sqlite_store *)base,
        "SELECT data FROM builds WHERE template_id=?1 ORDER BY created_at_ms DESC, rowid DESC LIMIT 1",
        template_id, &cube__template_build__descriptor, "build of template", err);
}

static int snapshot_put(store *base, const Cube__SnapshotInfo *si, cube_err *err)
{
    const char *texts[] = {si->snapshot_id};
    return insert_packed((sqlite_store *)base, "INSERT INTO snapshots VALUES(?,?,?)", texts, 1,
                         si->created_at_ms, &si->base, "snapshot", si->snapshot_id, err);
}

static Cube__SnapshotInfo *snapshot_get(store *base, const char *id, cube_err *err)
{
    return (Cube__SnapshotInfo *)get_packed((sqlite_store *)base,
                                            "SELECT data FROM snapshots WHERE snapshot_id=?1", id,
                                            &cube__snapshot_info__descriptor, "snapshot", err);
}

static int snapshot_list(store *base, Cube__SnapshotInfo ***out, size_t *n, cube_err *err)
{
    return list_packed((sqlite_store *)base,
                       "SELECT data FROM snapshots ORDER BY created_at_ms DESC, snapshot_id DESC",
                       &cube__snapshot_info__descriptor, (ProtobufCMessage ***)out, n, "list snapshots", err);
}

static int snapshot_delete(store *base, const char *id, cube_err *err)
{
    return exec_id((sqlite_store *)base, "DELETE FROM snapshots WHERE snapshot_id=?", id, "snapshot", err);
}

/* INSERT (a new secret) or an UPDATE conditional on the version the caller read. */
static int secret_write(store *base, const Cube__Secret *sec, int64_t expect_version, bool insert,
                        cube_err *err)
{
    sqlite_store *s = (sqlite_store *)base;
    size_t len = protobuf_c_message_get_packed_size(&sec->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return cube_err_set(err, ENOMEM, "out of memory");
    protobuf_c_message_pack(&sec->base, buf);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st;
    const char *sql = insert ? "INSERT INTO secrets(version, data, secret_id, name) VALUES(?1,?2,?3,?4)"
                             : "UPDATE secrets SET version=?1, data=?2 WHERE secret_id=?3 AND version=?5";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = db_err(s, err, "write secret");
    } else {
        sqlite3_bind_int64(st, 1, sec->version);
        sqlite3_bind_blob(st, 2, buf, (int)len, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, sec->secret_id, -1, SQLITE_STATIC);
        if (insert)
            sqlite3_bind_text(st, 4, sec->name, -1, SQLITE_STATIC);
        else
            sqlite3_bind_int64(st, 5, expect_version);
        int step = sqlite3_step(st);
        if (step == SQLITE_CONSTRAINT)
            rc = cube_err_set(err, EEXIST, "a secret named '%s' already exists", sec->name);
        else if (step != SQLITE_DONE)
            rc = db_err(s, err, "write secret");
        else if (!insert && sqlite3_changes(s->db) == 0)
            rc = cube_err_set(err, EBUSY, "secret '%s' changed or went meanwhile", sec->name);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    free(buf);
    return rc;
}

static int secret_put(store *base, const Cube__Secret *sec, cube_err *err)
{
    return secret_write(base, sec, 0, true, err);
}

static int secret_update(store *base, const Cube__Secret *sec, int64_t expect_version, cube_err *err)
{
    return secret_write(base, sec, expect_version, false, err);
}

static Cube__Secret *secret_get(store *base, const char *key, cube_err *err)
{
    return (Cube__Secret *)get_packed((sqlite_store *)base,
                                      "SELECT data FROM secrets WHERE secret_id=?1 OR name=?1", key,
                                      &cube__secret__descriptor, "secret", err);
}

static int secret_list(store *base, Cube__Secret ***out, size_t *n, cube_err *err)
{
    return list_packed((sqlite_store *)base, "SELECT data FROM secrets ORDER BY name",
                       &cube__secret__descriptor, (ProtobufCMessage ***)out, n, "list secrets", err);
}

static int secret_delete(store *base, const char *id, cube_err *err)
{
    return exec_id((sqlite_store *)base, "DELETE FROM secrets WHERE secret_id=?", id, "secret", err);
}

void store_free_secrets(Cube__Secret **v, size_t n)
{
    for (size_t i = 0; i < n; i++) cube__secret__free_unpacked(v[i], NULL);
    free(v);
}

void store_free_builds(Cube__TemplateBuild **v, size_t n)
{
    for (size_t i = 0; i < n; i++) cube__template_build__free_unpacked(v[i], NULL);
    free(v);
}

void store_free_snapshots(Cube__SnapshotInfo **v, size_t n)
{
    for (size_t i = 0; i < n; i++) cube__snapshot_info__free_unpacked(v[i], NULL);
    free(v);
}

void store_free_volumes(Cube__Volume **v, size_t n)
{
    for (size_t i = 0; i < n; i++) cube__volume__free_unpacked(v[i], NULL);
    free(v);
}

void store_free_sandboxes(Cube__Sandbox **v, size_t n)
{
    for (size_t i = 0; i < n; i++) cube__sandbox__free_unpacked(v[i], NULL);
    free(v);
}

static void sq_close(store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    if (!s) return;
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static const store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .key_put = key_put,
    .key_find = key_find,
    .key_list = key_list,
    .key_revoke = key_revoke,
    .key_set_limit = key_set_limit,
    .key_usage = key_usage,
    .sandbox_update = sandbox_update,
    .sandbox_add = sandbox_add,
    .sandbox_add_limited = sandbox_add, /* one writer at a time here already */
    .sandbox_get = sandbox_get,
    .sandbox_delete = sandbox_delete,
    .sandbox_list = sandbox_list,
    .sandbox_expired = sandbox_expired,
    .sandbox_claim = sandbox_claim,
    .volume_put = volume_put,
    .volume_get = volume_get,
    .volume_list = volume_list,
    .volume_update = volume_update,
    .volume_delete = volume_delete,
    .secret_put = secret_put,
    .secret_get = secret_get,
    .secret_list = secret_list,
    .secret_update = secret_update,
    .secret_delete = secret_delete,
    .build_put = build_put,
    .build_get = build_get,
    .build_list = build_list,
    .build_delete_template = build_delete_template,
    .build_latest = build_latest,
    .snapshot_put = snapshot_put,
    .snapshot_get = snapshot_get,
    .snapshot_list = snapshot_list,
    .snapshot_delete = snapshot_delete,
};

store *store_sqlite_open(const char *path, cube_err *err)
{
    sqlite_store *s = calloc(1, sizeof(*s));
    if (!s) return cube_err_set(err, ENOMEM, "out of memory"), NULL;
    s->base.ops = &sqlite_ops;
    pthread_mutex_init(&s->lock, NULL);
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        cube_err_set(err, EIO, "store: open %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sq_close(&s->base);
        return NULL;
    }
    sqlite3_busy_timeout(s->db, 5000);
    /* WAL + synchronous=NORMAL: a crash loses no committed transaction's integrity, writes stay cheap */
    sqlite3_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;", NULL,
                 NULL, NULL);
    if (migrate(s, err) < 0) {
        sq_close(&s->base);
        return NULL;
    }
    return &s->base;
}
