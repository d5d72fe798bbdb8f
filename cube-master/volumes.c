/* Volumes: records in the store, files on the node that holds each (see volumes.h). */
#include "volumes.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cubelet.pb-c.h"
#include "id.h"
#include "log.h"
#include "master_nodes.h"
#include "timeutil.h"

#define VOLUME_RPC_TIMEOUT_MS 60000 /* one content call: a chunk of a file, a listing, a removal */

static int valid_volume_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 63) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_' || *s == '.'))
            return 0;
    return 1;
}

static void volume_reply(cube_rpc_ctx *ctx, Cube__Volume *out, const Cube__Volume *v)
{
    out->volume_id = cube_rpc_strdup(ctx, v->volume_id);
    out->name = cube_rpc_strdup(ctx, v->name);
    out->token = cube_rpc_strdup(ctx, v->token);
    out->created_at_ms = v->created_at_ms;
    out->node_id = cube_rpc_strdup(ctx, v->node_id ? v->node_id : "");
}

/* The node for a new volume's files: the least busy one up, or "" (placed at first use). */
static void new_volume_node(master *m, char node[64])
{
    pthread_mutex_lock(&m->lock);
    master_node *n = pick_node(m, NULL);
    snprintf(node, 64, "%s", n ? n->node_id : "");
    pthread_mutex_unlock(&m->lock);
}

int create_volume(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__CreateVolumeRequest *req = reqp;
    if (!valid_volume_name(req->name))
        return cube_err_set(err, EINVAL, "volume name must be 1-63 chars of [A-Za-z0-9._-]");
    char id[24], token[65], node[64];
    if (cube_id_new('v', id, 16, err) < 0 || cube_token_hex(token, 24, err) < 0) return -1;
    new_volume_node(m, node);
    Cube__Volume v = CUBE__VOLUME__INIT;
    v.volume_id = id;
    v.name = req->name;
    v.token = token;
    v.created_at_ms = cube_now_unix_ms();
    v.node_id = node;
    if (m->st->ops->volume_put(m->st, &v, err) < 0) return -1;
    cube_log_info("audit", "action=volume-create volume=%s name=%s node=%s", id, req->name, node);
    volume_reply(ctx, respp, &v);
    return 0;
}

int get_volume(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__VolumeRef *req = reqp;
    Cube__Volume *v = m->st->ops->volume_get(m->st, req->volume_id ? req->volume_id : "", err);
    if (!v) return -1;
    volume_reply(ctx, respp, v);
    cube__volume__free_unpacked(v, NULL);
    return 0;
}

int list_volumes(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)reqp;
    master *m = svc;
    Cube__ListVolumesResponse *out = respp;
    Cube__Volume **v;
    size_t n;
    if (m->st->ops->volume_list(m->st, &v, &n, err) < 0) return -1;
    out->volumes = cube_rpc_alloc(ctx, (n ? n : 1) * sizeof(*out->volumes));
    for (size_t i = 0; i < n; i++) {
        Cube__Volume *x = cube_rpc_alloc(ctx, sizeof(*x));
        cube__volume__init(x);
        volume_reply(ctx, x, v[i]);
        out->volumes[out->n_volumes++] = x;
    }
    store_free_volumes(v, n);
    return 0;
}

/* Puts *v on node_id unless it has a node (conditional on the record read: a master placing it meanwhile
 * wins, and *v is read again). *v is replaced by the stored record. */
static int place(master *m, Cube__Volume **v, const char *node_id, cube_err *err)
{
    for (int tries = 0; tries < 5; tries++) {
        if ((*v)->node_id && *(*v)->node_id) return 0;
        Cube__Volume nv = **v;
        nv.node_id = (char *)node_id;
        if (m->st->ops->volume_update(m->st, *v, &nv, err) == 0) {
            Cube__Volume *again = m->st->ops->volume_get(m->st, (*v)->volume_id, err);
            if (!again) return -1;
            cube__volume__free_unpacked(*v, NULL);
            *v = again;
            cube_log_info("audit", "action=volume-place volume=%s node=%s", (*v)->volume_id, node_id);
            return 0;
        }
        if (err->code != EBUSY) return -1;
        cube_err_clear(err);
        Cube__Volume *again = m->st->ops->volume_get(m->st, (*v)->volume_id, err);
        if (!again) return -1;
        cube__volume__free_unpacked(*v, NULL);
        *v = again;
    }
    return cube_err_set(err, EBUSY, "volume '%s' keeps changing: try again", (*v)->volume_id);
}

