/* cube-api's core against a fake cube-master (an RPC server in this process): the E2B routes, bad input as a
 * 400 naming the field, a missing or wrong key as 401, and each master error mapped to the status the SDK
 * expects (404 gone, 409 conflict, 503 no node yet) with a JSON message — served by the event-driven HTTP
 * edge (one epoll thread, a worker pool) as cube-api runs it. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api.h"
#include "network.h"
#include "master.pb-c.h"
#include "testutil.h"
#include "timeutil.h"

/* ---- the fake master: behaviour chosen by the template or sandbox id ---- */

static int fake_auth(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc;
    const Cube__AuthKeyRequest *req = reqp;
    Cube__AuthKeyResponse *out = respp;
    if (req->key && strcmp(req->key, "e2b_limited") == 0) { /* a key that may hold 2 sandboxes */
        out->key_id = cube_rpc_strdup(ctx, "k4");
        out->max_sandboxes = 2;
        return 0;
    }
    if (!req->key || strcmp(req->key, "e2b_good") != 0)
        return cube_err_set(err, EKEYREJECTED, "Invalid API key");
    out->key_id = cube_rpc_strdup(ctx, "k1");
    return 0;
}

static uint32_t last_create_hint = 99; /* the key's limit the last create carried */

static Cube__Sandbox *fake_sandbox(cube_rpc_ctx *ctx, const char *id, const char *tpl)
{
    Cube__Sandbox *sb = cube_rpc_alloc(ctx, sizeof(*sb));
    cube__sandbox__init(sb);
    sb->sandbox_id = cube_rpc_strdup(ctx, id);
    sb->template_id = cube_rpc_strdup(ctx, tpl);
    sb->state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
    sb->started_at_ms = cube_now_unix_ms();
    sb->end_at_ms = sb->started_at_ms + 300000;
    sb->envd_version = "0.5.7";
    sb->client_id = "cube";
    return sb;
}

/* "busy": no node is alive (EAGAIN); "missing": no such template (ENOENT); "quota": the key holds its limit
 * (EDQUOT); anything else is created */
static int fake_create(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc;
    const Cube__CreateSandboxRequest *req = reqp;
    Cube__CreateSandboxResponse *out = respp;
    last_create_hint = req->api_key_max_sandboxes;
    if (strcmp(req->template_id, "busy") == 0) return cube_err_set(err, EAGAIN, "no node is available");
    if (strcmp(req->template_id, "quota") == 0)
        return cube_err_set(err, EDQUOT, "API key %s may hold at most 2 sandboxes at once", req->api_key_id);
    if (strcmp(req->template_id, "missing") == 0)
        return cube_err_set(err, ENOENT, "template 'missing' not found");
    out->sandbox = fake_sandbox(ctx, "inew", req->template_id);
    if (req->private_traffic) out->sandbox->traffic_access_token = "tok-from-master";
    return 0;
}

/* sandbox "igone" does not exist; "ipaused" is paused already (EBUSY to a pause) */
static int fake_ref(const char *id, cube_err *err)
{
    if (strcmp(id, "igone") == 0) return cube_err_set(err, ENOENT, "sandbox 'igone' not found");
    return 0;
}

static int fake_get(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc;
    const Cube__SandboxRef *req = reqp;
    if (fake_ref(req->sandbox_id, err) < 0) return -1;
    ((Cube__GetSandboxResponse *)respp)->sandbox = fake_sandbox(ctx, req->sandbox_id, "base");
    return 0;
}

static int fake_kill(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx;
    const Cube__SandboxRef *req = reqp;
    if (fake_ref(req->sandbox_id, err) < 0) return -1;
    ((Cube__KillSandboxResponse *)respp)->killed = 1;
    return 0;
}

static int fake_pause(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx, (void)respp;
    const Cube__SandboxRef *req = reqp;
    if (fake_ref(req->sandbox_id, err) < 0) return -1;
    if (strcmp(req->sandbox_id, "ipaused") == 0)
        return cube_err_set(err, EBUSY, "sandbox ipaused is already paused");
    return 0;
}

/* keys: "k1" (the caller's, e2b_good) and "k2"; any other is not found */
static int fake_list_keys(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)reqp, (void)err;
    Cube__ListKeysResponse *out = respp;
    out->keys = cube_rpc_alloc(ctx, 2 * sizeof(Cube__ApiKey *));
    for (int i = 0; i < 2; i++) {
        Cube__ApiKey *k = cube_rpc_alloc(ctx, sizeof(*k));
        cube__api_key__init(k);
        k->key_id = i ? "k2" : "k1";
        k->name = i ? "other" : "bootstrap";
        k->created_at_ms = 1700000000000;
        out->keys[out->n_keys++] = k;
    }
    return 0;
}

static int fake_create_key(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)err;
    Cube__ApiKey *out = respp;
    out->key_id = "k3";
    out->name = cube_rpc_strdup(ctx, ((const Cube__CreateKeyRequest *)reqp)->name);
    out->max_sandboxes = ((const Cube__CreateKeyRequest *)reqp)->max_sandboxes;
    out->key = "e2b_fresh";
    return 0;
}

static int fake_key_limit(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx;
    const Cube__KeyLimitRequest *req = reqp;
    Cube__ApiKey *out = respp;
    if (strcmp(req->key_id, "k2") != 0) return cube_err_set(err, ENOENT, "no API key '%s'", req->key_id);
    out->key_id = "k2";
    out->name = "other";
    out->max_sandboxes = req->max_sandboxes;
    out->sandboxes = 1;
    return 0;
}

static int fake_revoke_key(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx, (void)respp;
    const char *id = ((const Cube__KeyRef *)reqp)->key_id;
    return strcmp(id, "k2") == 0 ? 0 : cube_err_set(err, ENOENT, "key %s not found", id);
}

/* two live nodes with "base" (one also "code"), and a lost one whose templates do not count */
static int fake_list_nodes(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)reqp, (void)err;
    Cube__ListNodesResponse *out = respp;
    static const char *names[] = {"n1", "n2", "n3"};
    out->nodes = cube_rpc_alloc(ctx, 3 * sizeof(Cube__NodeInfo *));
    for (int i = 0; i < 3; i++) {
        Cube__NodeInfo *n = cube_rpc_alloc(ctx, sizeof(*n));
        cube__node_info__init(n);
        n->node_id = (char *)names[i];
        n->backend = "ns";
        n->lost = i == 2;
        n->draining = i == 1;
        n->n_templates = i == 0 ? 2 : 1;
        n->templates = cube_rpc_alloc(ctx, 2 * sizeof(char *));
        n->templates[0] = "base";
        n->templates[1] = "code";
        n->n_pool_ready = n->n_pool_target = n->n_templates;
        n->pool_ready = cube_rpc_alloc(ctx, 2 * sizeof(*n->pool_ready));
        n->pool_target = cube_rpc_alloc(ctx, 2 * sizeof(*n->pool_target));
        for (size_t t = 0; t < n->n_templates; t++) {
            n->pool_ready[t] = cube_rpc_alloc(ctx, sizeof(**n->pool_ready));
            cube__node_info__pool_ready_entry__init(n->pool_ready[t]);
            n->pool_ready[t]->key = n->templates[t];
            n->pool_ready[t]->value = 1 + (uint32_t)i;
            n->pool_target[t] = cube_rpc_alloc(ctx, sizeof(**n->pool_target));
            cube__node_info__pool_target_entry__init(n->pool_target[t]);
            n->pool_target[t]->key = n->templates[t];
            n->pool_target[t]->value = 4;
        }
        out->nodes[out->n_nodes++] = n;
    }
    return 0;
}

/* a sample whose cpu says which sandbox it is: "ihere" 12.5 %; "igone" is not found */
static int fake_metrics(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx;
    const Cube__SandboxRef *req = reqp;
    if (fake_ref(req->sandbox_id, err) < 0) return -1;
    Cube__HvStats *out = respp;
    out->cpu_count = 2;
    out->cpu_used_pct = strcmp(req->sandbox_id, "ihere") == 0 ? 12.5 : 1;
    out->mem_used = 1 << 20;
    out->mem_total = 512 << 20;
    return 0;
}

