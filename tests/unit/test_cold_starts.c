/* cubelet's cold starts, with a cube-net (a fake one in this process, answering its RPC methods as cube-net
 * does) and a fake cube-hypervisor. The refill thread leases network slots ahead for cold starts, a cold
 * create starts on one of them instead of asking cube-net first, the spent one is replaced, and at a stop
 * every lease goes back; while cube-net refuses leases none is asked for ahead, and once it answers again
 * they are. After a mass kill, a create waits for one teardown to finish, not for the whole line of them. On
 * a node busy with one key's burst, another key's create waits a turn, not the whole burst. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cubelet.h"
#include "cubelet_internal.h"
#include "cubelet.pb-c.h"
#include "fsutil.h"
#include "net.pb-c.h"
#include "testutil.h"
#include "timeutil.h"

/* The fake cube-net's record: every lease given and every release, in order. */
enum { MAX_LEASES = 256 };
static struct {
    pthread_mutex_t lock;
    bool refuse; /* every lease refused (a cube-net that is away) */
    int asked;   /* leases asked for, given or refused */
    char leased[MAX_LEASES][32];
    int nleased;
    char released[MAX_LEASES][32];
    int nreleased;
} net = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int ensure_network(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc;
    const Cube__EnsureNetworkRequest *req = reqp;
    Cube__NetworkSlot *out = respp;
    pthread_mutex_lock(&net.lock);
    net.asked++;
    if (net.refuse || net.nleased == MAX_LEASES) {
        pthread_mutex_unlock(&net.lock);
        return cube_err_set(err, ENOSPC, "no slot left");
    }
    snprintf(net.leased[net.nleased++], 32, "%s", req->sandbox_id);
    pthread_mutex_unlock(&net.lock);
    out->sandbox_id = cube_rpc_strdup(ctx, req->sandbox_id);
    out->netns_path = cube_rpc_strdup(ctx, "/proc/self/ns/net"); /* opened, passed on: the fake ignores it */
    return 0;
}

static int release_network(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)svc, (void)ctx, (void)respp, (void)err;
    const Cube__NetRef *req = reqp;
    pthread_mutex_lock(&net.lock);
    if (net.nreleased < MAX_LEASES) snprintf(net.released[net.nreleased++], 32, "%s", req->sandbox_id);
    pthread_mutex_unlock(&net.lock);
    return 0;
}

static int list_networks(void *svc, cube_rpc_ctx *ctx, const void *req, void *resp, cube_err *err)
{
    (void)svc, (void)ctx, (void)req, (void)resp, (void)err;
    return 0; /* none: a fresh node */
}

#define M(name, fn, req, resp) CUBE_RPC_METHOD("cube.Net", name, fn, req, resp)
static const cube_rpc_method net_methods[] = {
    M("EnsureNetwork", ensure_network, cube__ensure_network_request, cube__network_slot),
    M("ReleaseNetwork", release_network, cube__net_ref, cube__empty),
    M("ListNetworks", list_networks, cube__empty, cube__network_list),
    {0},
};

static char *dir;
static cubelet c;
static cube_rpc_server *cubelet_srv, *net_srv;
static cube_rpc_client *client;

static void template(const char *name, const char *config)
{
    char p[600], cmd[700];
    snprintf(p, sizeof(p), "%s/templates/%s/current/rootfs", dir, name);
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", p);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(p, sizeof(p), "%s/templates/%s/current/config.json", dir, name);
    FILE *f = fopen(p, "we");
    ck_assert_ptr_nonnull(f);
    fputs(config, f);
    fclose(f);
}

