/* The store interface, the same cases against each backend: SQLite (a temp file) and MySQL (a real mariadbd
 * this test starts on a unix socket in a temp dir; skipped loudly when mariadb-server is not installed). Two
 * store handles on one MySQL database stand for two masters. The Redis view (routes and events) over a store,
 * against a real redis-server the test starts. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "store.h"
#include "timeutil.h"
#include "testutil.h"

static char dir[256];
static char mysql_url[512];
static pid_t mariadbd = -1;
static int have_mysql;

static store *open_backend(int i)
{
    cube_err err = {0};
    store *st;
    if (i == 0) {
        char p[300];
        snprintf(p, sizeof(p), "%s/store-%d.db", dir, getpid());
        st = store_sqlite_open(p, &err);
    } else {
        st = store_mysql_open(mysql_url, &err);
    }
    ck_assert_msg(st != NULL, "open %s: %s", i ? "mysql" : "sqlite", err.msg);
    return st;
}

/* Cases that could not run on this host: the whole test then exits with ctest's skip code (77), never as a
 * pass, after the cases that could run (whose failures still fail it). */
static int skipped;

static int skip(int i)
{
    if (i == 1 && !have_mysql) {
        printf("SKIP mysql case: mariadb-server is not installed (deploy/install-deps installs it)\n");
        skipped++;
        return 1;
    }
    return 0;
}

static Cube__Sandbox sandbox(const char *id, int64_t started, int64_t end)
{
    Cube__Sandbox sb = CUBE__SANDBOX__INIT;
    sb.sandbox_id = (char *)id;
    sb.template_id = "base";
    sb.state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
    sb.started_at_ms = started;
    sb.end_at_ms = end;
    return sb;
}