/* snapshots s1 (oldest) .. s3, answered oldest first: the api pages them newest first */
static int fake_list_snapshots(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)reqp, (void)err;
    Cube__ListSnapshotsResponse *out = respp;
    static const char *ids[] = {"s1", "s2", "s3"};
    out->snapshots = cube_rpc_alloc(ctx, 3 * sizeof(Cube__SnapshotInfo *));
    for (int i = 0; i < 3; i++) {
        Cube__SnapshotInfo *si = cube_rpc_alloc(ctx, sizeof(*si));
        cube__snapshot_info__init(si);
        si->snapshot_id = (char *)ids[i];
        si->sandbox_id = "ihere";
        si->created_at_ms = 1700000000000 + i * 1000;
        out->snapshots[out->n_snapshots++] = si;
    }
    return 0;
}

/* "ihere"'s life: samples an hour ago, 10 s ago and now (cpu 10, 20, 30 %) */
static int fake_metrics_history(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc;
    const Cube__SandboxRef *req = reqp;
    if (fake_ref(req->sandbox_id, err) < 0) return -1;
    Cube__HvStatsHistory *out = respp;
    int64_t now = cube_now_unix_ms(), at[] = {now - 3600 * 1000, now - 10 * 1000, now};
    out->samples = cube_rpc_alloc(ctx, 3 * sizeof(Cube__HvStats *));
    for (int i = 0; i < 3; i++) {
        Cube__HvStats *x = cube_rpc_alloc(ctx, sizeof(*x));
        cube__hv_stats__init(x);
        x->sampled_at_ms = at[i];
        x->cpu_count = 2;
        x->cpu_used_pct = 10 * (i + 1);
        x->mem_used = 1 << 20;
        x->mem_total = 512 << 20;
        out->samples[out->n_samples++] = x;
    }
    return 0;
}

/* builds: RequestBuild answers build "b1" of the name asked; files with hash "have" are there; the bytes
 * PutBuildFile got (and whether in order, and the last chunk seen) and StartBuild's template are kept */
static size_t put_bytes;
static int put_chunks, put_last, put_out_of_order;
static char started_json[512];

static int fake_request_build(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)err;
    const Cube__RequestBuildRequest *req = reqp;
    Cube__TemplateBuild *out = respp;
    out->template_id = cube_rpc_strdup(ctx, req->name);
    out->build_id = "b1";
    out->n_tags = req->n_tags;
    out->tags = cube_rpc_alloc(ctx, (req->n_tags ? req->n_tags : 1) * sizeof(char *));
    for (size_t i = 0; i < req->n_tags; i++) out->tags[i] = cube_rpc_strdup(ctx, req->tags[i]);
    return req->resources && req->resources->cpu_count == 4 && req->resources->memory_mb == 1024 &&
                   req->resources->disk_mb == 4096
               ? 0
               : cube_err_set(err, EINVAL, "resources not passed");
}

static int fake_get_build_file(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx, (void)err;
    ((Cube__BuildFileState *)respp)->present = strcmp(((const Cube__BuildFileRef *)reqp)->hash, "have") == 0;
    return 0;
}

static int fake_put_build_file(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx, (void)respp, (void)err;
    const Cube__BuildFileChunk *c = reqp;
    if (c->offset != put_bytes) put_out_of_order = 1;
    put_bytes += c->data.len;
    put_chunks++;
    put_last = c->last;
    return 0;
}

static int fake_start_build(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx, (void)respp;
    const Cube__BuildStartRequest *req = reqp;
    if (strcmp(req->build_id, "b1") != 0)
        return cube_err_set(err, ENOENT, "build '%s' not found", req->build_id);
    snprintf(started_json, sizeof(started_json), "%s", req->template_json);
    return 0;
}

/* two log lines; from logs_offset on */
static int fake_build_status(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)err;
    const Cube__BuildStatusRequest *req = reqp;
    Cube__BuildStatus *out = respp;
    out->state = "error";
    out->reason = "step 1 (RUN false) failed: RUN exited with code 1";
    out->reason_step = "1";
    out->logs = cube_rpc_alloc(ctx, 2 * sizeof(Cube__BuildLogEntry *));
    for (uint32_t i = req->logs_offset; i < 2; i++) {
        Cube__BuildLogEntry *e = cube_rpc_alloc(ctx, sizeof(*e));
        cube__build_log_entry__init(e);
        e->timestamp_ms = 1700000000000 + i;
        e->level = i ? "error" : "info";
        e->message = i ? "second line" : "first line";
        e->step = "1";
        out->logs[out->n_logs++] = e;
    }
    return 0;
}

/* ---- the volume content API: a fake volume "vol1" (token "vtok") holding one file in memory ---- */

static pthread_mutex_t vol_lock = PTHREAD_MUTEX_INITIALIZER;
static char vol_file[1 << 20];
static size_t vol_len, vol_pending, vol_write_calls, vol_read_calls;
static char vol_last_op[32], vol_last_path[256];
static int64_t vol_last_uid, vol_last_mode;
static bool vol_last_force, vol_aborted;

static int fake_get_volume(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx;
    const Cube__VolumeRef *req = reqp;
    Cube__Volume *out = respp;
    if (strcmp(req->volume_id, "vol1") != 0)
        return cube_err_set(err, ENOENT, "volume '%s' not found", req->volume_id);
    out->volume_id = "vol1";
    out->name = "data";
    out->token = "vtok";
    return 0;
}

static int fake_volume_files(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc;
    const Cube__VolumeFileRequest *r = reqp;
    Cube__VolumeFileResponse *out = respp;
    if (strcmp(r->volume_id, "vol1") != 0)
        return cube_err_set(err, ENOENT, "volume '%s' not found", r->volume_id);
    pthread_mutex_lock(&vol_lock);
    snprintf(vol_last_op, sizeof(vol_last_op), "%s", r->op);
    snprintf(vol_last_path, sizeof(vol_last_path), "%s", r->path);
    vol_last_uid = r->uid;
    vol_last_mode = r->mode;
    vol_last_force = r->force;
    int rc = 0;
    if (strcmp(r->op, "write") == 0) {
        vol_write_calls++;
        if (r->offset != vol_pending || r->offset + r->data.len > sizeof(vol_file))
            rc = cube_err_set(err, EINVAL, "offset out of order");
        else {
            memcpy(vol_file + r->offset, r->data.data, r->data.len);
            vol_pending += r->data.len;
            if (r->last) vol_len = vol_pending, vol_pending = 0;
        }
    } else if (strcmp(r->op, "abort") == 0) {
        vol_pending = 0;
        vol_aborted = true;
    } else if (strcmp(r->op, "read") == 0) {
        vol_read_calls++;
        if (strcmp(r->path, "/big.bin") != 0) {
            rc = cube_err_set(err, ENOENT, "%s: no such file", r->path);
        } else {
            size_t off = r->offset < vol_len ? (size_t)r->offset : vol_len;
            size_t n = vol_len - off < r->max_bytes ? vol_len - off : r->max_bytes;
            out->data.data = cube_rpc_alloc(ctx, n ? n : 1);
            memcpy(out->data.data, vol_file + off, n);
            out->data.len = n;
            out->size = vol_len;
            out->eof = off + n >= vol_len;
        }
    }
    /* stat, list, mkdir, chmeta, and a write's last chunk: one entry */
    if (rc == 0 && strcmp(r->op, "remove") != 0 && strcmp(r->op, "read") != 0 &&
        strcmp(r->op, "abort") != 0 && (strcmp(r->op, "write") != 0 || r->last)) {
        Cube__VolumeEntry *e = cube_rpc_alloc(ctx, sizeof(*e));
        cube__volume_entry__init(e);
        e->name = "big.bin";
        e->path = cube_rpc_strdup(ctx, r->path);
        e->type = "file";
        e->size = vol_len;
        e->mode = 0644;
        e->uid = e->gid = 1000;
        e->mtime_ms = 1764892800000;
        out->entries = cube_rpc_alloc(ctx, sizeof(*out->entries));
        out->entries[0] = e;
        out->n_entries = 1;
    }
    pthread_mutex_unlock(&vol_lock);
    return rc;
}