int volumes_resolve(master *m, cube_rpc_ctx *ctx, Cube__VolumeMount **mounts, size_t n, char node[64],
                    cube_err *err)
{
    node[0] = '\0';
    const char *node_of = NULL;
    for (size_t i = 0; i < n; i++) {
        Cube__VolumeMount *vm = mounts[i];
        if (!vm->path || vm->path[0] != '/' || strstr(vm->path, "..") || strcmp(vm->path, "/") == 0)
            return cube_err_set(err, EINVAL, "volume mount path '%s' must be absolute, without '..'",
                                vm->path ? vm->path : "");
        Cube__Volume *v = m->st->ops->volume_get(m->st, vm->name ? vm->name : "", err);
        if (!v)
            return err->code == ENOENT ? cube_err_set(err, EINVAL, "volume '%s' does not exist", vm->name)
                                       : -1;
        vm->volume_id = cube_rpc_strdup(ctx, v->volume_id);
        int rc = 0;
        if (v->node_id && *v->node_id) {
            if (*node && strcmp(node, v->node_id) != 0)
                rc = cube_err_set(
                    err, EINVAL,
                    "volumeMounts: volumes '%s' and '%s' are held by different nodes (%s, %s): a "
                    "sandbox mounts volumes of one node",
                    node_of, v->name, node, v->node_id);
            else if (!*node) {
                snprintf(node, 64, "%s", v->node_id);
                node_of = cube_rpc_strdup(ctx, v->name);
            }
        }
        cube__volume__free_unpacked(v, NULL);
        if (rc < 0) return -1;
    }
    return 0;
}

int volumes_place(master *m, Cube__VolumeMount **mounts, size_t n, const char *node_id, cube_err *err)
{
    for (size_t i = 0; i < n; i++) {
        Cube__Volume *v = m->st->ops->volume_get(m->st, mounts[i]->volume_id, err);
        if (!v) return -1;
        int rc = place(m, &v, node_id, err);
        if (rc == 0 && strcmp(v->node_id, node_id) != 0)
            rc = cube_err_set(err, EBUSY, "volume '%s' was just placed on node %s: try again", v->name,
                              v->node_id);
        cube__volume__free_unpacked(v, NULL);
        if (rc < 0) return -1;
    }
    return 0;
}

/* The link to the node that holds v's files, placing it on a node first if it has none. */
static node_link *volume_node(master *m, Cube__Volume **v, cube_err *err)
{
    if (!(*v)->node_id || !*(*v)->node_id) {
        char node[64];
        new_volume_node(m, node);
        if (!*node) {
            cube_err_set(err, EAGAIN, "no node is available to hold volume '%s'", (*v)->name);
            return NULL;
        }
        if (place(m, v, node, err) < 0) return NULL;
    }
    node_link *l = node_link_get(m, (*v)->node_id, err);
    if (!l)
        cube_err_set(err, EHOSTUNREACH, "node %s, which holds volume '%s', is not available", (*v)->node_id,
                     (*v)->name);
    return l;
}

static int node_volume_call(node_link *l, const Cube__VolumeFileRequest *req, Cube__VolumeFileResponse **out,
                            cube_err *err)
{
    cube_rpc_call_opts o = {.timeout_ms = VOLUME_RPC_TIMEOUT_MS};
    int rc = cube_rpc_call(l->rpc, "/cube.Cubelet/VolumeFiles", &req->base,
                           &cube__volume_file_response__descriptor, (ProtobufCMessage **)out, &o, err);
    node_link_put(l);
    return rc;
}

/* A volume still mounted by a running or paused sandbox stays. Its files go first (on its node), then its
 * record; a volume whose node was removed from the cluster has no files left to remove. */
