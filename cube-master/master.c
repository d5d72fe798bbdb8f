#include "master.h"
#include "envd_version.h"
#include "file_signature.h"
#include "builds.h"
#include "keys.h"
#include "master_nodes.h"
#include "secrets.h"
#include "snapshots.h"
#include "replicate.h"
#include "volumes.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cubelet.pb-c.h"
#include "hypervisor.pb-c.h"
#include "id.h"
#include "log.h"
#include "metrics.h"
#include "protoutil.h"
#include "timeutil.h"

#define MAX_TIMEOUT_S         (24 * 3600)
#define CREATE_RPC_TIMEOUT_MS 60000
/* a create while no node is alive yet (a cluster starting, this master just restarted and not yet heard from
 * its nodes, a heartbeat apart) waits this long for one instead of answering 503 at once */
#define CREATE_NODE_WAIT_MS 5000
/* a node's refusal is taken to the next node only while the caller's deadline leaves this much */
#define CREATE_RETRY_MIN_LEFT_MS 2000

int master_init(master *m, store *st, cube_err *err)
{
    (void)err;
    memset(m, 0, sizeof(*m));
    m->st = st;
    m->heartbeat_ms = 1000;
    m->node_lost_ms = 15000;
    m->orphan_after_ms = 60000;
    pthread_mutex_init(&m->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->nodes_changed, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&m->keys_lock, NULL);
    pthread_mutex_init(&m->stop_lock, NULL);
    pthread_cond_init(&m->stop_cond, NULL);
    return 0;
}

/* ---- nodes ---- */

void noop_free(void *d, void *p)
{
    (void)d;
    (void)p;
}

/* Deep copy of a stored sandbox into the reply's arena (freed with the call). */
static Cube__Sandbox *reply_copy(cube_rpc_ctx *ctx, const Cube__Sandbox *sb)
{
    size_t len = protobuf_c_message_get_packed_size(&sb->base);
    uint8_t *buf = cube_rpc_alloc(ctx, len ? len : 1);
    if (!buf) return NULL;
    protobuf_c_message_pack(&sb->base, buf);
    ProtobufCAllocator a = {
        .alloc = (void *(*)(void *, size_t))cube_rpc_alloc, .free = noop_free, .allocator_data = ctx};
    return cube__sandbox__unpack(&a, len, buf);
}

/* A change to a sandbox's record that needs no node call (a timeout, the record of a policy the node already
 * applied): read, change, write back conditional on the state read; when the state moved meanwhile, again
 * from a fresh read. ENOENT when the sandbox is gone (a kill won). On success *out (if given) is the record
 * written (free_unpacked). */
static int sandbox_modify(master *m, const char *id,
                          int (*change)(Cube__Sandbox *sb, void *arg, cube_err *err), void *arg,
                          Cube__Sandbox **out, cube_err *err)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        Cube__Sandbox *sb = m->st->ops->sandbox_get(m->st, id, err);
        if (!sb) return -1;
        int expect = sb->state;
        int rc = change(sb, arg, err);
        if (rc == 0) rc = m->st->ops->sandbox_update(m->st, sb, expect, err);
        if (rc == 0 && out) {
            *out = sb;
            return 0;
        }
        cube__sandbox__free_unpacked(sb, NULL);
        if (rc == 0 || err->code != EBUSY) return rc;
        cube_err_clear(err);
    }
    return cube_err_set(err, EBUSY, "sandbox '%s' keeps changing: try again", id);
}

/* A sandbox its node made whose record could not be written: not left running unseen. */
static void kill_unrecorded(cube_rpc_client *node, const char *id)
{
    Cube__NodeSandboxRef ref = CUBE__NODE_SANDBOX_REF__INIT;
    ref.sandbox_id = (char *)id;
    ProtobufCMessage *r = NULL;
    if (cube_rpc_call(node, "/cube.Cubelet/KillSandbox", &ref.base, &cube__empty__descriptor, &r, NULL,
                      NULL) == 0)
        protobuf_c_message_free_unpacked(r, NULL);
}