START_TEST(keys)
{
    if (skip(_i)) return;
    store *st = open_backend(_i);
    cube_err err = {0};
    char hash[65];
    snprintf(hash, sizeof(hash), "%064d", getpid());
    char id[64], name[128];
    snprintf(id, sizeof(id), "k%d", getpid());
    ck_assert_int_eq(st->ops->key_put(st, id, "it's a key", hash, 1000, 0, &err), 0);
    ck_assert_int_eq(st->ops->key_put(st, id, "again", hash, 2000, 7, &err), 0); /* same key: no change */
    char got_id[64], got_name[128];
    uint32_t max = 99;
    ck_assert_int_eq(st->ops->key_find(st, hash, got_id, got_name, &max, &err), 0);
    ck_assert_str_eq(got_id, id);
    ck_assert_str_eq(got_name, "it's a key");
    ck_assert_uint_eq(max, 0);
    Cube__ListKeysResponse l;
    ck_assert_int_eq(st->ops->key_list(st, &l, &err), 0);
    int seen = 0;
    for (size_t i = 0; i < l.n_keys; i++) seen += strcmp(l.keys[i]->key_id, id) == 0;
    ck_assert_int_eq(seen, 1);
    store_free_keys(&l);
    ck_assert_int_eq(st->ops->key_revoke(st, id, &err), 0);
    ck_assert_int_eq(st->ops->key_find(st, hash, got_id, got_name, &max, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_int_eq(st->ops->key_revoke(st, id, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    (void)name;
    st->ops->close(st);
}
END_TEST

static Cube__Sandbox keyed(const char *id, const char *key)
{
    Cube__Sandbox sb = sandbox(id, 1, 1000000);
    sb.api_key_id = (char *)key;
    return sb;
}

/* A key's limit counts its sandboxes starting, running or paused, in the add itself */
START_TEST(key_limits)
{
    if (skip(_i)) return;
    store *st = open_backend(_i);
    cube_err err = {0};
    char key[64], hash[65];
    snprintf(key, sizeof(key), "kl%d", getpid());
    snprintf(hash, sizeof(hash), "%063d1", getpid());
    ck_assert_int_eq(st->ops->key_put(st, key, "limited", hash, 1000, 2, &err), 0);
    char got_id[64], got_name[128];
    uint32_t max = 0, held = 99;
    ck_assert_int_eq(st->ops->key_find(st, hash, got_id, got_name, &max, &err), 0);
    ck_assert_uint_eq(max, 2);
    ck_assert_int_eq(st->ops->key_usage(st, key, &max, &held, &err), 0);
    ck_assert_uint_eq(max, 2);
    ck_assert_uint_eq(held, 0);

    char ids[4][64];
    for (int i = 0; i < 4; i++) snprintf(ids[i], sizeof(ids[i]), "kl%d-%d", getpid(), i);
    Cube__Sandbox a = keyed(ids[0], key), b = keyed(ids[1], key), c = keyed(ids[2], key);
    ck_assert_int_eq(st->ops->sandbox_add(st, &a, &err), 0);
    b.state = CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED; /* paused sandboxes hold their memory: they count */
    ck_assert_int_eq(st->ops->sandbox_add(st, &b, &err), 0);
    ck_assert_int_eq(st->ops->sandbox_add(st, &c, &err), -1);
    ck_assert_int_eq(err.code, EDQUOT);
    ck_assert_ptr_null(st->ops->sandbox_get(st, ids[2], &err)); /* nothing was written */
    /* other keys and sandboxes of no key are not bounded by it */
    Cube__Sandbox other = keyed(ids[3], "another-key"), none = sandbox("kl-none", 1, 1000000);
    ck_assert_int_eq(st->ops->sandbox_add(st, &other, &err), 0);
    ck_assert_int_eq(st->ops->sandbox_add(st, &none, &err), 0);
    ck_assert_int_eq(st->ops->key_usage(st, key, &max, &held, &err), 0);
    ck_assert_uint_eq(held, 2);

    /* one ended (killed): room for one more */
    Cube__Sandbox killed = a;
    killed.state = CUBE__SANDBOX_STATE__SANDBOX_STATE_KILLED;
    ck_assert_int_eq(st->ops->sandbox_update(st, &killed, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING, &err),
                     0);
    ck_assert_int_eq(st->ops->sandbox_add(st, &c, &err), 0);
    Cube__ListKeysResponse l;
    ck_assert_int_eq(st->ops->key_list(st, &l, &err), 0);
    int seen = 0;
    for (size_t i = 0; i < l.n_keys; i++) {
        if (strcmp(l.keys[i]->key_id, key) != 0) continue;
        seen++;
        ck_assert_uint_eq(l.keys[i]->max_sandboxes, 2);
        ck_assert_uint_eq(l.keys[i]->sandboxes, 2);
    }
    ck_assert_int_eq(seen, 1);
    store_free_keys(&l);

    /* a limit lowered below what the key holds ends nothing; lifted (0), adds go on */
    ck_assert_int_eq(st->ops->key_set_limit(st, key, 1, &err), 0);
    ck_assert_int_eq(st->ops->sandbox_add(st, &a, &err), -1);
    ck_assert_int_eq(err.code, EDQUOT);
    ck_assert_int_eq(st->ops->key_set_limit(st, key, 0, &err), 0);
    ck_assert_int_eq(st->ops->sandbox_delete(st, ids[0], &err), 0);
    ck_assert_int_eq(st->ops->sandbox_add(st, &a, &err), 0);
    ck_assert_int_eq(st->ops->key_set_limit(st, "no-such-key", 3, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_int_eq(st->ops->key_usage(st, "no-such-key", &max, &held, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    /* a revoked key's limit went with it */
    ck_assert_int_eq(st->ops->key_set_limit(st, key, 1, &err), 0);
    ck_assert_int_eq(st->ops->key_revoke(st, key, &err), 0);
    Cube__Sandbox d = keyed("kl-after-revoke", key);
    ck_assert_int_eq(st->ops->sandbox_add(st, &d, &err), 0);
    const char *all[] = {ids[0], ids[1], ids[2], ids[3], "kl-none", "kl-after-revoke"};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) st->ops->sandbox_delete(st, all[i], &err);
    st->ops->close(st);
}
END_TEST

typedef struct adder {
    store *st;
    const char *key;
    bool plain; /* sandbox_add, as for a key the master knows no limit of */
    int n, added, refused, other;
} adder;

static void *add_many(void *arg)
{
    adder *a = arg;
    for (int i = 0; i < a->n; i++) {
        char id[64];
        snprintf(id, sizeof(id), "ka%d-%d-%p-%d", getpid(), a->plain, arg, i);
        Cube__Sandbox sb = keyed(id, a->key);
        cube_err err = {0};
        if ((a->plain ? a->st->ops->sandbox_add(a->st, &sb, &err)
                      : a->st->ops->sandbox_add_limited(a->st, &sb, &err)) == 0)
            a->added++;
        else if (err.code == EDQUOT)
            a->refused++;
        else
            a->other++;
    }
    return NULL;
}

/* adds for one key from several threads (MySQL: two masters' connection pools) never take it past its limit
 */
START_TEST(key_limit_holds_under_concurrent_adds)
{
    if (skip(_i)) return;
    store *m1 = open_backend(_i), *m2 = _i ? open_backend(_i) : m1;
    cube_err err = {0};
    char key[64], hash[65];
    snprintf(key, sizeof(key), "kc%d", getpid());
    snprintf(hash, sizeof(hash), "%063d2", getpid());
    ck_assert_int_eq(m1->ops->key_put(m1, key, "racing", hash, 1000, 5, &err), 0);
    adder ad[6];
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        ad[i] = (adder){.st = i % 2 ? m2 : m1, .key = key, .n = 4};
        pthread_create(&t[i], NULL, add_many, &ad[i]);
    }
    int added = 0, refused = 0, other = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        added += ad[i].added;
        refused += ad[i].refused;
        other += ad[i].other;
    }
    ck_assert_int_eq(other, 0);
    ck_assert_int_eq(added, 5);
    ck_assert_int_eq(refused, 24 - 5);
    uint32_t max = 0, held = 0;
    ck_assert_int_eq(m2->ops->key_usage(m2, key, &max, &held, &err), 0);
    ck_assert_uint_eq(held, 5);

    /* a key without a limit: every add lands, none held up by another's */
    ck_assert_int_eq(m1->ops->key_set_limit(m1, key, 0, &err), 0);
    added = refused = other = 0;
    for (int i = 0; i < 6; i++) {
        ad[i] = (adder){.st = i % 2 ? m2 : m1, .key = key, .plain = true, .n = 8};
        pthread_create(&t[i], NULL, add_many, &ad[i]);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        added += ad[i].added;
        other += ad[i].other + ad[i].refused;
    }
    ck_assert_int_eq(other, 0);
    ck_assert_int_eq(added, 48);
    m1->ops->key_revoke(m1, key, &err);
    if (m2 != m1) m2->ops->close(m2);
    m1->ops->close(m1);
}
END_TEST

START_TEST(sandboxes_and_claims)
{
    if (skip(_i)) return;
    store *st = open_backend(_i);
    cube_err err = {0};
    char a[64], b[64];
    snprintf(a, sizeof(a), "ia%d", getpid());
    snprintf(b, sizeof(b), "ib%d", getpid());
    Cube__Sandbox sa = sandbox(a, 100, 1000), sbb = sandbox(b, 200, 5000);
    Cube__Sandbox__MetadataEntry md = CUBE__SANDBOX__METADATA_ENTRY__INIT, *mdp = &md;
    md.key = "owner";
    md.value = "quote ' and backslash \\";
    sa.n_metadata = 1;
    sa.metadata = &mdp;
    ck_assert_int_eq(st->ops->sandbox_add(st, &sa, &err), 0);
    ck_assert_int_eq(st->ops->sandbox_add(st, &sbb, &err), 0);
    Cube__Sandbox *got = st->ops->sandbox_get(st, a, &err);
    ck_assert_ptr_nonnull(got);
    ck_assert_str_eq(got->metadata[0]->value, "quote ' and backslash \\");
    cube__sandbox__free_unpacked(got, NULL);
    Cube__Sandbox **v;
    size_t n;
    ck_assert_int_eq(st->ops->sandbox_expired(st, 2000, &v, &n, &err), 0);
    int expired_a = 0, expired_b = 0;
    for (size_t i = 0; i < n; i++) {
        expired_a += strcmp(v[i]->sandbox_id, a) == 0;
        expired_b += strcmp(v[i]->sandbox_id, b) == 0;
    }
    store_free_sandboxes(v, n);
    ck_assert_int_eq(expired_a, 1);
    ck_assert_int_eq(expired_b, 0);
    /* a claim moves end_at once; a second claim from what was seen before loses */
    ck_assert_int_eq(st->ops->sandbox_claim(st, a, 1000, 62000, &err), 0);
    ck_assert_int_eq(st->ops->sandbox_claim(st, a, 1000, 62000, &err), -1);
    ck_assert_int_eq(err.code, EBUSY);
    ck_assert_int_eq(st->ops->sandbox_expired(st, 2000, &v, &n, &err), 0);
    for (size_t i = 0; i < n; i++) ck_assert_str_ne(v[i]->sandbox_id, a);
    store_free_sandboxes(v, n);
    ck_assert_int_eq(st->ops->sandbox_list(st, &v, &n, &err), 0);
    int pos_a = -1, pos_b = -1;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(v[i]->sandbox_id, a)) pos_a = (int)i;
        if (!strcmp(v[i]->sandbox_id, b)) pos_b = (int)i;
    }
    store_free_sandboxes(v, n);
    ck_assert_int_ge(pos_a, 0);
    ck_assert_int_gt(pos_b, pos_a); /* start order */
    ck_assert_int_eq(st->ops->sandbox_delete(st, a, &err), 0);
    ck_assert_ptr_null(st->ops->sandbox_get(st, a, &err));
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_int_eq(st->ops->sandbox_delete(st, a, &err), -1);
    ck_assert_int_eq(st->ops->sandbox_delete(st, b, &err), 0);
    st->ops->close(st);
}
END_TEST

/* Changes are transitions: conditional on the state read, never recreating what a kill removed. */
START_TEST(transitions)
{
    if (skip(_i)) return;
    store *st = open_backend(_i);
    cube_err err = {0};
    char id[64];
    snprintf(id, sizeof(id), "it%d", getpid());
    Cube__Sandbox sb = sandbox(id, 100, 1000);
    ck_assert_int_eq(st->ops->sandbox_add(st, &sb, &err), 0);
    ck_assert_int_eq(st->ops->sandbox_add(st, &sb, &err), -1); /* an id is added once */
    ck_assert_int_eq(err.code, EEXIST);
    /* running -> paused, from what was read */
    sb.state = CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED;
    ck_assert_int_eq(st->ops->sandbox_update(st, &sb, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING, &err), 0);
    /* a second pause read "running" too: it lost */
    ck_assert_int_eq(st->ops->sandbox_update(st, &sb, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING, &err), -1);
    ck_assert_int_eq(err.code, EBUSY);
    /* a change that writes the same values still finds its row (MySQL counts matched rows, not changed) */
    ck_assert_int_eq(st->ops->sandbox_update(st, &sb, CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED, &err), 0);
    Cube__Sandbox *got = st->ops->sandbox_get(st, id, &err);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(got->state, CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED);
    cube__sandbox__free_unpacked(got, NULL);
    /* a kill wins: a resume that read "paused" before it finds nothing, and brings nothing back */
    ck_assert_int_eq(st->ops->sandbox_delete(st, id, &err), 0);
    sb.state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
    ck_assert_int_eq(st->ops->sandbox_update(st, &sb, CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_ptr_null(st->ops->sandbox_get(st, id, &err));
    ck_assert_int_eq(err.code, ENOENT);
    st->ops->close(st);
}
END_TEST

START_TEST(volumes)
{
    if (skip(_i)) return;
    store *st = open_backend(_i);
    cube_err err = {0};
    char id[64], name[64];
    snprintf(id, sizeof(id), "vol%d", getpid());
    snprintf(name, sizeof(name), "data-%d", getpid());
    Cube__Volume v = CUBE__VOLUME__INIT;
    v.volume_id = id;
    v.name = name;
    ck_assert_int_eq(st->ops->volume_put(st, &v, &err), 0);
    Cube__Volume dup = v;
    dup.volume_id = "other";
    ck_assert_int_eq(st->ops->volume_put(st, &dup, &err), -1);
    ck_assert_int_eq(err.code, EEXIST);
    Cube__Volume *g = st->ops->volume_get(st, name, &err);
    ck_assert_ptr_nonnull(g);
    ck_assert_str_eq(g->volume_id, id);
    cube__volume__free_unpacked(g, NULL);
    g = st->ops->volume_get(st, id, &err);
    ck_assert_ptr_nonnull(g);
    /* placing it on a node is a transition from the record read: a second placement from the same read fails
     */
    Cube__Volume placed = *g, other = *g;
    placed.node_id = "node-1";
    other.node_id = "node-2";
    ck_assert_int_eq(st->ops->volume_update(st, g, &placed, &err), 0);
    ck_assert_int_eq(st->ops->volume_update(st, g, &other, &err), -1);
    ck_assert_int_eq(err.code, EBUSY);
    cube__volume__free_unpacked(g, NULL);
    g = st->ops->volume_get(st, id, &err);
    ck_assert_str_eq(g->node_id, "node-1");
    cube__volume__free_unpacked(g, NULL);
    ck_assert_int_eq(st->ops->volume_delete(st, id, &err), 0);
    ck_assert_ptr_null(st->ops->volume_get(st, id, &err));
    ck_assert_int_eq(err.code, ENOENT);
    st->ops->close(st);
}
END_TEST

/* template builds: by id, the newest of a template, ids unique */
START_TEST(builds)
{
    if (skip(_i)) return;
    store *st = open_backend(_i);
    cube_err err = {0};
    char tpl[64], id1[64], id2[64];
    snprintf(tpl, sizeof(tpl), "tpl-%d", getpid());
    snprintf(id1, sizeof(id1), "b1-%d", getpid());
    snprintf(id2, sizeof(id2), "b2-%d", getpid());
    char *tags[] = {"v1"};
    Cube__TemplateBuild b = CUBE__TEMPLATE_BUILD__INIT;
    b.template_id = tpl;
    b.build_id = id1;
    b.node_id = "node-a";
    b.created_at_ms = 1000;
    b.n_tags = 1;
    b.tags = tags;
    ck_assert_int_eq(st->ops->build_put(st, &b, &err), 0);
    ck_assert_int_eq(st->ops->build_put(st, &b, &err), -1);
    ck_assert_int_eq(err.code, EEXIST);
    b.build_id = id2;
    b.node_id = "node-b";
    b.created_at_ms = 2000;
    ck_assert_int_eq(st->ops->build_put(st, &b, &err), 0);
    Cube__TemplateBuild *g = st->ops->build_get(st, id1, &err);
    ck_assert_ptr_nonnull(g);
    ck_assert_str_eq(g->node_id, "node-a");
    ck_assert_uint_eq(g->n_tags, 1);
    ck_assert_str_eq(g->tags[0], "v1");
    cube__template_build__free_unpacked(g, NULL);
    g = st->ops->build_latest(st, tpl, &err);
    ck_assert_ptr_nonnull(g);
    ck_assert_str_eq(g->build_id, id2);
    cube__template_build__free_unpacked(g, NULL);
    ck_assert_ptr_null(st->ops->build_get(st, "no-such-build", &err));
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_ptr_null(st->ops->build_latest(st, "no-such-template", &err));
    /* a deleted template's builds go, all of them */
    ck_assert_int_eq(st->ops->build_delete_template(st, tpl, &err), 0);
    ck_assert_ptr_null(st->ops->build_get(st, id1, &err));
    ck_assert_ptr_null(st->ops->build_latest(st, tpl, &err));
    ck_assert_int_eq(st->ops->build_delete_template(st, tpl, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_int_eq(err.code, ENOENT);
    st->ops->close(st);
}
END_TEST

/* snapshots: ids unique, listed newest first, deleted once */
START_TEST(snapshots)
{
    if (skip(_i)) return;
    store *st = open_backend(_i);
    cube_err err = {0};
    char old[64], young[64];
    snprintf(old, sizeof(old), "snap-old-%d", getpid());
    snprintf(young, sizeof(young), "snap-new-%d", getpid());
    Cube__SnapshotInfo si = CUBE__SNAPSHOT_INFO__INIT;
    si.snapshot_id = old;
    si.sandbox_id = "sb-1";
    si.node_id = "node-a";
    si.template_id = "base";
    si.created_at_ms = 4102444800000LL; /* after any other run's: first in the list */
    ck_assert_msg(st->ops->snapshot_put(st, &si, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(st->ops->snapshot_put(st, &si, &err), -1);
    ck_assert_int_eq(err.code, EEXIST);
    si.snapshot_id = young;
    si.created_at_ms += 1000;
    ck_assert_int_eq(st->ops->snapshot_put(st, &si, &err), 0);
    Cube__SnapshotInfo **all;
    size_t n;
    ck_assert_int_eq(st->ops->snapshot_list(st, &all, &n, &err), 0);
    ck_assert_uint_ge(n, 2);
    ck_assert_str_eq(all[0]->snapshot_id, young);
    ck_assert_str_eq(all[1]->snapshot_id, old);
    ck_assert_str_eq(all[1]->node_id, "node-a");
    ck_assert_str_eq(all[1]->template_id, "base");
    store_free_snapshots(all, n);
    Cube__SnapshotInfo *g = st->ops->snapshot_get(st, old, &err);
    ck_assert_ptr_nonnull(g);
    ck_assert_str_eq(g->sandbox_id, "sb-1");
    cube__snapshot_info__free_unpacked(g, NULL);
    for (int i = 0; i < 2; i++) {
        const char *id = i ? young : old;
        ck_assert_int_eq(st->ops->snapshot_delete(st, id, &err), 0);
        ck_assert_int_eq(st->ops->snapshot_delete(st, id, &err), -1);
        ck_assert_int_eq(err.code, ENOENT);
        ck_assert_ptr_null(st->ops->snapshot_get(st, id, &err));
        ck_assert_int_eq(err.code, ENOENT);
    }
    st->ops->close(st);
}
END_TEST

/* a secret's record: names unique, an update only from the version read, the list in name order */
START_TEST(secrets)
{
    if (skip(_i)) return;
    store *st = open_backend(_i);
    cube_err err = {0};
    char id[64], id2[64], name[64], name2[64];
    snprintf(id, sizeof(id), "sec_a%d", getpid());
    snprintf(id2, sizeof(id2), "sec_b%d", getpid());
    snprintf(name, sizeof(name), "b-key-%d", getpid());
    snprintf(name2, sizeof(name2), "a-key-%d", getpid());
    uint8_t sealed[] = {1, 2, 3, 0, 4};
    Cube__Secret s = CUBE__SECRET__INIT;
    s.secret_id = id;
    s.name = name;
    s.version = 1;
    s.sealed_value.data = sealed;
    s.sealed_value.len = sizeof(sealed);
    ck_assert_int_eq(st->ops->secret_put(st, &s, &err), 0);
    Cube__Secret dup = s;
    dup.secret_id = id2;
    ck_assert_int_eq(st->ops->secret_put(st, &dup, &err), -1);
    ck_assert_int_eq(err.code, EEXIST);
    dup.name = name2;
    ck_assert_int_eq(st->ops->secret_put(st, &dup, &err), 0);
    Cube__Secret *g = st->ops->secret_get(st, name, &err);
    ck_assert_ptr_nonnull(g);
    ck_assert_str_eq(g->secret_id, id);
    ck_assert_uint_eq(g->sealed_value.len, sizeof(sealed));
    ck_assert_int_eq(memcmp(g->sealed_value.data, sealed, sizeof(sealed)), 0);
    cube__secret__free_unpacked(g, NULL);
    /* version 1 -> 2; a second writer that also read version 1 is refused */
    Cube__Secret next = s;
    next.version = 2;
    ck_assert_int_eq(st->ops->secret_update(st, &next, 1, &err), 0);
    ck_assert_int_eq(st->ops->secret_update(st, &next, 1, &err), -1);
    ck_assert_int_eq(err.code, EBUSY);
    g = st->ops->secret_get(st, id, &err);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(g->version, 2);
    cube__secret__free_unpacked(g, NULL);
    Cube__Secret **all;
    size_t n;
    ck_assert_int_eq(st->ops->secret_list(st, &all, &n, &err), 0);
    int at_a = -1, at_b = -1;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(all[i]->name, name2) == 0) at_a = (int)i;
        if (strcmp(all[i]->name, name) == 0) at_b = (int)i;
    }
    ck_assert(at_a >= 0 && at_b > at_a);
    store_free_secrets(all, n);
    ck_assert_int_eq(st->ops->secret_delete(st, id, &err), 0);
    ck_assert_int_eq(st->ops->secret_delete(st, id2, &err), 0);
    ck_assert_ptr_null(st->ops->secret_get(st, id, &err));
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_int_eq(st->ops->secret_update(st, &next, 2, &err), -1); /* gone */
    st->ops->close(st);
}
END_TEST

typedef struct racer {
    store *st;
    const char *id;
    int won;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    cube_err err = {0};
    r->won = r->st->ops->sandbox_claim(r->st, r->id, 1000, 99000, &err) == 0;
    return NULL;
}

/* two masters (two store handles, two connection pools) see the same expired sandbox: one acts */
START_TEST(two_masters_claim_once)
{
    if (skip(1)) return;
    store *m1 = open_backend(1), *m2 = open_backend(1);
    cube_err err = {0};
    for (int round = 0; round < 20; round++) {
        char id[64];
        snprintf(id, sizeof(id), "race%d-%d", getpid(), round);
        Cube__Sandbox sb = sandbox(id, 1, 1000);
        ck_assert_int_eq(m1->ops->sandbox_add(m1, &sb, &err), 0);
        racer a = {m1, id, 0}, b = {m2, id, 0};
        pthread_t ta, tb;
        pthread_create(&ta, NULL, race, &a);
        pthread_create(&tb, NULL, race, &b);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        ck_assert_int_eq(a.won + b.won, 1);
        m2->ops->sandbox_delete(m2, id, &err);
    }
    m1->ops->close(m1);
    m2->ops->close(m2);
}
END_TEST

static int run_cmd(char *const argv[])
{
    pid_t p = fork();
    if (p == 0) {
        freopen("/dev/null", "w", stdout);
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void start_mariadbd(void)
{
    char data[300], sock[300], pidf[300], datadir_arg[320], sock_arg[320], pid_arg[320], log[320];
    snprintf(data, sizeof(data), "%s/mysql", dir);
    snprintf(sock, sizeof(sock), "%s/mysql.sock", dir);
    snprintf(pidf, sizeof(pidf), "%s/mysql.pid", dir);
    snprintf(datadir_arg, sizeof(datadir_arg), "--datadir=%s", data);
    snprintf(sock_arg, sizeof(sock_arg), "--socket=%s", sock);
    snprintf(pid_arg, sizeof(pid_arg), "--pid-file=%s", pidf);
    snprintf(log, sizeof(log), "--log-error=%s/mysql.err", dir);
    if (access(data, F_OK) != 0) {
        char *inst[] = {"mariadb-install-db",
                        "--no-defaults",
                        datadir_arg,
                        "--user=root",
                        "--auth-root-authentication-method=normal",
                        "--skip-test-db",
                        NULL};
        if (run_cmd(inst) != 0) {
            fprintf(stderr, "mariadb-install-db failed\n");
            exit(1);
        }
    }
    mariadbd = fork();
    if (mariadbd == 0) {
        execlp("mariadbd", "mariadbd", "--no-defaults", datadir_arg, sock_arg, pid_arg, log,
               "--skip-networking", "--user=root", "--innodb-buffer-pool-size=32M", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300 && access(sock, F_OK) != 0; i++) usleep(100 * 1000);
    char *create[] = {
        "mariadb", "--no-defaults", sock_arg, "-uroot", "-e", "CREATE DATABASE IF NOT EXISTS cube_test",
        NULL};
    for (int i = 0; i < 50 && run_cmd(create) != 0; i++) usleep(100 * 1000);
    snprintf(mysql_url, sizeof(mysql_url), "mysql://root@unix(%s)/cube_test", sock);
}

static void stop_mariadbd(void)
{
    if (mariadbd <= 0) return;
    kill(mariadbd, SIGTERM);
    waitpid(mariadbd, NULL, 0);
    mariadbd = -1;
}

/* the server restarts under a store handle: the next call reconnects and succeeds */
START_TEST(mysql_reconnects_after_a_restart)
{
    if (skip(1)) return;
    store *st = open_backend(1);
    cube_err err = {0};
    Cube__Sandbox **v;
    size_t n;
    ck_assert_int_eq(st->ops->sandbox_list(st, &v, &n, &err), 0);
    store_free_sandboxes(v, n);
    stop_mariadbd();
    start_mariadbd();
    ck_assert_msg(st->ops->sandbox_list(st, &v, &n, &err) == 0, "after restart: %s", err.msg);
    store_free_sandboxes(v, n);
    st->ops->close(st);
}
END_TEST

/* ---- the Redis view: routes and events, in the order the store took them ---- */

static pid_t redis = -1; /* the test's redis-server; main stops it if a failed test left it running */

static void stop_redis(void)
{
    if (redis <= 0) return;
    kill(redis, SIGKILL);
    waitpid(redis, NULL, 0);
    redis = -1;
}

static redisContext *redis_client(const char *sock)
{
    redisContext *c = NULL;
    for (int i = 0; i < 100; i++) { /* redis-server takes a moment to listen */
        c = redisConnectUnix(sock);
        if (c && !c->err) return c;
        if (c) redisFree(c);
        c = NULL;
        usleep(20 * 1000);
    }
    ck_abort_msg("redis-server did not come up at %s", sock);
    return NULL;
}

static char *hget(redisContext *c, const char *id)
{
    static char v[700];
    redisReply *r = redisCommand(c, "HGET cube:routes %s", id);
    ck_assert_ptr_nonnull(r);
    snprintf(v, sizeof(v), "%s", r->type == REDIS_REPLY_STRING ? r->str : "(none)");
    freeReplyObject(r);
    return v;
}

START_TEST(redis_routes_follow_the_store_in_order)
{
    if (access("/usr/bin/redis-server", X_OK) != 0) {
        printf("SKIP redis routes: redis-server is not installed (deploy/install-deps installs it)\n");
        skipped++;
        return;
    }
    char sock[300], addr[310], dbp[300];
    snprintf(sock, sizeof(sock), "%s/redis.sock", dir);
    snprintf(addr, sizeof(addr), "unix:%s", sock);
    snprintf(dbp, sizeof(dbp), "%s/routes.db", dir);
    redis = fork();
    if (redis == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
               "--appendonly", "no", "--dir", dir, (char *)NULL);
        _exit(127);
    }
    redisContext *c = redis_client(sock);
    redisContext *sub = redis_client(sock);
    redisReply *r = redisCommand(sub, "SUBSCRIBE cube:events");
    freeReplyObject(r);
    cube_err err = {0};
    store *inner = store_sqlite_open(dbp, &err);
    ck_assert_ptr_nonnull(inner);
    store *st = store_with_routes(inner, addr, &err);
    ck_assert_msg(st != NULL, "%s", err.msg);

    /* a new sandbox: stored when add returns, its route written after (not waited for) */
    Cube__Sandbox a = sandbox("iroutea", 1, 2);
    a.node_id = "node-1";
    a.agent_address = "netns:/proc/77/ns/net:49983";
    ck_assert_int_eq(st->ops->sandbox_add(st, &a, &err), 0);
    Cube__Sandbox *got = st->ops->sandbox_get(st, "iroutea", &err);
    ck_assert_ptr_nonnull(got);
    cube__sandbox__free_unpacked(got, NULL);
    /* a change waits for its own write, and the writes go in order: after it, the add's is there too */
    Cube__Sandbox b = a;
    b.sandbox_id = "irouteb";
    ck_assert_int_eq(st->ops->sandbox_add(st, &b, &err), 0);
    b.state = CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED;
    ck_assert_int_eq(st->ops->sandbox_update(st, &b, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING, &err), 0);
    ck_assert_str_eq(hget(c, "iroutea"), "2 0 node-1 /proc/77/ns/net"); /* STATE_RUNNING */
    ck_assert_str_eq(hget(c, "irouteb"), "3 0 node-1 /proc/77/ns/net"); /* STATE_PAUSED */
    ck_assert_int_eq(st->ops->sandbox_delete(st, "iroutea", &err), 0);
    ck_assert_str_eq(hget(c, "iroutea"), "x"); /* a tombstone, right when delete returns */
    /* a change that lost to the delete writes neither a record nor a route */
    ck_assert_int_eq(st->ops->sandbox_update(st, &a, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_str_eq(hget(c, "iroutea"), "x");
    /* the events, in order */
    const char *want[] = {"\"iroutea\",\"state\":\"running\"", "\"irouteb\",\"state\":\"running\"",
                          "\"irouteb\",\"state\":\"paused\"", "\"iroutea\",\"state\":\"deleted\""};
    for (int i = 0; i < 4; i++) {
        redisReply *m = NULL;
        ck_assert_int_eq(redisGetReply(sub, (void **)&m), REDIS_OK);
        ck_assert(m->type == REDIS_REPLY_ARRAY && m->elements == 3);
        ck_assert_msg(strstr(m->element[2]->str, want[i]) != NULL, "event %d: %s", i, m->element[2]->str);
        freeReplyObject(m);
    }
    /* a private sandbox's route carries its traffic token, which the proxies check */
    Cube__Sandbox p = a;
    p.sandbox_id = "iroutep";
    p.traffic_access_token = "0123456789abcdef0123456789abcdef";
    ck_assert_int_eq(st->ops->sandbox_add(st, &p, &err), 0);
    ck_assert_int_eq(st->ops->sandbox_update(st, &p, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING, &err), 0);
    ck_assert_str_eq(hget(c, "iroutep"), "2 0 node-1 /proc/77/ns/net 0123456789abcdef0123456789abcdef");
    /* what cube-proxy applies inbound goes with it: the Host mask and the HTTPS ports ("-" for none) */
    Cube__NetworkPolicy np = CUBE__NETWORK_POLICY__INIT;
    uint32_t ports[] = {8443, 9443};
    np.mask_request_host = "localhost:${PORT}";
    np.https_ports = ports;
    np.n_https_ports = 2;
    Cube__Sandbox q = a;
    q.sandbox_id = "irouteq";
    q.network = &np;
    ck_assert_int_eq(st->ops->sandbox_add(st, &q, &err), 0);
    ck_assert_int_eq(st->ops->sandbox_update(st, &q, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING, &err), 0);
    ck_assert_str_eq(hget(c, "irouteq"), "2 0 node-1 /proc/77/ns/net - localhost:${PORT} 8443,9443");
    np.n_https_ports = 0;
    q.sandbox_id = "irouter";
    ck_assert_int_eq(st->ops->sandbox_add(st, &q, &err), 0);
    ck_assert_int_eq(st->ops->sandbox_update(st, &q, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING, &err), 0);
    ck_assert_str_eq(hget(c, "irouter"), "2 0 node-1 /proc/77/ns/net - localhost:${PORT} -");
    /* Redis gone: the store still answers, and fast (the view is rebuilt when Redis is back) */
    stop_redis();
    Cube__Sandbox d = a;
    d.sandbox_id = "iroutec";
    int64_t t0 = cube_now_mono_ms();
    ck_assert_int_eq(st->ops->sandbox_add(st, &d, &err), 0);
    d.state = CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED;
    ck_assert_int_eq(st->ops->sandbox_update(st, &d, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING, &err), 0);
    ck_assert_int_lt(cube_now_mono_ms() - t0, 3000);
    got = st->ops->sandbox_get(st, "iroutec", &err);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(got->state, CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED);
    cube__sandbox__free_unpacked(got, NULL);
    st->ops->close(st); /* stops the writer after what was queued */
    redisFree(c);
    redisFree(sub);
}
END_TEST

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/cube-store-test-%d", getpid());
    mkdir(dir, 0700);
    have_mysql = access("/usr/sbin/mariadbd", X_OK) == 0 && geteuid() == 0;
    if (have_mysql) start_mariadbd();
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("backends");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, keys, 0, 2);
    tcase_add_loop_test(tc, key_limits, 0, 2);
    tcase_add_loop_test(tc, key_limit_holds_under_concurrent_adds, 0, 2);
    tcase_add_loop_test(tc, sandboxes_and_claims, 0, 2);
    tcase_add_loop_test(tc, transitions, 0, 2);
    tcase_add_loop_test(tc, volumes, 0, 2);
    tcase_add_loop_test(tc, secrets, 0, 2);
    tcase_add_loop_test(tc, builds, 0, 2);
    tcase_add_loop_test(tc, snapshots, 0, 2);
    tcase_add_test(tc, two_masters_claim_once);
    tcase_add_test(tc, mysql_reconnects_after_a_restart);
    tcase_add_test(tc, redis_routes_follow_the_store_in_order);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* the reconnect test restarts the server this process owns */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    stop_mariadbd();
    stop_redis();
    char rm[320];
    snprintf(rm, sizeof(rm), "rm -rf %s", dir);
    if (system(rm) != 0) fprintf(stderr, "could not remove %s\n", dir);
    if (failed) return 1;
    if (skipped) {
        printf("SKIPPED: %d case(s) could not run on this host (see SKIP lines above)\n", skipped);
        return 77;
    }
    return 0;
}
