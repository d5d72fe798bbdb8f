/* Built templates onto every node (see replicate.h). */
#include "replicate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cubelet.pb-c.h"
#include "log.h"
#include "master_nodes.h"
#include "timeutil.h"

#define COPY_RETRY_MS 60000  /* a copy that failed to a node is tried again after this */
#define COPY_CALL_MS  120000 /* one chunk each way (the first export call packs the layers) */

typedef struct copy_job {
    master *m;
    char full[192]; /* what the node reports: "name" or "name:tag" */
    char name[128]; /* the template */
    char tag[64];   /* "default" for the bare name */
    char build[64], from[64], to[64];
    bool link_only; /* the taker holds the build already (under another tag): only its link moves */
} copy_job;

static bool has_build(const master_node *n, const char *tpl, const char *build)
{
    for (size_t i = 0; i < n->info->n_template_sizes; i++) {
        const Cube__TemplateSize *t = n->info->template_sizes[i];
        if (strcmp(t->template_id, tpl) == 0 && t->build_id && strcmp(t->build_id, build) == 0) return true;
    }
    return false;
}

/* n's report of a template ("name" or "name:tag"), or NULL */
static const Cube__TemplateSize *entry_of(const master_node *n, const char *full)
{
    for (size_t i = 0; i < n->info->n_template_sizes; i++)
        if (strcmp(n->info->template_sizes[i]->template_id, full) == 0) return n->info->template_sizes[i];
    return NULL;
}

/* Does n hold build of name, under its bare name or any tag? */
static bool holds_build(const master_node *n, const char *name, const char *build)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < n->info->n_template_sizes; i++) {
        const Cube__TemplateSize *t = n->info->template_sizes[i];
        if (strncmp(t->template_id, name, nl) == 0 &&
            (t->template_id[nl] == '\0' || t->template_id[nl] == ':') && t->build_id &&
            strcmp(t->build_id, build) == 0)
            return true;
    }
    return false;
}

/* A build the store still has for the template (a deleted template's are gone with it). With m->lock: the
 * store call is short, and only made for a copy that is otherwise due. */
static bool build_recorded(master *m, const char *name, const char *build)
{
    cube_err err = {0};
    Cube__TemplateBuild *b = m->st->ops->build_get(m->st, build, &err);
    bool ok = b && strcmp(b->template_id, name) == 0;
    if (b) cube__template_build__free_unpacked(b, NULL);
    return ok;
}

static bool failed_lately(master *m, const char *name, const char *node, int64_t now)
{
    for (int i = 0; i < COPY_FAILURES; i++)
        if (m->copy_failures[i].until_ms > now && strcmp(m->copy_failures[i].name, name) == 0 &&
            strcmp(m->copy_failures[i].node, node) == 0)
            return true;
    return false;
}

/* With m->lock: the next (template or tag, holder, taker), or false. Every name and tag converges to its
 * newest assignment in the cluster (a build published, a tag moved, by the nodes' clocks): a node that lacks
 * it (and has the base it stands on) takes a copy, a node whose link is older moves it (a copy, or only the
 * link where it holds that build already). */
static bool next_copy(master *m, copy_job *j)
{
    int64_t now = cube_now_mono_ms();
    for (master_node *a = m->nodes; a; a = a->next) {
        if (!node_alive(m, a, now) || !a->info || !a->link) continue;
        for (size_t i = 0; i < a->info->n_template_sizes; i++) {
            const Cube__TemplateSize *t = a->info->template_sizes[i];
            if (!t->from_template || !*t->from_template || !t->from_build || !*t->from_build ||
                !t->build_id || !*t->build_id)
                continue;
            const char *colon = strchr(t->template_id, ':');
            size_t nl = colon ? (size_t)(colon - t->template_id) : strlen(t->template_id);
            char name[128];
            snprintf(name, sizeof(name), "%.*s", (int)nl, t->template_id);
            for (master_node *b = m->nodes; b; b = b->next) {
                if (b == a || !node_alive(m, b, now) || !b->info || !b->link || b->info->draining) continue;
                const Cube__TemplateSize *bt = entry_of(b, t->template_id);
                if (bt && bt->build_id && strcmp(bt->build_id, t->build_id) == 0) continue;
                if (bt && bt->assigned_at_ms >= t->assigned_at_ms) continue; /* b's is as new: it leads */
                bool link_only = holds_build(b, name, t->build_id);
                if ((!link_only && !has_build(b, t->from_template, t->from_build)) ||
                    failed_lately(m, t->template_id, b->node_id, now))
                    continue;
                if (!build_recorded(m, name, t->build_id)) break; /* deleted: never spread again */
                snprintf(j->full, sizeof(j->full), "%s", t->template_id);
                snprintf(j->name, sizeof(j->name), "%s", name);
                snprintf(j->tag, sizeof(j->tag), "%s", colon ? colon + 1 : "default");
                snprintf(j->build, sizeof(j->build), "%s", t->build_id);
                snprintf(j->from, sizeof(j->from), "%s", a->node_id);
                snprintf(j->to, sizeof(j->to), "%s", b->node_id);
                j->link_only = link_only;
                return true;
            }
        }
    }
    return false;
}

