/* The store on MySQL/MariaDB for clusters: several masters share it. Same tables as the SQLite store; a pool
 * of connections (one statement at a time on each), reconnection and one retry when the server went away,
 * migrations under a named lock so two masters starting together migrate once. */
#include <errno.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <errmsg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store.h"

#define POOL 8

/* one migration a step; schema_version holds the steps applied */
static const char *const schema[] = {
    "CREATE TABLE IF NOT EXISTS api_keys(key_id VARCHAR(64) PRIMARY KEY, name VARCHAR(128) NOT NULL,"
    " key_hash CHAR(64) NOT NULL UNIQUE, created_at_ms BIGINT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS sandboxes(sandbox_id VARCHAR(64) PRIMARY KEY, state INT NOT NULL,"
    " started_at_ms BIGINT NOT NULL, end_at_ms BIGINT NOT NULL, data MEDIUMBLOB NOT NULL,"
    " INDEX sandboxes_end(state, end_at_ms)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS volumes(volume_id VARCHAR(64) PRIMARY KEY, name VARCHAR(128) NOT NULL UNIQUE,"
    " data BLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS secrets(secret_id VARCHAR(64) PRIMARY KEY, name VARCHAR(128) NOT NULL UNIQUE,"
    " version BIGINT NOT NULL, data MEDIUMBLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS builds(build_id VARCHAR(64) PRIMARY KEY, template_id VARCHAR(128) NOT NULL,"
    " created_at_ms BIGINT NOT NULL, data MEDIUMBLOB NOT NULL, INDEX builds_template(template_id, "
    "created_at_ms))"
    " ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS snapshots(snapshot_id VARCHAR(128) PRIMARY KEY, created_at_ms BIGINT NOT "
    "NULL,"
    " data BLOB NOT NULL) ENGINE=InnoDB",
    /* keys' sandbox limits; sandboxes by the key that made them */
    "ALTER TABLE api_keys ADD COLUMN max_sandboxes INT UNSIGNED NOT NULL DEFAULT 0",
    "ALTER TABLE sandboxes ADD COLUMN api_key_id VARCHAR(64) NOT NULL DEFAULT '',"
    " ADD INDEX sandboxes_key(api_key_id, state)",
};

typedef struct conn {
    MYSQL *db;
    bool busy;
} conn;

typedef struct mysql_store {
    store base;
    char host[256], user[128], pass[256], db[128], sock[512];
    unsigned port;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    conn pool[POOL];
} mysql_store;

