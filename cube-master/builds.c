/* Template builds: records in the store, the work on one node (see builds.h). */
#include "builds.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cubelet.pb-c.h"
#include "id.h"
#include "log.h"
#include "master_nodes.h"
#include "timeutil.h"

int request_build(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__RequestBuildRequest *req = reqp;
    Cube__TemplateBuild *out = respp;
    if (!cube_template_name_valid(req->name))
        return cube_err_set(err, EINVAL,
                            "name: 1-63 characters of [a-z0-9._-], not starting with '.' or '-'");
    char id[40];
    if (cube_id_new(0, id, 24, err) < 0) return -1;
    pthread_mutex_lock(&m->lock);
    master_node *n = pick_node(m, "base"); /* builds start mostly from base */
    char node[64] = "";
    if (n) snprintf(node, sizeof(node), "%s", n->node_id);
    pthread_mutex_unlock(&m->lock);
    if (!n) return cube_err_set(err, EAGAIN, "no node is available to run the build");
    Cube__TemplateBuild b = CUBE__TEMPLATE_BUILD__INIT;
    Cube__Resources res = CUBE__RESOURCES__INIT;
    if (req->resources) res = *req->resources;
    b.template_id = req->name;
    b.build_id = id;
    b.node_id = node;
    b.created_at_ms = cube_now_unix_ms();
    b.resources = &res;
    b.n_tags = req->n_tags;
    b.tags = req->tags;
    if (m->st->ops->build_put(m->st, &b, err) < 0) return -1;
    out->template_id = cube_rpc_strdup(ctx, b.template_id);
    out->build_id = cube_rpc_strdup(ctx, id);
    out->node_id = cube_rpc_strdup(ctx, node);
    out->created_at_ms = b.created_at_ms;
    out->n_tags = req->n_tags;
    out->tags = cube_rpc_alloc(ctx, (req->n_tags ? req->n_tags : 1) * sizeof(char *));
    for (size_t i = 0; i < req->n_tags; i++) out->tags[i] = cube_rpc_strdup(ctx, req->tags[i]);
    cube_log_info("audit", "action=build-request template=%s build=%s node=%s", b.template_id, id, node);
    return 0;
}

/* The build's record (checked against the template named in the call) and its node's link. */
static node_link *build_node(master *m, const char *template_id, const char *build_id,
                             Cube__TemplateBuild **out, cube_err *err)
{
    Cube__TemplateBuild *b = build_id ? m->st->ops->build_get(m->st, build_id, err)
                                      : m->st->ops->build_latest(m->st, template_id ? template_id : "", err);
    if (!b) {
        if (err->code == ENOENT && build_id)
            cube_err_set(err, ENOENT, "build '%s' not found", build_id);
        else if (err->code == ENOENT)
            cube_err_set(err, ENOENT, "template '%s' has no build: POST /v3/templates first", template_id);
        return NULL;
    }
    if (template_id && *template_id && strcmp(b->template_id, template_id) != 0) {
        cube_err_set(err, ENOENT, "build '%s' is not a build of template '%s'", b->build_id, template_id);
        cube__template_build__free_unpacked(b, NULL);
        return NULL;
    }
    node_link *l = node_link_get(m, b->node_id, err);
    if (!l) {
        cube_err_set(err, EHOSTUNREACH, "node '%s' that holds build '%s' is not available", b->node_id,
                     b->build_id);
        cube__template_build__free_unpacked(b, NULL);
        return NULL;
    }
    *out = b;
    return l;
}

static int node_call(node_link *l, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, int timeout_ms,
                     cube_err *err)
{
    cube_rpc_call_opts o = {.timeout_ms = timeout_ms};
    int rc = cube_rpc_call(l->rpc, method, req, rd, resp, &o, err);
    node_link_put(l);
    return rc;
}

int start_build(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    master *m = svc;
    const Cube__BuildStartRequest *req = reqp;
    Cube__TemplateBuild *b = NULL;
    node_link *l = build_node(m, req->template_id, req->build_id ? req->build_id : "", &b, err);
    if (!l) return -1;
    Cube__BuildStartRequest nr = *req;
    nr.template_id = b->template_id;
    nr.resources = b->resources;
    nr.n_tags = b->n_tags;
    nr.tags = b->tags;
    ProtobufCMessage *r = NULL;
    int rc = node_call(l, "/cube.Cubelet/StartBuild", &nr.base, &cube__empty__descriptor, &r, 30000, err);
    if (r) protobuf_c_message_free_unpacked(r, NULL);
    if (rc == 0)
        cube_log_info("audit", "action=build-start template=%s build=%s", b->template_id, b->build_id);
    cube__template_build__free_unpacked(b, NULL);
    return rc;
}