/* TemplateTags: my-tpl has default -> b1 and v2 -> b2; assigning answers b2 */
static int fake_template_tags(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc;
    const Cube__TemplateTagsRequest *r = reqp;
    Cube__TemplateTagsResponse *out = respp;
    if (strcmp(r->name, "my-tpl") != 0) return cube_err_set(err, ENOENT, "template '%s' not found", r->name);
    if (strcmp(r->op, "list") == 0) {
        out->tags = cube_rpc_alloc(ctx, 2 * sizeof(*out->tags));
        const char *tags[][2] = {{"default", "b1"}, {"v2", "b2"}};
        for (int i = 0; i < 2; i++) {
            Cube__TemplateTag *t = cube_rpc_alloc(ctx, sizeof(*t));
            cube__template_tag__init(t);
            t->tag = (char *)tags[i][0];
            t->build_id = (char *)tags[i][1];
            t->created_at_ms = 1764892800000;
            out->tags[out->n_tags++] = t;
        }
        return 0;
    }
    if (strcmp(r->op, "assign") == 0) {
        if (strcmp(r->target, "my-tpl:v2") != 0) return cube_err_set(err, ENOENT, "target: not found");
        out->build_id = "b2";
        return 0;
    }
    return strcmp(r->op, "remove") == 0 && r->n_tags == 1 && strcmp(r->tags[0], "v2") == 0
               ? 0
               : cube_err_set(err, ENOENT, "no such tag");
}

#define M(name, fn, req, resp) CUBE_RPC_METHOD("cube.Master", name, fn, req, resp)
static const cube_rpc_method fake_master[] = {
    M("RequestBuild", fake_request_build, cube__request_build_request, cube__template_build),
    M("GetBuildFile", fake_get_build_file, cube__build_file_ref, cube__build_file_state),
    M("PutBuildFile", fake_put_build_file, cube__build_file_chunk, cube__empty),
    M("StartBuild", fake_start_build, cube__build_start_request, cube__empty),
    M("GetBuildStatus", fake_build_status, cube__build_status_request, cube__build_status),
    M("AuthKey", fake_auth, cube__auth_key_request, cube__auth_key_response),
    M("CreateSandbox", fake_create, cube__create_sandbox_request, cube__create_sandbox_response),
    M("GetSandbox", fake_get, cube__sandbox_ref, cube__get_sandbox_response),
    M("KillSandbox", fake_kill, cube__sandbox_ref, cube__kill_sandbox_response),
    M("PauseSandbox", fake_pause, cube__sandbox_ref, cube__empty),
    M("ListKeys", fake_list_keys, cube__empty, cube__list_keys_response),
    M("CreateKey", fake_create_key, cube__create_key_request, cube__api_key),
    M("RevokeKey", fake_revoke_key, cube__key_ref, cube__empty),
    M("SetKeyLimit", fake_key_limit, cube__key_limit_request, cube__api_key),
    M("ListNodes", fake_list_nodes, cube__empty, cube__list_nodes_response),
    M("SandboxMetrics", fake_metrics, cube__sandbox_ref, cube__hv_stats),
    M("SandboxMetricsHistory", fake_metrics_history, cube__sandbox_ref, cube__hv_stats_history),
    M("ListSnapshots", fake_list_snapshots, cube__list_snapshots_request, cube__list_snapshots_response),
    M("GetVolume", fake_get_volume, cube__volume_ref, cube__volume),
    M("TemplateTags", fake_template_tags, cube__template_tags_request, cube__template_tags_response),
    M("VolumeFiles", fake_volume_files, cube__volume_file_request, cube__volume_file_response),
    {0},
};

/* ---- the api under test ---- */

static char *dir;
static cube_rpc_server *master_srv;
static api a;
static http_server *srv;

static void setup(void)
{
    dir = cube_test_tmpdir();
    char addr[300];
    snprintf(addr, sizeof(addr), "unix:%s/master.sock", dir);
    cube_err err = {0};
    master_srv = cube_rpc_server_start(addr, fake_master, NULL, 4, &err);
    ck_assert_msg(master_srv != NULL, "%s", err.msg);
    memset(&a, 0, sizeof(a));
    pthread_mutex_init(&a.auth_lock, NULL);
    ck_assert_int_eq(cube_rpc_failover_init(&a.masters, addr, &err), 0);
    http_server_opts o = {.workers = 4, .idle_timeout_s = 30};
    srv = http_server_start_opts("127.0.0.1", 0, api_routes, &a, &o, &err);
    ck_assert_msg(srv != NULL, "%s", err.msg);
}

static void teardown(void)
{
    http_server_stop(srv);
    cube_rpc_failover_free(&a.masters);
    cube_rpc_server_stop(master_srv);
    char rm[300];
    snprintf(rm, sizeof(rm), "rm -rf %s", dir);
    if (system(rm) != 0) fprintf(stderr, "could not remove %s\n", dir);
    free(dir);
}