static int create_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__CreateSandboxRequest *req = reqp;
    Cube__CreateSandboxResponse *out = respp;
    if (!req->template_id || !*req->template_id) return cube_err_set(err, EINVAL, "templateID is required");
    /* "name:default" is what "name" alone starts (E2B's default tag) */
    char tpl_id[160];
    snprintf(tpl_id, sizeof(tpl_id), "%s", req->template_id);
    size_t tl = strlen(tpl_id);
    if (tl > 8 && strcmp(tpl_id + tl - 8, ":default") == 0) tpl_id[tl - 8] = '\0';
    int64_t timeout = req->timeout_s ? req->timeout_s : 300;
    if (timeout < 0 || timeout > MAX_TIMEOUT_S)
        return cube_err_set(err, EINVAL, "timeout must be within 0..%d seconds", MAX_TIMEOUT_S);
    char id[CUBE_ID_LEN + 1], token[65];
    if (cube_sandbox_id_new(id, err) < 0 || cube_token_hex(token, 16, err) < 0) return -1;
    char traffic[33] = "";
    if (req->private_traffic && cube_token_hex(traffic, 16, err) < 0) return -1;
    /* volumes by name: each must exist, and the sandbox runs on the node that holds them */
    char vol_node[64] = "";
    if (volumes_resolve(m, ctx, req->volume_mounts, req->n_volume_mounts, vol_node, err) < 0) return -1;
    key_hold hold;
    if (key_hold_take(m, req->api_key_id, req->api_key_max_sandboxes, 1, &hold, err) < 0) return -1;

    Cube__NodeCreateRequest nreq = CUBE__NODE_CREATE_REQUEST__INIT;
    nreq.sandbox_id = id;
    nreq.template_id = tpl_id;
    /* map entries of every message are {key = 1, value = 2}: they pack the same whatever message holds them
     */
    nreq.n_env_vars = req->n_env_vars;
    nreq.env_vars = (Cube__NodeCreateRequest__EnvVarsEntry **)req->env_vars;
    nreq.envd_access_token = token;
    nreq.api_key_id = req->api_key_id;
    Cube__NetworkPolicy *filled =
        NULL; /* the rules' secrets, for the node only: the record keeps placeholders */
    if (secrets_resolve_policy(m, req->network, false, &filled, err) < 0) {
        key_hold_drop(m, &hold);
        return -1;
    }
    nreq.network = filled ? filled : req->network;
    nreq.n_volume_mounts = req->n_volume_mounts;
    nreq.volume_mounts = req->volume_mounts;

    /* A node that refuses the create for now (busy, or out of memory for sandboxes) is not the cluster's
     * last word: the next best node is asked, while the caller's deadline leaves time for it. Not with
     * volumes, which hold the sandbox to their node. */
    char node_id[64] = "";
    node_skip skip = {0};
    cube_err refused = {0};
    node_link *link = NULL;
    ProtobufCMessage *nresp = NULL;
    int64_t t_start = 0, t_node = 0;
    for (;;) {
        link = schedule_wait(m, tpl_id, vol_node, &skip, CREATE_NODE_WAIT_MS, node_id, err);
        if (!link) {
            if (skip.n) *err = refused; /* every node that has the template refused: the last one's words */
            secrets_free_policy(filled);
            key_hold_drop(m, &hold);
            return -1;
        }
        if (!*vol_node && volumes_place(m, req->volume_mounts, req->n_volume_mounts, node_id, err) < 0) {
            node_link_put(link);
            secrets_free_policy(filled);
            key_hold_drop(m, &hold);
            return -1;
        }
        t_start = t_node = cube_now_mono_ns();
        cube_rpc_call_opts o = {.timeout_ms = CREATE_RPC_TIMEOUT_MS};
        if (cube_rpc_call(link->rpc, "/cube.Cubelet/CreateSandbox", &nreq.base,
                          &cube__node_sandbox__descriptor, &nresp, &o, err) == 0)
            break;
        node_link_put(link);
        cube_err_prefix(err, "create on node %s", node_id);
        bool again = err->code == EAGAIN && !req->n_volume_mounts && skip.n < NODE_SKIP_MAX &&
                     (!ctx || cube_rpc_deadline_left_ms(ctx) > CREATE_RETRY_MIN_LEFT_MS);
        if (!again) {
            secrets_free_policy(filled);
            key_hold_drop(m, &hold);
            return -1;
        }
        refused = *err;
        snprintf(skip.ids[skip.n++], sizeof(skip.ids[0]), "%s", node_id);
        cube_err_clear(err);
    }
    secrets_free_policy(filled);
    cube_rpc_client *client = link->rpc;
    Cube__NodeSandbox *ns = (Cube__NodeSandbox *)nresp;
    int64_t t_store = cube_now_mono_ns();

    Cube__Sandbox sb = CUBE__SANDBOX__INIT;
    Cube__Resources res = CUBE__RESOURCES__INIT;
    res.cpu_count = 2; /* a node that does not say (older cubelets): the defaults */
    res.memory_mb = 512;
    res.disk_mb = 1024;
    if (ns->resources && ns->resources->cpu_count) res = *ns->resources;
    sb.sandbox_id = id;
    sb.template_id = tpl_id;
    sb.node_id = node_id;
    sb.state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
    sb.n_metadata = req->n_metadata;
    sb.metadata = (Cube__Sandbox__MetadataEntry **)req->metadata;
    sb.started_at_ms = cube_now_unix_ms();
    sb.end_at_ms = sb.started_at_ms + timeout * 1000;
    sb.resources = &res;
    sb.envd_version = CUBE_ENVD_VERSION;
    sb.envd_access_token = token;
    sb.agent_address = ns->agent_address;
    sb.interpreter_address = ns->interpreter_address;
    sb.auto_pause = req->auto_pause;
    sb.auto_resume = req->auto_resume;
    sb.traffic_access_token = traffic;
    sb.network = req->network;
    sb.n_volume_mounts = req->n_volume_mounts;
    sb.volume_mounts = req->volume_mounts;
    sb.client_id = "cube";
    sb.api_key_id = req->api_key_id;
    int rc = key_hold_add(m, &hold, &sb, err);
    key_hold_drop(m, &hold);
    if (rc == 0) {
        out->sandbox = reply_copy(ctx, &sb);
        cube_metric_observe("cube_sandbox_create_seconds",
                            "Sandbox create time in cube-master (node + store)",
                            (double)(cube_now_mono_ns() - t_start) / 1e9);
        cube_metric_add(ns->from_pool ? "cube_sandbox_creates_total{pooled=\"true\"}"
                                      : "cube_sandbox_creates_total{pooled=\"false\"}",
                        "Sandboxes created, from a ready pool slot or cold", 1);
        int64_t t_end = cube_now_mono_ns();
        cube_log_info(
            "audit",
            "action=create sandbox=%s template=%s node=%s key=%s pooled=%d node_ms=%.2f store_ms=%.2f", id,
            tpl_id, node_id, req->api_key_id ? req->api_key_id : "", ns->from_pool,
            (double)(t_store - t_node) / 1e6, (double)(t_end - t_store) / 1e6);
    } else {
        kill_unrecorded(client, id);
    }
    protobuf_c_message_free_unpacked(nresp, NULL);
    node_link_put(link);
    return rc;
}

static int get_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__SandboxRef *req = reqp;
    Cube__GetSandboxResponse *out = respp;
    Cube__Sandbox *sb = m->st->ops->sandbox_get(m->st, req->sandbox_id ? req->sandbox_id : "", err);
    if (!sb) return -1;
    if (sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_LOST) {
        cube_err_set(err, ENOENT, "sandbox '%s' is gone: its node %s was lost", sb->sandbox_id, sb->node_id);
        cube__sandbox__free_unpacked(sb, NULL);
        return -1;
    }
    out->sandbox = reply_copy(ctx, sb);
    cube__sandbox__free_unpacked(sb, NULL);
    return 0;
}

