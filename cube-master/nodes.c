/* cube-master's nodes: heartbeats (each cubelet reports to every master), scheduling, reconciling a node's
 * sandboxes with the store, lost nodes, orphans, drain and remove. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cubelet.pb-c.h"
#include "log.h"
#include "master.h"
#include "master_nodes.h"
#include "snapshots.h"
#include "timeutil.h"

master_node *node_find(master *m, const char *node_id)
{
    for (master_node *n = m->nodes; n; n = n->next)
        if (strcmp(n->node_id, node_id) == 0) return n;
    return NULL;
}

int node_alive(const master *m, const master_node *n, int64_t now)
{
    return now - n->last_seen_ms <= 3 * m->heartbeat_ms;
}

static node_link *node_link_new(const char *address, cube_err *err)
{
    node_link *l = calloc(1, sizeof(*l));
    if (!l) return cube_err_set(err, ENOMEM, "out of memory"), NULL;
    l->rpc = cube_rpc_client_new(address, err);
    if (!l->rpc) {
        free(l);
        return NULL;
    }
    atomic_init(&l->refs, 1);
    return l;
}

node_link *node_link_ref(master_node *n)
{
    if (n->link) atomic_fetch_add(&n->link->refs, 1);
    return n->link;
}

void node_link_put(node_link *l)
{
    if (!l || atomic_fetch_sub(&l->refs, 1) != 1) return;
    cube_rpc_client_free(l->rpc);
    free(l);
}

void node_free(master_node *n)
{
    node_link_put(n->link);
    if (n->info) cube__node_info__free_unpacked(n->info, NULL);
    free(n);
}

/* A node that (re)registers — a restarted cubelet, or this master after its own restart — is asked what it
 * runs; records of sandboxes it no longer has are removed, never left to be routed to (or silently reused).
 */
