/* cube-master's core against fake cubelets (RPC servers in this process that answer as nodes do): scheduling
 * a burst, a create waiting for the first node, and the races a real cluster has — a kill against a pause or
 * a resume in flight (the kill wins, nothing comes back), a node removed while a call to it is in flight (its
 * client outlives the call; ASan would see a use after free). The store is SQLite in a temp dir. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cubelet.pb-c.h"
#include "fake_node.h"
#include "master_fixture.h"
#include "file_signature.h"
#include "master.h"
#include "replicate.h"
#include "secret_box.h"
#include "rpc.h"
#include "testutil.h"
#include "timeutil.h"

static int create(char id[64], char node[64], cube_err *err)
{
    Cube__CreateSandboxRequest req = CUBE__CREATE_SANDBOX_REQUEST__INIT;
    req.template_id = "base";
    ProtobufCMessage *r = NULL;
    if (cube_rpc_call(mc, "/cube.Master/CreateSandbox", &req.base, &cube__create_sandbox_response__descriptor,
                      &r, NULL, err) < 0)
        return -1;
    Cube__Sandbox *sb = ((Cube__CreateSandboxResponse *)r)->sandbox;
    snprintf(id, 64, "%s", sb->sandbox_id);
    if (node) snprintf(node, 64, "%s", sb->node_id);
    protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

static int call_ref(const char *method, const ProtobufCMessageDescriptor *rd, const char *id, cube_err *err)
{
    Cube__SetTimeoutRequest req = CUBE__SET_TIMEOUT_REQUEST__INIT; /* a SandboxRef on the wire too */
    req.sandbox_id = (char *)id;
    ProtobufCMessage *r = NULL;
    int rc = cube_rpc_call(mc, method, &req.base, rd, &r, NULL, err);
    if (r) protobuf_c_message_free_unpacked(r, NULL);
    return rc;
}

/* A burst between two heartbeats: the node that reported a pool gets as many as it has ready, the rest spread
 * by load, instead of all piling onto it until its next report. */
START_TEST(a_burst_spreads_over_nodes)
{
    fake_node f[3];
    const char *names[] = {"node-1", "node-2", "node-3"};
    for (int i = 0; i < 3; i++) fake_start(&f[i], dir, names[i]);
    node_reports(&f[0], 2);
    node_reports(&f[1], 0);
    node_reports(&f[2], 0);
    cube_err err = {0};
    char id[64];
    for (int i = 0; i < 6; i++) ck_assert_msg(create(id, NULL, &err) == 0, "create %d: %s", i, err.msg);
    for (int i = 0; i < 3; i++) {
        pthread_mutex_lock(&f[i].lock);
        int creates = f[i].creates;
        pthread_mutex_unlock(&f[i].lock);
        ck_assert_msg(creates == 2, "%s got %d of 6 creates", f[i].id, creates);
        fake_stop(&f[i]);
    }
}
END_TEST

/* A node that refuses a create for now (busy, out of memory for sandboxes) is not the cluster's answer: the
 * master takes the create to the next node, each refusing node asked once; when all refuse, the caller gets
 * the last refusal's words (EAGAIN). */
static void set_refusing(fake_node *f, int on)
{
    pthread_mutex_lock(&f->lock);
    f->refuse_creates = on;
    pthread_mutex_unlock(&f->lock);
}

static int refused(fake_node *f)
{
    pthread_mutex_lock(&f->lock);
    int n = f->refused;
    pthread_mutex_unlock(&f->lock);
    return n;
}

START_TEST(a_create_a_node_refuses_goes_to_another)
{
    fake_node f[3];
    const char *names[] = {"node-1", "node-2", "node-3"};
    for (int i = 0; i < 3; i++) fake_start(&f[i], dir, names[i]);
    node_reports(&f[0], 5); /* the pool makes node-1 the first choice */
    node_reports(&f[1], 0);
    node_reports(&f[2], 0);
    set_refusing(&f[0], 1);
    cube_err err = {0};
    char id[64], node[64];
    ck_assert_msg(create(id, node, &err) == 0, "%s", err.msg);
    ck_assert_str_ne(node, "node-1");
    ck_assert_int_eq(refused(&f[0]), 1);
    for (int i = 0; i < 3; i++) set_refusing(&f[i], 1);
    ck_assert_int_eq(create(id, node, &err), -1);
    ck_assert_int_eq(err.code, EAGAIN);
    ck_assert_msg(strstr(err.msg, "out of memory for sandboxes"), "%s", err.msg);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(refused(&f[i]), i == 0 ? 2 : 1);
        fake_stop(&f[i]);
    }
}
END_TEST

/* A node that reported too little memory left for one more sandbox of the template is not offered the create
 * while another has room, its ready pool notwithstanding; with none other left, it is still asked. */
START_TEST(a_node_without_room_is_asked_last)
{
    fake_node f[2];
    fake_start(&f[0], dir, "full");
    fake_start(&f[1], dir, "roomy");
    node_reports_room(&f[0], 5, 300); /* a pool, but 300 MB left: less than base's 512 */
    node_reports_room(&f[1], 0, 8000);
    cube_err err = {0};
    char id[64], node[64];
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(create(id, node, &err) == 0, "%s", err.msg);
        ck_assert_str_eq(node, "roomy");
    }
    fake_stop(&f[1]);
    node_reports_room(&f[0], 5, 300);
    for (int i = 0; i < 30 && create(id, node, &err) < 0; i++) { /* roomy goes silent within 300 ms */
        cube_err_clear(&err);
        nanosleep(&(struct timespec){0, 50 * 1000000}, NULL);
        node_reports_room(&f[0], 5, 300);
    }
    ck_assert_str_eq(node, "full");
    fake_stop(&f[0]);
}
END_TEST