static void setup(void)
{
    dir = cube_test_tmpdir();
    static char log[400]; /* the fakes' log: what they were asked (the teardown steps count its Stops) */
    snprintf(log, sizeof(log), "%s/hv.log", dir);
    setenv("FAKE_HV_LOG", log, 1);
    template("pooled", "{\"pool\":2}");
    template("cold", "{\"pool\":0}");
    char a[400];
    cube_err err = {0};
    snprintf(a, sizeof(a), "unix:%s/net.sock", dir);
    net_srv = cube_rpc_server_start(a, net_methods, NULL, 4, &err);
    ck_assert_msg(net_srv != NULL, "%s", err.msg);
    static char hv[600], master[400], net_addr[400]; /* the cubelet keeps these */
    snprintf(hv, sizeof(hv), "%s/fake_hypervisor", getenv("CUBE_TEST_BIN_DIR"));
    snprintf(master, sizeof(master), "unix:%s/no-master.sock", dir);
    snprintf(net_addr, sizeof(net_addr), "%s", a);
    cubelet_config cfg = {.data_dir = dir,
                          .node_id = "n1",
                          .master = master,
                          .hypervisor_bin = hv,
                          .agent_bin = "/bin/true",
                          .net = net_addr,
                          .pool_size = 2,
                          .pool_max = 2,
                          .disk_mb = 16};
    ck_assert_msg(cubelet_init(&c, &cfg, &err) == 0, "%s", err.msg);
    cubelet_start(&c);
    snprintf(a, sizeof(a), "unix:%s/cubelet.sock", dir);
    cubelet_srv =
        cube_rpc_server_start(a, cubelet_methods, &c, 64, &err); /* a burst's creates wait at once */
    ck_assert_msg(cubelet_srv != NULL, "%s", err.msg);
    client = cube_rpc_client_new(a, &err);
    ck_assert_ptr_nonnull(client);
}

static void teardown(void)
{
    cube_rpc_server_stop(net_srv);
    cube_rm_rf(dir);
    free(dir);
}

/* Leases given out and not given back. */
static int held(void)
{
    pthread_mutex_lock(&net.lock);
    int n = net.nleased - net.nreleased;
    pthread_mutex_unlock(&net.lock);
    return n;
}

/* Sandboxes ready in the pool, on the node's list. */
static int pool_ready(void)
{
    int n = 0;
    pthread_mutex_lock(&c.lock);
    for (cl_slot *s = c.slots; s; s = s->next) n += s->state == SLOT_READY;
    pthread_mutex_unlock(&c.lock);
    return n;
}

/* Waits for the pool's two sandboxes and n leases held in all. */
static void wait_held(int n)
{
    for (int i = 0; i < 200 && (held() != n || pool_ready() != 2); i++)
        nanosleep(&(struct timespec){0, 50000000}, NULL);
    ck_assert_int_eq(pool_ready(), 2);
    ck_assert_int_eq(held(), n);
}

static int asked(void)
{
    pthread_mutex_lock(&net.lock);
    int n = net.asked;
    pthread_mutex_unlock(&net.lock);
    return n;
}

static void refuse(bool on)
{
    pthread_mutex_lock(&net.lock);
    net.refuse = on;
    pthread_mutex_unlock(&net.lock);
}

/* A create from the "cold" template (no pool); 0, or -1 with err. */
static int create_cold(const char *id, cube_err *err)
{
    Cube__NodeCreateRequest req = CUBE__NODE_CREATE_REQUEST__INIT;
    req.sandbox_id = (char *)id;
    req.template_id = "cold";
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 20000};
    int rc = cube_rpc_call(client, "/cube.Cubelet/CreateSandbox", &req.base, &cube__node_sandbox__descriptor,
                           &resp, &o, err);
    if (rc == 0) ck_assert(!((Cube__NodeSandbox *)resp)->from_pool);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* The leases no sandbox of the node holds (those leased ahead), into ids; how many. */
static int spare_leases(char ids[][32])
{
    int n = 0;
    pthread_mutex_lock(&net.lock);
    pthread_mutex_lock(&c.lock);
    for (int i = 0; i < net.nleased; i++) {
        bool used = false;
        for (int k = 0; k < net.nreleased && !used; k++) used = strcmp(net.released[k], net.leased[i]) == 0;
        for (cl_slot *s = c.slots; s && !used; s = s->next) used = strcmp(s->slot_id, net.leased[i]) == 0;
        if (!used) snprintf(ids[n++], 32, "%s", net.leased[i]);
    }
    pthread_mutex_unlock(&c.lock);
    pthread_mutex_unlock(&net.lock);
    return n;
}