static int reconcile_node(master *m, const char *node_id, cube_rpc_client *client, int was_lost)
{
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    cube_rpc_call_opts o = {.timeout_ms = 5000};
    if (cube_rpc_call(client, "/cube.Cubelet/ListSandboxes", &e.base, &cube__node_list_response__descriptor,
                      &resp, &o, &err) < 0) {
        cube_log_warn("reconcile deferred to the next heartbeat", "node=%s err=\"%s\"", node_id, err.msg);
        return -1;
    }
    Cube__NodeListResponse *l = (Cube__NodeListResponse *)resp;
    Cube__Sandbox **all;
    size_t n;
    if (m->st->ops->sandbox_list(m->st, &all, &n, &err) == 0) {
        /* records the node no longer backs, and records of sandboxes reported lost, are removed */
        for (size_t i = 0; i < n; i++) {
            if (strcmp(all[i]->node_id, node_id) != 0) continue;
            int present = 0;
            for (size_t k = 0; k < l->n_sandboxes && !present; k++)
                present = strcmp(l->sandboxes[k]->sandbox_id, all[i]->sandbox_id) == 0;
            if (present && all[i]->state != CUBE__SANDBOX_STATE__SANDBOX_STATE_LOST) continue;
            if (m->st->ops->sandbox_delete(m->st, all[i]->sandbox_id, &err) == 0)
                cube_log_info("audit", "action=gone sandbox=%s node=%s reason=%s", all[i]->sandbox_id,
                              node_id, present ? "lost-with-node" : "not-on-node");
        }
        /* what a node coming back from being lost still runs that the store says is gone is killed: users
         * were told it is gone, so it must not come back. (Not on a first registration with this master: a
         * create through another master may not have written its record yet.) */
        for (size_t k = 0; was_lost && k < l->n_sandboxes; k++) {
            const char *id = l->sandboxes[k]->sandbox_id;
            int known = 0;
            for (size_t i = 0; i < n && !known; i++)
                known = strcmp(all[i]->sandbox_id, id) == 0 &&
                        all[i]->state != CUBE__SANDBOX_STATE__SANDBOX_STATE_LOST;
            if (known) continue;
            Cube__NodeSandboxRef ref = CUBE__NODE_SANDBOX_REF__INIT;
            ref.sandbox_id = (char *)id;
            ProtobufCMessage *r = NULL;
            if (cube_rpc_call(client, "/cube.Cubelet/KillSandbox", &ref.base, &cube__empty__descriptor, &r,
                              &o, &err) == 0)
                cube_log_info("audit", "action=kill sandbox=%s node=%s reason=gone-in-store", id, node_id);
            if (r) protobuf_c_message_free_unpacked(r, NULL);
        }
        store_free_sandboxes(all, n);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

/* Every orphan_after_ms / 2: what alive nodes have run for orphan_after_ms (a minute) without a record is an
 * orphan (its create died with a master between the node's answer and the store write): it is killed, never
 * left running unseen. (The minute covers creates in flight through other masters.) */
void sweep_orphans(master *m)
{
    int64_t now = cube_now_mono_ms();
    if (now - m->last_orphan_sweep_ms < m->orphan_after_ms / 2) return;
    m->last_orphan_sweep_ms = now;
    char ids[64][64];
    node_link *links[64];
    int nn = 0;
    pthread_mutex_lock(&m->lock);
    for (master_node *x = m->nodes; x && nn < 64; x = x->next) {
        if (!node_alive(m, x, now) || !x->link) continue;
        snprintf(ids[nn], 64, "%s", x->node_id);
        links[nn++] = node_link_ref(x);
    }
    pthread_mutex_unlock(&m->lock);
    for (int k = 0; k < nn; k++) {
        cube_rpc_client *client = links[k]->rpc;
        Cube__Empty e = CUBE__EMPTY__INIT;
        ProtobufCMessage *resp = NULL;
        cube_err err = {0};
        cube_rpc_call_opts o = {.timeout_ms = 5000};
        if (cube_rpc_call(client, "/cube.Cubelet/ListSandboxes", &e.base,
                          &cube__node_list_response__descriptor, &resp, &o, &err) < 0) {
            node_link_put(links[k]);
            continue;
        }
        const Cube__NodeListResponse *l = (const Cube__NodeListResponse *)resp;
        for (size_t i = 0; i < l->n_sandboxes; i++) {
            const Cube__NodeSandbox *ns = l->sandboxes[i];
            if (ns->held_ms < m->orphan_after_ms) continue;
            Cube__Sandbox *sb = m->st->ops->sandbox_get(m->st, ns->sandbox_id, &err);
            if (sb) {
                cube__sandbox__free_unpacked(sb, NULL);
                continue;
            }
            if (err.code != ENOENT) continue; /* the store did not answer: not a reason to kill */
            Cube__NodeSandboxRef ref = CUBE__NODE_SANDBOX_REF__INIT;
            ref.sandbox_id = ns->sandbox_id;
            ProtobufCMessage *r = NULL;
            if (cube_rpc_call(client, "/cube.Cubelet/KillSandbox", &ref.base, &cube__empty__descriptor, &r,
                              &o, &err) == 0)
                cube_log_info("audit", "action=kill sandbox=%s node=%s reason=orphan", ns->sandbox_id,
                              ids[k]);
            if (r) protobuf_c_message_free_unpacked(r, NULL);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        node_link_put(links[k]);
    }
}

/* A node silent for node_lost_ms is lost: its sandboxes are marked lost (reported gone to users, never routed
 * to). Long enough for a cubelet to restart and adopt its sandboxes; scheduling skips a node after three
 * missed heartbeats already. Run by the reaper. */
void mark_lost_nodes(master *m)
{
    int64_t now = cube_now_mono_ms();
    char lost[16][64];
    int nl = 0;
    pthread_mutex_lock(&m->lock);
    for (master_node *x = m->nodes; x && nl < 16; x = x->next) {
        if (x->lost || now - x->last_seen_ms <= m->node_lost_ms) continue;
        x->lost = 1;
        x->reconcile = 1;
        snprintf(lost[nl++], 64, "%s", x->node_id);
    }
    pthread_mutex_unlock(&m->lock);
    for (int k = 0; k < nl; k++) {
        cube_log_warn("node lost", "node=%s", lost[k]);
        Cube__Sandbox **all;
        size_t n;
        cube_err err = {0};
        if (m->st->ops->sandbox_list(m->st, &all, &n, &err) < 0) continue;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(all[i]->node_id, lost[k]) != 0 ||
                all[i]->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_LOST)
                continue;
            int was = all[i]->state;
            all[i]->state = CUBE__SANDBOX_STATE__SANDBOX_STATE_LOST;
            if (m->st->ops->sandbox_update(m->st, all[i], was, &err) == 0)
                cube_log_info("audit", "action=lost sandbox=%s node=%s", all[i]->sandbox_id, lost[k]);
        }
        store_free_sandboxes(all, n);
    }
}

int heartbeat(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    master *m = svc;
    const Cube__NodeInfo *in = reqp;
    Cube__RegisterNodeResponse *out = respp;
    if (!in->node_id || !*in->node_id || !in->address || !*in->address)
        return cube_err_set(err, EINVAL, "node_id and address are required");
    /* keep an owned copy of the node's report */
    size_t len = protobuf_c_message_get_packed_size(&in->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return cube_err_set(err, ENOMEM, "out of memory");
    protobuf_c_message_pack(&in->base, buf);
    Cube__NodeInfo *copy = cube__node_info__unpack(NULL, len, buf);
    free(buf);
    if (!copy) return cube_err_set(err, ENOMEM, "out of memory");
    pthread_mutex_lock(&m->lock);
    master_node *n = node_find(m, in->node_id);
    int rc = 0;
    if (!n) {
        n = calloc(1, sizeof(*n));
        if (n) {
            snprintf(n->node_id, sizeof(n->node_id), "%s", in->node_id);
            n->next = m->nodes;
            m->nodes = n;
            cube_log_info("node registered", "node=%s address=%s backend=%s", in->node_id, in->address,
                          in->backend);
            n->reconcile = 1;
        }
    }
    if (!n) {
        rc = cube_err_set(err, ENOMEM, "out of memory");
    } else {
        /* a new address, or none made yet (an earlier attempt failed: tried again at every heartbeat) */
        if (!n->link || strcmp(n->address, in->address) != 0) {
            cube_err lerr = {0};
            node_link *l = node_link_new(in->address, &lerr);
            if (l) {
                node_link_put(n->link); /* calls in flight keep the old one until they finish */
                n->link = l;
                snprintf(n->address, sizeof(n->address), "%s", in->address);
            } else {
                cube_log_warn("no client for node; retried at its next heartbeat",
                              "node=%s address=%s err=\"%s\"", in->node_id, in->address, lerr.msg);
            }
        }
        /* back after a silence (its cubelet restarted): what it runs may have changed */
        if (n->last_seen_ms && !node_alive(m, n, cube_now_mono_ms())) n->reconcile = 1;
        if (n->lost) cube_log_info("node back", "node=%s", in->node_id);
        if (n->info) cube__node_info__free_unpacked(n->info, NULL);
        n->info = copy;
        copy = NULL;
        n->last_seen_ms = cube_now_mono_ms();
    }
    int reconcile = n && n->reconcile && n->link, was_lost = n && n->lost;
    if (reconcile) n->reconcile = n->lost = 0;
    node_link *link = reconcile ? node_link_ref(n) : NULL;
    pthread_cond_broadcast(&m->nodes_changed);
    pthread_mutex_unlock(&m->lock);
    if (copy) cube__node_info__free_unpacked(copy, NULL);
    if (rc == 0 && m->st->ops->node_seen)
        m->st->ops->node_seen(m->st, in->node_id, in->proxy_address, m->node_lost_ms);
    int reconciled = link ? reconcile_node(m, in->node_id, link->rpc, was_lost) : 0;
    if (link && reconciled == 0) snapshots_adopt(m, in);
    node_link_put(link);
    if (reconciled < 0) {
        pthread_mutex_lock(&m->lock); /* not reached yet (a channel still reconnecting): again next time */
        n = node_find(m, in->node_id);
        if (n) {
            n->reconcile = 1;
            n->lost = n->lost || was_lost;
        }
        pthread_mutex_unlock(&m->lock);
    }
    out->heartbeat_interval_ms = m->heartbeat_ms;
    return rc;
}

/* The node's ready pool slots for a template, as last reported (less what this master has taken since). */
static Cube__NodeInfo__PoolReadyEntry *pool_entry(master_node *n, const char *template_id)
{
    for (size_t i = 0; i < n->info->n_pool_ready; i++)
        if (strcmp(n->info->pool_ready[i]->key, template_id) == 0) return n->info->pool_ready[i];
    return NULL;
}

/* Whether n's last heartbeat left room for one more sandbox of template_id (true when it did not say). */
static bool has_room(const master_node *n, const char *template_id)
{
    if (!n->info->room_reported) return true;
    for (size_t i = 0; i < n->info->n_template_sizes; i++) {
        const Cube__TemplateSize *t = n->info->template_sizes[i];
        if (!t->template_id || strcmp(t->template_id, template_id) != 0 || !t->resources) continue;
        return n->info->memory_left_mb >= (int64_t)t->resources->memory_mb &&
               n->info->disk_left_mb >= (int64_t)t->resources->disk_mb;
    }
    return true;
}

static bool skipped(const node_skip *skip, const char *node_id)
{
    for (size_t i = 0; skip && i < skip->n; i++)
        if (strcmp(skip->ids[i], node_id) == 0) return true;
    return false;
}

/* With m->lock held: the node for a create. A ready pool slot wins, then the fewest running sandboxes. The
 * pick is counted against the node's report at once (one slot fewer, one sandbox more) until its next
 * heartbeat: a burst between two heartbeats spreads instead of piling onto the node that reported a pool. */
master_node *schedule(master *m, const char *template_id, const char *only_node, const node_skip *skip,
                      cube_err *err)
{
    int64_t now = cube_now_mono_ms();
    master_node *best = NULL;
    long best_score = 0;
    int any_alive = 0, any_skipped = 0;
    for (master_node *n = m->nodes; n; n = n->next) {
        if (!node_alive(m, n, now) || !n->info || !n->link || n->info->draining) continue;
        if (only_node && *only_node && strcmp(n->node_id, only_node) != 0) continue;
        any_alive = 1;
        int has = 0;
        for (size_t i = 0; i < n->info->n_templates; i++)
            if (strcmp(n->info->templates[i], template_id) == 0) has = 1;
        if (!has) continue;
        if (skipped(skip, n->node_id)) {
            any_skipped = 1;
            continue;
        }
        Cube__NodeInfo__PoolReadyEntry *pe = pool_entry(n, template_id);
        long ready = pe ? (long)pe->value : 0;
        long score = (ready > 0 ? 1000000 : 0) - (long)n->info->running;
        /* a node that reported too little memory or disk left for one more of these comes last: it would
         * refuse the create (the report may be a heartbeat old: it is still asked when no other is left) */
        if (!has_room(n, template_id)) score -= 2000000;
        if (!best || score > best_score) {
            best = n;
            best_score = score;
        }
    }
    if (best) {
        Cube__NodeInfo__PoolReadyEntry *pe = pool_entry(best, template_id);
        if (pe && pe->value > 0) pe->value--;
        best->info->running++;
    } else {
        if (any_skipped)
            cube_err_set(err, EBUSY, "every node with template '%s' refused the create", template_id);
        else if (!any_alive && only_node && *only_node)
            cube_err_set(err, EAGAIN, "node %s, which holds the sandbox's volumes, is not available",
                         only_node);
        else if (!any_alive)
            cube_err_set(err, EAGAIN, "no node is available to run sandboxes");
        else if (only_node && *only_node)
            cube_err_set(err, ENOENT, "template '%s' is not on node %s, which holds the sandbox's volumes",
                         template_id, only_node);
        else
            cube_err_set(err, ENOENT, "template '%s' not found", template_id);
    }
    return best;
}

node_link *schedule_wait(master *m, const char *template_id, const char *only_node, const node_skip *skip,
                         int64_t wait_ms, char node_id[64], cube_err *err)
{
    int64_t until = cube_now_mono_ms() + wait_ms;
    node_link *l = NULL;
    pthread_mutex_lock(&m->lock);
    for (;;) {
        cube_err_clear(err);
        master_node *n = schedule(m, template_id, only_node, skip, err);
        if (n) {
            snprintf(node_id, 64, "%s", n->node_id);
            l = node_link_ref(n);
            break;
        }
        /* only "no node alive" is worth waiting for; a template no node has is an answer */
        int64_t left = until - cube_now_mono_ms();
        if (err->code != EAGAIN || left <= 0) break;
        struct timespec dl = cube_timespec_after_ms(CLOCK_MONOTONIC, left);
        pthread_cond_timedwait(&m->nodes_changed, &m->lock, &dl);
    }
    pthread_mutex_unlock(&m->lock);
    return l;
}

size_t live_links(master *m, node_link **out, size_t max)
{
    size_t n = 0;
    int64_t now = cube_now_mono_ms();
    pthread_mutex_lock(&m->lock);
    for (master_node *x = m->nodes; x && n < max; x = x->next)
        if (node_alive(m, x, now) && x->link) out[n++] = node_link_ref(x);
    pthread_mutex_unlock(&m->lock);
    return n;
}

master_node *pick_node(master *m, const char *need_template)
{
    int64_t now = cube_now_mono_ms();
    master_node *best = NULL;
    long best_score = 0;
    for (master_node *n = m->nodes; n; n = n->next) {
        if (!node_alive(m, n, now) || !n->info || !n->link || n->info->draining) continue;
        int has = 0;
        for (size_t i = 0; need_template && i < n->info->n_templates; i++)
            has |= strcmp(n->info->templates[i], need_template) == 0;
        long score = (has ? 1000000 : 0) - (long)n->info->running;
        if (!best || score > best_score) {
            best = n;
            best_score = score;
        }
    }
    return best;
}

node_link *node_link_get(master *m, const char *node_id, cube_err *err)
{
    pthread_mutex_lock(&m->lock);
    master_node *n = node_find(m, node_id);
    node_link *l = n && node_alive(m, n, cube_now_mono_ms()) ? node_link_ref(n) : NULL;
    pthread_mutex_unlock(&m->lock);
    if (!l) cube_err_set(err, EHOSTUNREACH, "node '%s' is not reachable", node_id);
    return l;
}

/* ---- sandboxes ---- */

int drain_node(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    master *m = svc;
    const Cube__NodeRef *req = reqp;
    node_link *l = node_link_get(m, req->node_id ? req->node_id : "", err);
    if (!l) return -1;
    Cube__NodeDrainRequest dr = CUBE__NODE_DRAIN_REQUEST__INIT;
    dr.drain = !req->undo;
    ProtobufCMessage *r = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 10000};
    int rc = cube_rpc_call(l->rpc, "/cube.Cubelet/Drain", &dr.base, &cube__empty__descriptor, &r, &o, err);
    node_link_put(l);
    if (rc < 0) return -1;
    protobuf_c_message_free_unpacked(r, NULL);
    pthread_mutex_lock(&m->lock); /* schedule by it at once, not at the next heartbeat */
    master_node *n = node_find(m, req->node_id);
    if (n && n->info) n->info->draining = dr.drain;
    pthread_mutex_unlock(&m->lock);
    cube_log_info("audit", "action=%s node=%s", dr.drain ? "drain" : "undrain", req->node_id);
    return 0;
}

/* A node taken out for good: it must be silent (lost) first; its sandbox records go, and this master forgets
 * it. A cubelet that comes back later registers afresh and reconciles. */
int remove_node(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    master *m = svc;
    const Cube__NodeRef *req = reqp;
    const char *id = req->node_id ? req->node_id : "";
    pthread_mutex_lock(&m->lock);
    master_node **pp = &m->nodes, *n = NULL;
    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->node_id, id) == 0) break;
    n = *pp;
    int alive = n && node_alive(m, n, cube_now_mono_ms());
    if (n && !alive) *pp = n->next;
    pthread_mutex_unlock(&m->lock);
    if (!n) return cube_err_set(err, ENOENT, "node '%s' is not known to this master", id);
    if (alive) return cube_err_set(err, EBUSY, "node '%s' is alive: drain it and stop its cubelet first", id);
    Cube__Sandbox **all;
    size_t cnt;
    if (m->st->ops->sandbox_list(m->st, &all, &cnt, err) == 0) {
        for (size_t i = 0; i < cnt; i++)
            if (strcmp(all[i]->node_id, id) == 0 &&
                m->st->ops->sandbox_delete(m->st, all[i]->sandbox_id, err) == 0)
                cube_log_info("audit", "action=gone sandbox=%s node=%s reason=node-removed",
                              all[i]->sandbox_id, id);
        store_free_sandboxes(all, cnt);
    }
    node_free(n);
    cube_log_info("audit", "action=remove-node node=%s", id);
    return 0;
}

int list_nodes(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)reqp;
    (void)err;
    master *m = svc;
    Cube__ListNodesResponse *out = respp;
    pthread_mutex_lock(&m->lock);
    size_t n = 0;
    for (master_node *x = m->nodes; x; x = x->next) n++;
    out->nodes = cube_rpc_alloc(ctx, (n ? n : 1) * sizeof(Cube__NodeInfo *));
    for (master_node *x = m->nodes; x; x = x->next) {
        if (!x->info) continue;
        size_t len = protobuf_c_message_get_packed_size(&x->info->base);
        uint8_t *buf = cube_rpc_alloc(ctx, len ? len : 1);
        protobuf_c_message_pack(&x->info->base, buf);
        ProtobufCAllocator a = {
            .alloc = (void *(*)(void *, size_t))cube_rpc_alloc, .free = noop_free, .allocator_data = ctx};
        Cube__NodeInfo *ni = cube__node_info__unpack(&a, len, buf);
        if (!ni) continue;
        ni->lost = x->lost;
        ni->silent = !node_alive(m, x, cube_now_mono_ms());
        ni->last_seen_ms_ago = cube_now_mono_ms() - x->last_seen_ms;
        out->nodes[out->n_nodes++] = ni;
    }
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* ---- timeouts ---- */
