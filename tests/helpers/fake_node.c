/* The fake cubelet of cube-master's tests (fake_node.h). */
#include "fake_node.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cubelet.pb-c.h"
#include "testutil.h"

static void fake_note_rules(fake_node *f, const Cube__NetworkPolicy *p)
{
    size_t len = 0;
    f->rules[0] = '\0';
    for (size_t i = 0; p && i < p->n_rules; i++)
        len += (size_t)snprintf(f->rules + len, len < sizeof(f->rules) ? sizeof(f->rules) - len : 0,
                                "%s %s=%s;", p->rules[i]->host, p->rules[i]->header, p->rules[i]->value);
}

static void fake_remove(fake_node *f, const char *id)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->sandboxes[i], id) == 0) {
            memmove(f->sandboxes[i], f->sandboxes[i + 1], (size_t)(f->n - i - 1) * sizeof(f->sandboxes[0]));
            f->n--;
            return;
        }
}

static int fake_has(fake_node *f, const char *id)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->sandboxes[i], id) == 0) return 1;
    return 0;
}

static int fake_create(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    fake_node *f = svc;
    const Cube__NodeCreateRequest *req = reqp;
    Cube__NodeSandbox *out = respp;
    pthread_mutex_lock(&f->lock);
    if (f->n == MAX_SB) {
        pthread_mutex_unlock(&f->lock);
        return cube_err_set(err, ENOSPC, "fake node full");
    }
    if (f->refuse_creates) {
        f->refused++;
        pthread_mutex_unlock(&f->lock);
        return cube_err_set(err, EAGAIN, "node %s is out of memory for sandboxes", f->id);
    }
    snprintf(f->sandboxes[f->n++], 32, "%s", req->sandbox_id);
    f->creates++;
    fake_note_rules(f, req->network);
    pthread_mutex_unlock(&f->lock);
    out->sandbox_id = cube_rpc_strdup(ctx, req->sandbox_id);
    out->state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
    out->agent_address = "netns:/proc/1/ns/net:49983";
    out->from_pool = 1;
    return 0;
}

static int fake_kill(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx, (void)respp;
    fake_node *f = svc;
    const Cube__NodeSandboxRef *req = reqp;
    pthread_mutex_lock(&f->lock);
    int had = fake_has(f, req->sandbox_id);
    fake_remove(f, req->sandbox_id);
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    return had ? 0 : cube_err_set(err, ENOENT, "sandbox %s not on this node", req->sandbox_id);
}

/* Pause and resume: held at the gate while the test races something against them. */
static int fake_gate(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx, (void)respp, (void)err;
    fake_node *f = svc;
    (void)reqp;
    pthread_mutex_lock(&f->lock);
    f->holding++;
    pthread_cond_broadcast(&f->cond);
    while (f->hold) pthread_cond_wait(&f->cond, &f->lock);
    f->holding--;
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static int fake_resume(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    Cube__NodeSandbox *out = respp;
    const Cube__NodeSandboxRef *req = reqp;
    out->sandbox_id = cube_rpc_strdup(ctx, req->sandbox_id);
    return fake_gate(svc, ctx, reqp, NULL, err);
}

static int fake_list(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)reqp, (void)err;
    fake_node *f = svc;
    Cube__NodeListResponse *out = respp;
    pthread_mutex_lock(&f->lock);
    out->sandboxes = cube_rpc_alloc(ctx, (size_t)(f->n ? f->n : 1) * sizeof(*out->sandboxes));
    for (int i = 0; i < f->n; i++) {
        Cube__NodeSandbox *x = cube_rpc_alloc(ctx, sizeof(*x));
        cube__node_sandbox__init(x);
        x->sandbox_id = cube_rpc_strdup(ctx, f->sandboxes[i]);
        x->state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
        out->sandboxes[out->n_sandboxes++] = x;
    }
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static int fake_network(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx, (void)respp;
    fake_node *f = svc;
    const Cube__NodeNetworkRequest *req = reqp;
    pthread_mutex_lock(&f->lock);
    int had = fake_has(f, req->sandbox_id);
    if (had) {
        fake_note_rules(f, req->network);
        f->network_updates++;
    }
    pthread_mutex_unlock(&f->lock);
    return had ? 0 : cube_err_set(err, ENOENT, "sandbox %s not on this node", req->sandbox_id);
}

/* VolumeFiles: noted; a stat answers one entry named after this node */
static int fake_volume_files(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)err;
    fake_node *f = svc;
    const Cube__VolumeFileRequest *req = reqp;
    Cube__VolumeFileResponse *out = respp;
    pthread_mutex_lock(&f->lock);
    size_t len = strlen(f->vol_ops);
    snprintf(f->vol_ops + len, sizeof(f->vol_ops) - len, "%s:%s:%s;", req->op, req->volume_id,
             req->path ? req->path : "");
    pthread_mutex_unlock(&f->lock);
    if (strcmp(req->op, "stat") == 0) {
        Cube__VolumeEntry *e = cube_rpc_alloc(ctx, sizeof(*e));
        cube__volume_entry__init(e);
        e->name = cube_rpc_strdup(ctx, f->id);
        e->path = cube_rpc_strdup(ctx, req->path);
        e->type = "file";
        out->entries = cube_rpc_alloc(ctx, sizeof(*out->entries));
        out->entries[0] = e;
        out->n_entries = 1;
    }
    return 0;
}

