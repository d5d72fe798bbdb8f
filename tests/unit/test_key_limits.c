/* API keys' sandbox limits in cube-master, against a fake node: a key's creates and forks past its limit are
 * refused in words (EDQUOT, HTTP 429) before a node starts anything; concurrent creates never take it past
 * its limit; a limit the api did not know of yet still holds (the store's add), and the sandbox the node made
 * for it is not left running; the key RPCs carry the limit and what each key holds. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cubelet.pb-c.h"
#include "fake_node.h"
#include "master_fixture.h"
#include "rpc.h"
#include "testutil.h"

static Cube__ApiKey *make_key(const char *name, uint32_t max)
{
    Cube__CreateKeyRequest req = CUBE__CREATE_KEY_REQUEST__INIT;
    req.name = (char *)name;
    req.max_sandboxes = max;
    ProtobufCMessage *r = NULL;
    cube_err err = {0};
    ck_assert_msg(cube_rpc_call(mc, "/cube.Master/CreateKey", &req.base, &cube__api_key__descriptor, &r, NULL,
                                &err) == 0,
                  "create key: %s", err.msg);
    return (Cube__ApiKey *)r;
}

/* a create as cube-api sends it for a key: hint is the limit the api read with the key */
static int create_for(const char *key_id, uint32_t hint, char id[64], cube_err *err)
{
    Cube__CreateSandboxRequest req = CUBE__CREATE_SANDBOX_REQUEST__INIT;
    req.template_id = "base";
    req.api_key_id = (char *)key_id;
    req.api_key_max_sandboxes = hint;
    ProtobufCMessage *r = NULL;
    if (cube_rpc_call(mc, "/cube.Master/CreateSandbox", &req.base, &cube__create_sandbox_response__descriptor,
                      &r, NULL, err) < 0)
        return -1;
    if (id) snprintf(id, 64, "%s", ((Cube__CreateSandboxResponse *)r)->sandbox->sandbox_id);
    protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

static void kill_one(const char *id)
{
    Cube__SandboxRef ref = CUBE__SANDBOX_REF__INIT;
    ref.sandbox_id = (char *)id;
    ProtobufCMessage *r = NULL;
    cube_err err = {0};
    ck_assert_msg(cube_rpc_call(mc, "/cube.Master/KillSandbox", &ref.base,
                                &cube__kill_sandbox_response__descriptor, &r, NULL, &err) == 0,
                  "kill: %s", err.msg);
    protobuf_c_message_free_unpacked(r, NULL);
}

static int node_creates(fake_node *f, int *running)
{
    pthread_mutex_lock(&f->lock);
    int n = f->creates;
    if (running) *running = f->n;
    pthread_mutex_unlock(&f->lock);
    return n;
}

START_TEST(a_key_at_its_limit_is_refused_in_words_before_a_node_starts_one)
{
    fake_node f;
    fake_start(&f, dir, "node-1");
    node_reports(&f, 8);
    Cube__ApiKey *k = make_key("agent-7", 2), *free_key = make_key("operator", 0);
    cube_err err = {0};
    char a[64], b[64];
    ck_assert_msg(create_for(k->key_id, 2, a, &err) == 0, "%s", err.msg);
    ck_assert_msg(create_for(k->key_id, 2, b, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(create_for(k->key_id, 2, NULL, &err), -1);
    ck_assert_int_eq(err.code, EDQUOT);
    ck_assert_int_eq(cube_err_http_status(&err), 429);
    ck_assert_msg(strstr(err.msg, "at most 2 sandboxes") && strstr(err.msg, "holds 2") &&
                      strstr(err.msg, k->key_id),
                  "%s", err.msg);
    ck_assert_int_eq(node_creates(&f, NULL), 2); /* refused before the node was asked */
    /* other keys go on */
    for (int i = 0; i < 3; i++)
        ck_assert_msg(create_for(free_key->key_id, 0, NULL, &err) == 0, "%s", err.msg);
    /* one killed: room for one */
    kill_one(a);
    ck_assert_msg(create_for(k->key_id, 2, NULL, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(create_for(k->key_id, 2, NULL, &err), -1);
    ck_assert_int_eq(err.code, EDQUOT);

    /* what each key holds, as `key list` shows it */
    ProtobufCMessage *r = NULL;
    Cube__Empty e = CUBE__EMPTY__INIT;
    ck_assert_int_eq(cube_rpc_call(mc, "/cube.Master/ListKeys", &e.base,
                                   &cube__list_keys_response__descriptor, &r, NULL, &err),
                     0);
    Cube__ListKeysResponse *l = (Cube__ListKeysResponse *)r;
    int seen = 0;
    for (size_t i = 0; i < l->n_keys; i++) {
        if (strcmp(l->keys[i]->key_id, k->key_id) == 0) {
            ck_assert_uint_eq(l->keys[i]->max_sandboxes, 2);
            ck_assert_uint_eq(l->keys[i]->sandboxes, 2);
            seen++;
        } else if (strcmp(l->keys[i]->key_id, free_key->key_id) == 0) {
            ck_assert_uint_eq(l->keys[i]->max_sandboxes, 0);
            ck_assert_uint_eq(l->keys[i]->sandboxes, 3);
            seen++;
        }
    }
    ck_assert_int_eq(seen, 2);
    protobuf_c_message_free_unpacked(r, NULL);
    protobuf_c_message_free_unpacked(&k->base, NULL);
    protobuf_c_message_free_unpacked(&free_key->base, NULL);
    fake_stop(&f);
}
END_TEST

typedef struct racer {
    const char *key;
    int ok, refused, other;
} racer;

static void *race_create(void *arg)
{
    racer *r = arg;
    cube_err err = {0};
    if (create_for(r->key, 3, NULL, &err) == 0)
        r->ok = 1;
    else if (err.code == EDQUOT)
        r->refused = 1;
    else
        r->other = 1;
    return NULL;
}

/* twelve creates at once for a key that may hold three: three sandboxes, and no node started more */
START_TEST(concurrent_creates_never_pass_a_key_limit)
{
    fake_node f;
    fake_start(&f, dir, "node-1");
    node_reports(&f, 16);
    Cube__ApiKey *k = make_key("burst", 3);
    racer rs[12];
    pthread_t t[12];
    for (int i = 0; i < 12; i++) {
        rs[i] = (racer){.key = k->key_id};
        pthread_create(&t[i], NULL, race_create, &rs[i]);
    }
    int ok = 0, refused = 0, other = 0;
    for (int i = 0; i < 12; i++) {
        pthread_join(t[i], NULL);
        ok += rs[i].ok;
        refused += rs[i].refused;
        other += rs[i].other;
    }
    ck_assert_int_eq(other, 0);
    ck_assert_int_eq(ok, 3);
    ck_assert_int_eq(refused, 9);
    int running = 0;
    ck_assert_int_eq(node_creates(&f, &running), 3);
    ck_assert_int_eq(running, 3);
    protobuf_c_message_free_unpacked(&k->base, NULL);
    fake_stop(&f);
}
END_TEST

/* A limit set after the api read the key (its hint says none): the store's add still refuses, and the sandbox
 * the node made meanwhile is killed, not left running unseen. */
START_TEST(a_limit_the_api_has_not_seen_yet_still_holds)
{
    fake_node f;
    fake_start(&f, dir, "node-1");
    node_reports(&f, 8);
    Cube__ApiKey *k = make_key("late", 0);
    cube_err err = {0};
    ck_assert_msg(create_for(k->key_id, 0, NULL, &err) == 0, "%s", err.msg);
    Cube__KeyLimitRequest lr = CUBE__KEY_LIMIT_REQUEST__INIT;
    lr.key_id = k->key_id;
    lr.max_sandboxes = 1;
    ProtobufCMessage *r = NULL;
    ck_assert_msg(cube_rpc_call(mc, "/cube.Master/SetKeyLimit", &lr.base, &cube__api_key__descriptor, &r,
                                NULL, &err) == 0,
                  "%s", err.msg);
    ck_assert_uint_eq(((Cube__ApiKey *)r)->max_sandboxes, 1);
    ck_assert_uint_eq(((Cube__ApiKey *)r)->sandboxes, 1);
    protobuf_c_message_free_unpacked(r, NULL);
    ck_assert_int_eq(create_for(k->key_id, 0, NULL, &err), -1);
    ck_assert_int_eq(err.code, EDQUOT);
    ck_assert_msg(strstr(err.msg, "at most 1 sandboxes"), "%s", err.msg);
    int running = 0;
    ck_assert_int_eq(node_creates(&f, &running), 2);
    ck_assert_int_eq(running, 1); /* the refused one's sandbox was killed */
    /* a limit out of range, and a key that does not exist */
    lr.max_sandboxes = 1000001;
    ck_assert_int_eq(
        cube_rpc_call(mc, "/cube.Master/SetKeyLimit", &lr.base, &cube__api_key__descriptor, &r, NULL, &err),
        -1);
    ck_assert_int_eq(err.code, EINVAL);
    lr.key_id = "k-none";
    lr.max_sandboxes = 3;
    ck_assert_int_eq(
        cube_rpc_call(mc, "/cube.Master/SetKeyLimit", &lr.base, &cube__api_key__descriptor, &r, NULL, &err),
        -1);
    ck_assert_int_eq(err.code, ENOENT);
    protobuf_c_message_free_unpacked(&k->base, NULL);
    fake_stop(&f);
}
END_TEST

static int fork_for(const char *parent, const char *key_id, uint32_t hint, uint32_t count,
                    Cube__ForkResponse **out, cube_err *err)
{
    Cube__ForkRequest req = CUBE__FORK_REQUEST__INIT;
    req.sandbox_id = (char *)parent;
    req.count = count;
    req.api_key_id = (char *)key_id;
    req.api_key_max_sandboxes = hint;
    ProtobufCMessage *r = NULL;
    int rc = cube_rpc_call(mc, "/cube.Master/ForkSandbox", &req.base, &cube__fork_response__descriptor, &r,
                           NULL, err);
    *out = (Cube__ForkResponse *)r;
    return rc;
}

/* a fork's children are the forking key's: a fork that would take it past its limit is refused whole */
START_TEST(forks_count_against_the_forking_key)
{
    fake_node f;
    fake_start(&f, dir, "node-1");
    node_reports(&f, 8);
    Cube__ApiKey *k = make_key("forker", 3);
    cube_err err = {0};
    char parent[64];
    ck_assert_msg(create_for(k->key_id, 3, parent, &err) == 0, "%s", err.msg);
    Cube__ForkResponse *fr = NULL;
    ck_assert_int_eq(fork_for(parent, k->key_id, 3, 3, &fr, &err), -1);
    ck_assert_int_eq(err.code, EDQUOT);
    ck_assert_msg(strstr(err.msg, "holds 1"), "%s", err.msg);
    pthread_mutex_lock(&f.lock);
    int forks = f.forks;
    pthread_mutex_unlock(&f.lock);
    ck_assert_int_eq(forks, 0); /* refused before the node was asked */
    ck_assert_msg(fork_for(parent, k->key_id, 3, 2, &fr, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(fr->n_results, 2);
    for (size_t i = 0; i < fr->n_results; i++) ck_assert_ptr_nonnull(fr->results[i]->sandbox);
    protobuf_c_message_free_unpacked(&fr->base, NULL);
    ck_assert_int_eq(create_for(k->key_id, 3, NULL, &err), -1);
    ck_assert_int_eq(err.code, EDQUOT);
    protobuf_c_message_free_unpacked(&k->base, NULL);
    fake_stop(&f);
}
END_TEST

START_TEST(a_fork_past_a_limit_the_api_has_not_seen_leaves_nothing_running)
{
    fake_node f;
    fake_start(&f, dir, "node-1");
    node_reports(&f, 8);
    Cube__ApiKey *k = make_key("forker", 2);
    cube_err err = {0};
    char parent[64];
    ck_assert_msg(create_for(k->key_id, 2, parent, &err) == 0, "%s", err.msg);
    Cube__ForkResponse *fr = NULL;
    ck_assert_msg(fork_for(parent, k->key_id, 0, 3, &fr, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(fr->n_results, 3);
    int made = 0, refused = 0;
    for (size_t i = 0; i < fr->n_results; i++) {
        if (fr->results[i]->sandbox)
            made++;
        else if (fr->results[i]->code == 429 && strstr(fr->results[i]->error, "at most 2"))
            refused++;
    }
    ck_assert_int_eq(made, 1);
    ck_assert_int_eq(refused, 2);
    protobuf_c_message_free_unpacked(&fr->base, NULL);
    int running = 0;
    node_creates(&f, &running);
    ck_assert_int_eq(running, 2); /* the parent and one child */
    protobuf_c_message_free_unpacked(&k->base, NULL);
    fake_stop(&f);
}
END_TEST

START_TEST(a_key_carries_its_limit_to_the_api)
{
    Cube__ApiKey *k = make_key("ci", 5);
    ck_assert_uint_eq(k->max_sandboxes, 5);
    Cube__AuthKeyRequest req = CUBE__AUTH_KEY_REQUEST__INIT;
    req.key = k->key;
    ProtobufCMessage *r = NULL;
    cube_err err = {0};
    ck_assert_int_eq(cube_rpc_call(mc, "/cube.Master/AuthKey", &req.base,
                                   &cube__auth_key_response__descriptor, &r, NULL, &err),
                     0);
    ck_assert_str_eq(((Cube__AuthKeyResponse *)r)->key_id, k->key_id);
    ck_assert_uint_eq(((Cube__AuthKeyResponse *)r)->max_sandboxes, 5);
    protobuf_c_message_free_unpacked(r, NULL);
    Cube__CreateKeyRequest big = CUBE__CREATE_KEY_REQUEST__INIT;
    big.name = "too many";
    big.max_sandboxes = 2000000;
    ck_assert_int_eq(
        cube_rpc_call(mc, "/cube.Master/CreateKey", &big.base, &cube__api_key__descriptor, &r, NULL, &err),
        -1);
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_msg(strstr(err.msg, "maxSandboxes"), "%s", err.msg);
    protobuf_c_message_free_unpacked(&k->base, NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("key_limits");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_key_at_its_limit_is_refused_in_words_before_a_node_starts_one);
    tcase_add_test(tc, concurrent_creates_never_pass_a_key_limit);
    tcase_add_test(tc, a_limit_the_api_has_not_seen_yet_still_holds);
    tcase_add_test(tc, forks_count_against_the_forking_key);
    tcase_add_test(tc, a_fork_past_a_limit_the_api_has_not_seen_leaves_nothing_running);
    tcase_add_test(tc, a_key_carries_its_limit_to_the_api);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