int get_build_status(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__BuildStatusRequest *req = reqp;
    Cube__BuildStatus *out = respp;
    Cube__TemplateBuild *b = NULL;
    node_link *l = build_node(m, req->template_id, req->build_id ? req->build_id : "", &b, err);
    if (!l) return -1;
    cube__template_build__free_unpacked(b, NULL);
    ProtobufCMessage *r = NULL;
    if (node_call(l, "/cube.Cubelet/GetBuildStatus", &req->base, &cube__build_status__descriptor, &r, 10000,
                  err) < 0) {
        if (err->code == ENOENT) { /* requested, never started: E2B calls that waiting */
            cube_err_clear(err);
            out->state = cube_rpc_strdup(ctx, "waiting");
            return 0;
        }
        return -1;
    }
    const Cube__BuildStatus *s = (const Cube__BuildStatus *)r;
    out->state = cube_rpc_strdup(ctx, s->state);
    out->reason = s->reason ? cube_rpc_strdup(ctx, s->reason) : NULL;
    out->reason_step = s->reason_step ? cube_rpc_strdup(ctx, s->reason_step) : NULL;
    out->logs_total = s->logs_total;
    out->logs = cube_rpc_alloc(ctx, (s->n_logs ? s->n_logs : 1) * sizeof(*out->logs));
    for (size_t i = 0; i < s->n_logs; i++) {
        Cube__BuildLogEntry *e = cube_rpc_alloc(ctx, sizeof(*e));
        cube__build_log_entry__init(e);
        e->timestamp_ms = s->logs[i]->timestamp_ms;
        e->level = cube_rpc_strdup(ctx, s->logs[i]->level);
        e->message = cube_rpc_strdup(ctx, s->logs[i]->message);
        e->step = cube_rpc_strdup(ctx, s->logs[i]->step);
        out->logs[out->n_logs++] = e;
    }
    protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

int get_build_file(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    master *m = svc;
    const Cube__BuildFileRef *req = reqp;
    Cube__BuildFileState *out = respp;
    Cube__TemplateBuild *b = NULL;
    node_link *l = build_node(m, req->template_id, NULL, &b, err);
    if (!l) return -1;
    cube__template_build__free_unpacked(b, NULL);
    ProtobufCMessage *r = NULL;
    if (node_call(l, "/cube.Cubelet/GetBuildFile", &req->base, &cube__build_file_state__descriptor, &r, 10000,
                  err) < 0)
        return -1;
    out->present = ((const Cube__BuildFileState *)r)->present;
    protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

int put_build_file(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    master *m = svc;
    const Cube__BuildFileChunk *req = reqp;
    Cube__TemplateBuild *b = NULL;
    node_link *l = build_node(m, req->template_id, NULL, &b, err);
    if (!l) return -1;
    cube__template_build__free_unpacked(b, NULL);
    ProtobufCMessage *r = NULL;
    int rc = node_call(l, "/cube.Cubelet/PutBuildFile", &req->base, &cube__empty__descriptor, &r, 60000, err);
    if (r) protobuf_c_message_free_unpacked(r, NULL);
    return rc;
}

/* The node that holds a template's builds: its newest build's, else a live node that reports it. */
static node_link *template_node(master *m, const char *name, cube_err *err)
{
    Cube__TemplateBuild *b = m->st->ops->build_latest(m->st, name, err);
    if (b) {
        node_link *l = node_link_get(m, b->node_id, err);
        if (!l)
            cube_err_set(err, EHOSTUNREACH, "node '%s' that holds template '%s' is not available", b->node_id,
                         name);
        cube__template_build__free_unpacked(b, NULL);
        return l;
    }
    if (err->code != ENOENT) return NULL;
    cube_err_clear(err);
    node_link *l = NULL;
    int64_t now = cube_now_mono_ms();
    pthread_mutex_lock(&m->lock);
    for (master_node *n = m->nodes; n && !l; n = n->next) {
        if (!node_alive(m, n, now) || !n->info || !n->link) continue;
        for (size_t i = 0; i < n->info->n_templates && !l; i++)
            if (strcmp(n->info->templates[i], name) == 0) l = node_link_ref(n);
    }
    pthread_mutex_unlock(&m->lock);
    if (!l) cube_err_set(err, ENOENT, "template '%s' not found", name);
    return l;
}

int template_tags(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__TemplateTagsRequest *req = reqp;
    Cube__TemplateTagsResponse *out = respp;
    if (!cube_template_name_valid(req->name))
        return cube_err_set(err, EINVAL, "name: a template name of [a-z0-9._-]");
    node_link *l = template_node(m, req->name, err);
    if (!l) return -1;
    ProtobufCMessage *r = NULL;
    if (node_call(l, "/cube.Cubelet/TemplateTags", &req->base, &cube__template_tags_response__descriptor, &r,
                  30000, err) < 0)
        return -1;
    const Cube__TemplateTagsResponse *t = (const Cube__TemplateTagsResponse *)r;
    out->build_id = cube_rpc_strdup(ctx, t->build_id ? t->build_id : "");
    out->tags = cube_rpc_alloc(ctx, (t->n_tags ? t->n_tags : 1) * sizeof(*out->tags));
    for (size_t i = 0; out->tags && i < t->n_tags; i++) {
        Cube__TemplateTag *x = cube_rpc_alloc(ctx, sizeof(*x));
        if (!x) break;
        cube__template_tag__init(x);
        x->tag = cube_rpc_strdup(ctx, t->tags[i]->tag);
        x->build_id = cube_rpc_strdup(ctx, t->tags[i]->build_id);
        x->created_at_ms = t->tags[i]->created_at_ms;
        out->tags[out->n_tags++] = x;
    }
    if (req->op && strcmp(req->op, "list") != 0)
        cube_log_info("audit", "action=template-tags op=%s template=%s target=%s build=%s", req->op,
                      req->name, req->target ? req->target : "", out->build_id);
    protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

/* With m->lock: a live node reports build_id for the template (it holds it, built and published). */
static bool build_held(master *m, const char *name, const char *build_id)
{
    int64_t now = cube_now_mono_ms();
    for (master_node *n = m->nodes; n; n = n->next) {
        if (!node_alive(m, n, now) || !n->info) continue;
        for (size_t i = 0; i < n->info->n_template_sizes; i++) {
            const Cube__TemplateSize *t = n->info->template_sizes[i];
            size_t nl = strlen(name);
            if (t->build_id && strcmp(t->build_id, build_id) == 0 && strncmp(t->template_id, name, nl) == 0 &&
                (t->template_id[nl] == '\0' || t->template_id[nl] == ':'))
                return true;
        }
    }
    return false;
}

/* The state a build's node gives (no log lines asked for), or what the heartbeats say. */
static const char *build_state(master *m, const Cube__TemplateBuild *b)
{
    cube_err err = {0};
    node_link *l = node_link_get(m, b->node_id, &err);
    ProtobufCMessage *r = NULL;
    Cube__BuildStatusRequest q = CUBE__BUILD_STATUS_REQUEST__INIT;
    q.template_id = b->template_id;
    q.build_id = b->build_id;
    q.logs_offset = UINT32_MAX;
    static const char *const known[] = {"waiting", "building", "ready", "error"};
    const char *state = NULL;
    if (l && node_call(l, "/cube.Cubelet/GetBuildStatus", &q.base, &cube__build_status__descriptor, &r, 5000,
                       &err) == 0) {
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            if (strcmp(((Cube__BuildStatus *)r)->state, known[i]) == 0) state = known[i];
        protobuf_c_message_free_unpacked(r, NULL);
    }
    if (state) return state;
    pthread_mutex_lock(&m->lock);
    bool held = build_held(m, b->template_id, b->build_id);
    pthread_mutex_unlock(&m->lock);
    return held ? "ready" : "unknown";
}

int list_builds(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__TemplateRef *req = reqp;
    Cube__ListBuildsResponse *out = respp;
    if (!cube_template_name_valid(req->template_id))
        return cube_err_set(err, EINVAL, "templateID: a template name");
    Cube__TemplateBuild **v;
    size_t n;
    if (m->st->ops->build_list(m->st, req->template_id, &v, &n, err) < 0) return -1;
    out->builds = cube_rpc_alloc(ctx, (n ? n : 1) * sizeof(*out->builds));
    out->states = cube_rpc_alloc(ctx, (n ? n : 1) * sizeof(*out->states));
    for (size_t i = 0; out->builds && out->states && i < n; i++) {
        Cube__TemplateBuild *b = cube_rpc_alloc(ctx, sizeof(*b));
        Cube__Resources *res = cube_rpc_alloc(ctx, sizeof(*res));
        if (!b || !res) break;
        cube__template_build__init(b);
        cube__resources__init(res);
        if (v[i]->resources) *res = *v[i]->resources;
        res->base.n_unknown_fields = 0;
        res->base.unknown_fields = NULL;
        b->template_id = cube_rpc_strdup(ctx, v[i]->template_id);
        b->build_id = cube_rpc_strdup(ctx, v[i]->build_id);
        b->node_id = cube_rpc_strdup(ctx, v[i]->node_id);
        b->created_at_ms = v[i]->created_at_ms;
        b->resources = res;
        b->tags = cube_rpc_alloc(ctx, (v[i]->n_tags ? v[i]->n_tags : 1) * sizeof(char *));
        for (size_t k = 0; b->tags && k < v[i]->n_tags; k++)
            b->tags[b->n_tags++] = cube_rpc_strdup(ctx, v[i]->tags[k]);
        out->states[out->n_states++] = (char *)build_state(m, v[i]);
        out->builds[out->n_builds++] = b;
    }
    store_free_builds(v, n);
    return 0;
}