/* A signed file URL that names no sandbox (the SDK with E2B_SANDBOX_URL: one address for every sandbox): the
 * live sandbox whose access token signed it. Each token is tried (a hash each; signatures are rare next to
 * everything else); the agent checks the signature again, and its expiration, when the request arrives. */
static int find_signed_file(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__SignedFileRequest *req = reqp;
    Cube__SandboxRef *out = respp;
    const char *op = req->operation ? req->operation : "";
    if (strcmp(op, "read") != 0 && strcmp(op, "write") != 0)
        return cube_err_set(err, EINVAL, "operation: want read or write, got '%s'", op);
    if (!req->signature || strncmp(req->signature, "v1_", 3) != 0)
        return cube_err_set(err, EINVAL, "signature: want v1_<base64>");
    Cube__Sandbox **all;
    size_t n;
    if (m->st->ops->sandbox_list(m->st, &all, &n, err) < 0) return -1;
    char *found = NULL;
    for (size_t i = 0; i < n && !found; i++) {
        const Cube__Sandbox *sb = all[i];
        if ((sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING ||
             sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED) &&
            cube_file_signature_ok(req->signature, req->path, op, req->username, sb->envd_access_token,
                                   req->expiration))
            found = cube_rpc_strdup(ctx, sb->sandbox_id);
    }
    store_free_sandboxes(all, n);
    cube_metric_add(found ? "cube_master_signed_files_total{found=\"yes\"}"
                          : "cube_master_signed_files_total{found=\"no\"}",
                    "Signed file URLs naming no sandbox, looked up by their signature", 1);
    if (!found) return cube_err_set(err, ENOENT, "no live sandbox signed this file URL");
    out->sandbox_id = found;
    return 0;
}

static int metadata_match(const Cube__Sandbox *sb, const Cube__ListSandboxesRequest *req)
{
    for (size_t i = 0; i < req->n_metadata; i++) {
        int hit = 0;
        for (size_t j = 0; j < sb->n_metadata && !hit; j++)
            hit = strcmp(sb->metadata[j]->key, req->metadata[i]->key) == 0 &&
                  strcmp(sb->metadata[j]->value, req->metadata[i]->value) == 0;
        if (!hit) return 0;
    }
    return 1;
}

static int list_sandboxes(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__ListSandboxesRequest *req = reqp;
    Cube__ListSandboxesResponse *out = respp;
    Cube__Sandbox **all;
    size_t n;
    if (m->st->ops->sandbox_list(m->st, &all, &n, err) < 0) return -1;
    size_t offset = req->next_token && *req->next_token ? strtoul(req->next_token, NULL, 10) : 0;
    size_t limit = req->limit ? req->limit : 100;
    out->sandboxes = cube_rpc_alloc(ctx, (n ? n : 1) * sizeof(Cube__Sandbox *));
    size_t matched = 0;
    for (size_t i = 0; i < n; i++) {
        Cube__Sandbox *sb = all[i];
        if (sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING) out->total_running++;
        int state_ok = req->n_states == 0 ? (sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING ||
                                             sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED)
                                          : 0;
        for (size_t k = 0; k < req->n_states; k++)
            if ((int)sb->state == (int)req->states[k]) state_ok = 1;
        if (!state_ok || !metadata_match(sb, req)) continue;
        if (req->template_id && *req->template_id && strcmp(req->template_id, sb->template_id) != 0) continue;
        if (matched++ < offset) continue;
        if (out->n_sandboxes == limit) {
            char tok[32];
            snprintf(tok, sizeof(tok), "%zu", offset + limit);
            out->next_token = cube_rpc_strdup(ctx, tok);
            continue;
        }
        out->sandboxes[out->n_sandboxes++] = reply_copy(ctx, sb);
    }
    store_free_sandboxes(all, n);
    return 0;
}

/* Asks the sandbox's node to act on it. */
static int node_op(master *m, const Cube__Sandbox *sb, const char *method,
                   const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, cube_err *err)
{
    node_link *l = node_link_get(m, sb->node_id, err);
    if (!l) return -1;
    Cube__NodeSandboxRef ref = CUBE__NODE_SANDBOX_REF__INIT;
    ref.sandbox_id = sb->sandbox_id;
    cube_rpc_call_opts o = {.timeout_ms = 30000};
    int rc = cube_rpc_call(l->rpc, method, &ref.base, rd, resp, &o, err);
    node_link_put(l);
    return rc;
}

static int kill_one(master *m, Cube__Sandbox *sb, const char *why, cube_err *err)
{
    ProtobufCMessage *r = NULL;
    if (sb->state != CUBE__SANDBOX_STATE__SANDBOX_STATE_LOST &&
        node_op(m, sb, "/cube.Cubelet/KillSandbox", &cube__empty__descriptor, &r, err) < 0 &&
        err->code != ENOENT)
        cube_log_warn("kill on node failed; record removed anyway", "sandbox=%s err=\"%s\"", sb->sandbox_id,
                      err->msg);
    if (r) protobuf_c_message_free_unpacked(r, NULL);
    cube_err_clear(err);
    int rc = m->st->ops->sandbox_delete(m->st, sb->sandbox_id, err);
    if (rc == 0) cube_log_info("audit", "action=kill sandbox=%s reason=%s", sb->sandbox_id, why);
    return rc;
}

static int kill_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    master *m = svc;
    const Cube__SandboxRef *req = reqp;
    Cube__KillSandboxResponse *out = respp;
    Cube__Sandbox *sb = m->st->ops->sandbox_get(m->st, req->sandbox_id ? req->sandbox_id : "", err);
    if (!sb) return -1;
    int rc = kill_one(m, sb, "request", err);
    cube__sandbox__free_unpacked(sb, NULL);
    out->killed = rc == 0;
    return rc;
}

static int not_lost(const Cube__Sandbox *sb, cube_err *err)
{
    if (sb->state != CUBE__SANDBOX_STATE__SANDBOX_STATE_LOST) return 0;
    return cube_err_set(err, ENOENT, "sandbox '%s' is gone: its node %s was lost", sb->sandbox_id,
                        sb->node_id);
}