/* SnapshotSandbox: the snapshot joins what it holds (a name it holds is refused) */
static int fake_snapshot(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx, (void)respp;
    fake_node *f = svc;
    const Cube__NodeSnapshotRequest *req = reqp;
    char key[80];
    snprintf(key, sizeof(key), ",%s,", req->snapshot_id);
    pthread_mutex_lock(&f->lock);
    int rc = 0;
    if (strstr(f->holds, key))
        rc = cube_err_set(err, EEXIST, "template '%s' exists", req->snapshot_id);
    else
        snprintf(f->holds + strlen(f->holds), sizeof(f->holds) - strlen(f->holds), "%s%s,",
                 f->holds[0] ? "" : ",", req->snapshot_id);
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static int fake_delete_template(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx, (void)respp;
    fake_node *f = svc;
    const Cube__TemplateRef *req = reqp;
    char key[80];
    snprintf(key, sizeof(key), ",%s,", req->template_id);
    pthread_mutex_lock(&f->lock);
    char *at = strstr(f->holds, key);
    int rc = 0;
    if (!at)
        rc = cube_err_set(err, ENOENT, "template '%s' not found", req->template_id);
    else if (f->refuse_delete)
        rc = cube_err_set(err, EBUSY, "template '%s' is what template 'x' is built on", req->template_id);
    else
        memmove(at, at + strlen(key) - 1, strlen(at + strlen(key) - 1) + 1);
    pthread_mutex_unlock(&f->lock);
    return rc;
}

/* ExportTemplate: "app" builds a* in two chunks; ImportTemplate: the chunks noted in order (the last with the
 * build and the tags it is linked under); TemplateTags assign by build: noted */
static int fake_export(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc;
    const Cube__TemplateExportRequest *req = reqp;
    Cube__TemplateChunk *out = respp;
    if (strcmp(req->name, "app") != 0 || req->build_id[0] != 'a')
        return cube_err_set(err, ENOENT, "no such build");
    out->name = "app";
    out->build_id = cube_rpc_strdup(ctx, req->build_id);
    out->offset = req->offset;
    out->data.data = (uint8_t *)cube_rpc_strdup(ctx, req->offset == 0 ? "first-" : "second");
    out->data.len = 6;
    out->size = 12;
    out->last = req->offset >= 6;
    out->digest = "d1";
    out->config_json = "{}";
    return 0;
}

static int fake_import(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx, (void)respp, (void)err;
    fake_node *f = svc;
    const Cube__TemplateChunk *req = reqp;
    pthread_mutex_lock(&f->lock);
    size_t len = strlen(f->vol_ops);
    len += (size_t)snprintf(f->vol_ops + len, sizeof(f->vol_ops) - len, "import:%s:%llu:%.*s%s", req->name,
                            (unsigned long long)req->offset, (int)req->data.len, (const char *)req->data.data,
                            req->last ? ":last" : "");
    if (req->last)
        len += (size_t)snprintf(f->vol_ops + len, sizeof(f->vol_ops) - len, ":%s@%s", req->build_id,
                                req->n_tags ? req->tags[0] : "");
    snprintf(f->vol_ops + len, sizeof(f->vol_ops) - len, ";");
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static int fake_tags(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx, (void)respp;
    fake_node *f = svc;
    const Cube__TemplateTagsRequest *req = reqp;
    if (strcmp(req->op, "assign") != 0 || !*req->build_id || req->n_tags != 1)
        return cube_err_set(err, EINVAL, "the fake links by build only");
    pthread_mutex_lock(&f->lock);
    size_t len = strlen(f->vol_ops);
    snprintf(f->vol_ops + len, sizeof(f->vol_ops) - len, "link:%s:%s=%s;", req->name, req->tags[0],
             req->build_id);
    pthread_mutex_unlock(&f->lock);
    return 0;
}

/* Rollback: "ends" fails after the sandbox's processes ended (the node removed it), "other" is a snapshot of
 * another sandbox; any other snapshot succeeds with a new PID 1's addresses. */
static int fake_rollback(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    fake_node *f = svc;
    const Cube__NodeRollbackRequest *req = reqp;
    Cube__NodeSandbox *out = respp;
    if (strcmp(req->snapshot_id, "other") == 0)
        return cube_err_set(err, EINVAL, "snapshot 'other' is not of it");
    if (strcmp(req->snapshot_id, "ends") == 0) {
        pthread_mutex_lock(&f->lock);
        fake_remove(f, req->sandbox_id);
        pthread_mutex_unlock(&f->lock);
        return cube_err_set(err, ENOTRECOVERABLE, "rollback failed and the sandbox ended");
    }
    out->sandbox_id = cube_rpc_strdup(ctx, req->sandbox_id);
    out->state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
    out->agent_address = "netns:/proc/77/ns/net:49983";
    out->interpreter_address = "netns:/proc/77/ns/net:49999";
    return 0;
}

/* Forks: every child starts, as created ones do */
static int fake_fork(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    fake_node *f = svc;
    const Cube__NodeForkRequest *req = reqp;
    Cube__NodeForkResponse *out = respp;
    out->sandboxes = cube_rpc_alloc(ctx, (req->n_children + 1) * sizeof(*out->sandboxes));
    for (size_t i = 0; i < req->n_children; i++) {
        Cube__NodeSandbox *kid = cube_rpc_alloc(ctx, sizeof(*kid));
        if (!kid || !out->sandboxes) return cube_err_set(err, ENOMEM, "out of memory");
        cube__node_sandbox__init(kid);
        if (fake_create(svc, ctx, req->children[i], kid, err) < 0) return -1;
        out->sandboxes[out->n_sandboxes++] = kid;
    }
    pthread_mutex_lock(&f->lock);
    f->forks++;
    pthread_mutex_unlock(&f->lock);
    return 0;
}

#define C(name, fn, req, resp) CUBE_RPC_METHOD("cube.Cubelet", name, fn, req, resp)
static const cube_rpc_method fake_methods[] = {
    C("CreateSandbox", fake_create, cube__node_create_request, cube__node_sandbox),
    C("KillSandbox", fake_kill, cube__node_sandbox_ref, cube__empty),
    C("ForkSandbox", fake_fork, cube__node_fork_request, cube__node_fork_response),
    C("RollbackSandbox", fake_rollback, cube__node_rollback_request, cube__node_sandbox),
    C("PauseSandbox", fake_gate, cube__node_sandbox_ref, cube__empty),
    C("ResumeSandbox", fake_resume, cube__node_sandbox_ref, cube__node_sandbox),
    C("ListSandboxes", fake_list, cube__empty, cube__node_list_response),
    C("UpdateNetwork", fake_network, cube__node_network_request, cube__empty),
    C("VolumeFiles", fake_volume_files, cube__volume_file_request, cube__volume_file_response),
    C("SnapshotSandbox", fake_snapshot, cube__node_snapshot_request, cube__empty),
    C("DeleteTemplate", fake_delete_template, cube__template_ref, cube__empty),
    C("ExportTemplate", fake_export, cube__template_export_request, cube__template_chunk),
    C("ImportTemplate", fake_import, cube__template_chunk, cube__empty),
    C("TemplateTags", fake_tags, cube__template_tags_request, cube__template_tags_response),
    {0},
};

void fake_start(fake_node *f, const char *dir, const char *id)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->id, sizeof(f->id), "%s", id);
    snprintf(f->addr, sizeof(f->addr), "unix:%s/%s.sock", dir, id);
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    cube_err err = {0};
    f->srv = cube_rpc_server_start(f->addr, fake_methods, f, 4, &err);
    ck_assert_msg(f->srv != NULL, "%s", err.msg);
}

void fake_stop(fake_node *f)
{
    pthread_mutex_lock(&f->lock);
    f->hold = 0;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    cube_rpc_server_stop(f->srv);
}

void wait_holding(fake_node *f)
{
    pthread_mutex_lock(&f->lock);
    while (!f->holding) pthread_cond_wait(&f->cond, &f->lock);
    pthread_mutex_unlock(&f->lock);
}

void open_gate(fake_node *f)
{
    pthread_mutex_lock(&f->lock);
    f->hold = 0;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

void fake_rules(fake_node *f, char out[512])
{
    pthread_mutex_lock(&f->lock);
    snprintf(out, 512, "%s", f->rules);
    pthread_mutex_unlock(&f->lock);
}
