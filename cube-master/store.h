/* The control plane's truth behind one interface: API keys, nodes, sandboxes. SQLite backs it on a single
 * node (embedded, zero setup); a MySQL backend for clusters implements the same table of operations. */
#ifndef CUBE_MASTER_STORE_H
#define CUBE_MASTER_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "common.pb-c.h"
#include "err.h"
#include "master.pb-c.h"

typedef struct store store;

typedef struct store_ops {
    const char *name;
    void (*close)(store *st);
    /* API keys are stored by the sha256 of the secret; lookups take the hash. A key's max_sandboxes (0: none)
     * bounds the sandboxes its creates and forks hold at once (sandbox_add). */
    int (*key_put)(store *st, const char *key_id, const char *name, const char *hash, int64_t created_ms,
                   uint32_t max_sandboxes, cube_err *err);
    int (*key_find)(store *st, const char *hash, char key_id[64], char name[128], uint32_t *max_sandboxes,
                    cube_err *err); /* ENOENT */
    /* each key with its limit and the sandboxes it holds now; caller frees with store_free_keys */
    int (*key_list)(store *st, Cube__ListKeysResponse *out, cube_err *err);
    int (*key_revoke)(store *st, const char *key_id, cube_err *err);                            /* ENOENT */
    int (*key_set_limit)(store *st, const char *key_id, uint32_t max_sandboxes, cube_err *err); /* ENOENT */
    /* The key's limit and how many sandboxes (starting, running or paused) it holds. ENOENT: no such key. */
    int (*key_usage)(store *st, const char *key_id, uint32_t *max_sandboxes, uint32_t *held, cube_err *err);
    /* Sandboxes are kept whole (packed) with the columns that filters need. A change is a transition: the
     * record is replaced only while it exists in the state the caller read (expect_state), never recreated;
     * ENOENT when it is gone (a kill won), EBUSY when its state moved meanwhile (read it again). */
    int (*sandbox_update)(store *st, const Cube__Sandbox *sb, int expect_state, cube_err *err);
    /* The record of a sandbox just created: EEXIST if its id is taken. Stored before it returns; a view
     * derived from the store (Redis routes) may be brought up to date after. A sandbox made for a key
     * (api_key_id) is added only while that key holds fewer than its limit (EDQUOT when it holds as many),
     * checked in the same statement. */
    int (*sandbox_add)(store *st, const Cube__Sandbox *sb, cube_err *err);
    /* The same for a key known to have a limit: adds for one key are taken one at a time (MySQL: its row
     * locked for the add), so masters sharing a store never take a key past its limit together. */
    int (*sandbox_add_limited)(store *st, const Cube__Sandbox *sb, cube_err *err);
    Cube__Sandbox *(*sandbox_get)(store *st, const char *id,
                                  cube_err *err);                    /* NULL + ENOENT; free_unpacked */
    int (*sandbox_delete)(store *st, const char *id, cube_err *err); /* ENOENT */
    /* All rows in start order (the caller filters: a node holds at most thousands). */
    int (*sandbox_list)(store *st, Cube__Sandbox ***out, size_t *n, cube_err *err);
    /* Volumes, by id; names are unique. */
    int (*volume_put)(store *st, const Cube__Volume *v, cube_err *err); /* EEXIST for a taken name */
    Cube__Volume *(*volume_get)(store *st, const char *id_or_name, cube_err *err); /* NULL + ENOENT */
    int (*volume_list)(store *st, Cube__Volume ***out, size_t *n, cube_err *err);
    int (*volume_delete)(store *st, const char *id, cube_err *err);
    /* A transition: nv replaces the volume's record only while it is still old, byte for byte (EBUSY when
     * it moved, ENOENT when it is gone). */
    int (*volume_update)(store *st, const Cube__Volume *old, const Cube__Volume *nv, cube_err *err);
    /* Secrets, by id; names are unique. An update is a transition: it replaces the record only while its
     * version is still expect_version (EBUSY otherwise, gone or moved: read it again). */
    int (*secret_put)(store *st, const Cube__Secret *s, cube_err *err); /* EEXIST for a taken name */
    Cube__Secret *(*secret_get)(store *st, const char *id_or_name, cube_err *err); /* NULL + ENOENT */
    int (*secret_list)(store *st, Cube__Secret ***out, size_t *n, cube_err *err);
    int (*secret_update)(store *st, const Cube__Secret *s, int64_t expect_version, cube_err *err);
    int (*secret_delete)(store *st, const char *id, cube_err *err); /* ENOENT */
    /* Template builds, by id (immutable once put: their progress lives on the node that runs them). */
    int (*build_put)(store *st, const Cube__TemplateBuild *b, cube_err *err);          /* EEXIST */
    Cube__TemplateBuild *(*build_get)(store *st, const char *build_id, cube_err *err); /* NULL + ENOENT */
    /* The template's builds, newest first, at most 50 (caller frees with store_free_builds). */
    int (*build_list)(store *st, const char *template_id, Cube__TemplateBuild ***out, size_t *n,
                      cube_err *err);
    /* A deleted template's builds (its name may be built again from scratch); ENOENT when it had none. */
    int (*build_delete_template)(store *st, const char *template_id, cube_err *err);
    /* The template's newest build: the one its files are uploaded for. NULL + ENOENT when none. */
    Cube__TemplateBuild *(*build_latest)(store *st, const char *template_id, cube_err *err);
    /* Snapshots (templates made from a sandbox, held by one node), by id: the masters' list of them. */
    int (*snapshot_put)(store *st, const Cube__SnapshotInfo *s, cube_err *err);           /* EEXIST */
    Cube__SnapshotInfo *(*snapshot_get)(store *st, const char *id, cube_err *err);        /* NULL + ENOENT */
    int (*snapshot_list)(store *st, Cube__SnapshotInfo ***out, size_t *n, cube_err *err); /* newest first */
    int (*snapshot_delete)(store *st, const char *id, cube_err *err);                     /* ENOENT */
    /* Running sandboxes whose end_at has passed. */
    int (*sandbox_expired)(store *st, int64_t now_ms, Cube__Sandbox ***out, size_t *n, cube_err *err);
    /* Takes an expired sandbox for this master: moves end_at from seen_end to new_end only if no one moved it
     * since (EBUSY then). Masters sharing a store act on a timeout once; a master that dies holding one
     * leaves it to the next after new_end. */
    int (*sandbox_claim)(store *st, const char *id, int64_t seen_end, int64_t new_end, cube_err *err);
    /* A node was heard from: kept where proxies see it for ttl_ms (Redis: cube:node:<id> = its proxy's
     * address, expiring when the node has been silent that long). NULL: such stores keep no liveness. */
    void (*node_seen)(store *st, const char *node_id, const char *proxy_address, int64_t ttl_ms);
} store_ops;

struct store {
    const store_ops *ops;
};

store *store_sqlite_open(const char *path, cube_err *err);
/* mysql://user[:password]@host[:port]/database or mysql://user@unix(/path.sock)/database */
store *store_mysql_open(const char *url, cube_err *err);
/* inner, plus sandbox routes kept in Redis at redis_addr for cube-proxy (takes inner; closes it on error). */
store *store_with_routes(store *inner, const char *redis_addr, cube_err *err);
/* SQL (the same in both stores): how many sandboxes the key (an SQL expression) holds against its limit,
 * those starting, running or paused */
#define STORE_HELD_BY(key)                                                                                   \
    "(SELECT COUNT(*) FROM sandboxes s WHERE s.api_key_id=" key " AND s.state IN (1,2,3))"

void store_free_sandboxes(Cube__Sandbox **v, size_t n);
void store_free_keys(Cube__ListKeysResponse *out);
void store_free_volumes(Cube__Volume **v, size_t n);
void store_free_secrets(Cube__Secret **v, size_t n);
void store_free_builds(Cube__TemplateBuild **v, size_t n);
void store_free_snapshots(Cube__SnapshotInfo **v, size_t n);

#endif
