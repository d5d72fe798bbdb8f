/* The store with routes: every sandbox write also updates the hash cube:routes in Redis (sandbox id ->
 * "STATE AUTO_RESUME NODE NETNS", and the traffic token of a private one), which cube-proxy reads before
 * asking a master. The store stays the truth: a Redis write that fails leaves the view suspect, so on the
 * next connection the hash is dropped and rebuilt from the store; a proxy that misses Redis asks a master
 * (slower, still right). Several masters share the hash: a removed sandbox leaves a tombstone ("x") and a
 * rebuild only fills fields that are absent (HSETNX), so a rebuild from an older listing never brings back a
 * sandbox another master just removed, nor lays an older state over a newer one. Tombstones go at the next
 * rebuild. Each change is also published on the channel cube:events, one JSON object a message:
 * {"sandboxID", "state": running|paused|lost|deleted, "node"}.
 * Node liveness: every heartbeat a master hears sets cube:node:<id> (the node's proxy address, "-" for none)
 * to expire when the node would count as lost; an entry proxy reads node addresses there.
 * One writer thread sends every route change and event, in the order the store took them, pipelining what
 * has queued up. A change to an existing sandbox (pause, resume, delete) waits for its write, so its route is
 * right when the caller answers; a new sandbox's (sandbox_add) does not: until its route lands a proxy asks a
 * master, and a create's answer waits for no Redis round trip. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "log.h"
#include "redis.h"
#include "store.h"

#define ROUTES "cube:routes"

/* Redis commands for one store change (the route, the event), formatted with redisFormatCommand */
typedef struct route_job {
    struct route_job *next;
    int n;
    char *cmds[2];
    int lens[2];
} route_job;

#define WRITER_BATCH  32 /* jobs in one pipelined round trip */
#define ROUTE_STRIPES 64 /* locks that order one sandbox's writes (see stripe()) */

typedef struct routes_store {
    store base;
    store *inner;
    cube_redis *redis;
    bool suspect;         /* a write failed: rebuild on the next connection */
    pthread_mutex_t lock; /* the Redis view: writes and rebuilds */
    /* the writer's queue */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    route_job *head, **tail;
    uint64_t queued, written; /* jobs so far: a caller waits for its own number to be written */
    pthread_mutex_t stripes[ROUTE_STRIPES];
    bool stop;
    pthread_t writer;
} routes_store;

static bool routable(const Cube__Sandbox *sb)
{
    return (sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING ||
            sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED) &&
           sb->agent_address && strncmp(sb->agent_address, "netns:", 6) == 0;
}

/* The hash's value for a sandbox: "STATE AUTORESUME NODE NETNS[ TRAFFIC_TOKEN[ MASK HTTPS_PORTS]]" ("-" for
 * an empty one; the ports comma-separated), or the tombstone "x" when it cannot be routed (any more). */
static void route_value(const Cube__Sandbox *sb, char *value, size_t len)
{
    if (!routable(sb)) {
        snprintf(value, len, "x");
        return;
    }
    char netns[512];
    snprintf(netns, sizeof(netns), "%s", sb->agent_address + 6);
    char *port = strrchr(netns, ':');
    if (port) *port = '\0';
    bool priv = sb->traffic_access_token && *sb->traffic_access_token;
    const Cube__NetworkPolicy *np = sb->network;
    bool mask = np && np->mask_request_host && *np->mask_request_host, https = np && np->n_https_ports;
    int n = snprintf(value, len, "%d %d %s %s", sb->state, sb->auto_resume,
                     sb->node_id && *sb->node_id ? sb->node_id : "-", netns);
    if (priv || mask || https)
        n += snprintf(value + n, len - (size_t)n, " %s", priv ? sb->traffic_access_token : "-");
    if (mask || https) n += snprintf(value + n, len - (size_t)n, " %s ", mask ? np->mask_request_host : "-");
    for (size_t i = 0; https && i < np->n_https_ports && (size_t)n < len; i++)
        n += snprintf(value + n, len - (size_t)n, "%s%u", i ? "," : "", np->https_ports[i]);
    if ((mask || https) && !https && (size_t)n < len) snprintf(value + n, len - (size_t)n, "-");
}

