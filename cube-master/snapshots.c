#include "snapshots.h"
#include "master_nodes.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cubelet.pb-c.h"
#include "id.h"
#include "log.h"
#include "timeutil.h"

/* The node's files first, then the record: a record always names files that were made. Two masters making
 * one name on two nodes at once: the record's insert decides, the loser's files are removed again. */
int create_snapshot(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__CreateSnapshotRequest *req = reqp;
    Cube__SnapshotInfo *out = respp;
    char id[64];
    if (req->name && *req->name) {
        if (!cube_template_name_valid(req->name))
            return cube_err_set(err, EINVAL, "snapshot name must be 1-63 chars of [a-z0-9._-]");
        snprintf(id, sizeof(id), "%s", req->name);
    } else {
        char rnd[16];
        if (cube_id_new(0, rnd, 12, err) < 0) return -1;
        snprintf(id, sizeof(id), "snap-%s", rnd);
    }
    cube_err gerr = {0};
    Cube__SnapshotInfo *had = m->st->ops->snapshot_get(m->st, id, &gerr);
    if (had) {
        cube__snapshot_info__free_unpacked(had, NULL);
        return cube_err_set(err, EEXIST, "snapshot '%s' exists", id);
    }
    Cube__Sandbox *sb = m->st->ops->sandbox_get(m->st, req->sandbox_id ? req->sandbox_id : "", err);
    if (!sb) return -1;
    node_link *l = node_link_get(m, sb->node_id, err);
    int rc = -1;
    if (l) {
        Cube__NodeSnapshotRequest nr = CUBE__NODE_SNAPSHOT_REQUEST__INIT;
        nr.sandbox_id = sb->sandbox_id;
        nr.snapshot_id = id;
        ProtobufCMessage *r = NULL;
        cube_rpc_call_opts o = {.timeout_ms = 180000};
        rc = cube_rpc_call(l->rpc, "/cube.Cubelet/SnapshotSandbox", &nr.base, &cube__empty__descriptor, &r,
                           &o, err);
        if (r) protobuf_c_message_free_unpacked(r, NULL);
    }
    if (rc == 0) {
        Cube__SnapshotInfo rec = CUBE__SNAPSHOT_INFO__INIT;
        rec.snapshot_id = id;
        rec.sandbox_id = sb->sandbox_id;
        rec.node_id = sb->node_id;
        rec.template_id = sb->template_id;
        rec.created_at_ms = cube_now_unix_ms();
        rc = m->st->ops->snapshot_put(m->st, &rec, err);
        if (rc < 0) { /* not recorded: not kept either (a user told it failed finds nothing of it) */
            Cube__TemplateRef ref = CUBE__TEMPLATE_REF__INIT;
            ref.template_id = id;
            ProtobufCMessage *r = NULL;
            cube_err derr = {0};
            cube_rpc_call_opts o = {.timeout_ms = 30000};
            if (cube_rpc_call(l->rpc, "/cube.Cubelet/DeleteTemplate", &ref.base, &cube__empty__descriptor, &r,
                              &o, &derr) < 0)
                cube_log_warn("an unrecorded snapshot is left on its node", "snapshot=%s node=%s err=\"%s\"",
                              id, sb->node_id, derr.msg);
            if (r) protobuf_c_message_free_unpacked(r, NULL);
        } else {
            out->snapshot_id = cube_rpc_strdup(ctx, id);
            out->sandbox_id = cube_rpc_strdup(ctx, sb->sandbox_id);
            out->node_id = cube_rpc_strdup(ctx, sb->node_id);
            out->template_id = cube_rpc_strdup(ctx, sb->template_id);
            out->created_at_ms = rec.created_at_ms;
            cube_log_info("audit", "action=snapshot sandbox=%s snapshot=%s", sb->sandbox_id, id);
        }
    }
    if (l) node_link_put(l);
    cube__sandbox__free_unpacked(sb, NULL);
    return rc;
}

/* The store's records, newest first (of one sandbox when asked): nodes down or not, the same list. */
int list_snapshots(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__ListSnapshotsRequest *req = reqp;
    Cube__ListSnapshotsResponse *out = respp;
    Cube__SnapshotInfo **all;
    size_t n;
    if (m->st->ops->snapshot_list(m->st, &all, &n, err) < 0) return -1;
    out->snapshots = cube_rpc_alloc(ctx, (n ? n : 1) * sizeof(*out->snapshots));
    for (size_t i = 0; out->snapshots && i < n; i++) {
        if (req->sandbox_id && *req->sandbox_id && strcmp(all[i]->sandbox_id, req->sandbox_id) != 0) continue;
        Cube__SnapshotInfo *si = cube_rpc_alloc(ctx, sizeof(*si));
        if (!si) break;
        cube__snapshot_info__init(si);
        si->snapshot_id = cube_rpc_strdup(ctx, all[i]->snapshot_id);
        si->sandbox_id = cube_rpc_strdup(ctx, all[i]->sandbox_id);
        si->node_id = cube_rpc_strdup(ctx, all[i]->node_id);
        si->template_id = cube_rpc_strdup(ctx, all[i]->template_id);
        si->created_at_ms = all[i]->created_at_ms;
        out->snapshots[out->n_snapshots++] = si;
    }
    store_free_snapshots(all, n);
    return 0;
}

void snapshots_adopt(master *m, const Cube__NodeInfo *in)
{
    for (size_t i = 0; i < in->n_template_sizes; i++) {
        const Cube__TemplateSize *t = in->template_sizes[i];
        if (!t->snapshot_of || !*t->snapshot_of || !cube_template_name_valid(t->template_id)) continue;
        cube_err err = {0};
        Cube__SnapshotInfo *had = m->st->ops->snapshot_get(m->st, t->template_id, &err);
        if (had) {
            cube__snapshot_info__free_unpacked(had, NULL);
            continue;
        }
        if (err.code != ENOENT) continue; /* the store is not answering: the next registration tries */
        Cube__SnapshotInfo rec = CUBE__SNAPSHOT_INFO__INIT;
        rec.snapshot_id = t->template_id;
        rec.sandbox_id = t->snapshot_of;
        rec.node_id = in->node_id;
        rec.template_id = "";
        rec.created_at_ms = t->assigned_at_ms;
        if (m->st->ops->snapshot_put(m->st, &rec, &err) == 0)
            cube_log_info("audit", "action=snapshot-recorded snapshot=%s node=%s", rec.snapshot_id,
                          in->node_id);
    }
}

int snapshot_forget(master *m, const char *id, int deleted, cube_err *err)
{
    Cube__SnapshotInfo *rec = m->st->ops->snapshot_get(m->st, id, err);
    if (!rec) return -1;
    int rc = 0;
    if (!deleted) { /* no live node had its files: gone from its node, or its node is down */
        pthread_mutex_lock(&m->lock);
        master_node *n = node_find(m, rec->node_id);
        bool down = n && !node_alive(m, n, cube_now_mono_ms());
        pthread_mutex_unlock(&m->lock);
        if (down)
            rc =
                cube_err_set(err, EHOSTUNREACH,
                             "snapshot '%s' is on node %s, which is not answering; delete it when it is back",
                             id, rec->node_id);
    }
    if (rc == 0 && m->st->ops->snapshot_delete(m->st, id, err) < 0 && err->code != ENOENT) rc = -1;
    cube__snapshot_info__free_unpacked(rec, NULL);
    return rc;
}