static int connect_one(mysql_store *s, conn *c, cube_err *err)
{
    if (c->db) mysql_close(c->db);
    c->db = mysql_init(NULL);
    if (!c->db) return cube_err_set(err, ENOMEM, "store: mysql_init");
    unsigned timeout = 5;
    mysql_options(c->db, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(c->db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (!mysql_real_connect(c->db, *s->sock ? NULL : s->host, s->user, *s->pass ? s->pass : NULL, s->db,
                            s->port, *s->sock ? s->sock : NULL, CLIENT_FOUND_ROWS)) {
        cube_err_set(err, EIO, "store: connect to mysql %s: %s", *s->sock ? s->sock : s->host,
                     mysql_error(c->db));
        mysql_close(c->db);
        c->db = NULL;
        return -1;
    }
    return 0;
}

static conn *acquire(mysql_store *s, cube_err *err)
{
    pthread_mutex_lock(&s->lock);
    conn *c = NULL;
    while (!c) {
        for (int i = 0; i < POOL && !c; i++)
            if (!s->pool[i].busy) c = &s->pool[i];
        if (!c) pthread_cond_wait(&s->freed, &s->lock);
    }
    c->busy = true;
    pthread_mutex_unlock(&s->lock);
    if (!c->db && connect_one(s, c, err) < 0) {
        pthread_mutex_lock(&s->lock);
        c->busy = false;
        pthread_cond_signal(&s->freed);
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    return c;
}

static void release(mysql_store *s, conn *c)
{
    pthread_mutex_lock(&s->lock);
    c->busy = false;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->lock);
}

static bool gone(unsigned e)
{
    return e == CR_SERVER_GONE_ERROR || e == CR_SERVER_LOST || e == ER_CONNECTION_KILLED ||
           e == CR_CONNECTION_ERROR || e == CR_CONN_HOST_ERROR;
}

/* Runs one statement; a connection the server dropped (restart, timeout) is remade and the statement run
 * once more (every statement here is idempotent). Returns the connection with its result pending. */
static conn *run(mysql_store *s, const char *sql, size_t len, const char *what, cube_err *err)
{
    conn *c = acquire(s, err);
    if (!c) return NULL;
    bool resent = false;
    for (int deadlocks = 0;;) {
        if (c->db && mysql_real_query(c->db, sql, (unsigned long)len) == 0) return c;
        unsigned e = c->db ? mysql_errno(c->db) : CR_SERVER_GONE_ERROR;
        if (!resent && gone(e)) {
            cube_err cerr = {0};
            resent = true;
            if (connect_one(s, c, &cerr) == 0) continue;
        }
        /* rolled back whole by InnoDB, for another statement's sake (two adds for one key): run it again */
        if (e == ER_LOCK_DEADLOCK && ++deadlocks < 8) continue;
        if (e == ER_DUP_ENTRY) /* sent again after a dropped connection: maybe our own first attempt */
            cube_err_set(err, resent ? EALREADY : EEXIST, "store: %s: duplicate", what);
        else
            cube_err_set(err, EIO, "store: %s: %s", what, c->db ? mysql_error(c->db) : "no connection");
        release(s, c);
        return NULL;
    }
}

/* A statement with no rows to read; *affected gets the changed row count. */
static int exec(mysql_store *s, const char *sql, size_t len, const char *what, uint64_t *affected,
                cube_err *err)
{
    conn *c = run(s, sql, len, what, err);
    if (!c) return -1;
    if (affected) *affected = mysql_affected_rows(c->db);
    release(s, c);
    return 0;
}

/* 'escaped' text or X'hex' bytes appended to a growing statement */
typedef struct sqlbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sqlbuf;

static void put(sqlbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(sqlbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void put_str(sqlbuf *b, const char *s)
{
    puts_(b, "'");
    for (const char *p = s ? s : ""; *p; p++) {
        if (*p == '\'' || *p == '\\') put(b, "\\", 1);
        put(b, p, 1);
    }
    puts_(b, "'");
}

static void put_hex(sqlbuf *b, const uint8_t *d, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    puts_(b, "X'");
    for (size_t i = 0; i < n; i++) {
        char two[2] = {hex[d[i] >> 4], hex[d[i] & 15]};
        put(b, two, 2);
    }
    puts_(b, "'");
}

/* A protobuf message as its packed bytes' hex literal (the blob column every table keeps). */
static void put_message(sqlbuf *b, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        b->oom = true;
        return;
    }
    protobuf_c_message_pack(m, buf);
    put_hex(b, buf, len);
    free(buf);
}

static void put_int(sqlbuf *b, long long v)
{
    char n[32];
    snprintf(n, sizeof(n), "%lld", v);
    puts_(b, n);
}

static int done(sqlbuf *b, cube_err *err)
{
    if (!b->oom) return 0;
    free(b->p);
    b->p = NULL;
    return cube_err_set(err, ENOMEM, "out of memory");
}

static int my_key_put(store *base, const char *key_id, const char *name, const char *hash, int64_t created,
                      uint32_t max_sandboxes, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "INSERT IGNORE INTO api_keys(key_id, name, key_hash, created_at_ms, max_sandboxes) VALUES(");
    put_str(&b, key_id);
    puts_(&b, ",");
    put_str(&b, name);
    puts_(&b, ",");
    put_str(&b, hash);
    puts_(&b, ",");
    put_int(&b, created);
    puts_(&b, ",");
    put_int(&b, max_sandboxes);
    puts_(&b, ")");
    if (done(&b, err) < 0) return -1;
    int rc = exec((mysql_store *)base, b.p, b.len, "insert key", NULL, err);
    free(b.p);
    return rc;
}

/* Runs a SELECT and hands each row to fn; returns the number of rows or -1. */
static long select_rows(mysql_store *s, sqlbuf *b, const char *what,
                        int (*fn)(void *arg, MYSQL_ROW row, unsigned long *lens), void *arg, cube_err *err)
{
    if (done(b, err) < 0) return -1;
    conn *c = run(s, b->p, b->len, what, err);
    free(b->p);
    b->p = NULL;
    if (!c) return -1;
    MYSQL_RES *res = mysql_store_result(c->db);
    if (!res) {
        cube_err_set(err, EIO, "store: %s: %s", what, mysql_error(c->db));
        release(s, c);
        return -1;
    }
    long n = 0;
    int rc = 0;
    MYSQL_ROW row;
    while (rc == 0 && (row = mysql_fetch_row(res))) {
        rc = fn(arg, row, mysql_fetch_lengths(res));
        n++;
    }
    mysql_free_result(res);
    release(s, c);
    if (rc < 0) return cube_err_set(err, ENOMEM, "out of memory");
    return n;
}

typedef struct key_row {
    char *id, *name;
    uint32_t *max_sandboxes;
} key_row;

static int key_row_fn(void *arg, MYSQL_ROW row, unsigned long *lens)
{
    (void)lens;
    key_row *k = arg;
    snprintf(k->id, 64, "%s", row[0] ? row[0] : "");
    snprintf(k->name, 128, "%s", row[1] ? row[1] : "");
    *k->max_sandboxes = row[2] ? (uint32_t)strtoul(row[2], NULL, 10) : 0;
    return 0;
}

static int my_key_find(store *base, const char *hash, char key_id[64], char name[128],
                       uint32_t *max_sandboxes, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT key_id, name, max_sandboxes FROM api_keys WHERE key_hash=");
    put_str(&b, hash);
    key_row k = {key_id, name, max_sandboxes};
    long n = select_rows((mysql_store *)base, &b, "find key", key_row_fn, &k, err);
    if (n < 0) return -1;
    return n == 0 ? cube_err_set(err, ENOENT, "no such API key") : 0;
}

static int key_list_fn(void *arg, MYSQL_ROW row, unsigned long *lens)
{
    (void)lens;
    Cube__ListKeysResponse *out = arg;
    Cube__ApiKey *k = malloc(sizeof(*k));
    Cube__ApiKey **nk = realloc(out->keys, (out->n_keys + 1) * sizeof(*nk));
    if (nk) out->keys = nk;
    if (!k || !nk) {
        free(k);
        return -1;
    }
    cube__api_key__init(k);
    k->key_id = strdup(row[0]);
    k->name = strdup(row[1]);
    k->created_at_ms = strtoll(row[2], NULL, 10);
    k->max_sandboxes = (uint32_t)strtoul(row[3], NULL, 10);
    k->sandboxes = (uint32_t)strtoul(row[4], NULL, 10);
    out->keys[out->n_keys++] = k;
    return 0;
}

static int my_key_list(store *base, Cube__ListKeysResponse *out, cube_err *err)
{
    cube__list_keys_response__init(out);
    sqlbuf b = {0};
    puts_(&b, "SELECT k.key_id, k.name, k.created_at_ms, k.max_sandboxes, " STORE_HELD_BY(
                  "k.key_id") " FROM api_keys k ORDER BY k.created_at_ms, k.key_id");
    return select_rows((mysql_store *)base, &b, "list keys", key_list_fn, out, err) < 0 ? -1 : 0;
}

static int delete_by(mysql_store *s, const char *table, const char *col, const char *id, const char *what,
                     cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "DELETE FROM ");
    puts_(&b, table);
    puts_(&b, " WHERE ");
    puts_(&b, col);
    puts_(&b, "=");
    put_str(&b, id);
    if (done(&b, err) < 0) return -1;
    uint64_t n = 0;
    int rc = exec(s, b.p, b.len, what, &n, err);
    free(b.p);
    if (rc == 0 && n == 0) return cube_err_set(err, ENOENT, "%s: '%s' not found", what, id);
    return rc;
}

static int my_key_revoke(store *base, const char *key_id, cube_err *err)
{
    return delete_by((mysql_store *)base, "api_keys", "key_id", key_id, "revoke key", err);
}

static int my_key_set_limit(store *base, const char *key_id, uint32_t max_sandboxes, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "UPDATE api_keys SET max_sandboxes=");
    put_int(&b, max_sandboxes);
    puts_(&b, " WHERE key_id=");
    put_str(&b, key_id);
    if (done(&b, err) < 0) return -1;
    uint64_t n = 0; /* rows matched (CLIENT_FOUND_ROWS), changed or not */
    int rc = exec((mysql_store *)base, b.p, b.len, "set key limit", &n, err);
    free(b.p);
    if (rc == 0 && n == 0) return cube_err_set(err, ENOENT, "no API key '%s'", key_id);
    return rc;
}