static bool write_route(routes_store *s, const Cube__Sandbox *sb, bool only_new)
{
    char value[1400];
    route_value(sb, value, sizeof(value));
    redisReply *r = cube_redis_cmd(s->redis, only_new ? "HSETNX %s %s %s" : "HSET %s %s %s", ROUTES,
                                   sb->sandbox_id, value);
    bool ok = r && r->type != REDIS_REPLY_ERROR;
    if (r) freeReplyObject(r);
    return ok;
}

/* After a failure (or at the first connection): the hash is rebuilt from the store. Lock held: route writes
 * are serialised with a rebuild, so a rebuild never lays an older state over a newer one. */
static void sync_routes(routes_store *s)
{
    /* a new connection: Redis may have restarted empty (or missed our writes while away) */
    bool fresh = cube_redis_take_fresh(s->redis);
    if (fresh || s->suspect) {
        redisReply *r = cube_redis_cmd(s->redis, "DEL %s", ROUTES);
        if (r) freeReplyObject(r);
        Cube__Sandbox **all;
        size_t n;
        cube_err err = {0};
        bool ok = r != NULL;
        if (ok && s->inner->ops->sandbox_list(s->inner, &all, &n, &err) == 0) {
            for (size_t i = 0; i < n && ok; i++) ok = write_route(s, all[i], true);
            store_free_sandboxes(all, n);
            if (ok) cube_log_info("routes rebuilt in redis", "sandboxes=%zu", n);
        }
        s->suspect = !ok;
        cube_redis_take_fresh(s->redis); /* the connection the rebuild itself made is not news */
    }
}

static void event_message(const char *id, const char *state, const char *node, char *msg, size_t len)
{
    snprintf(msg, len, "{\"sandboxID\":\"%s\",\"state\":\"%s\",\"node\":\"%s\"}", id, state, node);
}

static const char *state_name(int st)
{
    return st == CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING  ? "running"
           : st == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED ? "paused"
           : st == CUBE__SANDBOX_STATE__SANDBOX_STATE_LOST   ? "lost"
                                                             : "other";
}

static void free_job(route_job *j)
{
    for (int i = 0; i < j->n; i++) redisFreeCommand(j->cmds[i]);
    free(j);
}

/* Sends queued jobs, a batch a round trip, until stopped with nothing left. */
static void *writer_loop(void *arg)
{
    routes_store *s = arg;
    pthread_mutex_lock(&s->qlock);
    for (;;) {
        while (!s->head && !s->stop) pthread_cond_wait(&s->qcond, &s->qlock);
        if (!s->head) break;
        route_job *batch = s->head, *last = batch;
        int jobs = 1, ncmd = batch->n;
        while (last->next && jobs < WRITER_BATCH) {
            last = last->next;
            jobs++;
            ncmd += last->n;
        }
        s->head = last->next;
        if (!s->head) s->tail = &s->head;
        last->next = NULL;
        pthread_mutex_unlock(&s->qlock);

        char *cmds[WRITER_BATCH * 2];
        int lens[WRITER_BATCH * 2];
        redisReply *replies[WRITER_BATCH * 2];
        int k = 0;
        for (route_job *j = batch; j; j = j->next)
            for (int i = 0; i < j->n; i++, k++) {
                cmds[k] = j->cmds[i];
                lens[k] = j->lens[i];
            }
        pthread_mutex_lock(&s->lock);
        sync_routes(s);
        bool ok = cube_redis_pipeline(s->redis, ncmd, cmds, lens, replies) == 0;
        for (int i = 0; ok && i < ncmd; i++) {
            if (replies[i]->type == REDIS_REPLY_ERROR) ok = false;
        }
        for (int i = 0; i < ncmd; i++)
            if (replies[i]) freeReplyObject(replies[i]);
        if (!ok) s->suspect = true; /* rebuilt from the store at the next connection */
        pthread_mutex_unlock(&s->lock);
        while (batch) {
            route_job *n = batch->next;
            free_job(batch);
            batch = n;
        }
        pthread_mutex_lock(&s->qlock);
        s->written += (uint64_t)jobs;
        pthread_cond_broadcast(&s->qcond);
    }
    pthread_mutex_unlock(&s->qlock);
    return NULL;
}

/* A route is set only where it is not a tombstone: ids are never reused, so a removed sandbox's route stays
 * removed whatever write arrives late (another master's, in its own writer's order). */
#define SET_UNLESS_REMOVED                                                                                   \
    "if redis.call('HGET', KEYS[1], ARGV[1]) == 'x' then return 0 end "                                      \
    "return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])"