/* The taker holds the build: its tag (or bare name) is linked to it there. */
static int link_there(master *m, const copy_job *j, cube_err *err)
{
    node_link *to = node_link_get(m, j->to, err);
    if (!to) return -1;
    Cube__TemplateTagsRequest r = CUBE__TEMPLATE_TAGS_REQUEST__INIT;
    r.name = (char *)j->name;
    r.op = "assign";
    r.build_id = (char *)j->build;
    char *tags[1] = {(char *)j->tag};
    r.tags = tags;
    r.n_tags = 1;
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 30000};
    int rc = cube_rpc_call(to->rpc, "/cube.Cubelet/TemplateTags", &r.base,
                           &cube__template_tags_response__descriptor, &resp, &o, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    node_link_put(to);
    return rc;
}

static int copy(master *m, const copy_job *j, uint64_t *bytes, cube_err *err)
{
    node_link *from = node_link_get(m, j->from, err);
    if (!from) return -1;
    node_link *to = node_link_get(m, j->to, err);
    if (!to) {
        node_link_put(from);
        return -1;
    }
    int rc = 0;
    cube_rpc_call_opts o = {.timeout_ms = COPY_CALL_MS};
    uint64_t off = 0;
    while (rc == 0) {
        Cube__TemplateExportRequest er = CUBE__TEMPLATE_EXPORT_REQUEST__INIT;
        er.name = (char *)j->name;
        er.build_id = (char *)j->build;
        er.offset = off;
        ProtobufCMessage *chunk = NULL, *r = NULL;
        rc = cube_rpc_call(from->rpc, "/cube.Cubelet/ExportTemplate", &er.base,
                           &cube__template_chunk__descriptor, &chunk, &o, err);
        if (rc < 0) break;
        const Cube__TemplateChunk *c = (const Cube__TemplateChunk *)chunk;
        bool last = c->last || c->data.len == 0;
        Cube__TemplateChunk in = *c;
        in.last = last;
        char *tags[1] = {(char *)j->tag};
        in.tags = tags;
        in.n_tags = 1;
        rc = cube_rpc_call(to->rpc, "/cube.Cubelet/ImportTemplate", &in.base, &cube__empty__descriptor, &r,
                           &o, err);
        off += c->data.len;
        if (r) protobuf_c_message_free_unpacked(r, NULL);
        protobuf_c_message_free_unpacked(chunk, NULL);
        if (rc == 0 && last) break;
    }
    *bytes = off;
    node_link_put(from);
    node_link_put(to);
    if (rc < 0 && err->code == EEXIST) { /* another master's copy got there first */
        cube_err_clear(err);
        rc = 0;
    }
    return rc;
}

static void *copy_thread(void *arg)
{
    copy_job *j = arg;
    master *m = j->m;
    cube_err err = {0};
    uint64_t bytes = 0;
    int64_t t0 = cube_now_mono_ms();
    if (j->link_only ? link_there(m, j, &err) == 0 : copy(m, j, &bytes, &err) == 0) {
        cube_log_info("audit", "action=%s template=%s build=%s from=%s to=%s ms=%lld",
                      j->link_only ? "template-link" : "template-copy", j->full, j->build, j->from, j->to,
                      (long long)(cube_now_mono_ms() - t0));
    } else {
        cube_log_warn("template copy failed; tried again in a minute", "template=%s from=%s to=%s err=\"%s\"",
                      j->full, j->from, j->to, err.msg);
        pthread_mutex_lock(&m->lock);
        int slot = m->copy_failure_next++ % COPY_FAILURES;
        snprintf(m->copy_failures[slot].name, sizeof(m->copy_failures[slot].name), "%s", j->full);
        snprintf(m->copy_failures[slot].node, sizeof(m->copy_failures[slot].node), "%s", j->to);
        m->copy_failures[slot].until_ms = cube_now_mono_ms() + COPY_RETRY_MS;
        pthread_mutex_unlock(&m->lock);
    }
    free(j);
    __atomic_store_n(&m->copy_running, 0, __ATOMIC_RELEASE);
    return NULL;
}

void replicate_templates(master *m)
{
    if (__atomic_load_n(&m->copy_running, __ATOMIC_ACQUIRE)) return;
    if (m->copy_started) { /* the last one ended: its thread is joined here, by the one thread that starts
                              them */
        pthread_join(m->copy_thread, NULL);
        m->copy_started = false;
    }
    copy_job *j = calloc(1, sizeof(*j));
    if (!j) return;
    j->m = m;
    pthread_mutex_lock(&m->lock);
    bool due = next_copy(m, j);
    pthread_mutex_unlock(&m->lock);
    if (!due) {
        free(j);
        return;
    }
    __atomic_store_n(&m->copy_running, 1, __ATOMIC_RELEASE);
    if (pthread_create(&m->copy_thread, NULL, copy_thread, j) != 0) {
        __atomic_store_n(&m->copy_running, 0, __ATOMIC_RELEASE);
        free(j);
        return;
    }
    m->copy_started = true;
}

void replicate_stop(master *m)
{
    if (m->copy_started) pthread_join(m->copy_thread, NULL);
    m->copy_started = false;
}