static int change_timeout(Cube__Sandbox *sb, void *arg, cube_err *err)
{
    const Cube__SetTimeoutRequest *req = arg;
    if (not_lost(sb, err) < 0) return -1;
    sb->end_at_ms = cube_now_unix_ms() + req->timeout_s * 1000;
    return 0;
}

static int set_timeout(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    master *m = svc;
    const Cube__SetTimeoutRequest *req = reqp;
    if (req->timeout_s < 0 || req->timeout_s > MAX_TIMEOUT_S)
        return cube_err_set(err, EINVAL, "timeout must be within 0..%d seconds", MAX_TIMEOUT_S);
    return sandbox_modify(m, req->sandbox_id ? req->sandbox_id : "", change_timeout, (void *)req, NULL, err);
}

/* Running -> paused: the node pauses it, then the record moves only if it is still the running sandbox read
 * before (a kill meanwhile wins: ENOENT, and the record is not brought back). */
static int pause_one(master *m, Cube__Sandbox *sb, const char *why, cube_err *err)
{
    if (not_lost(sb, err) < 0) return -1;
    if (sb->state != CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING)
        return cube_err_set(err, EBUSY, "sandbox %s is already paused", sb->sandbox_id);
    ProtobufCMessage *r = NULL;
    int rc = node_op(m, sb, "/cube.Cubelet/PauseSandbox", &cube__empty__descriptor, &r, err);
    if (r) protobuf_c_message_free_unpacked(r, NULL);
    if (rc < 0) return -1;
    sb->state = CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED;
    rc = m->st->ops->sandbox_update(m->st, sb, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING, err);
    if (rc == 0)
        cube_log_info("audit", "action=pause sandbox=%s reason=%s", sb->sandbox_id, why);
    else if (err->code == ENOENT)
        cube_err_set(err, ENOENT, "sandbox '%s' was killed while it was being paused", sb->sandbox_id);
    else if (err->code == EBUSY)
        cube_err_set(err, EBUSY, "sandbox %s is already paused", sb->sandbox_id);
    return rc;
}

static int pause_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    master *m = svc;
    const Cube__SandboxRef *req = reqp;
    Cube__Sandbox *sb = m->st->ops->sandbox_get(m->st, req->sandbox_id ? req->sandbox_id : "", err);
    if (!sb) return -1;
    int rc = pause_one(m, sb, "request", err);
    cube__sandbox__free_unpacked(sb, NULL);
    return rc;
}

/* Resume (and connect): a running sandbox only gets its timeout extended; a paused one is thawed first. */
static int resume_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__SetTimeoutRequest *req = reqp;
    Cube__GetSandboxResponse *out = respp;
    const char *id = req->sandbox_id ? req->sandbox_id : "";
    for (int attempt = 0; attempt < 8; attempt++) {
        Cube__Sandbox *sb = m->st->ops->sandbox_get(m->st, id, err);
        if (!sb) return -1;
        int expect = sb->state, rc = not_lost(sb, err);
        if (rc == 0 && expect == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED) {
            ProtobufCMessage *r = NULL;
            rc = node_op(m, sb, "/cube.Cubelet/ResumeSandbox", &cube__node_sandbox__descriptor, &r, err);
            if (r) protobuf_c_message_free_unpacked(r, NULL);
            sb->state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
        }
        if (rc == 0) {
            int64_t end = cube_now_unix_ms() + (req->timeout_s > 0 ? req->timeout_s : 300) * 1000;
            if (end > sb->end_at_ms || req->timeout_s > 0) sb->end_at_ms = end;
            rc = m->st->ops->sandbox_update(m->st, sb, expect, err);
        }
        if (rc == 0) {
            if (expect == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED)
                cube_log_info("audit", "action=resume sandbox=%s", id);
            out->sandbox = reply_copy(ctx, sb);
        } else if (err->code == ENOENT && expect == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED) {
            cube_err_set(err, ENOENT, "sandbox '%s' was killed while it was being resumed", id);
        }
        cube__sandbox__free_unpacked(sb, NULL);
        /* EBUSY: paused or resumed by someone else meanwhile; look again */
        if (rc == 0 || err->code != EBUSY) return rc;
        cube_err_clear(err);
    }
    return cube_err_set(err, EBUSY, "sandbox '%s' keeps changing: try again", id);
}

typedef struct rolled_back {
    const Cube__NodeSandbox *node; /* what the node answered */
    int state_before;              /* the record's state when the rollback was asked for */
} rolled_back;

/* The record after a rollback: the new agent's addresses; running, unless it was paused since the rollback
 * was asked for (that pause came after the node's rollback: the node's sandbox is paused). */
static int take_rollback(Cube__Sandbox *sb, void *arg, cube_err *err)
{
    const rolled_back *rb = arg;
    char *agent = strdup(rb->node->agent_address ? rb->node->agent_address : ""),
         *interp = strdup(rb->node->interpreter_address ? rb->node->interpreter_address : "");
    if (!agent || !interp) {
        free(agent);
        free(interp);
        return cube_err_set(err, ENOMEM, "out of memory");
    }
    if (sb->agent_address != protobuf_c_empty_string) free(sb->agent_address);
    if (sb->interpreter_address != protobuf_c_empty_string) free(sb->interpreter_address);
    sb->agent_address = agent;
    sb->interpreter_address = interp;
    if (!(sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED &&
          rb->state_before == CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING))
        sb->state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
    return 0;
}

/* Rollback: the sandbox's node returns it in place to one of its snapshots (same id, URL, network, token);
 * the record takes the new agent's addresses. A rollback that failed after the sandbox's processes ended
 * (ENOTRECOVERABLE from the node, which removed it) removes the record too. */