/* A connection to the API under test. */
static int api_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_server_port(srv))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* The answer on fd up to its close (fd closed); its status, and its body into body. */
static int read_answer(int fd, const char *what, char *body, size_t cap)
{
    size_t total = (1u << 20) + 4096, got = 0;
    char *resp = malloc(total);
    for (;;) {
        struct pollfd pf = {fd, POLLIN, 0};
        ck_assert_msg(poll(&pf, 1, 10000) == 1, "no answer to %s", what);
        ssize_t r = read(fd, resp + got, total - 1 - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    resp[got] = '\0';
    int status = 0;
    ck_assert_msg(sscanf(resp, "HTTP/1.1 %d", &status) == 1, "not HTTP: %.200s", resp);
    const char *b = strstr(resp, "\r\n\r\n");
    size_t blen = b ? got - (size_t)(b + 4 - resp) : 0, c = blen < cap - 1 ? blen : cap - 1;
    memcpy(body, b ? b + 4 : "", c); /* bytes: a file's may hold NULs */
    body[c] = '\0';
    free(resp);
    return status;
}

/* One request on its own connection; the status, and the body into body. */
static int request(const char *method, const char *path, const char *key, const char *json, char *body,
                   size_t cap)
{
    int fd = api_connect();
    char head[1024], what[600];
    int n = snprintf(
        head, sizeof(head),
        "%s %s HTTP/1.1\r\nHost: api\r\nConnection: close\r\n%s%s%sContent-Type: application/json\r\n"
        "Content-Length: %zu\r\n\r\n",
        method, path, key ? "X-API-KEY: " : "", key ? key : "", key ? "\r\n" : "", json ? strlen(json) : 0);
    ck_assert_int_eq(write(fd, head, (size_t)n), n);
    for (size_t off = 0, len = json ? strlen(json) : 0; off < len;) { /* a body of any size */
        ssize_t w = write(fd, json + off, len - off);
        ck_assert_int_gt(w, 0);
        off += (size_t)w;
    }
    snprintf(what, sizeof(what), "%s %s", method, path);
    return read_answer(fd, what, body, cap);
}

START_TEST(create_and_its_errors)
{
    char body[4096];
    ck_assert_int_eq(
        request("POST", "/sandboxes", "e2b_good", "{\"templateID\":\"base\"}", body, sizeof(body)), 201);
    ck_assert_msg(strstr(body, "\"sandboxID\":\"inew\""), "%s", body);
    /* bad input: 400 naming the field */
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good", "{\"templateID\":7}", body, sizeof(body)),
                     400);
    ck_assert_msg(strstr(body, "templateID"), "%s", body);
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good", "{\"templateID\":\"base\",\"timeout\":-3}",
                             body, sizeof(body)),
                     400);
    ck_assert_msg(strstr(body, "timeout"), "%s", body);
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good",
                             "{\"templateID\":\"base\",\"network\":{\"allowOut\":[\"10.0.0.0/99\"]}}", body,
                             sizeof(body)),
                     400);
    ck_assert_msg(strstr(body, "allowOut"), "%s", body);
    /* env vars no process could start with: refused at create, not every command failing after */
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good",
                             "{\"templateID\":\"base\",\"envVars\":{\"A=B\":\"1\"}}", body, sizeof(body)),
                     400);
    ck_assert_msg(strstr(body, "envVars") && strstr(body, "A=B"), "%s", body);
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good",
                             "{\"templateID\":\"base\",\"envVars\":{\"\":\"1\"}}", body, sizeof(body)),
                     400);
    static char big[140 * 1024];
    int bn = snprintf(big, sizeof(big), "{\"templateID\":\"base\",\"envVars\":{\"BIG\":\"");
    memset(big + bn, 'x', 135 * 1024);
    snprintf(big + bn + 135 * 1024, sizeof(big) - (size_t)bn - 135 * 1024, "\"}}");
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good", big, body, sizeof(body)), 400);
    ck_assert_msg(strstr(body, "envVars.BIG"), "%s", body);
    /* metadata comes back in every list: kept small (64 KiB), and a key is a name */
    bn = snprintf(big, sizeof(big), "{\"templateID\":\"base\",\"metadata\":{\"notes\":\"");
    memset(big + bn, 'x', 70 * 1024);
    snprintf(big + bn + 70 * 1024, sizeof(big) - (size_t)bn - 70 * 1024, "\"}}");
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good", big, body, sizeof(body)), 400);
    ck_assert_msg(strstr(body, "metadata"), "%s", body);
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good",
                             "{\"templateID\":\"base\",\"metadata\":{\"\":\"1\"}}", body, sizeof(body)),
                     400);
    ck_assert_msg(strstr(body, "metadata"), "%s", body);
    /* names: allowed in allowOut (wildcards too), never a bare '*', never in denyOut */
    static const char *const bad_names[][2] = {
        {"{\"templateID\":\"base\",\"network\":{\"allowOut\":[\"*\"]}}", "allowOut[0]"},
        {"{\"templateID\":\"base\",\"network\":{\"allowOut\":[\"ok.test\",\"a.*.test\"]}}", "allowOut[1]"},
        {"{\"templateID\":\"base\",\"network\":{\"allowOut\":[\"bad name.test\"]}}", "allowOut[0]"},
        {"{\"templateID\":\"base\",\"network\":{\"denyOut\":[\"evil.test\"]}}", "denyOut[0]"},
    };
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good", bad_names[i][0], body, sizeof(body)), 400);
        ck_assert_msg(strstr(body, bad_names[i][1]), "%s: %s", bad_names[i][0], body);
    }
    /* what cube cannot honour is refused by name, never ignored: a private sandbox must not answer the world
     */
    static const char *const refused[][2] = {
        {"{\"templateID\":\"base\",\"network\":{\"allowPublicTraffic\":\"no\"}}", "allowPublicTraffic"},
        {"{\"templateID\":\"base\",\"network\":{\"maskRequestHost\":\"a host\"}}", "maskRequestHost"},
        {"{\"templateID\":\"base\",\"network\":{\"httpsPorts\":[49983]}}", "httpsPorts[0]"},
        {"{\"templateID\":\"base\",\"network\":{\"httpsPorts\":[443,\"x\"]}}", "httpsPorts[1]"},
        {"{\"templateID\":\"base\",\"network\":{\"egressProxy\":{\"address\":\"no-port\"}}}", "egressProxy"},
        {"{\"templateID\":\"base\",\"network\":{\"egressProxy\":{\"address\":\"p:1080\",\"username\":\"u\"}}"
         "}",
         "egressProxy"},
        {"{\"templateID\":\"base\",\"network\":{\"egressProxy\":{\"address\":\"p:99999\"}}}", "egressProxy"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        ck_assert_msg(request("POST", "/sandboxes", "e2b_good", refused[i][0], body, sizeof(body)) == 400,
                      "%s", refused[i][0]);
        ck_assert_msg(strstr(body, refused[i][1]), "%s", body);
    }
    /* their defaults are what cube does */
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good",
                             "{\"templateID\":\"base\",\"network\":{\"allowPublicTraffic\":true,"
                             "\"maskRequestHost\":null,\"httpsPorts\":[]}}",
                             body, sizeof(body)),
                     201);
    ck_assert_msg(!strstr(body, "trafficAccessToken"), "a public sandbox got a traffic token: %s", body);
    /* a private one: the master's token comes back as E2B's trafficAccessToken */
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good",
                             "{\"templateID\":\"base\",\"network\":{\"allowPublicTraffic\":false}}", body,
                             sizeof(body)),
                     201);
    ck_assert_msg(strstr(body, "\"trafficAccessToken\":\"tok-from-master\""), "%s", body);
    /* chosen at create: a network update may not flip it */
    ck_assert_int_eq(request("PUT", "/sandboxes/inew/network", "e2b_good", "{\"allowPublicTraffic\":true}",
                             body, sizeof(body)),
                     400);
    ck_assert_msg(strstr(body, "allowPublicTraffic"), "%s", body);
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good", "{not json", body, sizeof(body)), 400);
    /* the key */
    ck_assert_int_eq(request("POST", "/sandboxes", NULL, "{\"templateID\":\"base\"}", body, sizeof(body)),
                     401);
    ck_assert_int_eq(
        request("POST", "/sandboxes", "e2b_wrong", "{\"templateID\":\"base\"}", body, sizeof(body)), 401);
    /* the master's answers */
    ck_assert_int_eq(
        request("POST", "/sandboxes", "e2b_good", "{\"templateID\":\"missing\"}", body, sizeof(body)), 404);
    ck_assert_msg(strstr(body, "\"message\"") && strstr(body, "missing"), "%s", body);
    ck_assert_int_eq(
        request("POST", "/sandboxes", "e2b_good", "{\"templateID\":\"busy\"}", body, sizeof(body)), 503);
}
END_TEST