int delete_volume(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    master *m = svc;
    const Cube__VolumeRef *req = reqp;
    Cube__Volume *v = m->st->ops->volume_get(m->st, req->volume_id ? req->volume_id : "", err);
    if (!v) return -1;
    Cube__Sandbox **all;
    size_t n;
    int listed = m->st->ops->sandbox_list(m->st, &all, &n, err) == 0;
    int rc = listed ? 0 : -1;
    for (size_t i = 0; listed && rc == 0 && i < n; i++)
        for (size_t k = 0; k < all[i]->n_volume_mounts; k++)
            if (all[i]->volume_mounts[k]->volume_id &&
                strcmp(all[i]->volume_mounts[k]->volume_id, v->volume_id) == 0 &&
                all[i]->state != CUBE__SANDBOX_STATE__SANDBOX_STATE_KILLED &&
                all[i]->state != CUBE__SANDBOX_STATE__SANDBOX_STATE_LOST)
                rc = cube_err_set(err, EBUSY, "volume '%s' is mounted by sandbox %s", v->name,
                                  all[i]->sandbox_id);
    if (listed) store_free_sandboxes(all, n);
    if (rc == 0 && v->node_id && *v->node_id) {
        pthread_mutex_lock(&m->lock);
        int known = node_find(m, v->node_id) != NULL;
        pthread_mutex_unlock(&m->lock);
        if (known) {
            node_link *l = node_link_get(m, v->node_id, err);
            if (!l) {
                rc = cube_err_set(err, EHOSTUNREACH, "node %s, which holds volume '%s', is not available",
                                  v->node_id, v->name);
            } else {
                Cube__VolumeFileRequest d = CUBE__VOLUME_FILE_REQUEST__INIT;
                d.volume_id = v->volume_id;
                d.op = "destroy";
                Cube__VolumeFileResponse *r = NULL;
                rc = node_volume_call(l, &d, &r, err);
                if (r) cube__volume_file_response__free_unpacked(r, NULL);
            }
        }
    }
    if (rc == 0) rc = m->st->ops->volume_delete(m->st, v->volume_id, err);
    if (rc == 0) cube_log_info("audit", "action=volume-delete volume=%s node=%s", v->volume_id, v->node_id);
    cube__volume__free_unpacked(v, NULL);
    return rc;
}

/* The content API: the volume by id or name, the call passed to its node as it came ("destroy" is
 * DeleteVolume's). */
int volume_files(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__VolumeFileRequest *req = reqp;
    Cube__VolumeFileResponse *out = respp;
    if (req->op && strcmp(req->op, "destroy") == 0)
        return cube_err_set(err, EINVAL, "op: a volume is removed with DeleteVolume");
    Cube__Volume *v = m->st->ops->volume_get(m->st, req->volume_id ? req->volume_id : "", err);
    if (!v) return -1;
    node_link *l = volume_node(m, &v, err);
    if (!l) {
        cube__volume__free_unpacked(v, NULL);
        return -1;
    }
    Cube__VolumeFileRequest nr = *req;
    nr.volume_id = v->volume_id;
    Cube__VolumeFileResponse *r = NULL;
    int rc = node_volume_call(l, &nr, &r, err);
    cube__volume__free_unpacked(v, NULL);
    if (rc < 0) return -1;
    /* the reply's bytes and entries move into this call's arena */
    rc = 0;
    out->eof = r->eof;
    out->size = r->size;
    if (r->data.len && (out->data.data = cube_rpc_alloc(ctx, r->data.len))) {
        memcpy(out->data.data, r->data.data, r->data.len);
        out->data.len = r->data.len;
    } else if (r->data.len) {
        rc = cube_err_set(err, ENOMEM, "out of memory");
    }
    out->entries = cube_rpc_alloc(ctx, (r->n_entries ? r->n_entries : 1) * sizeof(*out->entries));
    for (size_t i = 0; rc == 0 && i < r->n_entries; i++) {
        const Cube__VolumeEntry *e = r->entries[i];
        Cube__VolumeEntry *x = out->entries ? cube_rpc_alloc(ctx, sizeof(*x)) : NULL;
        if (!x) {
            rc = cube_err_set(err, ENOMEM, "out of memory");
            break;
        }
        cube__volume_entry__init(x);
        x->name = cube_rpc_strdup(ctx, e->name);
        x->path = cube_rpc_strdup(ctx, e->path);
        x->type = cube_rpc_strdup(ctx, e->type);
        x->target = cube_rpc_strdup(ctx, e->target ? e->target : "");
        x->size = e->size;
        x->uid = e->uid;
        x->gid = e->gid;
        x->mode = e->mode;
        x->atime_ms = e->atime_ms;
        x->mtime_ms = e->mtime_ms;
        x->ctime_ms = e->ctime_ms;
        out->entries[out->n_entries++] = x;
    }
    cube__volume_file_response__free_unpacked(r, NULL);
    return rc;
}