/* FindSignedFile with these fields: 0 and the sandbox's id in found, or -1 and err. */
static int find_signed(const char *path, const char *op, const char *user, const char *exp, const char *sig,
                       char found[64], cube_err *err)
{
    Cube__SignedFileRequest req = CUBE__SIGNED_FILE_REQUEST__INIT;
    req.path = (char *)path;
    req.operation = (char *)op;
    req.username = (char *)user;
    req.expiration = (char *)exp;
    req.signature = (char *)sig;
    ProtobufCMessage *r = NULL;
    if (cube_rpc_call(mc, "/cube.Master/FindSignedFile", &req.base, &cube__sandbox_ref__descriptor, &r, NULL,
                      err) < 0)
        return -1;
    snprintf(found, 64, "%s", ((Cube__SandboxRef *)r)->sandbox_id);
    protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

/* The SDK's signed file URLs name no sandbox when it has one address for all: the master finds the live
 * sandbox whose access token signed one, and none for a wrong operation, a changed field, or a killed one. */
START_TEST(a_signed_file_url_leads_to_its_sandbox)
{
    fake_node f;
    fake_start(&f, dir, "node-1");
    node_reports(&f, 0);
    cube_err err = {0};
    char ids[3][64], token[3][64];
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(create(ids[i], NULL, &err) == 0, "create: %s", err.msg);
        Cube__SandboxRef ref = CUBE__SANDBOX_REF__INIT;
        ref.sandbox_id = ids[i];
        ProtobufCMessage *r = NULL;
        ck_assert_int_eq(cube_rpc_call(mc, "/cube.Master/GetSandbox", &ref.base,
                                       &cube__get_sandbox_response__descriptor, &r, NULL, &err),
                         0);
        snprintf(token[i], 64, "%s", ((Cube__GetSandboxResponse *)r)->sandbox->envd_access_token);
        protobuf_c_message_free_unpacked(r, NULL);
        ck_assert_int_gt(strlen(token[i]), 16);
    }
    char sig[64], exp_sig[64], found[64];
    ck_assert_int_eq(cube_file_signature("/tmp/a b.txt", "write", "", token[1], NULL, sig, sizeof(sig)), 0);
    ck_assert_int_eq(
        cube_file_signature("x", "read", "root", token[2], "1795380163", exp_sig, sizeof(exp_sig)), 0);
    ck_assert_msg(find_signed("/tmp/a b.txt", "write", "", "", sig, found, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(found, ids[1]);
    ck_assert_msg(find_signed("x", "read", "root", "1795380163", exp_sig, found, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(found, ids[2]);
    /* the same signature for another operation, path, user or expiration is no sandbox's */
    ck_assert_int_eq(find_signed("/tmp/a b.txt", "read", "", "", sig, found, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_int_eq(find_signed("/tmp/a b.txt ", "write", "", "", sig, found, &err), -1);
    ck_assert_int_eq(find_signed("/tmp/a b.txt", "write", "user", "", sig, found, &err), -1);
    ck_assert_int_eq(find_signed("x", "read", "root", "1795380164", exp_sig, found, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    /* what no URL of the SDK's holds is refused by name */
    ck_assert_int_eq(find_signed("x", "delete", "", "", sig, found, &err), -1);
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "operation"));
    ck_assert_int_eq(find_signed("x", "read", "", "", "abc", found, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "signature"));
    /* a killed sandbox's URLs lead nowhere */
    ck_assert_msg(
        call_ref("/cube.Master/KillSandbox", &cube__kill_sandbox_response__descriptor, ids[1], &err) == 0,
        "kill: %s", err.msg);
    ck_assert_int_eq(find_signed("/tmp/a b.txt", "write", "", "", sig, found, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    fake_stop(&f);
}
END_TEST

typedef struct bg_call {
    pthread_t th;
    const char *method;
    const ProtobufCMessageDescriptor *rd;
    char id[64];
    int rc, code;
    int64_t took_ms;
} bg_call;

static void *bg_create(void *arg)
{
    bg_call *c = arg;
    cube_err err = {0};
    int64_t t0 = cube_now_mono_ms();
    c->rc = create(c->id, NULL, &err);
    c->code = err.code;
    c->took_ms = cube_now_mono_ms() - t0;
    return NULL;
}

static void *bg_ref(void *arg)
{
    bg_call *c = arg;
    cube_err err = {0};
    c->rc = call_ref(c->method, c->rd, c->id, &err);
    c->code = err.code;
    return NULL;
}

/* A cluster still starting (no node heard from yet): a create waits for the first heartbeat, no 503. */
START_TEST(a_create_waits_for_the_first_node)
{
    fake_node f;
    fake_start(&f, dir, "node-1");
    bg_call c = {0};
    pthread_create(&c.th, NULL, bg_create, &c);
    usleep(300 * 1000);
    node_reports(&f, 1);
    pthread_join(c.th, NULL);
    ck_assert_msg(c.rc == 0, "create failed: errno %d", c.code);
    ck_assert_int_ge(c.took_ms, 250);
    pthread_mutex_lock(&f.lock);
    ck_assert_int_eq(f.creates, 1);
    pthread_mutex_unlock(&f.lock);
    fake_stop(&f);
}
END_TEST

/* A node with one sandbox (paused first if asked) and c's call to the master under way, held at the node. */
static void held_call(fake_node *f, bool paused, bg_call *c, char id[64])
{
    fake_start(f, dir, "node-1");
    node_reports(f, 1);
    cube_err err = {0};
    ck_assert_int_eq(create(id, NULL, &err), 0);
    if (paused)
        ck_assert_int_eq(call_ref("/cube.Master/PauseSandbox", &cube__empty__descriptor, id, &err), 0);
    pthread_mutex_lock(&f->lock);
    f->hold = 1;
    pthread_mutex_unlock(&f->lock);
    snprintf(c->id, sizeof(c->id), "%s", id);
    pthread_create(&c->th, NULL, bg_ref, c);
    wait_holding(f);
}

/* The node pauses (or resumes) the sandbox while a kill deletes it: the kill wins; the record does not come
 * back, paused or running. `_i` 0: pause raced; 1: resume raced. */
START_TEST(a_kill_wins_over_a_pause_or_resume_in_flight)
{
    fake_node f;
    cube_err err = {0};
    char id[64];
    bg_call c = {.method = _i ? "/cube.Master/ResumeSandbox" : "/cube.Master/PauseSandbox",
                 .rd = _i ? &cube__get_sandbox_response__descriptor : &cube__empty__descriptor};
    held_call(&f, _i == 1, &c, id); /* the node is pausing/resuming it now */
    ck_assert_msg(call_ref("/cube.Master/KillSandbox", &cube__kill_sandbox_response__descriptor, id, &err) ==
                      0,
                  "kill: %s", err.msg);
    open_gate(&f);
    pthread_join(c.th, NULL);
    ck_assert_int_eq(c.rc, -1);
    ck_assert_int_eq(c.code, ENOENT);
    ck_assert_int_eq(call_ref("/cube.Master/GetSandbox", &cube__get_sandbox_response__descriptor, id, &err),
                     -1);
    ck_assert_int_eq(err.code, ENOENT);
    Cube__ListSandboxesRequest lr = CUBE__LIST_SANDBOXES_REQUEST__INIT;
    ProtobufCMessage *r = NULL;
    ck_assert_int_eq(cube_rpc_call(mc, "/cube.Master/ListSandboxes", &lr.base,
                                   &cube__list_sandboxes_response__descriptor, &r, NULL, &err),
                     0);
    ck_assert_int_eq(((Cube__ListSandboxesResponse *)r)->n_sandboxes, 0);
    protobuf_c_message_free_unpacked(r, NULL);
    fake_stop(&f);
}
END_TEST

static int rollback(const char *id, const char *snap, Cube__Sandbox **out, cube_err *err)
{
    Cube__RollbackRequest req = CUBE__ROLLBACK_REQUEST__INIT;
    req.sandbox_id = (char *)id;
    req.snapshot_id = (char *)snap;
    ProtobufCMessage *r = NULL;
    int rc = cube_rpc_call(mc, "/cube.Master/RollbackSandbox", &req.base,
                           &cube__get_sandbox_response__descriptor, &r, NULL, err);
    if (rc == 0 && out)
        *out = ((Cube__GetSandboxResponse *)r)->sandbox, ((Cube__GetSandboxResponse *)r)->sandbox = NULL;
    if (r) protobuf_c_message_free_unpacked(r, NULL);
    return rc;
}

/* Rollback: the record keeps its id and node and takes the new agent's addresses; a paused sandbox runs
 * after; a refusal leaves it as it was; a rollback that ended the sandbox on its node ends its record. */
START_TEST(a_rollback_takes_the_new_agent_or_ends_the_record)
{
    fake_node f;
    fake_start(&f, dir, "node-1");
    node_reports(&f, 1);
    cube_err err = {0};
    char id[64];
    ck_assert_int_eq(create(id, NULL, &err), 0);
    ck_assert_int_eq(call_ref("/cube.Master/PauseSandbox", &cube__empty__descriptor, id, &err), 0);
    Cube__Sandbox *sb = NULL;
    ck_assert_msg(rollback(id, "snap-1", &sb, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(sb->sandbox_id, id);
    ck_assert_str_eq(sb->node_id, "node-1");
    ck_assert_int_eq(sb->state, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING);
    ck_assert_str_eq(sb->agent_address, "netns:/proc/77/ns/net:49983");
    ck_assert_str_eq(sb->interpreter_address, "netns:/proc/77/ns/net:49999");
    cube__sandbox__free_unpacked(sb, NULL);
    /* the record (and so cube-proxy's routes) from now on */
    Cube__Sandbox *rec = st->ops->sandbox_get(st, id, &err);
    ck_assert_str_eq(rec->agent_address, "netns:/proc/77/ns/net:49983");
    cube__sandbox__free_unpacked(rec, NULL);
    ck_assert(rollback(id, "", NULL, &err) == -1 && err.code == EINVAL);
    ck_assert(rollback(id, "other", NULL, &err) == -1 && err.code == EINVAL);
    ck_assert_int_eq(call_ref("/cube.Master/GetSandbox", &cube__get_sandbox_response__descriptor, id, &err),
                     0);
    ck_assert_int_eq(rollback("nosuchsandbox", "snap-1", NULL, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_int_eq(rollback(id, "ends", NULL, &err), -1);
    ck_assert_int_eq(err.code, ENOTRECOVERABLE);
    ck_assert_int_eq(call_ref("/cube.Master/GetSandbox", &cube__get_sandbox_response__descriptor, id, &err),
                     -1);
    ck_assert_int_eq(err.code, ENOENT);
    fake_stop(&f);
}
END_TEST

/* A node removed (it went silent, then `node remove`) while a call to it is in flight: the call ends on the
 * client it started with; nothing is freed under it. */
START_TEST(a_node_removed_under_a_call_in_flight)
{
    fake_node f;
    cube_err err = {0};
    char id[64];
    bg_call c = {.method = "/cube.Master/PauseSandbox", .rd = &cube__empty__descriptor};
    held_call(&f, false, &c, id);
    usleep(600 * 1000); /* silent past node_lost_ms */
    Cube__NodeRef nr = CUBE__NODE_REF__INIT;
    nr.node_id = "node-1";
    ProtobufCMessage *r = NULL;
    ck_assert_msg(
        cube_rpc_call(mc, "/cube.Master/RemoveNode", &nr.base, &cube__empty__descriptor, &r, NULL, &err) == 0,
        "remove: %s", err.msg);
    protobuf_c_message_free_unpacked(r, NULL);
    open_gate(&f);
    pthread_join(c.th, NULL);
    ck_assert_int_eq(c.rc, -1); /* its record went with the node */
    ck_assert_int_eq(c.code, ENOENT);
    fake_stop(&f);
}
END_TEST

static int secret_call(const char *method, const ProtobufCMessage *req, Cube__Secret **out, cube_err *err)
{
    ProtobufCMessage *r = NULL;
    int rc = cube_rpc_call(mc, method, req, &cube__secret__descriptor, &r, NULL, err);
    if (out)
        *out = (Cube__Secret *)r;
    else if (r)
        protobuf_c_message_free_unpacked(r, NULL);
    return rc;
}

static int create_secret_named(const char *name, const char *value, cube_err *err)
{
    Cube__CreateSecretRequest req = CUBE__CREATE_SECRET_REQUEST__INIT;
    req.name = (char *)name;
    req.value = (char *)value;
    return secret_call("/cube.Master/CreateSecret", &req.base, NULL, err);
}

/* true when the bytes of the file at path contain what */
static bool file_has_one(const char *path, const char *what)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf), fp);
    fclose(fp);
    return memmem(buf, n, what, strlen(what)) != NULL;
}

/* the SQLite store: its file and its write-ahead log */
static bool file_has(const char *db, const char *what)
{
    char wal[320];
    snprintf(wal, sizeof(wal), "%s-wal", db);
    return file_has_one(db, what) || file_has_one(wal, what);
}

/* A secret's value reaches the node inside the header rule that names it, and nowhere else: not the store
 * (sealed), not the sandbox's record (the placeholder stays), not an answer. An update reaches running
 * sandboxes before it answers; a delete takes the header away. */
START_TEST(secrets_fill_rules_for_the_node_only)
{
    cube_err err = {0};
    char keyfile[300];
    snprintf(keyfile, sizeof(keyfile), "%s/secrets.key", dir);
    ck_assert_int_eq(create_secret_named("tok", "v", &err), -1); /* no key yet: secrets are off */
    ck_assert_msg(strstr(err.msg, "--secrets-key"), "%s", err.msg);
    ck_assert_msg(secret_key_load(keyfile, m.secret_key, &err) == 0, "%s", err.msg);
    struct stat kst;
    ck_assert_int_eq(stat(keyfile, &kst), 0);
    ck_assert_int_eq(kst.st_mode & 0777, 0600);
    __atomic_store_n(&m.has_secret_key, true,
                     __ATOMIC_RELEASE); /* the key's bytes before it (the server runs) */

    Cube__CreateSecretRequest req = CUBE__CREATE_SECRET_REQUEST__INIT;
    Cube__CreateSecretRequest__MetadataEntry me = CUBE__CREATE_SECRET_REQUEST__METADATA_ENTRY__INIT,
                                             *mep = &me;
    me.key = "team";
    me.value = "a";
    req.name = "API-Token";
    req.value = "s3cr3t-v1";
    req.n_metadata = 1;
    req.metadata = &mep;
    Cube__Secret *s = NULL;
    ck_assert_msg(secret_call("/cube.Master/CreateSecret", &req.base, &s, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(s->name, "api-token");
    ck_assert_int_eq(s->version, 1);
    ck_assert_uint_eq(s->sealed_value.len, 0);
    ck_assert_uint_eq(s->n_metadata, 1);
    ck_assert(strncmp(s->secret_id, "sec_", 4) == 0);
    char sid[64];
    snprintf(sid, sizeof(sid), "%s", s->secret_id);
    protobuf_c_message_free_unpacked(&s->base, NULL);

    /* bad input, each named */
    const char *bad_names[] = {"sec_x", "a{b}", "", "tab\there"};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(create_secret_named(bad_names[i], "v", &err), -1);
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, "name"), "%s", err.msg);
    }
    ck_assert_int_eq(create_secret_named("other", "a\r\nX-Evil: 1", &err), -1);
    ck_assert_msg(err.code == EINVAL && strstr(err.msg, "value"), "%s", err.msg);
    ck_assert_int_eq(create_secret_named("API-TOKEN", "again", &err), -1);
    ck_assert_int_eq(err.code, EEXIST);

    fake_node f;
    fake_start(&f, dir, "node-1");
    node_reports(&f, 2);
    Cube__NetworkPolicy np = CUBE__NETWORK_POLICY__INIT;
    Cube__HeaderRule hr = CUBE__HEADER_RULE__INIT, hr2 = CUBE__HEADER_RULE__INIT, *rules[] = {&hr, &hr2};
    hr.host = "api.test";
    hr.header = "Authorization";
    hr.value = "Bearer ${e2b.secrets.api-token} (${e2b.secrets.API-TOKEN})";
    hr2.host = "api.test";
    hr2.header = "X-Plain";
    hr2.value = "as-is";
    np.n_rules = 2;
    np.rules = rules;
    Cube__CreateSandboxRequest cr = CUBE__CREATE_SANDBOX_REQUEST__INIT;
    cr.template_id = "base";
    cr.network = &np;
    ProtobufCMessage *r = NULL;
    ck_assert_msg(cube_rpc_call(mc, "/cube.Master/CreateSandbox", &cr.base,
                                &cube__create_sandbox_response__descriptor, &r, NULL, &err) == 0,
                  "%s", err.msg);
    char sbid[64], seen[512];
    snprintf(sbid, sizeof(sbid), "%s", ((Cube__CreateSandboxResponse *)r)->sandbox->sandbox_id);
    protobuf_c_message_free_unpacked(r, NULL);
    fake_rules(&f, seen);
    ck_assert_str_eq(seen, "api.test Authorization=Bearer s3cr3t-v1 (s3cr3t-v1);api.test X-Plain=as-is;");
    Cube__Sandbox *rec = st->ops->sandbox_get(st, sbid, &err);
    ck_assert_ptr_nonnull(rec);
    ck_assert_str_eq(rec->network->rules[0]->value, hr.value);
    cube__sandbox__free_unpacked(rec, NULL);
    char db[300];
    snprintf(db, sizeof(db), "%s/store.db", dir);
    ck_assert(!file_has(db, "s3cr3t"));

    /* a secret that does not exist, or a placeholder of another kind: 400 naming the rule */
    hr.value = "${e2b.secrets.nope}";
    ck_assert_int_eq(cube_rpc_call(mc, "/cube.Master/CreateSandbox", &cr.base,
                                   &cube__create_sandbox_response__descriptor, &r, NULL, &err),
                     -1);
    ck_assert_msg(err.code == EINVAL && strstr(err.msg, "network.rules[\"api.test\"].Authorization"), "%s",
                  err.msg);
    hr.value = "${e2b.identity.tokens.aws}";
    ck_assert_int_eq(cube_rpc_call(mc, "/cube.Master/CreateSandbox", &cr.base,
                                   &cube__create_sandbox_response__descriptor, &r, NULL, &err),
                     -1);
    ck_assert_int_eq(err.code, EINVAL);

    /* an update is a new version, and the running sandbox has it before the answer */
    Cube__UpdateSecretRequest ur = CUBE__UPDATE_SECRET_REQUEST__INIT;
    ur.secret = sid;
    ur.value = "s3cr3t-v2";
    ck_assert_msg(secret_call("/cube.Master/UpdateSecret", &ur.base, &s, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(s->version, 2);
    ck_assert_uint_eq(s->n_metadata, 1); /* kept: none given */
    protobuf_c_message_free_unpacked(&s->base, NULL);
    fake_rules(&f, seen);
    ck_assert_str_eq(seen, "api.test Authorization=Bearer s3cr3t-v2 (s3cr3t-v2);api.test X-Plain=as-is;");
    ck_assert(!file_has(db, "s3cr3t"));

    /* a master with another key cannot open it, and says why */
    uint8_t good[SECRET_KEY_LEN];
    memcpy(good, m.secret_key, sizeof(good));
    m.secret_key[0] ^= 1;
    Cube__UpdateNetworkRequest unr = CUBE__UPDATE_NETWORK_REQUEST__INIT;
    hr.value = "Bearer ${e2b.secrets.api-token}";
    unr.sandbox_id = sbid;
    unr.network = &np;
    ck_assert_int_eq(
        cube_rpc_call(mc, "/cube.Master/UpdateNetwork", &unr.base, &cube__empty__descriptor, &r, NULL, &err),
        -1);
    ck_assert_msg(err.code == EIO && strstr(err.msg, "--secrets-key"), "%d %s", err.code, err.msg);
    memcpy(m.secret_key, good, sizeof(good));
    ck_assert_msg(cube_rpc_call(mc, "/cube.Master/UpdateNetwork", &unr.base, &cube__empty__descriptor, &r,
                                NULL, &err) == 0,
                  "%s", err.msg);
    protobuf_c_message_free_unpacked(r, NULL);
    fake_rules(&f, seen);
    ck_assert_str_eq(seen, "api.test Authorization=Bearer s3cr3t-v2;api.test X-Plain=as-is;");

    /* a delete takes the header away from the running sandbox; the secret is gone by id and by name */
    Cube__SecretRef ref = CUBE__SECRET_REF__INIT;
    ref.secret = "Api-Token";
    ck_assert_msg(cube_rpc_call(mc, "/cube.Master/DeleteSecret", &ref.base, &cube__empty__descriptor, &r,
                                NULL, &err) == 0,
                  "%s", err.msg);
    protobuf_c_message_free_unpacked(r, NULL);
    fake_rules(&f, seen);
    ck_assert_str_eq(seen, "api.test X-Plain=as-is;");
    ref.secret = sid;
    ck_assert_int_eq(secret_call("/cube.Master/GetSecret", &ref.base, NULL, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    fake_stop(&f);
}
END_TEST

static int create_with(const char **volumes, size_t n, char id[64], char node[64], cube_err *err)
{
    Cube__CreateSandboxRequest req = CUBE__CREATE_SANDBOX_REQUEST__INIT;
    req.template_id = "base";
    Cube__VolumeMount vm[4], *vmp[4];
    for (size_t i = 0; i < n; i++) {
        cube__volume_mount__init(&vm[i]);
        vm[i].name = (char *)volumes[i];
        vm[i].path = i ? "/mnt/two" : "/mnt/one";
        vmp[i] = &vm[i];
    }
    req.n_volume_mounts = n;
    req.volume_mounts = vmp;
    ProtobufCMessage *r = NULL;
    if (cube_rpc_call(mc, "/cube.Master/CreateSandbox", &req.base, &cube__create_sandbox_response__descriptor,
                      &r, NULL, err) < 0)
        return -1;
    Cube__Sandbox *sb = ((Cube__CreateSandboxResponse *)r)->sandbox;
    snprintf(id, 64, "%s", sb->sandbox_id);
    snprintf(node, 64, "%s", sb->node_id);
    protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

static int volume_call(const char *method, const char *volume, const ProtobufCMessageDescriptor *rd,
                       ProtobufCMessage **out, cube_err *err)
{
    Cube__VolumeRef ref = CUBE__VOLUME_REF__INIT;
    ref.volume_id = (char *)volume;
    ProtobufCMessage *r = NULL;
    int rc = cube_rpc_call(mc, method, &ref.base, rd, &r, NULL, err);
    if (out)
        *out = r;
    else if (r)
        protobuf_c_message_free_unpacked(r, NULL);
    return rc;
}

/* A volume's files are on one node: it is placed when created, every sandbox mounting it runs there (a burst
 * would otherwise spread), its content calls and its deletion go there, and a record from before placement
 * is placed on first use. */
START_TEST(a_volume_lives_on_one_node)
{
    fake_node f[2];
    fake_start(&f[0], dir, "node-1");
    fake_start(&f[1], dir, "node-2");
    node_reports(&f[0], 0);
    node_reports(&f[1], 0);
    cube_err err = {0};
    Cube__CreateVolumeRequest cv = CUBE__CREATE_VOLUME_REQUEST__INIT;
    cv.name = "data";
    ProtobufCMessage *r = NULL;
    ck_assert_msg(cube_rpc_call(mc, "/cube.Master/CreateVolume", &cv.base, &cube__volume__descriptor, &r,
                                NULL, &err) == 0,
                  "%s", err.msg);
    char vid[64], home[64];
    snprintf(vid, sizeof(vid), "%s", ((Cube__Volume *)r)->volume_id);
    snprintf(home, sizeof(home), "%s", ((Cube__Volume *)r)->node_id);
    protobuf_c_message_free_unpacked(r, NULL);
    ck_assert_msg(strcmp(home, "node-1") == 0 || strcmp(home, "node-2") == 0, "placed on '%s'", home);
    fake_node *owner = strcmp(home, f[0].id) == 0 ? &f[0] : &f[1], *other = owner == &f[0] ? &f[1] : &f[0];

    const char *data[] = {"data"};
    char ids[4][64], node[64];
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(create_with(data, 1, ids[i], node, &err) == 0, "%s", err.msg);
        ck_assert_str_eq(node, home);
    }
    pthread_mutex_lock(&other->lock);
    int elsewhere_creates = other->creates;
    pthread_mutex_unlock(&other->lock);
    ck_assert_int_eq(elsewhere_creates, 0);

    /* content calls go to its node, by id or by name; a whole volume goes only with DeleteVolume */
    Cube__VolumeFileRequest fr = CUBE__VOLUME_FILE_REQUEST__INIT;
    fr.volume_id = "data";
    fr.op = "stat";
    fr.path = "/x";
    ck_assert_msg(cube_rpc_call(mc, "/cube.Master/VolumeFiles", &fr.base,
                                &cube__volume_file_response__descriptor, &r, NULL, &err) == 0,
                  "%s", err.msg);
    ck_assert_str_eq(((Cube__VolumeFileResponse *)r)->entries[0]->name, home);
    protobuf_c_message_free_unpacked(r, NULL);
    fr.op = "destroy";
    ck_assert_int_eq(cube_rpc_call(mc, "/cube.Master/VolumeFiles", &fr.base,
                                   &cube__volume_file_response__descriptor, &r, NULL, &err),
                     -1);
    ck_assert_int_eq(err.code, EINVAL);

    /* volumes of two nodes cannot be mounted together */
    Cube__Volume elsewhere = CUBE__VOLUME__INIT;
    elsewhere.volume_id = "velsewhere";
    elsewhere.name = "elsewhere";
    elsewhere.token = "t";
    elsewhere.node_id = other->id;
    ck_assert_int_eq(st->ops->volume_put(st, &elsewhere, &err), 0);
    const char *both[] = {"data", "elsewhere"};
    ck_assert_int_eq(create_with(both, 2, ids[0] + 0, node, &err) == 0 ? 0 : err.code, EINVAL);
    ck_assert_msg(strstr(err.msg, "different nodes"), "%s", err.msg);

    /* a record from before placement is placed where its first sandbox runs */
    Cube__Volume legacy = CUBE__VOLUME__INIT;
    legacy.volume_id = "vlegacy";
    legacy.name = "legacy";
    legacy.token = "t";
    ck_assert_int_eq(st->ops->volume_put(st, &legacy, &err), 0);
    const char *old[] = {"legacy"};
    char lid[64];
    ck_assert_msg(create_with(old, 1, lid, node, &err) == 0, "%s", err.msg);
    Cube__Volume *got = st->ops->volume_get(st, "legacy", &err);
    ck_assert_str_eq(got->node_id, node);
    cube__volume__free_unpacked(got, NULL);

    /* deletion: refused while mounted; then its node removes the files, then the record goes */
    ck_assert_int_eq(volume_call("/cube.Master/DeleteVolume", vid, &cube__empty__descriptor, NULL, &err), -1);
    ck_assert_int_eq(err.code, EBUSY);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(
            call_ref("/cube.Master/KillSandbox", &cube__kill_sandbox_response__descriptor, ids[i], &err) == 0,
            "%s", err.msg);
    ck_assert_msg(volume_call("/cube.Master/DeleteVolume", vid, &cube__empty__descriptor, NULL, &err) == 0,
                  "%s", err.msg);
    char want[128];
    snprintf(want, sizeof(want), "destroy:%s:;", vid);
    pthread_mutex_lock(&owner->lock);
    ck_assert_msg(strstr(owner->vol_ops, want), "%s", owner->vol_ops);
    pthread_mutex_unlock(&owner->lock);
    ck_assert_int_eq(volume_call("/cube.Master/GetVolume", vid, &cube__volume__descriptor, NULL, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    fake_stop(&f[0]);
    fake_stop(&f[1]);
}
END_TEST

/* A heartbeat reporting templates with their builds: "name=build[<base@build][#MS][^SANDBOX]" each (^: a
 * snapshot of that sandbox) */
static void heartbeat_builds(fake_node *f, const char **tpls, size_t n)
{
    Cube__NodeInfo ni = CUBE__NODE_INFO__INIT;
    ni.node_id = f->id;
    ni.address = f->addr;
    ni.backend = "ns";
    char *names[8], buf[8][5][64];
    Cube__TemplateSize sizes[8], *sp[8];
    for (size_t i = 0; i < n; i++) {
        char tmp[128];
        snprintf(tmp, sizeof(tmp), "%s", tpls[i]);
        char *caret = strchr(tmp, '^');
        if (caret) *caret = '\0';
        snprintf(buf[i][4], 64, "%s", caret ? caret + 1 : "");
        char *hash = strchr(tmp, '#'); /* "#MS": when the node's link moved */
        if (hash) *hash = '\0';
        char *eq = strchr(tmp, '='), *lt = strchr(tmp, '<'), *at = lt ? strchr(lt, '@') : NULL;
        *eq = '\0';
        if (lt) *lt = '\0';
        if (at) *at = '\0';
        snprintf(buf[i][0], 64, "%s", tmp);
        snprintf(buf[i][1], 64, "%s", eq + 1);
        snprintf(buf[i][2], 64, "%s", lt ? lt + 1 : "");
        snprintf(buf[i][3], 64, "%s", at ? at + 1 : "");
        names[i] = buf[i][0];
        cube__template_size__init(&sizes[i]);
        sizes[i].template_id = buf[i][0];
        sizes[i].build_id = buf[i][1];
        sizes[i].from_template = buf[i][2];
        sizes[i].from_build = buf[i][3];
        sizes[i].assigned_at_ms = hash ? atoll(hash + 1) : 0;
        sizes[i].snapshot_of = buf[i][4];
        sp[i] = &sizes[i];
    }
    ni.n_templates = n;
    ni.templates = names;
    ni.n_template_sizes = n;
    ni.template_sizes = sp;
    node_sends(&ni);
}

/* A sandbox's snapshot as a template: the sandbox's node makes it, then a record in the store says which. */
static int snapshot(const char *sandbox, const char *name, cube_err *err)
{
    Cube__CreateSnapshotRequest req = CUBE__CREATE_SNAPSHOT_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox;
    req.name = (char *)name;
    ProtobufCMessage *r = NULL;
    int rc = cube_rpc_call(mc, "/cube.Master/CreateSnapshot", &req.base, &cube__snapshot_info__descriptor, &r,
                           NULL, err);
    if (r) protobuf_c_message_free_unpacked(r, NULL);
    return rc;
}

/* "id@node" of each snapshot listed (of sandbox, when given), newest first */
static void list_snapshots_of(const char *sandbox, char out[256])
{
    Cube__ListSnapshotsRequest lr = CUBE__LIST_SNAPSHOTS_REQUEST__INIT;
    lr.sandbox_id = (char *)sandbox;
    ProtobufCMessage *r = NULL;
    cube_err err = {0};
    ck_assert_msg(cube_rpc_call(mc, "/cube.Master/ListSnapshots", &lr.base,
                                &cube__list_snapshots_response__descriptor, &r, NULL, &err) == 0,
                  "%s", err.msg);
    const Cube__ListSnapshotsResponse *l = (const Cube__ListSnapshotsResponse *)r;
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < l->n_snapshots; i++)
        len += (size_t)snprintf(out + len, 256 - len, "%s@%s:%s;", l->snapshots[i]->snapshot_id,
                                l->snapshots[i]->node_id, l->snapshots[i]->sandbox_id);
    protobuf_c_message_free_unpacked(r, NULL);
}

static int delete_tpl(const char *id, cube_err *err)
{
    Cube__TemplateRef ref = CUBE__TEMPLATE_REF__INIT;
    ref.template_id = (char *)id;
    ProtobufCMessage *r = NULL;
    int rc =
        cube_rpc_call(mc, "/cube.Master/DeleteTemplate", &ref.base, &cube__empty__descriptor, &r, NULL, err);
    if (r) protobuf_c_message_free_unpacked(r, NULL);
    return rc;
}

/* Snapshots are records in the store: made by the sandbox's node (a name taken is refused), listed whoever is
 * up, a registering node's unrecorded ones recorded; deleted by every node holding the files (one refusing
 * is the answer), the record with them, kept while its node does not answer. A sandbox keeps its template. */
START_TEST(snapshots_are_records_their_nodes_hold)
{
    fake_node f[2];
    fake_start(&f[0], dir, "node-1");
    fake_start(&f[1], dir, "node-2");
    node_reports(&f[0], 0);
    cube_err err = {0};
    char id[64], node[64], want[256], got[256];
    ck_assert_msg(create(id, node, &err) == 0, "%s", err.msg);
    ck_assert_msg(snapshot(id, "snap-a", &err) == 0, "%s", err.msg);
    ck_assert_int_eq(snapshot(id, "snap-a", &err), -1);
    ck_assert_int_eq(err.code, EEXIST);
    ck_assert_int_eq(snapshot("no-such-sandbox", "snap-c", &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    /* node-2 registers holding one made before records were kept */
    snprintf(f[1].holds, sizeof(f[1].holds), ",snap-b,");
    const char *tpls[] = {"snap-b=s1#1000^sb-old"};
    heartbeat_builds(&f[1], tpls, 1);
    snprintf(want, sizeof(want), "snap-a@node-1:%s;snap-b@node-2:sb-old;", id);
    list_snapshots_of(NULL, got);
    ck_assert_str_eq(got, want);
    snprintf(want, sizeof(want), "snap-a@node-1:%s;", id);
    list_snapshots_of(id, got);
    ck_assert_str_eq(got, want);

    ck_assert_int_eq(delete_tpl("base", &err), -1); /* the sandbox of base keeps it */
    ck_assert_msg(err.code == EBUSY && strstr(err.msg, id), "%s", err.msg);
    ck_assert_msg(delete_tpl("snap-a", &err) == 0, "%s", err.msg);
    pthread_mutex_lock(&f[0].lock);
    ck_assert_str_eq(f[0].holds, ",");
    pthread_mutex_unlock(&f[0].lock);
    list_snapshots_of(NULL, got);
    ck_assert_str_eq(got, "snap-b@node-2:sb-old;");
    ck_assert_int_eq(delete_tpl("snap-a", &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    pthread_mutex_lock(&f[1].lock);
    f[1].refuse_delete = 1;
    pthread_mutex_unlock(&f[1].lock);
    ck_assert_int_eq(delete_tpl("snap-b", &err), -1);
    ck_assert_msg(err.code == EBUSY && strstr(err.msg, "built on"), "%d %s", err.code, err.msg);
    /* its node silent: the record stays, and the answer says why */
    usleep(600 * 1000);
    ck_assert_int_eq(delete_tpl("snap-b", &err), -1);
    ck_assert_msg(strstr(err.msg, "node-2, which is not answering"), "%d %s", err.code, err.msg);
    list_snapshots_of(NULL, got);
    ck_assert_str_eq(got, "snap-b@node-2:sb-old;");
    fake_stop(&f[0]);
    fake_stop(&f[1]);
}
END_TEST

static void copies_done(void)
{
    for (int i = 0; i < 200 && __atomic_load_n(&m.copy_running, __ATOMIC_ACQUIRE); i++) usleep(10000);
    replicate_stop(&m);
}

/* One pass of the copier, to its end; what each of three nodes was asked meanwhile (then forgotten). */
static void replicate_now(fake_node f[3], char seen[3][512])
{
    replicate_templates(&m);
    copies_done();
    for (int i = 0; i < 3; i++) {
        pthread_mutex_lock(&f[i].lock);
        snprintf(seen[i], 512, "%s", f[i].vol_ops);
        f[i].vol_ops[0] = '\0';
        pthread_mutex_unlock(&f[i].lock);
    }
}

/* A build one node holds goes to a node that has its base in the same build, chunk after chunk in order;
 * not to a node whose base is another build, nor to one that has it, nor back. */
START_TEST(a_build_is_copied_to_nodes_that_lack_it)
{
    fake_node f[3];
    fake_start(&f[0], dir, "node-1");
    fake_start(&f[1], dir, "node-2");
    fake_start(&f[2], dir, "node-3");
    const char *holder[] = {"base=bb1", "app=a1<base@bb1", "app:v2=a1<base@bb1"};
    const char *taker[] = {"base=bb1"};
    const char *other[] = {"base=bb2"};
    heartbeat_builds(&f[0], holder, 3);
    heartbeat_builds(&f[1], taker, 1);
    heartbeat_builds(&f[2], other, 1);
    /* a build the store does not have (its template was deleted) is not spread */
    char seen[3][512];
    replicate_now(f, seen);
    ck_assert_str_eq(seen[1], "");
    Cube__TemplateBuild b = CUBE__TEMPLATE_BUILD__INIT;
    b.template_id = "app";
    b.build_id = "a1";
    b.node_id = "node-1";
    cube_err berr = {0};
    ck_assert_int_eq(st->ops->build_put(st, &b, &berr), 0);
    replicate_now(f, seen);
    ck_assert_str_eq(seen[1], "import:app:0:first-;import:app:6:second:last:a1@default;");
    ck_assert_str_eq(seen[0], "");
    ck_assert_str_eq(seen[2], "");
    /* once the taker reports it, its tag follows: the build is there, so only the link moves */
    const char *taken[] = {"base=bb1", "app=a1<base@bb1#2000"};
    heartbeat_builds(&f[1], taken, 2);
    replicate_now(f, seen);
    ck_assert_str_eq(seen[1], "link:app:v2=a1;");
    /* then nothing is left to do; the taker's newer link of the same build moves nothing back */
    const char *tagged[] = {"base=bb1", "app=a1<base@bb1#2000", "app:v2=a1<base@bb1#2000"};
    heartbeat_builds(&f[1], tagged, 3);
    replicate_now(f, seen);
    ck_assert_str_eq(seen[0], "");
    /* a rebuild on the holder (a newer link of the bare name) reaches the taker */
    b.build_id = "a3";
    ck_assert_int_eq(st->ops->build_put(st, &b, &berr), 0);
    const char *rebuilt[] = {"base=bb1", "app=a3<base@bb1#3000", "app:v2=a1<base@bb1"};
    heartbeat_builds(&f[0], rebuilt, 3);
    replicate_now(f, seen);
    ck_assert_str_eq(seen[1], "import:app:0:first-;import:app:6:second:last:a3@default;");
    ck_assert_str_eq(seen[0], "");
    /* one linked before the taker's: the taker's leads, and goes the other way */
    const char *stale[] = {"base=bb1", "app=a3<base@bb1#1000"};
    heartbeat_builds(&f[0], stale, 2);
    replicate_now(f, seen);
    ck_assert_str_eq(seen[1], "");
    ck_assert_str_eq(seen[0], "import:app:0:first-;import:app:6:second:last:a1@default;");
    for (int i = 0; i < 3; i++) fake_stop(&f[i]);
}
END_TEST

/* A template's builds, newest first, each with the state the nodes give: one a node holds is ready. */
START_TEST(builds_are_listed_with_their_states)
{
    fake_node f;
    fake_start(&f, dir, "node-1");
    const char *held[] = {"base=bb1", "app=a2<base@bb1"};
    heartbeat_builds(&f, held, 2);
    cube_err err = {0};
    const char *ids[] = {"a1", "a2"};
    for (int i = 0; i < 2; i++) {
        Cube__TemplateBuild b = CUBE__TEMPLATE_BUILD__INIT;
        b.template_id = "app";
        b.build_id = (char *)ids[i];
        b.node_id = "node-1";
        b.created_at_ms = 1000 + i;
        ck_assert_int_eq(st->ops->build_put(st, &b, &err), 0);
    }
    Cube__TemplateRef ref = CUBE__TEMPLATE_REF__INIT;
    ref.template_id = "app";
    ProtobufCMessage *r = NULL;
    ck_assert_msg(cube_rpc_call(mc, "/cube.Master/ListBuilds", &ref.base,
                                &cube__list_builds_response__descriptor, &r, NULL, &err) == 0,
                  "%s", err.msg);
    const Cube__ListBuildsResponse *l = (const Cube__ListBuildsResponse *)r;
    ck_assert_int_eq(l->n_builds, 2);
    ck_assert_int_eq(l->n_states, 2);
    ck_assert_str_eq(l->builds[0]->build_id, "a2");
    ck_assert_str_eq(l->states[0], "ready");
    ck_assert_str_eq(l->builds[1]->build_id, "a1");
    ck_assert_str_eq(l->states[1], "unknown");
    protobuf_c_message_free_unpacked(r, NULL);
    ref.template_id = "Bad Name";
    ck_assert_int_eq(cube_rpc_call(mc, "/cube.Master/ListBuilds", &ref.base,
                                   &cube__list_builds_response__descriptor, &r, NULL, &err),
                     -1);
    ck_assert_int_eq(err.code, EINVAL);
    fake_stop(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("master");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_burst_spreads_over_nodes);
    tcase_add_test(tc, a_create_a_node_refuses_goes_to_another);
    tcase_add_test(tc, a_node_without_room_is_asked_last);
    tcase_add_test(tc, a_signed_file_url_leads_to_its_sandbox);
    tcase_add_test(tc, a_create_waits_for_the_first_node);
    tcase_add_loop_test(tc, a_kill_wins_over_a_pause_or_resume_in_flight, 0, 2);
    tcase_add_test(tc, a_node_removed_under_a_call_in_flight);
    tcase_add_test(tc, secrets_fill_rules_for_the_node_only);
    tcase_add_test(tc, a_volume_lives_on_one_node);
    tcase_add_test(tc, snapshots_are_records_their_nodes_hold);
    tcase_add_test(tc, a_build_is_copied_to_nodes_that_lack_it);
    tcase_add_test(tc, builds_are_listed_with_their_states);
    tcase_add_test(tc, a_rollback_takes_the_new_agent_or_ends_the_record);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