START_TEST(egress_proxy_is_kept_and_its_password_never_shown)
{
    cJSON *net =
        cJSON_Parse("{\"allowOut\":[\"api.example.com\",\"*.cdn.example.net\"],\"denyOut\":[\"0.0.0.0/0\"],"
                    "\"egressProxy\":{\"address\":\"proxy.example.com:1080\",\"username\":\"me\","
                    "\"password\":\"s3cret-pw\"}}");
    api_network n = {0};
    cube_err err = {0};
    ck_assert_msg(api_network_parse(true, net, &n, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(n.policy.egress_proxy, "proxy.example.com:1080");
    ck_assert_str_eq(n.policy.egress_proxy_password, "s3cret-pw");
    api_network_free(&n);
    cJSON_Delete(net);
    /* inbound: the Host the sandbox sees and its HTTPS ports, shown back */
    net = cJSON_Parse("{\"maskRequestHost\":\"localhost:${PORT}\",\"httpsPorts\":[8443,9443]}");
    ck_assert_msg(api_network_parse(true, net, &n, &err) == 0, "%s", err.msg);
    ck_assert(n.inbound_given);
    cJSON *shown = api_network_json(&n.policy, true);
    char *txt = cJSON_PrintUnformatted(shown);
    ck_assert_msg(strstr(txt, "\"maskRequestHost\":\"localhost:${PORT}\",\"httpsPorts\":[8443,9443]"), "%s",
                  txt);
    free(txt);
    cJSON_Delete(shown);
    api_network_free(&n);
    cJSON_Delete(net);
    net = cJSON_Parse("{\"allowOut\":[\"api.example.com\",\"*.cdn.example.net\"],\"denyOut\":[\"0.0.0.0/0\"],"
                      "\"egressProxy\":{\"address\":\"proxy.example.com:1080\",\"username\":\"me\","
                      "\"password\":\"s3cret-pw\"}}");
    ck_assert_msg(api_network_parse(true, net, &n, &err) == 0, "%s", err.msg);
    ck_assert_int_eq((int)n.policy.n_allow_out, 2);
    cJSON *out = api_network_json(&n.policy, true);
    char *s = cJSON_PrintUnformatted(out);
    ck_assert_msg(strstr(s, "\"egressProxy\":{\"address\":\"proxy.example.com:1080\",\"username\":\"me\"}"),
                  "%s", s);
    ck_assert_msg(!strstr(s, "s3cret"), "the password came back: %s", s);
    free(s);
    cJSON_Delete(out);
    api_network_free(&n);
    cJSON_Delete(net);
}
END_TEST

START_TEST(sandbox_routes_map_errors)
{
    char body[4096];
    ck_assert_int_eq(request("GET", "/sandboxes/ihere", "e2b_good", NULL, body, sizeof(body)), 200);
    ck_assert_int_eq(request("GET", "/sandboxes/igone", "e2b_good", NULL, body, sizeof(body)), 404);
    ck_assert_int_eq(request("DELETE", "/sandboxes/ihere", "e2b_good", NULL, body, sizeof(body)), 204);
    ck_assert_int_eq(request("DELETE", "/sandboxes/igone", "e2b_good", NULL, body, sizeof(body)), 404);
    ck_assert_int_eq(request("POST", "/sandboxes/ihere/pause", "e2b_good", NULL, body, sizeof(body)), 204);
    ck_assert_int_eq(request("POST", "/sandboxes/ipaused/pause", "e2b_good", NULL, body, sizeof(body)), 409);
    ck_assert_int_eq(request("GET", "/no/such/thing", "e2b_good", NULL, body, sizeof(body)), 404);
    ck_assert_int_eq(request("PATCH", "/sandboxes", "e2b_good", NULL, body, sizeof(body)), 405);
    ck_assert_int_eq(request("GET", "/health", NULL, NULL, body, sizeof(body)), 200);
}
END_TEST

START_TEST(keys_nodes_and_templates_for_the_console)
{
    char body[8192];
    ck_assert_int_eq(request("GET", "/api-keys", NULL, NULL, body, sizeof(body)), 401);
    ck_assert_int_eq(request("GET", "/api-keys", "e2b_good", NULL, body, sizeof(body)), 200);
    /* the caller's own key is marked; no secret is ever listed */
    ck_assert_ptr_nonnull(strstr(body, "\"id\":\"k1\",\"name\":\"bootstrap\""));
    ck_assert_ptr_nonnull(strstr(body, "\"current\":true"));
    ck_assert_ptr_null(strstr(body, "\"key\""));
    ck_assert_int_eq(request("POST", "/api-keys", "e2b_good", "{}", body, sizeof(body)), 400);
    ck_assert_ptr_nonnull(strstr(body, "'name'"));
    ck_assert_int_eq(request("POST", "/api-keys", "e2b_good", "{\"name\":\"\"}", body, sizeof(body)), 400);
    ck_assert_int_eq(request("POST", "/api-keys", "e2b_good", "{\"name\":\"a\\nb\"}", body, sizeof(body)),
                     400);
    ck_assert_int_eq(request("POST", "/api-keys", "e2b_good", "{\"name\":\"ci\"}", body, sizeof(body)), 201);
    ck_assert_ptr_nonnull(strstr(body, "\"key\":\"e2b_fresh\""));
    ck_assert_int_eq(request("DELETE", "/api-keys/k2", "e2b_good", NULL, body, sizeof(body)), 204);
    ck_assert_int_eq(request("DELETE", "/api-keys/k9", "e2b_good", NULL, body, sizeof(body)), 404);

    ck_assert_int_eq(request("GET", "/nodes", "e2b_good", NULL, body, sizeof(body)), 200);
    ck_assert_ptr_nonnull(strstr(body, "\"nodeID\":\"n1\",\"status\":\"ready\""));
    ck_assert_ptr_nonnull(strstr(body, "\"nodeID\":\"n2\",\"status\":\"draining\""));
    ck_assert_ptr_nonnull(strstr(body, "\"nodeID\":\"n3\",\"status\":\"lost\""));
    ck_assert_ptr_nonnull(strstr(body, "{\"templateID\":\"code\",\"ready\":1,\"target\":4}"));
    /* templates from the live nodes: base on n1 and n2 (pools summed), code on n1; the lost n3 not counted */
    ck_assert_int_eq(request("GET", "/templates", "e2b_good", NULL, body, sizeof(body)), 200);
    ck_assert_ptr_nonnull(strstr(body, "\"templateID\":\"base\""));
    ck_assert_ptr_nonnull(strstr(body, "\"nodes\":2,\"poolReady\":3,\"poolTarget\":8"));
    ck_assert_ptr_nonnull(strstr(body, "\"nodes\":1,\"poolReady\":1,\"poolTarget\":4"));
    /* one template, and the SDK's Template.exists: only what a live node holds */
    ck_assert_int_eq(request("GET", "/templates/aliases/code", "e2b_good", NULL, body, sizeof(body)), 200);
    ck_assert_str_eq(body, "{\"templateID\":\"code\",\"public\":false}");
    ck_assert_int_eq(request("GET", "/templates/aliases/nothing", "e2b_good", NULL, body, sizeof(body)), 404);
    ck_assert_int_eq(request("GET", "/templates/base", "e2b_good", NULL, body, sizeof(body)), 200);
    ck_assert_ptr_nonnull(strstr(body, "\"aliases\":[\"base\"]"));
    ck_assert_int_eq(request("GET", "/templates/nothing", "e2b_good", NULL, body, sizeof(body)), 404);
}
END_TEST

/* a key's sandbox limit: set with the key or later, carried to creates; a limited key manages no keys */
START_TEST(key_limits_through_the_api)
{
    char body[8192];
    ck_assert_int_eq(request("POST", "/api-keys", "e2b_good", "{\"name\":\"agent\",\"maxSandboxes\":5}", body,
                             sizeof(body)),
                     201);
    ck_assert_ptr_nonnull(strstr(body, "\"maxSandboxes\":5"));
    ck_assert_int_eq(request("POST", "/api-keys", "e2b_good", "{\"name\":\"agent\",\"maxSandboxes\":null}",
                             body, sizeof(body)),
                     201);
    ck_assert_ptr_nonnull(strstr(body, "\"maxSandboxes\":null"));
    ck_assert_int_eq(request("POST", "/api-keys", "e2b_good", "{\"name\":\"agent\",\"maxSandboxes\":-1}",
                             body, sizeof(body)),
                     400);
    ck_assert_ptr_nonnull(strstr(body, "maxSandboxes"));
    ck_assert_int_eq(request("POST", "/api-keys", "e2b_good", "{\"name\":\"agent\",\"maxSandboxes\":\"3\"}",
                             body, sizeof(body)),
                     400);
    ck_assert_ptr_nonnull(strstr(body, "maxSandboxes"));
    ck_assert_int_eq(request("PATCH", "/api-keys/k2", "e2b_good", "{\"maxSandboxes\":3}", body, sizeof(body)),
                     200);
    ck_assert_ptr_nonnull(strstr(body, "\"maxSandboxes\":3"));
    ck_assert_ptr_nonnull(strstr(body, "\"sandboxes\":1"));
    ck_assert_int_eq(request("PATCH", "/api-keys/k2", "e2b_good", "{}", body, sizeof(body)), 400);
    ck_assert_int_eq(request("PATCH", "/api-keys/k2", "e2b_good", "{\"name\":\"x\"}", body, sizeof(body)),
                     400);
    ck_assert_ptr_nonnull(strstr(body, "name"));
    ck_assert_int_eq(request("PATCH", "/api-keys/k9", "e2b_good", "{\"maxSandboxes\":3}", body, sizeof(body)),
                     404);

    /* a key with a limit lists keys but manages none (it would make itself an unlimited one) */
    ck_assert_int_eq(request("GET", "/api-keys", "e2b_limited", NULL, body, sizeof(body)), 200);
    ck_assert_int_eq(request("POST", "/api-keys", "e2b_limited", "{\"name\":\"mine\"}", body, sizeof(body)),
                     403);
    ck_assert_ptr_nonnull(strstr(body, "at most 2 sandboxes"));
    ck_assert_int_eq(
        request("PATCH", "/api-keys/k4", "e2b_limited", "{\"maxSandboxes\":0}", body, sizeof(body)), 403);
    ck_assert_int_eq(request("DELETE", "/api-keys/k2", "e2b_limited", NULL, body, sizeof(body)), 403);

    /* its creates carry its limit; the master's refusal is a 429 (the SDK's RateLimitError) in its words */
    ck_assert_int_eq(
        request("POST", "/sandboxes", "e2b_limited", "{\"templateID\":\"base\"}", body, sizeof(body)), 201);
    ck_assert_uint_eq(last_create_hint, 2);
    ck_assert_int_eq(
        request("POST", "/sandboxes", "e2b_limited", "{\"templateID\":\"quota\"}", body, sizeof(body)), 429);
    ck_assert_ptr_nonnull(strstr(body, "API key k4 may hold at most 2 sandboxes"));
    ck_assert_int_eq(
        request("POST", "/sandboxes", "e2b_good", "{\"templateID\":\"base\"}", body, sizeof(body)), 201);
    ck_assert_uint_eq(last_create_hint, 0);
    ck_assert_int_eq(
        request("POST", "/sandboxes", "e2b_good", "{\"templateID\":\"busy\"}", body, sizeof(body)), 503);
}
END_TEST

START_TEST(metrics_one_range_and_many)
{
    char body[8192], path[8192];
    /* its life, oldest first; start/end select within it */
    ck_assert_int_eq(request("GET", "/sandboxes/ihere/metrics", "e2b_good", NULL, body, sizeof(body)), 200);
    char *c10 = strstr(body, "\"cpuUsedPct\":10"), *c20 = strstr(body, "\"cpuUsedPct\":20"),
         *c30 = strstr(body, "\"cpuUsedPct\":30");
    ck_assert_msg(c10 && c20 && c30 && c10 < c20 && c20 < c30, "%s", body);
    long long now = cube_now_unix_ms() / 1000;
    snprintf(path, sizeof(path), "/sandboxes/ihere/metrics?start=%lld&end=%lld", now - 60, now + 60);
    ck_assert_int_eq(request("GET", path, "e2b_good", NULL, body, sizeof(body)), 200);
    ck_assert_msg(!strstr(body, "\"cpuUsedPct\":10") && strstr(body, "\"cpuUsedPct\":20") &&
                      strstr(body, "\"cpuUsedPct\":30"),
                  "%s", body);
    snprintf(path, sizeof(path), "/sandboxes/ihere/metrics?start=%lld&end=%lld", now - 7200, now - 1800);
    ck_assert_int_eq(request("GET", path, "e2b_good", NULL, body, sizeof(body)), 200);
    ck_assert_msg(strstr(body, "\"cpuUsedPct\":10") && !strstr(body, "\"cpuUsedPct\":20"), "%s", body);
    snprintf(path, sizeof(path), "/sandboxes/ihere/metrics?end=%lld", now - 7200);
    ck_assert_int_eq(request("GET", path, "e2b_good", NULL, body, sizeof(body)), 200);
    ck_assert_str_eq(body, "[]");
    ck_assert_int_eq(request("GET", "/sandboxes/igone/metrics", "e2b_good", NULL, body, sizeof(body)), 404);
    ck_assert_int_eq(
        request("GET", "/sandboxes/ihere/metrics?start=soon", "e2b_good", NULL, body, sizeof(body)), 400);
    ck_assert_ptr_nonnull(strstr(body, "start must be"));
    ck_assert_int_eq(
        request("GET", "/sandboxes/ihere/metrics?start=20&end=10", "e2b_good", NULL, body, sizeof(body)),
        400);
    /* bulk: the ones that exist, by id; the gone one left out */
    ck_assert_int_eq(request("GET", "/sandboxes/metrics?sandbox_ids=ihere,igone,iother", "e2b_good", NULL,
                             body, sizeof(body)),
                     200);
    ck_assert_ptr_nonnull(strstr(body, "{\"sandboxes\":{\"ihere\":{"));
    ck_assert_ptr_nonnull(strstr(body, "\"iother\":{"));
    ck_assert_ptr_null(strstr(body, "igone"));
    ck_assert_int_eq(request("GET", "/sandboxes/metrics", "e2b_good", NULL, body, sizeof(body)), 400);
    ck_assert_ptr_nonnull(strstr(body, "sandbox_ids"));
    size_t o = (size_t)snprintf(path, sizeof(path), "/sandboxes/metrics?sandbox_ids=");
    for (int i = 0; i < 101; i++) o += (size_t)snprintf(path + o, sizeof(path) - o, "%si%d", i ? "," : "", i);
    ck_assert_int_eq(request("GET", path, "e2b_good", NULL, body, sizeof(body)), 400);
    ck_assert_ptr_nonnull(strstr(body, "at most 100"));
}
END_TEST

/* what cube cannot do is a 400 naming it, not accepted and ignored */
START_TEST(memoryless_pauses_and_mcp_are_refused_by_name)
{
    char body[4096];
    ck_assert_int_eq(
        request("POST", "/sandboxes/ihere/pause", "e2b_good", "{\"memory\":false}", body, sizeof(body)), 400);
    ck_assert_ptr_nonnull(strstr(body, "memory: false"));
    ck_assert_int_eq(
        request("POST", "/sandboxes/ihere/pause", "e2b_good", "{\"memory\":true}", body, sizeof(body)), 204);
    ck_assert_int_eq(
        request("POST", "/sandboxes/ihere/connect", "e2b_good", "{\"memory\":false}", body, sizeof(body)),
        400);
    ck_assert_ptr_nonnull(strstr(body, "reboot"));
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good",
                             "{\"templateID\":\"base\",\"autoPause\":true,\"autoPauseMemory\":false}", body,
                             sizeof(body)),
                     400);
    ck_assert_ptr_nonnull(strstr(body, "autoPauseMemory"));
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good",
                             "{\"templateID\":\"base\",\"mcp\":{\"github\":{}}}", body, sizeof(body)),
                     400);
    ck_assert_ptr_nonnull(strstr(body, "mcp"));
    ck_assert_int_eq(request("POST", "/sandboxes", "e2b_good", "{\"templateID\":\"base\",\"mcp\":null}", body,
                             sizeof(body)),
                     201);
}
END_TEST