static int usage_row_fn(void *arg, MYSQL_ROW row, unsigned long *lens)
{
    (void)lens;
    uint32_t *v = arg;
    v[0] = row[0] ? (uint32_t)strtoul(row[0], NULL, 10) : 0;
    v[1] = row[1] ? (uint32_t)strtoul(row[1], NULL, 10) : 0;
    return 0;
}

static int my_key_usage(store *base, const char *key_id, uint32_t *max_sandboxes, uint32_t *held,
                        cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT k.max_sandboxes, " STORE_HELD_BY("k.key_id") " FROM api_keys k WHERE k.key_id=");
    put_str(&b, key_id);
    uint32_t v[2] = {0, 0};
    long n = select_rows((mysql_store *)base, &b, "key usage", usage_row_fn, v, err);
    if (n < 0) return -1;
    if (n == 0) return cube_err_set(err, ENOENT, "no API key '%s'", key_id);
    *max_sandboxes = v[0];
    *held = v[1];
    return 0;
}

/* Affected rows count the rows matched (CLIENT_FOUND_ROWS): a transition that changes nothing still found its
 * row. */
static int my_sandbox_state(mysql_store *s, const char *id, int *state, cube_err *err);

/* the INSERT of a new sandbox's record: nothing is inserted for a key holding its limit */
static void put_add(sqlbuf *b, const Cube__Sandbox *sb)
{
    const char *key = sb->api_key_id ? sb->api_key_id : "";
    puts_(b, "INSERT INTO sandboxes(sandbox_id, state, started_at_ms, end_at_ms, data, api_key_id) SELECT ");
    put_str(b, sb->sandbox_id);
    puts_(b, ",");
    put_int(b, sb->state);
    puts_(b, ",");
    put_int(b, sb->started_at_ms);
    puts_(b, ",");
    put_int(b, sb->end_at_ms);
    puts_(b, ",");
    put_message(b, &sb->base);
    puts_(b, ",");
    put_str(b, key);
    puts_(b, " FROM DUAL");
    if (!*key) return;
    puts_(b, " WHERE NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.key_id=");
    put_str(b, key);
    puts_(b, " AND k.max_sandboxes>0 AND k.max_sandboxes<=" STORE_HELD_BY("k.key_id") ")");
}

static int limit_held(const Cube__Sandbox *sb, cube_err *err)
{
    return cube_err_set(err, EDQUOT, "API key '%s' holds as many sandboxes as its limit", sb->api_key_id);
}