static int rollback_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__RollbackRequest *req = reqp;
    Cube__GetSandboxResponse *out = respp;
    const char *id = req->sandbox_id ? req->sandbox_id : "";
    if (!req->snapshot_id || !*req->snapshot_id) return cube_err_set(err, EINVAL, "snapshotID is required");
    Cube__Sandbox *sb = m->st->ops->sandbox_get(m->st, id, err);
    if (!sb) return -1;
    int rc = not_lost(sb, err);
    node_link *l = rc == 0 ? node_link_get(m, sb->node_id, err) : NULL;
    rolled_back rb = {.state_before = sb->state};
    ProtobufCMessage *r = NULL;
    if (l) {
        Cube__NodeRollbackRequest nr = CUBE__NODE_ROLLBACK_REQUEST__INIT;
        nr.sandbox_id = (char *)id;
        nr.snapshot_id = req->snapshot_id;
        cube_rpc_call_opts o = {.timeout_ms = 180000}; /* a start command may take up to 120 s to be ready */
        rc = cube_rpc_call(l->rpc, "/cube.Cubelet/RollbackSandbox", &nr.base, &cube__node_sandbox__descriptor,
                           &r, &o, err);
        node_link_put(l);
    } else {
        rc = -1;
    }
    cube__sandbox__free_unpacked(sb, NULL);
    if (rc < 0) {
        if (err->code == ENOTRECOVERABLE) {
            cube_err kerr = {0};
            m->st->ops->sandbox_delete(m->st, id, &kerr);
            cube_log_info("audit", "action=kill sandbox=%s reason=rollback-failed", id);
        }
        return -1;
    }
    rb.node = (const Cube__NodeSandbox *)r;
    Cube__Sandbox *now = NULL;
    rc = sandbox_modify(m, id, take_rollback, &rb, &now, err);
    protobuf_c_message_free_unpacked(r, NULL);
    if (rc < 0) {
        if (err->code == ENOENT)
            cube_err_set(err, ENOENT, "sandbox '%s' was killed while it was being rolled back", id);
        return -1;
    }
    cube_log_info("audit", "action=rollback sandbox=%s snapshot=%s", id, req->snapshot_id);
    out->sandbox = reply_copy(ctx, now);
    cube__sandbox__free_unpacked(now, NULL);
    return 0;
}

static int fork_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__ForkRequest *req = reqp;
    Cube__ForkResponse *out = respp;
    uint32_t count = req->count ? req->count : 1;
    if (count > 20) return cube_err_set(err, EINVAL, "count must be within 1..20");
    int64_t timeout = req->timeout_s ? req->timeout_s : 300;
    if (timeout < 0 || timeout > MAX_TIMEOUT_S)
        return cube_err_set(err, EINVAL, "timeout must be within 0..%d seconds", MAX_TIMEOUT_S);
    Cube__Sandbox *parent = m->st->ops->sandbox_get(m->st, req->sandbox_id ? req->sandbox_id : "", err);
    if (!parent) return -1;
    key_hold hold;
    if (key_hold_take(m, req->api_key_id, req->api_key_max_sandboxes, count, &hold, err) < 0) {
        cube__sandbox__free_unpacked(parent, NULL);
        return -1;
    }
    node_link *link = node_link_get(m, parent->node_id, err);
    int rc = -1;
    Cube__NodeForkRequest nreq = CUBE__NODE_FORK_REQUEST__INIT;
    Cube__NodeCreateRequest *kids = cube_rpc_alloc(ctx, count * sizeof(*kids));
    Cube__NodeCreateRequest **kidp = cube_rpc_alloc(ctx, count * sizeof(*kidp));
    ProtobufCMessage *nresp = NULL;
    if (!link || !kids || !kidp) goto out;
    for (uint32_t i = 0; i < count; i++) {
        char *id = cube_rpc_alloc(ctx, CUBE_ID_LEN + 1), *tok = cube_rpc_alloc(ctx, 33);
        if (!id || !tok || cube_sandbox_id_new(id, err) < 0 || cube_token_hex(tok, 16, err) < 0) goto out;
        cube__node_create_request__init(&kids[i]);
        kids[i].sandbox_id = id;
        kids[i].template_id = parent->template_id;
        kids[i].envd_access_token = tok;
        kids[i].network = parent->network; /* a fork keeps its parent's egress policy */
        kidp[i] = &kids[i];
    }
    nreq.parent_id = parent->sandbox_id;
    nreq.n_children = count;
    nreq.children = kidp;
    cube_rpc_call_opts o = {.timeout_ms = 300000};
    if (cube_rpc_call(link->rpc, "/cube.Cubelet/ForkSandbox", &nreq.base,
                      &cube__node_fork_response__descriptor, &nresp, &o, err) < 0) {
        cube_err_prefix(err, "fork on node %s", parent->node_id);
        goto out;
    }
    Cube__NodeForkResponse *nr = (Cube__NodeForkResponse *)nresp;
    out->results = cube_rpc_alloc(ctx, (nr->n_sandboxes + nr->n_errors + 1) * sizeof(Cube__ForkResult *));
    for (size_t i = 0; i < nr->n_sandboxes; i++) {
        Cube__Sandbox sb = *parent;
        const char *token = "";
        for (uint32_t k = 0; k < count; k++)
            if (strcmp(kids[k].sandbox_id, nr->sandboxes[i]->sandbox_id) == 0)
                token = kids[k].envd_access_token;
        sb.sandbox_id = nr->sandboxes[i]->sandbox_id;
        sb.state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
        sb.started_at_ms = cube_now_unix_ms();
        sb.end_at_ms = sb.started_at_ms + timeout * 1000;
        sb.envd_access_token = (char *)token;
        sb.api_key_id = req->api_key_id; /* the forking key's, held against its limit */
        sb.agent_address = nr->sandboxes[i]->agent_address;
        sb.interpreter_address = nr->sandboxes[i]->interpreter_address;
        Cube__ForkResult *fr = cube_rpc_alloc(ctx, sizeof(*fr));
        cube__fork_result__init(fr);
        cube_err perr = {0};
        /* a private parent's fork is private too, with a token of its own */
        bool private_traffic = parent->traffic_access_token && *parent->traffic_access_token;
        char *traffic = private_traffic ? cube_rpc_alloc(ctx, 33) : NULL;
        if (traffic) sb.traffic_access_token = traffic;
        if (private_traffic && (!traffic || cube_token_hex(traffic, 16, &perr) < 0)) {
            fr->error = cube_rpc_strdup(ctx, "could not make the fork's traffic access token");
            fr->code = 500;
        } else if (key_hold_add(m, &hold, &sb, &perr) < 0) {
            fr->error = cube_rpc_strdup(ctx, perr.msg);
            fr->code = cube_err_http_status(&perr);
        } else {
            fr->sandbox = reply_copy(ctx, &sb);
            cube_log_info("audit", "action=fork parent=%s sandbox=%s key=%s", parent->sandbox_id,
                          sb.sandbox_id, req->api_key_id ? req->api_key_id : "");
        }
        out->results[out->n_results++] = fr;
        if (!fr->sandbox) kill_unrecorded(link->rpc, sb.sandbox_id);
    }
    for (size_t i = 0; i < nr->n_errors; i++) {
        Cube__ForkResult *fr = cube_rpc_alloc(ctx, sizeof(*fr));
        cube__fork_result__init(fr);
        fr->error = cube_rpc_strdup(ctx, nr->errors[i]);
        fr->code = 500;
        out->results[out->n_results++] = fr;
    }
    rc = 0;