START_TEST(snapshots_are_paged_newest_first)
{
    char body[4096];
    ck_assert_int_eq(request("GET", "/snapshots?limit=2", "e2b_good", NULL, body, sizeof(body)), 200);
    char *s3 = strstr(body, "\"s3\""), *s2 = strstr(body, "\"s2\"");
    ck_assert_msg(s3 && s2 && s3 < s2 && !strstr(body, "\"s1\""), "%s", body);
    ck_assert_int_eq(request("GET", "/snapshots?limit=2&nextToken=s2", "e2b_good", NULL, body, sizeof(body)),
                     200);
    ck_assert_msg(strstr(body, "\"s1\"") && !strstr(body, "\"s2\""), "%s", body);
    ck_assert_int_eq(request("GET", "/snapshots?nextToken=s9", "e2b_good", NULL, body, sizeof(body)), 400);
    ck_assert_int_eq(request("GET", "/snapshots?limit=0", "e2b_good", NULL, body, sizeof(body)), 400);
}
END_TEST

START_TEST(the_console_is_served_from_the_binary)
{
    char body[65536];
    snprintf(a.console_sandbox_url, sizeof(a.console_sandbox_url), ":3001");
    ck_assert_int_eq(request("GET", "/console", NULL, NULL, body, sizeof(body)), 308);
    ck_assert_int_eq(request("GET", "/console/", NULL, NULL, body, sizeof(body)), 200);
    ck_assert_ptr_nonnull(strstr(body, "<script type=\"module\" src=\"app.js\">"));
    ck_assert_int_eq(request("GET", "/console/app.js", NULL, NULL, body, sizeof(body)), 200);
    ck_assert_ptr_nonnull(strstr(body, "X-API-KEY"));
    ck_assert_int_eq(request("GET", "/console/config.json", NULL, NULL, body, sizeof(body)), 200);
    ck_assert_ptr_nonnull(strstr(body, "\"sandboxUrl\":\":3001\""));
    ck_assert_int_eq(request("GET", "/console/../api-keys", NULL, NULL, body, sizeof(body)) / 100, 4);
    ck_assert_int_eq(request("GET", "/console/nothing.js", NULL, NULL, body, sizeof(body)), 404);
    ck_assert_int_eq(request("POST", "/console/", NULL, NULL, body, sizeof(body)), 405);
}
END_TEST