static int my_sandbox_write(store *base, const Cube__Sandbox *sb, int expect_state, bool insert,
                            cube_err *err)
{
    mysql_store *s = (mysql_store *)base;
    sqlbuf b = {0};
    if (insert) {
        put_add(&b, sb);
    } else {
        puts_(&b, "UPDATE sandboxes SET state=");
        put_int(&b, sb->state);
        puts_(&b, ", started_at_ms=");
        put_int(&b, sb->started_at_ms);
        puts_(&b, ", end_at_ms=");
        put_int(&b, sb->end_at_ms);
        puts_(&b, ", data=");
        put_message(&b, &sb->base);
        puts_(&b, " WHERE sandbox_id=");
        put_str(&b, sb->sandbox_id);
        puts_(&b, " AND state=");
        put_int(&b, expect_state);
    }
    if (done(&b, err) < 0) return -1;
    uint64_t n = 0;
    int rc = exec(s, b.p, b.len, insert ? "add sandbox" : "update sandbox", &n, err);
    free(b.p);
    if (rc < 0 && insert && err->code == EALREADY) {
        /* sent again after a dropped connection (run()): ids are fresh random ones, so what is there is this
         * very insert's first attempt */
        cube_err_clear(err);
        return 0;
    }
    if (rc < 0 && insert && err->code == EEXIST)
        return cube_err_set(err, EEXIST, "sandbox '%s' exists already", sb->sandbox_id);
    if (rc == 0 && insert && n == 0) return limit_held(sb, err);
    if (rc < 0 || insert || n > 0) return rc;
    int now = -1;
    if (my_sandbox_state(s, sb->sandbox_id, &now, err) < 0) return -1;
    return cube_err_set(err, EBUSY, "sandbox '%s' changed state meanwhile (now %d, expected %d)",
                        sb->sandbox_id, now, expect_state);
}

static int my_sandbox_update(store *base, const Cube__Sandbox *sb, int expect_state, cube_err *err)
{
    return my_sandbox_write(base, sb, expect_state, false, err);
}

static int my_sandbox_add(store *base, const Cube__Sandbox *sb, cube_err *err)
{
    return my_sandbox_write(base, sb, 0, true, err);
}

static bool query(conn *c, const char *sql, size_t len)
{
    return mysql_real_query(c->db, sql, (unsigned long)len) == 0;
}

/* The add for a key with a limit, in a transaction that first locks the key's row: the adds for one key, from
 * every master, are taken one at a time, each counting what the last one wrote. Run again (whole) when InnoDB
 * ends it for a deadlock (the count's reads lock index gaps that another key's add may want), or once when
 * the connection dropped. */
static int my_sandbox_add_limited(store *base, const Cube__Sandbox *sb, cube_err *err)
{
    mysql_store *s = (mysql_store *)base;
    sqlbuf lock = {0}, add = {0};
    puts_(&lock, "SELECT max_sandboxes FROM api_keys WHERE key_id=");
    put_str(&lock, sb->api_key_id ? sb->api_key_id : "");
    puts_(&lock, " FOR UPDATE");
    put_add(&add, sb);
    if (done(&lock, err) < 0 || done(&add, err) < 0) {
        free(lock.p);
        free(add.p);
        return -1;
    }
    conn *c = acquire(s, err);
    int rc = c ? 0 : -1;
    bool resent = false;
    for (int deadlocks = 0; c;) {
        uint64_t n = 0;
        bool ok = query(c, "START TRANSACTION", strlen("START TRANSACTION")) && query(c, lock.p, lock.len);
        if (ok) {
            MYSQL_RES *r = mysql_store_result(c->db);
            if (r) mysql_free_result(r);
            ok = query(c, add.p, add.len);
            n = ok ? mysql_affected_rows(c->db) : 0;
            ok = ok && query(c, "COMMIT", strlen("COMMIT"));
        }
        if (ok) {
            if (n == 0) rc = limit_held(sb, err);
            break;
        }
        unsigned e = mysql_errno(c->db);
        query(c, "ROLLBACK", strlen("ROLLBACK"));
        if (e == ER_LOCK_DEADLOCK && ++deadlocks < 8) continue;
        if (!resent && gone(e)) {
            cube_err cerr = {0};
            resent = true;
            if (connect_one(s, c, &cerr) == 0) continue;
        }
        if (e == ER_DUP_ENTRY && resent) /* our own first attempt's COMMIT landed before the drop */
            break;
        if (e == ER_DUP_ENTRY)
            rc = cube_err_set(err, EEXIST, "sandbox '%s' exists already", sb->sandbox_id);
        else
            rc = cube_err_set(err, EIO, "store: add sandbox: %s",
                              c->db ? mysql_error(c->db) : "no connection");
        break;
    }
    if (c) release(s, c);
    free(lock.p);
    free(add.p);
    return rc;
}

static int state_row_fn(void *arg, MYSQL_ROW row, unsigned long *lens)
{
    (void)lens;
    *(int *)arg = row[0] ? atoi(row[0]) : -1;
    return 0;
}

/* ENOENT when the sandbox has no record. */
static int my_sandbox_state(mysql_store *s, const char *id, int *state, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT state FROM sandboxes WHERE sandbox_id=");
    put_str(&b, id);
    long n = select_rows(s, &b, "sandbox state", state_row_fn, state, err);
    if (n < 0) return -1;
    if (n == 0) return cube_err_set(err, ENOENT, "sandbox '%s' not found (it was removed meanwhile)", id);
    return 0;
}