/* Queues a sandbox's route (value "x": a tombstone) and, unless state is NULL, its event; returns the job's
 * ticket for wait_written (0: nothing to wait for). A job that cannot be formatted leaves the view suspect
 * (rebuilt later). */
static uint64_t queue_change(routes_store *s, const char *id, const char *value, const char *state,
                             const char *node)
{
    route_job *j = calloc(1, sizeof(*j));
    bool ok = j != NULL;
    if (ok) { /* a command that cannot be formatted stays NULL, which free_job takes */
        j->n = state ? 2 : 1;
        j->lens[0] = strcmp(value, "x") == 0
                         ? redisFormatCommand(&j->cmds[0], "HSET %s %s %s", ROUTES, id, value)
                         : redisFormatCommand(&j->cmds[0], "EVAL %s 1 %s %s %s", SET_UNLESS_REMOVED, ROUTES,
                                              id, value);
        if (state) {
            char msg[256];
            event_message(id, state, node, msg, sizeof(msg));
            j->lens[1] = redisFormatCommand(&j->cmds[1], "PUBLISH cube:events %s", msg);
        }
        for (int i = 0; i < j->n; i++) ok = ok && j->lens[i] > 0;
    }
    if (!ok) {
        if (j) free_job(j);
        pthread_mutex_lock(&s->lock);
        s->suspect = true;
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    pthread_mutex_lock(&s->qlock);
    *s->tail = j;
    s->tail = &j->next;
    uint64_t ticket = ++s->queued;
    pthread_cond_broadcast(&s->qcond);
    pthread_mutex_unlock(&s->qlock);
    return ticket;
}

static void wait_written(routes_store *s, uint64_t ticket)
{
    pthread_mutex_lock(&s->qlock);
    while (s->written < ticket) pthread_cond_wait(&s->qcond, &s->qlock);
    pthread_mutex_unlock(&s->qlock);
}

static uint64_t queue_sandbox(routes_store *s, const Cube__Sandbox *sb)
{
    char value[1400];
    route_value(sb, value, sizeof(value));
    return queue_change(s, sb->sandbox_id, value, state_name(sb->state), sb->node_id ? sb->node_id : "");
}

/* A sandbox's store write and the queueing of its route happen under its stripe's lock: two threads changing
 * one sandbox queue their routes in the order the store took the writes. */
static pthread_mutex_t *stripe(routes_store *s, const char *id)
{
    return &s->stripes[cube_fnv1a(id) % ROUTE_STRIPES];
}

static int r_sandbox_update(store *base, const Cube__Sandbox *sb, int expect_state, cube_err *err)
{
    routes_store *s = (routes_store *)base;
    pthread_mutex_t *l = stripe(s, sb->sandbox_id);
    pthread_mutex_lock(l);
    int rc = s->inner->ops->sandbox_update(s->inner, sb, expect_state, err);
    uint64_t ticket = rc == 0 ? queue_sandbox(s, sb) : 0;
    pthread_mutex_unlock(l);
    if (ticket) wait_written(s, ticket);
    return rc;
}

static int r_add(store *base, const Cube__Sandbox *sb, bool limited, cube_err *err)
{
    routes_store *s = (routes_store *)base;
    pthread_mutex_t *l = stripe(s, sb->sandbox_id);
    pthread_mutex_lock(l);
    int rc = limited ? s->inner->ops->sandbox_add_limited(s->inner, sb, err)
                     : s->inner->ops->sandbox_add(s->inner, sb, err);
    if (rc == 0) queue_sandbox(s, sb); /* not waited for: see the top of this file */
    pthread_mutex_unlock(l);
    return rc;
}

static int r_sandbox_add(store *base, const Cube__Sandbox *sb, cube_err *err)
{
    return r_add(base, sb, false, err);
}

static int r_sandbox_add_limited(store *base, const Cube__Sandbox *sb, cube_err *err)
{
    return r_add(base, sb, true, err);
}

static int r_sandbox_delete(store *base, const char *id, cube_err *err)
{
    routes_store *s = (routes_store *)base;
    pthread_mutex_t *l = stripe(s, id);
    pthread_mutex_lock(l);
    int rc = s->inner->ops->sandbox_delete(s->inner, id, err);
    uint64_t ticket = queue_change(s, id, "x", rc == 0 ? "deleted" : NULL, ""); /* a tombstone either way */
    pthread_mutex_unlock(l);
    if (ticket) wait_written(s, ticket);
    return rc;
}

/* the rest passes through */
#define INNER(s) (((routes_store *)(s))->inner)
static int r_key_put(store *s, const char *a, const char *b, const char *c, int64_t d, uint32_t max,
                     cube_err *e)
{
    return INNER(s)->ops->key_put(INNER(s), a, b, c, d, max, e);
}
static int r_key_find(store *s, const char *h, char id[64], char name[128], uint32_t *max, cube_err *e)
{
    return INNER(s)->ops->key_find(INNER(s), h, id, name, max, e);
}
static int r_key_list(store *s, Cube__ListKeysResponse *o, cube_err *e)
{
    return INNER(s)->ops->key_list(INNER(s), o, e);
}
static int r_key_revoke(store *s, const char *id, cube_err *e)
{
    return INNER(s)->ops->key_revoke(INNER(s), id, e);
}
static int r_key_set_limit(store *s, const char *id, uint32_t max, cube_err *e)
{
    return INNER(s)->ops->key_set_limit(INNER(s), id, max, e);
}
static int r_key_usage(store *s, const char *id, uint32_t *max, uint32_t *held, cube_err *e)
{
    return INNER(s)->ops->key_usage(INNER(s), id, max, held, e);
}
static Cube__Sandbox *r_sandbox_get(store *s, const char *id, cube_err *e)
{
    return INNER(s)->ops->sandbox_get(INNER(s), id, e);
}
static int r_sandbox_list(store *s, Cube__Sandbox ***o, size_t *n, cube_err *e)
{
    return INNER(s)->ops->sandbox_list(INNER(s), o, n, e);
}
static int r_sandbox_expired(store *s, int64_t now, Cube__Sandbox ***o, size_t *n, cube_err *e)
{
    return INNER(s)->ops->sandbox_expired(INNER(s), now, o, n, e);
}
static int r_sandbox_claim(store *s, const char *id, int64_t a, int64_t b, cube_err *e)
{
    return INNER(s)->ops->sandbox_claim(INNER(s), id, a, b, e);
}
static int r_build_put(store *s, const Cube__TemplateBuild *b, cube_err *e)
{
    return INNER(s)->ops->build_put(INNER(s), b, e);
}
static int r_build_list(store *s, const char *id, Cube__TemplateBuild ***o, size_t *n, cube_err *e)
{
    return INNER(s)->ops->build_list(INNER(s), id, o, n, e);
}
static int r_build_delete_template(store *s, const char *id, cube_err *e)
{
    return INNER(s)->ops->build_delete_template(INNER(s), id, e);
}
static Cube__TemplateBuild *r_build_get(store *s, const char *id, cube_err *e)
{
    return INNER(s)->ops->build_get(INNER(s), id, e);
}
static Cube__TemplateBuild *r_build_latest(store *s, const char *t, cube_err *e)
{
    return INNER(s)->ops->build_latest(INNER(s), t, e);
}
static int r_snapshot_put(store *s, const Cube__SnapshotInfo *si, cube_err *e)
{
    return INNER(s)->ops->snapshot_put(INNER(s), si, e);
}
static Cube__SnapshotInfo *r_snapshot_get(store *s, const char *id, cube_err *e)
{
    return INNER(s)->ops->snapshot_get(INNER(s), id, e);
}
static int r_snapshot_list(store *s, Cube__SnapshotInfo ***o, size_t *n, cube_err *e)
{
    return INNER(s)->ops->snapshot_list(INNER(s), o, n, e);
}
static int r_snapshot_delete(store *s, const char *id, cube_err *e)
{
    return INNER(s)->ops->snapshot_delete(INNER(s), id, e);
}
static int r_volume_put(store *s, const Cube__Volume *v, cube_err *e)
{
    return INNER(s)->ops->volume_put(INNER(s), v, e);
}
static Cube__Volume *r_volume_get(store *s, const char *k, cube_err *e)
{
    return INNER(s)->ops->volume_get(INNER(s), k, e);
}
static int r_volume_list(store *s, Cube__Volume ***o, size_t *n, cube_err *e)
{
    return INNER(s)->ops->volume_list(INNER(s), o, n, e);
}
static int r_volume_update(store *s, const Cube__Volume *o, const Cube__Volume *v, cube_err *e)
{
    return INNER(s)->ops->volume_update(INNER(s), o, v, e);
}
static int r_volume_delete(store *s, const char *id, cube_err *e)
{
    return INNER(s)->ops->volume_delete(INNER(s), id, e);
}
static int r_secret_put(store *s, const Cube__Secret *v, cube_err *e)
{
    return INNER(s)->ops->secret_put(INNER(s), v, e);
}
static Cube__Secret *r_secret_get(store *s, const char *k, cube_err *e)
{
    return INNER(s)->ops->secret_get(INNER(s), k, e);
}
static int r_secret_list(store *s, Cube__Secret ***o, size_t *n, cube_err *e)
{
    return INNER(s)->ops->secret_list(INNER(s), o, n, e);
}
static int r_secret_update(store *s, const Cube__Secret *v, int64_t expect, cube_err *e)
{
    return INNER(s)->ops->secret_update(INNER(s), v, expect, e);
}
static int r_secret_delete(store *s, const char *id, cube_err *e)
{
    return INNER(s)->ops->secret_delete(INNER(s), id, e);
}

static void r_node_seen(store *base, const char *node_id, const char *proxy_address, int64_t ttl_ms)
{
    routes_store *s = (routes_store *)base;
    redisReply *r = cube_redis_cmd(s->redis, "SET cube:node:%s %s PX %lld", node_id,
                                   proxy_address && *proxy_address ? proxy_address : "-", (long long)ttl_ms);
    if (r) freeReplyObject(r); /* a miss only sends proxies to a master for the address */
}

static void r_close(store *base)
{
    routes_store *s = (routes_store *)base;
    pthread_mutex_lock(&s->qlock);
    s->stop = true; /* what is queued is still sent */
    pthread_cond_broadcast(&s->qcond);
    pthread_mutex_unlock(&s->qlock);
    pthread_join(s->writer, NULL);
    pthread_mutex_destroy(&s->qlock);
    pthread_cond_destroy(&s->qcond);
    s->inner->ops->close(s->inner);
    cube_redis_free(s->redis);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static const store_ops routes_ops = {
    .name = "routes",
    .close = r_close,
    .key_put = r_key_put,
    .key_find = r_key_find,
    .key_list = r_key_list,
    .key_revoke = r_key_revoke,
    .key_set_limit = r_key_set_limit,
    .key_usage = r_key_usage,
    .sandbox_update = r_sandbox_update,
    .sandbox_add = r_sandbox_add,
    .sandbox_add_limited = r_sandbox_add_limited,
    .sandbox_get = r_sandbox_get,
    .sandbox_delete = r_sandbox_delete,
    .sandbox_list = r_sandbox_list,
    .sandbox_expired = r_sandbox_expired,
    .sandbox_claim = r_sandbox_claim,
    .volume_put = r_volume_put,
    .volume_get = r_volume_get,
    .volume_list = r_volume_list,
    .volume_delete = r_volume_delete,
    .volume_update = r_volume_update,
    .secret_put = r_secret_put,
    .secret_get = r_secret_get,
    .secret_list = r_secret_list,
    .secret_update = r_secret_update,
    .secret_delete = r_secret_delete,
    .build_put = r_build_put,
    .build_get = r_build_get,
    .build_list = r_build_list,
    .build_delete_template = r_build_delete_template,
    .build_latest = r_build_latest,
    .snapshot_put = r_snapshot_put,
    .snapshot_get = r_snapshot_get,
    .snapshot_list = r_snapshot_list,
    .snapshot_delete = r_snapshot_delete,
    .node_seen = r_node_seen,
};

store *store_with_routes(store *inner, const char *redis_addr, cube_err *err)
{
    routes_store *s = calloc(1, sizeof(*s));
    if (!s || !(s->redis = cube_redis_new(redis_addr))) {
        free(s);
        inner->ops->close(inner);
        cube_err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    s->base.ops = &routes_ops;
    s->inner = inner;
    s->suspect = true; /* the first connection rebuilds: whatever the hash holds is not ours to trust */
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->qlock, NULL);
    pthread_cond_init(&s->qcond, NULL);
    for (int i = 0; i < ROUTE_STRIPES; i++) pthread_mutex_init(&s->stripes[i], NULL);
    s->tail = &s->head;
    if (pthread_create(&s->writer, NULL, writer_loop, s) != 0) {
        cube_redis_free(s->redis);
        inner->ops->close(inner);
        free(s);
        cube_err_set(err, EAGAIN, "cannot start the routes writer");
        return NULL;
    }
    return &s->base;
}