/* A PUT of len bytes (the upload of a COPY step's files); the status. */
static int upload(const char *path, size_t len)
{
    int fd = api_connect();
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "PUT %s HTTP/1.1\r\nHost: api\r\nConnection: close\r\nX-API-KEY: e2b_good\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     path, len);
    ck_assert_int_eq(write(fd, head, (size_t)n), n);
    char *body = malloc(len);
    memset(body, 'x', len);
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, body + off, len - off);
        ck_assert_int_gt(w, 0);
        off += (size_t)w;
    }
    free(body);
    char answer[1024];
    return read_answer(fd, path, answer, sizeof(answer));
}

/* E2B's Template.build: request, files, upload, start, status with logs; bad input named */
START_TEST(template_builds_through_the_e2b_routes)
{
    char body[65536];
    ck_assert_int_eq(request("POST", "/v3/templates", "e2b_good",
                             "{\"name\":\"my-tpl:v2\",\"tags\":[\"x\"],\"cpuCount\":4,\"memoryMB\":1024,"
                             "\"minFreeDiskMb\":4096}",
                             body, sizeof(body)),
                     202);
    ck_assert_msg(strstr(body, "\"templateID\":\"my-tpl\"") && strstr(body, "\"buildID\":\"b1\"") &&
                      strstr(body, "\"tags\":[\"v2\",\"x\"]"),
                  "%s", body);
    const char *bad[][2] = {{"{\"name\":\"Bad Name\"}", "name"},
                            {"{\"name\":\"ok:BAD TAG\"}", "name"},
                            {"{\"name\":\"ok\",\"cpuCount\":0}", "cpuCount"},
                            {"{\"name\":\"ok\",\"memoryMB\":1.5}", "memoryMB"},
                            {"{\"name\":\"ok\",\"tags\":\"v1\"}", "tags"},
                            {"{\"name\":\"ok\",\"minFreeDiskMb\":-1}", "minFreeDiskMb"},
                            {"{\"name\":\"ok\",\"minFreeDiskMb\":1e9}", "minFreeDiskMb"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_int_eq(request("POST", "/v3/templates", "e2b_good", bad[i][0], body, sizeof(body)), 400);
        char want[64];
        snprintf(want, sizeof(want), "\"message\":\"%s", bad[i][1]);
        ck_assert_msg(strstr(body, want), "%s: %s", bad[i][0], body);
    }
    ck_assert_int_eq(request("POST", "/v3/templates", NULL, "{\"name\":\"ok\"}", body, sizeof(body)), 401);

    ck_assert_int_eq(request("GET", "/templates/my-tpl/files/have", "e2b_good", NULL, body, sizeof(body)),
                     201);
    ck_assert_msg(strstr(body, "\"present\":true") && !strstr(body, "url"), "%s", body);
    ck_assert_int_eq(request("GET", "/templates/my-tpl/files/miss", "e2b_good", NULL, body, sizeof(body)),
                     201);
    ck_assert_msg(strstr(body, "\"present\":false") &&
                      strstr(body, "\"url\":\"http://api/templates/my-tpl/files/miss\"") &&
                      strstr(body, "\"X-API-KEY\":\"e2b_good\""),
                  "%s", body);
    ck_assert_int_eq(request("GET", "/templates/my-tpl/files/a%20b", "e2b_good", NULL, body, sizeof(body)),
                     400);
    /* 2.5 chunks: three calls, in order, the last one marked (small chunks: under ThreadSanitizer every
     * byte gRPC copies costs) */
    a.file_chunk = 64u << 10;
    ck_assert_int_eq(upload("/templates/my-tpl/files/miss", (5u << 16) / 2), 201);
    ck_assert_uint_eq(put_bytes, (5u << 16) / 2);
    ck_assert_int_eq(put_chunks, 3);
    ck_assert_int_eq(put_last, 1);
    ck_assert_int_eq(put_out_of_order, 0);

    ck_assert_int_eq(request("POST", "/v2/templates/my-tpl/builds/b1", "e2b_good",
                             "{\"fromTemplate\":\"base\",\"steps\":[{\"type\":\"RUN\",\"args\":[\"true\"]}]}",
                             body, sizeof(body)),
                     202);
    ck_assert_ptr_nonnull(strstr(started_json, "\"fromTemplate\":\"base\""));
    ck_assert_int_eq(request("POST", "/v2/templates/my-tpl/builds/b2", "e2b_good",
                             "{\"fromTemplate\":\"base\"}", body, sizeof(body)),
                     404);
    ck_assert_int_eq(
        request("POST", "/v2/templates/my-tpl/builds/b1", "e2b_good", "{\"steps\":[]}", body, sizeof(body)),
        400);

    ck_assert_int_eq(request("GET", "/templates/my-tpl/builds/b1/status?logsOffset=1", "e2b_good", NULL, body,
                             sizeof(body)),
                     200);
    ck_assert_msg(strstr(body, "\"status\":\"error\"") && strstr(body, "\"logs\":[\"second line\"]") &&
                      strstr(body, "\"level\":\"error\"") &&
                      strstr(body, "\"timestamp\":\"2023-11-14T22:13:20") &&
                      strstr(body, "\"reason\":{\"message\":\"step 1 (RUN false) failed") &&
                      strstr(body, "\"step\":\"1\"}") && !strstr(body, "first line"),
                  "%s", body);
    ck_assert_int_eq(request("GET", "/templates/my-tpl/builds/b1/status?logsOffset=x", "e2b_good", NULL, body,
                             sizeof(body)),
                     400);
}
END_TEST

/* A request to port with its own auth header and body; the status, and the body (up to cap) into out. */
static int vrequest(int port, const char *method, const char *path, const char *auth, const char *body,
                    size_t len, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: api\r\nConnection: close\r\n%s%sContent-Length: %zu\r\n\r\n",
                     method, path, auth ? auth : "", auth ? "\r\n" : "", len);
    ck_assert_int_eq(write(fd, head, (size_t)n), n);
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, body + off, len - off);
        ck_assert_int_gt(w, 0);
        off += (size_t)w;
    }
    char what[600];
    snprintf(what, sizeof(what), "%s %s", method, path);
    return read_answer(fd, what, out, cap);
}

/* The SDK's Volume calls: the volume's token or a key, the query's fields named when wrong, a file larger
 * than one call streamed both ways on the volume port in order, and buffered on the API's own port. */