typedef struct sb_rows {
    Cube__Sandbox **v;
    size_t n;
} sb_rows;

static int sb_row_fn(void *arg, MYSQL_ROW row, unsigned long *lens)
{
    sb_rows *r = arg;
    Cube__Sandbox *sb = cube__sandbox__unpack(NULL, lens[0], (const uint8_t *)row[0]);
    if (!sb) return 0; /* a corrupt record is skipped, as in the SQLite store */
    Cube__Sandbox **nv = realloc(r->v, (r->n + 1) * sizeof(*nv));
    if (!nv) {
        cube__sandbox__free_unpacked(sb, NULL);
        return -1;
    }
    r->v = nv;
    r->v[r->n++] = sb;
    return 0;
}

static Cube__Sandbox *my_sandbox_get(store *base, const char *id, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT data FROM sandboxes WHERE sandbox_id=");
    put_str(&b, id);
    sb_rows r = {0};
    long n = select_rows((mysql_store *)base, &b, "get sandbox", sb_row_fn, &r, err);
    if (n < 0) return NULL;
    if (r.n == 0) {
        cube_err_set(err, n ? EBADMSG : ENOENT,
                     n ? "sandbox '%s': stored record is corrupt" : "sandbox '%s' not found", id);
        return NULL;
    }
    Cube__Sandbox *sb = r.v[0];
    free(r.v);
    return sb;
}

static int my_sandbox_delete(store *base, const char *id, cube_err *err)
{
    return delete_by((mysql_store *)base, "sandboxes", "sandbox_id", id, "sandbox", err);
}

static int many(mysql_store *s, sqlbuf *b, Cube__Sandbox ***out, size_t *n, cube_err *err)
{
    sb_rows r = {0};
    long got = select_rows(s, b, "list sandboxes", sb_row_fn, &r, err);
    *out = r.v;
    *n = r.n;
    if (got < 0) {
        store_free_sandboxes(r.v, r.n);
        *out = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

static int my_sandbox_list(store *base, Cube__Sandbox ***out, size_t *n, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT data FROM sandboxes ORDER BY started_at_ms, sandbox_id");
    return many((mysql_store *)base, &b, out, n, err);
}

static int my_sandbox_expired(store *base, int64_t now, Cube__Sandbox ***out, size_t *n, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT data FROM sandboxes WHERE state=2 AND end_at_ms <= ");
    put_int(&b, now);
    return many((mysql_store *)base, &b, out, n, err);
}

static int my_sandbox_claim(store *base, const char *id, int64_t seen_end, int64_t new_end, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "UPDATE sandboxes SET end_at_ms=");
    put_int(&b, new_end);
    puts_(&b, " WHERE sandbox_id=");
    put_str(&b, id);
    puts_(&b, " AND end_at_ms=");
    put_int(&b, seen_end);
    if (done(&b, err) < 0) return -1;
    uint64_t n = 0;
    int rc = exec((mysql_store *)base, b.p, b.len, "claim sandbox", &n, err);
    free(b.p);
    if (rc == 0 && n == 0) return cube_err_set(err, EBUSY, "sandbox '%s' was claimed by another master", id);
    return rc;
}

static int my_volume_put(store *base, const Cube__Volume *v, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "INSERT INTO volumes VALUES(");
    put_str(&b, v->volume_id);
    puts_(&b, ",");
    put_str(&b, v->name);
    puts_(&b, ",");
    put_message(&b, &v->base);
    puts_(&b, ")");
    if (done(&b, err) < 0) return -1;
    int rc = exec((mysql_store *)base, b.p, b.len, "put volume", NULL, err);
    free(b.p);
    if (rc < 0 && err->code == EEXIST)
        cube_err_set(err, EEXIST, "a volume named '%s' already exists", v->name);
    return rc;
}

static int my_volume_update(store *base, const Cube__Volume *old, const Cube__Volume *nv, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "UPDATE volumes SET data=");
    put_message(&b, &nv->base);
    puts_(&b, " WHERE volume_id=");
    put_str(&b, old->volume_id);
    puts_(&b, " AND data=");
    put_message(&b, &old->base);
    if (done(&b, err) < 0) return -1;
    uint64_t n = 0;
    int rc = exec((mysql_store *)base, b.p, b.len, "update volume", &n, err);
    free(b.p);
    if (rc == 0 && n == 0) return cube_err_set(err, EBUSY, "volume '%s' changed meanwhile", old->volume_id);
    return rc;
}

/* Rows of one packed message type (volumes, secrets). */
typedef struct packed_rows {
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage **v;
    size_t n;
} packed_rows;

static int packed_row_fn(void *arg, MYSQL_ROW row, unsigned long *lens)
{
    packed_rows *r = arg;
    ProtobufCMessage *v = protobuf_c_message_unpack(r->desc, NULL, lens[0], (const uint8_t *)row[0]);
    if (!v) return 0; /* a corrupt record is skipped, as in the SQLite store */
    ProtobufCMessage **nv = realloc(r->v, (r->n + 1) * sizeof(*nv));
    if (!nv) {
        protobuf_c_message_free_unpacked(v, NULL);
        return -1;
    }
    r->v = nv;
    r->v[r->n++] = v;
    return 0;
}