out:
    key_hold_drop(m, &hold);
    node_link_put(link);
    if (nresp) protobuf_c_message_free_unpacked(nresp, NULL);
    cube__sandbox__free_unpacked(parent, NULL);
    return rc;
}

/* A template (or snapshot) no sandbox uses: every live node that holds it deletes its files (with its tags),
 * each refusing while something of its own stands on them. */
static int delete_template(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    master *m = svc;
    const Cube__TemplateRef *req = reqp;
    const char *id = req->template_id ? req->template_id : "";
    if (!cube_template_name_valid(id)) return cube_err_set(err, ENOENT, "template '%s' not found", id);
    Cube__Sandbox **all;
    size_t n, idl = strlen(id);
    if (m->st->ops->sandbox_list(m->st, &all, &n, err) < 0) return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if (strncmp(all[i]->template_id, id, idl) == 0 &&
            (all[i]->template_id[idl] == '\0' || all[i]->template_id[idl] == ':') &&
            all[i]->state != CUBE__SANDBOX_STATE__SANDBOX_STATE_KILLED &&
            all[i]->state != CUBE__SANDBOX_STATE__SANDBOX_STATE_LOST)
            rc = cube_err_set(err, EBUSY, "template '%s' is used by sandbox %s", id, all[i]->sandbox_id);
    store_free_sandboxes(all, n);
    if (rc < 0) return -1;
    node_link *links[64];
    size_t nl = live_links(m, links, 64);
    int deleted = 0;
    for (size_t i = 0; i < nl; i++) {
        ProtobufCMessage *r = NULL;
        cube_err e = {0};
        cube_rpc_call_opts o = {.timeout_ms = 30000};
        int nrc = rc < 0 ? -1
                         : cube_rpc_call(links[i]->rpc, "/cube.Cubelet/DeleteTemplate", &req->base,
                                         &cube__empty__descriptor, &r, &o, &e);
        node_link_put(links[i]);
        if (r) protobuf_c_message_free_unpacked(r, NULL);
        if (rc < 0) continue;
        if (nrc == 0)
            deleted++;
        else if (e.code != ENOENT) /* the first refusal is the answer; nodes after it keep theirs */
            rc = cube_err_set(err, e.code, "%s", e.msg);
    }
    if (rc < 0) return -1;
    /* a snapshot's record goes with its files (kept while its node cannot be asked) */
    cube_err serr = {0};
    int recorded = snapshot_forget(m, id, deleted, &serr) == 0;
    if (!recorded && serr.code != ENOENT) return cube_err_set(err, serr.code, "%s", serr.msg);
    if (!deleted && !recorded) return cube_err_set(err, ENOENT, "template '%s' not found", id);
    /* its builds go too: no node copies it to another any more, and the name starts afresh */
    cube_err berr = {0};
    if (m->st->ops->build_delete_template(m->st, id, &berr) < 0 && berr.code != ENOENT)
        cube_log_warn("builds of a deleted template kept", "template=%s err=\"%s\"", id, berr.msg);
    if (deleted) cube_log_info("audit", "action=template-delete template=%s nodes=%d", id, deleted);
    return rc;
}