START_TEST(volume_content_streams_through_the_node)
{
    cube_err err = {0};
    http_server_opts o = {.idle_timeout_s = 30};
    http_server *vsrv = http_server_start_opts("127.0.0.1", 0, api_volume_routes, &a, &o, &err);
    ck_assert_msg(vsrv != NULL, "%s", err.msg);
    int vport = http_server_port(vsrv), port = http_server_port(srv);
    a.file_chunk = 64u << 10;
    char body[4096];
    const char *tok = "Authorization: Bearer vtok";

    ck_assert_int_eq(
        vrequest(vport, "GET", "/volumecontent/vol1/path?path=/x", NULL, NULL, 0, body, sizeof(body)), 401);
    ck_assert_int_eq(vrequest(vport, "GET", "/volumecontent/vol1/path?path=/x", "Authorization: Bearer nope",
                              NULL, 0, body, sizeof(body)),
                     401);
    ck_assert_int_eq(vrequest(vport, "GET", "/volumecontent/vol1/path?path=/x", "X-API-KEY: e2b_good", NULL,
                              0, body, sizeof(body)),
                     200);
    ck_assert_int_eq(
        vrequest(vport, "GET", "/volumecontent/nope/path?path=/x", tok, NULL, 0, body, sizeof(body)), 404);
    ck_assert_int_eq(
        vrequest(vport, "GET", "/volumecontent/vol1/elsewhere?path=/x", tok, NULL, 0, body, sizeof(body)),
        404);
    const char *bad[][2] = {{"/volumecontent/vol1/path", "path"},
                            {"/volumecontent/vol1/dir?path=/&depth=0", "depth"},
                            {"/volumecontent/vol1/dir?path=/&depth=x", "depth"},
                            {"/volumecontent/vol1/path?path=/&uid=70000", "uid"},
                            {"/volumecontent/vol1/path?path=/&mode=-1", "mode"},
                            {"/volumecontent/vol1/path?path=/&force=yes", "force"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_int_eq(vrequest(vport, "GET", bad[i][0], tok, NULL, 0, body, sizeof(body)), 400);
        char want[64];
        snprintf(want, sizeof(want), "\"message\":\"%s", bad[i][1]);
        ck_assert_msg(strstr(body, want), "%s: %s", bad[i][0], body);
    }

    /* E2B's entry shape */
    ck_assert_int_eq(vrequest(vport, "POST", "/volumecontent/vol1/dir?path=/d&mode=448&force=true", tok, NULL,
                              0, body, sizeof(body)),
                     201);
    ck_assert_str_eq(vol_last_op, "mkdir");
    ck_assert_int_eq(vol_last_mode, 0700);
    ck_assert(vol_last_force);
    ck_assert_msg(strstr(body, "\"path\":\"/d\"") && strstr(body, "\"type\":\"file\"") &&
                      strstr(body, "\"mtime\":\"2025-12-05T00:00:00") && strstr(body, "\"uid\":1000"),
                  "%s", body);
    ck_assert_int_eq(vrequest(vport, "PATCH", "/volumecontent/vol1/path?path=/d", tok,
                              "{\"uid\":0,\"mode\":420}", 20, body, sizeof(body)),
                     200);
    ck_assert_int_eq(vol_last_uid, 0);
    ck_assert_int_eq(vol_last_mode, 0644);
    ck_assert_int_eq(vrequest(vport, "PATCH", "/volumecontent/vol1/path?path=/d", tok, "{\"mode\":\"x\"}", 12,
                              body, sizeof(body)),
                     400);
    ck_assert_ptr_nonnull(strstr(body, "\"message\":\"mode"));
    ck_assert_int_eq(
        vrequest(vport, "GET", "/volumecontent/vol1/dir?path=/&depth=3", tok, NULL, 0, body, sizeof(body)),
        200);
    ck_assert_msg(body[0] == '[' && strstr(body, "\"name\":\"big.bin\""), "%s", body);
    ck_assert_int_eq(
        vrequest(vport, "DELETE", "/volumecontent/vol1/path?path=/d", tok, NULL, 0, body, sizeof(body)), 204);
    ck_assert_str_eq(vol_last_op, "remove");

    /* 2.5 chunks up, in order, then down again in as many reads */
    size_t len = (5u << 16) / 2;
    char *data = malloc(len);
    for (size_t i = 0; i < len; i++) data[i] = (char)('a' + i % 23);
    vol_write_calls = 0;
    ck_assert_int_eq(
        vrequest(vport, "PUT", "/volumecontent/vol1/file?path=/big.bin", tok, data, len, body, sizeof(body)),
        200);
    ck_assert_int_eq(vol_write_calls, 3);
    ck_assert_uint_eq(vol_len, len);
    ck_assert(memcmp(vol_file, data, len) == 0);
    ck_assert_ptr_nonnull(strstr(body, "\"path\":\"/big.bin\""));
    char *back = malloc(len + 1);
    vol_read_calls = 0;
    ck_assert_int_eq(
        vrequest(vport, "GET", "/volumecontent/vol1/file?path=/big.bin", tok, NULL, 0, back, len + 1), 200);
    ck_assert_int_eq(vol_read_calls, 3);
    ck_assert(memcmp(back, data, len) == 0);
    ck_assert_int_eq(
        vrequest(vport, "GET", "/volumecontent/vol1/file?path=/none", tok, NULL, 0, body, sizeof(body)), 404);

    /* the API's own port: the same calls, buffered */
    memset(back, 0, len + 1);
    ck_assert_int_eq(
        vrequest(port, "GET", "/volumecontent/vol1/file?path=/big.bin", tok, NULL, 0, back, len + 1), 200);
    ck_assert(memcmp(back, data, len) == 0);
    data[0] = 'Z';
    ck_assert_int_eq(vrequest(port, "PUT", "/volumecontent/vol1/file?path=/big.bin", "X-API-KEY: e2b_good",
                              data, len, body, sizeof(body)),
                     200);
    ck_assert_int_eq(vol_file[0], 'Z');
    ck_assert_int_eq(vrequest(port, "GET", "/volumecontent/vol1/path?path=/x", "X-API-KEY: e2b_bad", NULL, 0,
                              body, sizeof(body)),
                     401);
    free(back);
    free(data);
    http_server_stop(vsrv);
}
END_TEST

/* E2B's tags: assign, list, remove; bad input named */
START_TEST(template_tags_through_the_e2b_routes)
{
    char body[4096];
    ck_assert_int_eq(request("POST", "/templates/tags", "e2b_good",
                             "{\"target\":\"my-tpl:v2\",\"tags\":[\"prod\"]}", body, sizeof(body)),
                     201);
    ck_assert_msg(strstr(body, "\"buildID\":\"b2\"") && strstr(body, "\"tags\":[\"prod\"]"), "%s", body);
    ck_assert_int_eq(request("GET", "/templates/my-tpl/tags", "e2b_good", NULL, body, sizeof(body)), 200);
    ck_assert_msg(
        strstr(body, "{\"tag\":\"default\",\"buildID\":\"b1\",\"createdAt\":\"2025-12-05T00:00:00") &&
            strstr(body, "\"tag\":\"v2\""),
        "%s", body);
    ck_assert_int_eq(request("DELETE", "/templates/tags", "e2b_good",
                             "{\"name\":\"my-tpl\",\"tags\":[\"v2\"]}", body, sizeof(body)),
                     204);
    ck_assert_int_eq(request("DELETE", "/templates/tags", "e2b_good",
                             "{\"name\":\"my-tpl\",\"tags\":[\"zz\"]}", body, sizeof(body)),
                     404);
    ck_assert_int_eq(request("GET", "/templates/other/tags", "e2b_good", NULL, body, sizeof(body)), 404);
    const char *bad[][3] = {{"POST", "{\"target\":\"My Tpl\",\"tags\":[\"a\"]}", "target"},
                            {"POST", "{\"target\":\"my-tpl\",\"tags\":[]}", "tags"},
                            {"POST", "{\"target\":\"my-tpl\",\"tags\":[\"Not A Tag\"]}", "tags"},
                            {"DELETE", "{\"name\":\"my-tpl:v2\",\"tags\":[\"a\"]}", "name"},
                            {"DELETE", "{\"name\":\"my-tpl\"}", "tags"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_int_eq(request(bad[i][0], "/templates/tags", "e2b_good", bad[i][1], body, sizeof(body)),
                         400);
        char want[64];
        snprintf(want, sizeof(want), "\"message\":\"%s", bad[i][2]);
        ck_assert_msg(strstr(body, want), "%s: %s", bad[i][1], body);
    }
    ck_assert_int_eq(request("POST", "/templates/tags", NULL, "{\"target\":\"my-tpl\",\"tags\":[\"a\"]}",
                             body, sizeof(body)),
                     401);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("routes");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, create_and_its_errors);
    tcase_add_test(tc, sandbox_routes_map_errors);
    tcase_add_test(tc, egress_proxy_is_kept_and_its_password_never_shown);
    tcase_add_test(tc, keys_nodes_and_templates_for_the_console);
    tcase_add_test(tc, key_limits_through_the_api);
    tcase_add_test(tc, the_console_is_served_from_the_binary);
    tcase_add_test(tc, metrics_one_range_and_many);
    tcase_add_test(tc, memoryless_pauses_and_mcp_are_refused_by_name);
    tcase_add_test(tc, snapshots_are_paged_newest_first);
    tcase_add_test(tc, template_builds_through_the_e2b_routes);
    tcase_add_test(tc, volume_content_streams_through_the_node);
    tcase_add_test(tc, template_tags_through_the_e2b_routes);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