/* The row of table whose id_col or name is key; NULL + ENOENT when none. */
static ProtobufCMessage *get_packed(mysql_store *s, const char *table, const char *id_col, const char *key,
                                    const ProtobufCMessageDescriptor *desc, const char *what, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT data FROM ");
    puts_(&b, table);
    puts_(&b, " WHERE ");
    puts_(&b, id_col);
    puts_(&b, "=");
    put_str(&b, key);
    puts_(&b, " OR name=");
    put_str(&b, key);
    packed_rows r = {.desc = desc};
    if (select_rows(s, &b, what, packed_row_fn, &r, err) < 0) return NULL;
    if (r.n == 0) {
        cube_err_set(err, ENOENT, "%s '%s' not found", what, key);
        return NULL;
    }
    ProtobufCMessage *v = r.v[0];
    for (size_t i = 1; i < r.n; i++) protobuf_c_message_free_unpacked(r.v[i], NULL);
    free(r.v);
    return v;
}

static int list_packed(mysql_store *s, const char *table, const ProtobufCMessageDescriptor *desc,
                       ProtobufCMessage ***out, size_t *n, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT data FROM ");
    puts_(&b, table);
    puts_(&b, " ORDER BY name");
    packed_rows r = {.desc = desc};
    long got = select_rows(s, &b, table, packed_row_fn, &r, err);
    *out = r.v;
    *n = r.n;
    return got < 0 ? -1 : 0;
}

static Cube__Volume *my_volume_get(store *base, const char *key, cube_err *err)
{
    return (Cube__Volume *)get_packed((mysql_store *)base, "volumes", "volume_id", key,
                                      &cube__volume__descriptor, "volume", err);
}

static int my_volume_list(store *base, Cube__Volume ***out, size_t *n, cube_err *err)
{
    return list_packed((mysql_store *)base, "volumes", &cube__volume__descriptor, (ProtobufCMessage ***)out,
                       n, err);
}

static int my_volume_delete(store *base, const char *id, cube_err *err)
{
    return delete_by((mysql_store *)base, "volumes", "volume_id", id, "volume", err);
}

static int my_build_put(store *base, const Cube__TemplateBuild *tb, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "INSERT INTO builds VALUES(");
    put_str(&b, tb->build_id);
    puts_(&b, ",");
    put_str(&b, tb->template_id);
    puts_(&b, ",");
    put_int(&b, tb->created_at_ms);
    puts_(&b, ",");
    put_message(&b, &tb->base);
    puts_(&b, ")");
    if (done(&b, err) < 0) return -1;
    int rc = exec((mysql_store *)base, b.p, b.len, "put build", NULL, err);
    free(b.p);
    return rc;
}

/* The first row of a query selecting one packed desc; NULL + ENOENT when none. */
static ProtobufCMessage *one_packed(mysql_store *s, sqlbuf *b, const ProtobufCMessageDescriptor *desc,
                                    const char *what, const char *key, cube_err *err)
{
    packed_rows r = {.desc = desc};
    if (select_rows(s, b, what, packed_row_fn, &r, err) < 0) return NULL;
    if (r.n == 0) {
        cube_err_set(err, ENOENT, "%s '%s' not found", what, key);
        return NULL;
    }
    ProtobufCMessage *v = r.v[0];
    for (size_t i = 1; i < r.n; i++) protobuf_c_message_free_unpacked(r.v[i], NULL);
    free(r.v);
    return v;
}

static Cube__TemplateBuild *one_build(mysql_store *s, sqlbuf *b, const char *what, const char *key,
                                      cube_err *err)
{
    return (Cube__TemplateBuild *)one_packed(s, b, &cube__template_build__descriptor, what, key, err);
}

static int my_build_delete_template(store *base, const char *template_id, cube_err *err)
{
    return delete_by((mysql_store *)base, "builds", "template_id", template_id, "builds of", err);
}

static Cube__TemplateBuild *my_build_get(store *base, const char *id, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT data FROM builds WHERE build_id=");
    put_str(&b, id);
    return one_build((mysql_store *)base, &b, "build", id, err);
}

static int my_build_list(store *base, const char *template_id, Cube__TemplateBuild ***out, size_t *n,
                         cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT data FROM builds WHERE template_id=");
    put_str(&b, template_id);
    puts_(&b, " ORDER BY created_at_ms DESC LIMIT 50");
    packed_rows r = {.desc = &cube__template_build__descriptor};
    long got = select_rows((mysql_store *)base, &b, "list builds", packed_row_fn, &r, err);
    *out = (Cube__TemplateBuild **)r.v;
    *n = r.n;
    return got < 0 ? -1 : 0;
}

static Cube__TemplateBuild *my_build_latest(store *base, const char *template_id, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT data FROM builds WHERE template_id=");
    put_str(&b, template_id);
    puts_(&b, " ORDER BY created_at_ms DESC LIMIT 1");
    return one_build((mysql_store *)base, &b, "build of template", template_id, err);
}