static int sandbox_logs(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__SandboxRef *req = reqp;
    Cube__LogLines *out = respp;
    Cube__Sandbox *sb = m->st->ops->sandbox_get(m->st, req->sandbox_id ? req->sandbox_id : "", err);
    if (!sb) return -1;
    ProtobufCMessage *r = NULL;
    int rc = node_op(m, sb, "/cube.Cubelet/SandboxLogs", &cube__log_lines__descriptor, &r, err);
    cube__sandbox__free_unpacked(sb, NULL);
    if (rc < 0) return -1;
    Cube__LogLines *l = (Cube__LogLines *)r;
    out->lines = cube_rpc_alloc(ctx, (l->n_lines ? l->n_lines : 1) * sizeof(char *));
    for (size_t i = 0; i < l->n_lines; i++) out->lines[out->n_lines++] = cube_rpc_strdup(ctx, l->lines[i]);
    protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

/* The record keeps a deep copy of the request's policy (the record is freed as a whole). */
static int change_network(Cube__Sandbox *sb, void *arg, cube_err *err)
{
    const Cube__UpdateNetworkRequest *req = arg;
    if (not_lost(sb, err) < 0) return -1;
    Cube__NetworkPolicy *copy = NULL;
    if (req->network) {
        size_t len = protobuf_c_message_get_packed_size(&req->network->base);
        uint8_t *buf = malloc(len ? len : 1);
        if (!buf) return cube_err_set(err, ENOMEM, "out of memory");
        protobuf_c_message_pack(&req->network->base, buf);
        copy = cube__network_policy__unpack(NULL, len, buf);
        free(buf);
        if (!copy) return cube_err_set(err, ENOMEM, "out of memory");
    }
    /* what cube-proxy applies inbound was chosen at create: an update keeps it */
    if (copy && sb->network && sb->network->mask_request_host && *sb->network->mask_request_host) {
        char *m = strdup(sb->network->mask_request_host);
        if (!m) {
            cube__network_policy__free_unpacked(copy, NULL);
            return cube_err_set(err, ENOMEM, "out of memory");
        }
        if (copy->mask_request_host != protobuf_c_empty_string) free(copy->mask_request_host);
        copy->mask_request_host = m;
    }
    if (copy && sb->network && sb->network->n_https_ports) {
        uint32_t *ports = malloc(sb->network->n_https_ports * sizeof(uint32_t));
        if (!ports) {
            cube__network_policy__free_unpacked(copy, NULL);
            return cube_err_set(err, ENOMEM, "out of memory");
        }
        memcpy(ports, sb->network->https_ports, sb->network->n_https_ports * sizeof(uint32_t));
        free(copy->https_ports);
        copy->https_ports = ports;
        copy->n_https_ports = sb->network->n_https_ports;
    }
    if (sb->network) cube__network_policy__free_unpacked(sb->network, NULL);
    sb->network = copy;
    return 0;
}

/* The node's cube-net applies the new policy (a map update there), then the record keeps it for GET. */
static int update_network(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    master *m = svc;
    const Cube__UpdateNetworkRequest *req = reqp;
    Cube__Sandbox *sb = m->st->ops->sandbox_get(m->st, req->sandbox_id ? req->sandbox_id : "", err);
    if (!sb) return -1;
    Cube__NetworkPolicy *filled = NULL;
    if (secrets_resolve_policy(m, req->network, false, &filled, err) < 0) {
        cube__sandbox__free_unpacked(sb, NULL);
        return -1;
    }
    node_link *l = node_link_get(m, sb->node_id, err);
    Cube__NodeNetworkRequest nr = CUBE__NODE_NETWORK_REQUEST__INIT;
    nr.sandbox_id = sb->sandbox_id;
    nr.network = filled ? filled : req->network;
    ProtobufCMessage *r = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 30000};
    int rc = l ? cube_rpc_call(l->rpc, "/cube.Cubelet/UpdateNetwork", &nr.base, &cube__empty__descriptor, &r,
                               &o, err)
               : -1;
    secrets_free_policy(filled);
    node_link_put(l);
    if (r) protobuf_c_message_free_unpacked(r, NULL);
    if (rc == 0) {
        rc = sandbox_modify(m, sb->sandbox_id, change_network, (void *)req, NULL, err);
        if (rc == 0)
            cube_log_info("audit", "action=update-network sandbox=%s internet=%d allow=%zu deny=%zu",
                          req->sandbox_id, req->network ? req->network->allow_internet_access : 1,
                          req->network ? req->network->n_allow_out : 0,
                          req->network ? req->network->n_deny_out : 0);
    }
    cube__sandbox__free_unpacked(sb, NULL);
    return rc;
}