START_TEST(cold_starts_take_network_slots_leased_ahead)
{
    int ahead = c.cold_max < CL_LEASES_AHEAD ? c.cold_max : CL_LEASES_AHEAD;
    wait_held(2 + ahead); /* the pool's two sandboxes, and the slots for cold starts */
    char spare[MAX_LEASES][32];
    ck_assert_int_eq(spare_leases(spare), ahead);

    cube_err err = {0};
    ck_assert_msg(create_cold("sb-cold", &err) == 0, "%s", err.msg);
    /* it started on one of the slots leased ahead */
    char slot[32] = "";
    pthread_mutex_lock(&c.lock);
    for (cl_slot *s = c.slots; s; s = s->next)
        if (strcmp(s->sandbox_id, "sb-cold") == 0) snprintf(slot, sizeof(slot), "%s", s->slot_id);
    pthread_mutex_unlock(&c.lock);
    bool was_spare = false;
    for (int i = 0; i < ahead; i++) was_spare = was_spare || strcmp(spare[i], slot) == 0;
    ck_assert_msg(was_spare, "sb-cold runs on slot '%s', not one leased ahead", slot);
    wait_held(2 + 1 + ahead); /* and another was leased in its place */

    cube_rpc_client_free(client);
    cube_rpc_server_stop(cubelet_srv);
    cubelet_stop(&c);
    /* every lease went back, once */
    pthread_mutex_lock(&net.lock);
    ck_assert_int_eq(net.nreleased, net.nleased);
    for (int i = 0; i < net.nleased; i++) {
        int back = 0;
        for (int k = 0; k < net.nreleased; k++) back += strcmp(net.released[k], net.leased[i]) == 0;
        ck_assert_msg(back == 1, "lease %s given back %d times", net.leased[i], back);
    }
    pthread_mutex_unlock(&net.lock);
}
END_TEST

START_TEST(leasing_ahead_stops_while_cube_net_refuses_and_resumes_once_it_answers)
{
    int ahead = c.cold_max < CL_LEASES_AHEAD ? c.cold_max : CL_LEASES_AHEAD;
    wait_held(2 + ahead);
    refuse(true);
    /* cold creates take the slots leased ahead; their replacements are refused */
    cube_err err = {0};
    for (int i = 0; i < ahead; i++) {
        char id[32];
        snprintf(id, sizeof(id), "sb-%d", i);
        ck_assert_msg(create_cold(id, &err) == 0, "%s", err.msg);
    }
    for (int i = 0; i < 200 && !__atomic_load_n(&c.leases_failed, __ATOMIC_RELAXED); i++)
        nanosleep(&(struct timespec){0, 50000000}, NULL);
    ck_assert(__atomic_load_n(&c.leases_failed, __ATOMIC_RELAXED));
    /* none left: a cold create asks cube-net itself, and says why it could not start */
    ck_assert_int_eq(create_cold("sb-refused", &err), -1);
    ck_assert_msg(strstr(err.msg, "cube-net") != NULL, "%s", err.msg);
    int n = asked();
    nanosleep(&(struct timespec){0, 500000000}, NULL);
    ck_assert_int_eq(asked(), n); /* and nothing asks again meanwhile */
    refuse(false);
    /* a start's own lease works (this cold create's): the slots for the next are leased ahead again */
    ck_assert_msg(create_cold("sb-back", &err) == 0, "%s", err.msg);
    wait_held(2 + ahead + 1 + ahead);
    cube_rpc_client_free(client);
    cube_rpc_server_stop(cubelet_srv);
    cubelet_stop(&c);
    ck_assert_int_eq(held(), 0);
}
END_TEST

/* Killed sandboxes whose teardowns end one after another (the fake's nth stopped exits n steps after its
 * stop): the line stays over RETIRE_BEHIND for a while, and a create that needs a cold start meanwhile starts
 * once one teardown has ended, while the line is still that long. */