static int my_snapshot_put(store *base, const Cube__SnapshotInfo *si, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "INSERT INTO snapshots VALUES(");
    put_str(&b, si->snapshot_id);
    puts_(&b, ",");
    put_int(&b, si->created_at_ms);
    puts_(&b, ",");
    put_message(&b, &si->base);
    puts_(&b, ")");
    if (done(&b, err) < 0) return -1;
    int rc = exec((mysql_store *)base, b.p, b.len, "put snapshot", NULL, err);
    free(b.p);
    if (rc < 0 && err->code == EEXIST) cube_err_set(err, EEXIST, "snapshot '%s' exists", si->snapshot_id);
    return rc;
}

static Cube__SnapshotInfo *my_snapshot_get(store *base, const char *id, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT data FROM snapshots WHERE snapshot_id=");
    put_str(&b, id);
    return (Cube__SnapshotInfo *)one_packed((mysql_store *)base, &b, &cube__snapshot_info__descriptor,
                                            "snapshot", id, err);
}

static int my_snapshot_list(store *base, Cube__SnapshotInfo ***out, size_t *n, cube_err *err)
{
    sqlbuf b = {0};
    puts_(&b, "SELECT data FROM snapshots ORDER BY created_at_ms DESC, snapshot_id DESC");
    packed_rows r = {.desc = &cube__snapshot_info__descriptor};
    long got = select_rows((mysql_store *)base, &b, "list snapshots", packed_row_fn, &r, err);
    *out = (Cube__SnapshotInfo **)r.v;
    *n = r.n;
    return got < 0 ? -1 : 0;
}

static int my_snapshot_delete(store *base, const char *id, cube_err *err)
{
    return delete_by((mysql_store *)base, "snapshots", "snapshot_id", id, "snapshot", err);
}

/* INSERT (a new secret) or an UPDATE conditional on the version the caller read. */
static int my_secret_write(store *base, const Cube__Secret *sec, int64_t expect_version, bool insert,
                           cube_err *err)
{
    mysql_store *s = (mysql_store *)base;
    sqlbuf b = {0};
    if (insert) {
        puts_(&b, "INSERT INTO secrets VALUES(");
        put_str(&b, sec->secret_id);
        puts_(&b, ",");
        put_str(&b, sec->name);
        puts_(&b, ",");
        put_int(&b, sec->version);
        puts_(&b, ",");
        put_message(&b, &sec->base);
        puts_(&b, ")");
    } else {
        puts_(&b, "UPDATE secrets SET version=");
        put_int(&b, sec->version);
        puts_(&b, ", data=");
        put_message(&b, &sec->base);
        puts_(&b, " WHERE secret_id=");
        put_str(&b, sec->secret_id);
        puts_(&b, " AND version=");
        put_int(&b, expect_version);
    }
    if (done(&b, err) < 0) return -1;
    uint64_t n = 0;
    int rc = exec(s, b.p, b.len, insert ? "add secret" : "update secret", &n, err);
    free(b.p);
    if (rc < 0 && insert && err->code == EALREADY) {
        /* sent again after a dropped connection: ours if the row under the name has our fresh id */
        cube_err gerr = {0};
        ProtobufCMessage *got =
            get_packed(s, "secrets", "secret_id", sec->secret_id, &cube__secret__descriptor, "secret", &gerr);
        bool ours = got && strcmp(((Cube__Secret *)got)->name, sec->name) == 0;
        if (got) protobuf_c_message_free_unpacked(got, NULL);
        if (ours) return cube_err_clear(err), 0;
        err->code = EEXIST;
    }
    if (rc < 0 && insert && err->code == EEXIST)
        return cube_err_set(err, EEXIST, "a secret named '%s' already exists", sec->name);
    if (rc == 0 && !insert && n == 0)
        return cube_err_set(err, EBUSY, "secret '%s' changed or went meanwhile", sec->name);
    return rc;
}

static int my_secret_put(store *base, const Cube__Secret *sec, cube_err *err)
{
    return my_secret_write(base, sec, 0, true, err);
}

static int my_secret_update(store *base, const Cube__Secret *sec, int64_t expect_version, cube_err *err)
{
    return my_secret_write(base, sec, expect_version, false, err);
}

static Cube__Secret *my_secret_get(store *base, const char *key, cube_err *err)
{
    return (Cube__Secret *)get_packed((mysql_store *)base, "secrets", "secret_id", key,
                                      &cube__secret__descriptor, "secret", err);
}

static int my_secret_list(store *base, Cube__Secret ***out, size_t *n, cube_err *err)
{
    return list_packed((mysql_store *)base, "secrets", &cube__secret__descriptor, (ProtobufCMessage ***)out,
                       n, err);
}

static int my_secret_delete(store *base, const char *id, cube_err *err)
{
    return delete_by((mysql_store *)base, "secrets", "secret_id", id, "secret", err);
}

static void my_close(store *base)
{
    mysql_store *s = (mysql_store *)base;
    if (!s) return;
    for (int i = 0; i < POOL; i++)
        if (s->pool[i].db) mysql_close(s->pool[i].db);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->freed);
    free(s);
}