static int sandbox_metrics(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    master *m = svc;
    const Cube__SandboxRef *req = reqp;
    Cube__HvStats *out = respp;
    Cube__Sandbox *sb = m->st->ops->sandbox_get(m->st, req->sandbox_id ? req->sandbox_id : "", err);
    if (!sb) return -1;
    ProtobufCMessage *r = NULL;
    int rc = node_op(m, sb, "/cube.Cubelet/SandboxStats", &cube__hv_stats__descriptor, &r, err);
    cube__sandbox__free_unpacked(sb, NULL);
    if (rc < 0) return -1;
    cube_hv_stats_copy(out, (const Cube__HvStats *)r);
    protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

/* The sandbox's samples over its life from its node, oldest first, the last one taken now. */
static int sandbox_metrics_history(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    master *m = svc;
    const Cube__SandboxRef *req = reqp;
    Cube__HvStatsHistory *out = respp;
    Cube__Sandbox *sb = m->st->ops->sandbox_get(m->st, req->sandbox_id ? req->sandbox_id : "", err);
    if (!sb) return -1;
    ProtobufCMessage *r = NULL;
    int rc =
        node_op(m, sb, "/cube.Cubelet/SandboxStatsHistory", &cube__hv_stats_history__descriptor, &r, err);
    cube__sandbox__free_unpacked(sb, NULL);
    if (rc < 0) return -1;
    const Cube__HvStatsHistory *h = (const Cube__HvStatsHistory *)r;
    out->samples = cube_rpc_alloc(ctx, (h->n_samples ? h->n_samples : 1) * sizeof(*out->samples));
    for (size_t i = 0; i < h->n_samples; i++) {
        Cube__HvStats *x = cube_rpc_alloc(ctx, sizeof(*x));
        cube__hv_stats__init(x);
        cube_hv_stats_copy(x, h->samples[i]);
        out->samples[out->n_samples++] = x;
    }
    protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

static void *reaper(void *arg)
{
    master *m = arg;
    pthread_mutex_lock(&m->stop_lock);
    while (!m->stopping) {
        pthread_mutex_unlock(&m->stop_lock);
        Cube__Sandbox **v;
        size_t n;
        cube_err err = {0};
        mark_lost_nodes(m);
        sweep_orphans(m);
        replicate_templates(m);
        Cube__Sandbox **all;
        size_t na;
        if (m->st->ops->sandbox_list(m->st, &all, &na, &err) == 0) {
            double running = 0, paused = 0;
            for (size_t i = 0; i < na; i++) {
                running += all[i]->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
                paused += all[i]->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED;
            }
            cube_metric_set("cube_sandboxes{state=\"running\"}", "Sandboxes by state", running);
            cube_metric_set("cube_sandboxes{state=\"paused\"}", "Sandboxes by state", paused);
            store_free_sandboxes(all, na);
        }
        int64_t now = cube_now_unix_ms();
        if (m->st->ops->sandbox_expired(m->st, now, &v, &n, &err) == 0) {
            for (size_t i = 0; i < n; i++) {
                /* another master sharing the store may be looking at the same sandbox: whoever claims it
                 * acts; the claim holds for a minute, so a master that dies mid-way leaves it to the next */
                cube_err cerr = {0};
                if (m->st->ops->sandbox_claim(m->st, v[i]->sandbox_id, v[i]->end_at_ms, now + 60000, &cerr) <
                    0)
                    continue;
                /* the claim moved end_at: the record read before it is not the one to write back */
                v[i]->end_at_ms = now + 60000;
                if (v[i]->auto_pause) {
                    /* killed or paused meanwhile: nothing left to do */
                    if (pause_one(m, v[i], "timeout", &err) == 0 || err.code == ENOENT || err.code == EBUSY)
                        continue;
                }
                kill_one(m, v[i], "timeout", &err);
            }
            store_free_sandboxes(v, n);
        }
        /* a background sweep, not the hot path: twice a second is enough for second-granular timeouts */
        struct timespec dl = cube_timespec_after_ms(CLOCK_REALTIME, 500);
        pthread_mutex_lock(&m->stop_lock);
        if (!m->stopping) pthread_cond_timedwait(&m->stop_cond, &m->stop_lock, &dl);
    }
    pthread_mutex_unlock(&m->stop_lock);
    return NULL;
}

void master_start_reaper(master *m)
{
    pthread_create(&m->reaper, NULL, reaper, m);
}

void master_stop(master *m)
{
    pthread_mutex_lock(&m->stop_lock);
    m->stopping = 1;
    pthread_cond_broadcast(&m->stop_cond);
    pthread_mutex_unlock(&m->stop_lock);
    if (m->reaper) pthread_join(m->reaper, NULL);
    replicate_stop(m);
    for (master_node *n = m->nodes, *next; n; n = next) {
        next = n->next;
        node_free(n);
    }
    m->nodes = NULL;
}

#define M(name, fn, req, resp) CUBE_RPC_METHOD("cube.Master", name, fn, req, resp)
const cube_rpc_method master_methods[] = {
    M("CreateSandbox", create_sandbox, cube__create_sandbox_request, cube__create_sandbox_response),
    M("GetSandbox", get_sandbox, cube__sandbox_ref, cube__get_sandbox_response),
    M("FindSignedFile", find_signed_file, cube__signed_file_request, cube__sandbox_ref),
    M("ListSandboxes", list_sandboxes, cube__list_sandboxes_request, cube__list_sandboxes_response),
    M("KillSandbox", kill_sandbox, cube__sandbox_ref, cube__kill_sandbox_response),
    M("SetTimeout", set_timeout, cube__set_timeout_request, cube__empty),
    M("PauseSandbox", pause_sandbox, cube__sandbox_ref, cube__empty),
    M("RollbackSandbox", rollback_sandbox, cube__rollback_request, cube__get_sandbox_response),
    M("ResumeSandbox", resume_sandbox, cube__set_timeout_request, cube__get_sandbox_response),
    M("RegisterNode", heartbeat, cube__node_info, cube__register_node_response),
    M("Heartbeat", heartbeat, cube__node_info, cube__register_node_response),
    M("RequestBuild", request_build, cube__request_build_request, cube__template_build),
    M("StartBuild", start_build, cube__build_start_request, cube__empty),
    M("GetBuildStatus", get_build_status, cube__build_status_request, cube__build_status),
    M("GetBuildFile", get_build_file, cube__build_file_ref, cube__build_file_state),
    M("PutBuildFile", put_build_file, cube__build_file_chunk, cube__empty),
    M("AuthKey", auth_key, cube__auth_key_request, cube__auth_key_response),
    M("CreateKey", create_key, cube__create_key_request, cube__api_key),
    M("ListKeys", list_keys, cube__empty, cube__list_keys_response),
    M("RevokeKey", revoke_key, cube__key_ref, cube__empty),
    M("SetKeyLimit", set_key_limit, cube__key_limit_request, cube__api_key),
    M("ListNodes", list_nodes, cube__empty, cube__list_nodes_response),
    M("SandboxMetrics", sandbox_metrics, cube__sandbox_ref, cube__hv_stats),
    M("SandboxMetricsHistory", sandbox_metrics_history, cube__sandbox_ref, cube__hv_stats_history),
    M("ForkSandbox", fork_sandbox, cube__fork_request, cube__fork_response),
    M("CreateVolume", create_volume, cube__create_volume_request, cube__volume),
    M("GetVolume", get_volume, cube__volume_ref, cube__volume),
    M("ListVolumes", list_volumes, cube__empty, cube__list_volumes_response),
    M("DeleteVolume", delete_volume, cube__volume_ref, cube__empty),
    M("VolumeFiles", volume_files, cube__volume_file_request, cube__volume_file_response),
    M("TemplateTags", template_tags, cube__template_tags_request, cube__template_tags_response),
    M("ListBuilds", list_builds, cube__template_ref, cube__list_builds_response),
    M("CreateSecret", create_secret, cube__create_secret_request, cube__secret),
    M("GetSecret", get_secret, cube__secret_ref, cube__secret),
    M("ListSecrets", list_secrets, cube__empty, cube__list_secrets_response),
    M("UpdateSecret", update_secret, cube__update_secret_request, cube__secret),
    M("DeleteSecret", delete_secret, cube__secret_ref, cube__empty),
    M("CreateSnapshot", create_snapshot, cube__create_snapshot_request, cube__snapshot_info),
    M("ListSnapshots", list_snapshots, cube__list_snapshots_request, cube__list_snapshots_response),
    M("DeleteTemplate", delete_template, cube__template_ref, cube__empty),
    M("SandboxLogs", sandbox_logs, cube__sandbox_ref, cube__log_lines),
    M("UpdateNetwork", update_network, cube__update_network_request, cube__empty),
    M("DrainNode", drain_node, cube__node_ref, cube__empty),
    M("RemoveNode", remove_node, cube__node_ref, cube__empty),
    {0},
};