START_TEST(a_create_after_a_mass_kill_waits_for_one_teardown_not_all)
{
    int ahead = c.cold_max < CL_LEASES_AHEAD ? c.cold_max : CL_LEASES_AHEAD;
    wait_held(2 + ahead);
    enum { N = RETIRE_BEHIND + 8 };
    setenv("FAKE_HV_TEARDOWN_STEP_MS", "150", 1); /* read by each fake at its start */
    cube_err err = {0};
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof(id), "k-%d", i);
        ck_assert_msg(create_cold(id, &err) == 0, "%s", err.msg);
    }
    unsetenv("FAKE_HV_TEARDOWN_STEP_MS");
    for (int i = 0; i < N; i++) {
        Cube__NodeSandboxRef ref = CUBE__NODE_SANDBOX_REF__INIT;
        char id[32];
        snprintf(id, sizeof(id), "k-%d", i);
        ref.sandbox_id = id;
        ProtobufCMessage *resp = NULL;
        cube_rpc_call_opts o = {.timeout_ms = 20000};
        ck_assert_msg(cube_rpc_call(client, "/cube.Cubelet/KillSandbox", &ref.base, &cube__empty__descriptor,
                                    &resp, &o, &err) == 0,
                      "%s", err.msg);
        if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    }
    pthread_mutex_lock(&c.lock);
    ck_assert_int_ge(c.nretiring, RETIRE_BEHIND); /* the first teardown ends a step after its stop */
    pthread_mutex_unlock(&c.lock);
    ck_assert_msg(create_cold("after", &err) == 0, "%s", err.msg);
    pthread_mutex_lock(&c.lock);
    int left = c.nretiring;
    pthread_mutex_unlock(&c.lock);
    ck_assert_msg(left >= RETIRE_BEHIND, "the create waited until %d teardowns were left", left);
    cube_rpc_client_free(client);
    cube_rpc_server_stop(cubelet_srv);
    cubelet_stop(&c);
}
END_TEST

typedef struct keyed_create {
    char id[32];
    const char *key;
    int rc;
    int64_t done_ns;
} keyed_create;

static void *create_for_key(void *arg)
{
    keyed_create *k = arg;
    Cube__NodeCreateRequest req = CUBE__NODE_CREATE_REQUEST__INIT;
    req.sandbox_id = k->id;
    req.template_id = "cold";
    req.api_key_id = (char *)k->key;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    cube_rpc_call_opts o = {.timeout_ms = 30000};
    k->rc = cube_rpc_call(client, "/cube.Cubelet/CreateSandbox", &req.base, &cube__node_sandbox__descriptor,
                          &resp, &o, &err);
    k->done_ns = cube_now_mono_ns();
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return NULL;
}

/* On a node busy with one key's burst (cold starts of 150 ms, a few at once), another key's create waits for
 * the next turn, not behind the whole burst. */
START_TEST(another_keys_create_waits_a_turn_not_a_burst)
{
    int ahead = c.cold_max < CL_LEASES_AHEAD ? c.cold_max : CL_LEASES_AHEAD;
    wait_held(2 + ahead);
    setenv("FAKE_HV_START_MS", "150", 1); /* read by each fake at its start */
    enum { N = 40 };
    keyed_create k[N + 1];
    pthread_t t[N + 1];
    for (int i = 0; i <= N; i++) {
        snprintf(k[i].id, sizeof(k[i].id), "%s-%d", i < N ? "burst" : "other", i);
        k[i].key = i < N ? "k-burst" : "k-other";
        if (i == N) nanosleep(&(struct timespec){0, 50000000}, NULL); /* the burst waits already */
        pthread_create(&t[i], NULL, create_for_key, &k[i]);
    }
    for (int i = 0; i <= N; i++) pthread_join(t[i], NULL);
    unsetenv("FAKE_HV_START_MS");
    int before = 0;
    for (int i = 0; i <= N; i++) ck_assert_msg(k[i].rc == 0, "create %s failed", k[i].id);
    for (int i = 0; i < N; i++) before += k[i].done_ns < k[N].done_ns;
    /* the starts under way when it came, and those of the same turn */
    ck_assert_msg(before <= 2 * c.cold_max,
                  "%d of the burst's %d creates were answered before the other key's", before, N);
    cube_rpc_client_free(client);
    cube_rpc_server_stop(cubelet_srv);
    cubelet_stop(&c);
}
END_TEST

int main(void)
{
    if (geteuid() != 0) {
        printf("SKIP test_cold_starts: the fake hypervisor's agent needs a network namespace (root)\n");
        return 77;
    }
    Suite *s = suite_create("cold_starts");
    TCase *tc = tcase_create("with a fake cube-net");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, cold_starts_take_network_slots_leased_ahead);
    tcase_add_test(tc, leasing_ahead_stops_while_cube_net_refuses_and_resumes_once_it_answers);
    tcase_add_test(tc, a_create_after_a_mass_kill_waits_for_one_teardown_not_all);
    tcase_add_test(tc, another_keys_create_waits_a_turn_not_a_burst);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