static const store_ops mysql_ops = {
    .name = "mysql",
    .close = my_close,
    .key_put = my_key_put,
    .key_find = my_key_find,
    .key_list = my_key_list,
    .key_revoke = my_key_revoke,
    .key_set_limit = my_key_set_limit,
    .key_usage = my_key_usage,
    .sandbox_update = my_sandbox_update,
    .sandbox_add = my_sandbox_add,
    .sandbox_add_limited = my_sandbox_add_limited,
    .sandbox_get = my_sandbox_get,
    .sandbox_delete = my_sandbox_delete,
    .sandbox_list = my_sandbox_list,
    .sandbox_expired = my_sandbox_expired,
    .sandbox_claim = my_sandbox_claim,
    .volume_put = my_volume_put,
    .volume_get = my_volume_get,
    .volume_list = my_volume_list,
    .volume_update = my_volume_update,
    .volume_delete = my_volume_delete,
    .secret_put = my_secret_put,
    .secret_get = my_secret_get,
    .secret_list = my_secret_list,
    .secret_update = my_secret_update,
    .secret_delete = my_secret_delete,
    .build_put = my_build_put,
    .build_get = my_build_get,
    .build_list = my_build_list,
    .build_delete_template = my_build_delete_template,
    .build_latest = my_build_latest,
    .snapshot_put = my_snapshot_put,
    .snapshot_get = my_snapshot_get,
    .snapshot_list = my_snapshot_list,
    .snapshot_delete = my_snapshot_delete,
};

/* mysql://user[:password]@host[:port]/database, or @unix(/path/to.sock) instead of host:port */
static int parse_url(mysql_store *s, const char *url, cube_err *err)
{
    if (strncmp(url, "mysql://", 8) != 0)
        return cube_err_set(err, EINVAL, "store URL must start with mysql://");
    const char *p = url + 8, *at = strrchr(p, '@'), *slash = at ? strchr(at, '/') : NULL;
    if (!at || !slash || !slash[1])
        return cube_err_set(err, EINVAL, "store URL: want mysql://user[:password]@host[:port]/database");
    const char *colon = memchr(p, ':', (size_t)(at - p));
    snprintf(s->user, sizeof(s->user), "%.*s", (int)((colon ? colon : at) - p), p);
    if (colon) snprintf(s->pass, sizeof(s->pass), "%.*s", (int)(at - colon - 1), colon + 1);
    const char *h = at + 1;
    if (strncmp(h, "unix(", 5) == 0) {
        const char *close = strchr(h, ')');
        if (!close || close[1] != '/' || !close[2])
            return cube_err_set(err, EINVAL, "store URL: want mysql://user@unix(/path/to.sock)/database");
        snprintf(s->sock, sizeof(s->sock), "%.*s", (int)(close - h - 5), h + 5);
        slash = close + 1;
    } else {
        const char *pc = memchr(h, ':', (size_t)(slash - h));
        snprintf(s->host, sizeof(s->host), "%.*s", (int)((pc ? pc : slash) - h), h);
        s->port = pc ? (unsigned)strtoul(pc + 1, NULL, 10) : 3306;
    }
    snprintf(s->db, sizeof(s->db), "%s", slash + 1);
    return 0;
}

static int migrate(mysql_store *s, cube_err *err)
{
    /* two masters starting together: one migrates, the other waits for the lock and finds it done */
    const char *lock = "SELECT GET_LOCK('cube_store_migrate', 30)";
    conn *c = run(s, lock, strlen(lock), "migration lock", err);
    if (!c) return -1;
    MYSQL_RES *r = mysql_store_result(c->db);
    if (r) mysql_free_result(r);
    int rc = 0;
    const char *create = "CREATE TABLE IF NOT EXISTS schema_version(version INT NOT NULL) ENGINE=InnoDB";
    int version = 0;
    if (mysql_real_query(c->db, create, strlen(create)) != 0 ||
        mysql_real_query(c->db, "SELECT MAX(version) FROM schema_version",
                         strlen("SELECT MAX(version) FROM schema_version")) != 0) {
        rc = cube_err_set(err, EIO, "store: schema version: %s", mysql_error(c->db));
    } else if ((r = mysql_store_result(c->db))) {
        MYSQL_ROW row = mysql_fetch_row(r);
        if (row && row[0]) version = atoi(row[0]);
        mysql_free_result(r);
    }
    for (int v = version; rc == 0 && v < (int)(sizeof(schema) / sizeof(schema[0])); v++) {
        char bump[96];
        snprintf(bump, sizeof(bump), "INSERT INTO schema_version VALUES(%d)", v + 1);
        if (mysql_real_query(c->db, schema[v], strlen(schema[v])) != 0 ||
            mysql_real_query(c->db, bump, strlen(bump)) != 0)
            rc = cube_err_set(err, EIO, "store: migrate to version %d: %s", v + 1, mysql_error(c->db));
    }
    const char *unlock = "DO RELEASE_LOCK('cube_store_migrate')";
    mysql_real_query(c->db, unlock, strlen(unlock));
    release(s, c);
    return rc;
}

store *store_mysql_open(const char *url, cube_err *err)
{
    mysql_library_init(0, NULL, NULL); /* once, before any thread uses the library */
    mysql_store *s = calloc(1, sizeof(*s));
    if (!s) return cube_err_set(err, ENOMEM, "out of memory"), NULL;
    s->base.ops = &mysql_ops;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->freed, NULL);
    if (parse_url(s, url, err) < 0 || migrate(s, err) < 0) {
        my_close(&s->base);
        return NULL;
    }
    return &s->base;
}
