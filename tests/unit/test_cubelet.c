/* cubelet's core against a fake cube-hypervisor (tests/helpers/fake_hypervisor.c), through its RPC methods as
 * a master calls them: the pool fills, a create claims from it, creates that find it empty start their own
 * (several at once), a kill stops the hypervisor, pause and resume reach it, a hypervisor that cannot start
 * gives the create its reason. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "common.pb-c.h"
#include "cubelet_node.h"
#include "cubelet.h"
#include "cubelet_internal.h"
#include "disk.h"
#include "sandbox_log.h"
#include "registry.h"
#include "cubelet.pb-c.h"
#include "fsutil.h"
#include "testutil.h"
#include "timeutil.h"

START_TEST(pool_claims_kills_pauses)
{
    wait_count("Start", 2); /* the pooled template's two */
    cube_err err = {0};
    bool pooled = false;
    ck_assert_msg(create("sb-1", "pooled", &pooled, &err) == 0, "%s", err.msg);
    ck_assert(pooled);
    /* the pool refills behind the claim */
    wait_count("Start", 3);
    ck_assert_msg(by_ref("/cube.Cubelet/PauseSandbox", "sb-1", &cube__empty__descriptor, &err) == 0, "%s",
                  err.msg);
    ck_assert_int_eq(count("Pause"), 1);
    ck_assert_msg(by_ref("/cube.Cubelet/ResumeSandbox", "sb-1", &cube__node_sandbox__descriptor, &err) == 0,
                  "%s", err.msg);
    ck_assert_int_eq(count("Resume"), 1);
    int stops = count("Stop");
    ck_assert_msg(by_ref("/cube.Cubelet/KillSandbox", "sb-1", &cube__empty__descriptor, &err) == 0, "%s",
                  err.msg);
    wait_count("Stop", stops + 1);
    wait_count("Exit", 1);
    /* gone: a second kill and a pause say so */
    ck_assert_int_eq(by_ref("/cube.Cubelet/PauseSandbox", "sb-1", &cube__empty__descriptor, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
}
END_TEST

/* A template's size reaches its sandboxes' limits and the create's answer; out of range, the default. */
START_TEST(a_templates_size_is_its_sandboxes_limits)
{
    cube_err err = {0};
    const char *tpl[] = {"sized", "missized"};
    uint32_t cpus[] = {4, 2};
    uint64_t mem[] = {2048, 512}, disk[] = {32, 16}; /* diskMB: more than the node's 16, or out of range */
    for (int i = 0; i < 2; i++) {
        Cube__NodeCreateRequest req = CUBE__NODE_CREATE_REQUEST__INIT;
        req.sandbox_id = (char *)(i ? "sb-missized" : "sb-sized");
        req.template_id = (char *)tpl[i];
        ProtobufCMessage *resp = NULL;
        cube_rpc_call_opts o = {.timeout_ms = 20000};
        ck_assert_msg(cube_rpc_call(client, "/cube.Cubelet/CreateSandbox", &req.base,
                                    &cube__node_sandbox__descriptor, &resp, &o, &err) == 0,
                      "%s", err.msg);
        const Cube__NodeSandbox *sb = (const Cube__NodeSandbox *)resp;
        ck_assert_ptr_nonnull(sb->resources);
        ck_assert_uint_eq(sb->resources->cpu_count, cpus[i]);
        ck_assert_uint_eq(sb->resources->memory_mb, mem[i]);
        ck_assert_uint_eq(sb->resources->disk_mb, disk[i]);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    ck_assert_int_eq(count("Size:4:2048"), 1);
    ck_assert_int_ge(count("Size:2:512"), 1);
    ck_assert_int_eq(count("Disk:32:ext4-32m-i4k2.img"), 1); /* its own empty disk, made when it was loaded */
    ck_assert_int_ge(count("Disk:16:ext4-16m-i4k2.img"), 1);
}
END_TEST

/* A handed-out sandbox's metrics over its life: sampled while it runs (not while paused), oldest first, the
 * last taken at the call; CPU from the hypervisor's cumulative counter (the fake's: half a CPU). */
START_TEST(a_sandbox_keeps_its_metrics_history)
{
    wait_count("Start", 2);
    cube_err err = {0};
    ck_assert_msg(create("sb-m", "pooled", NULL, &err) == 0, "%s", err.msg);
    nanosleep(&(struct timespec){0, 600 * 1000000}, NULL);
    Cube__NodeSandboxRef ref = CUBE__NODE_SANDBOX_REF__INIT;
    ref.sandbox_id = "sb-m";
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 5000};
    ck_assert_msg(cube_rpc_call(client, "/cube.Cubelet/SandboxStatsHistory", &ref.base,
                                &cube__hv_stats_history__descriptor, &resp, &o, &err) == 0,
                  "%s", err.msg);
    const Cube__HvStatsHistory *h = (const Cube__HvStatsHistory *)resp;
    ck_assert_msg(h->n_samples >= 4, "%zu samples after 600 ms at 100 ms", h->n_samples);
    for (size_t i = 1; i < h->n_samples; i++) {
        ck_assert_int_ge(h->samples[i]->sampled_at_ms, h->samples[i - 1]->sampled_at_ms);
        ck_assert_msg(h->samples[i]->cpu_used_pct > 30 && h->samples[i]->cpu_used_pct < 70,
                      "sample %zu: %.1f %%", i, h->samples[i]->cpu_used_pct);
        ck_assert_int_eq(h->samples[i]->mem_used, 1 << 20);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    ck_assert_int_eq(
        by_ref("/cube.Cubelet/SandboxStatsHistory", "sb-none", &cube__hv_stats_history__descriptor, &err),
        -1);
    ck_assert_int_eq(err.code, ENOENT);
    /* the same rounds keep its log on the node bounded: 5 MiB more of it is cut to its tail */
    char logp[4400];
    pthread_mutex_lock(&c.lock);
    cl_slot *s = cl_find_by_sandbox(&c, "sb-m");
    ck_assert_ptr_nonnull(s);
    snprintf(logp, sizeof(logp), "%s/sandbox.log", s->state_dir);
    pthread_mutex_unlock(&c.lock);
    FILE *f = fopen(logp, "a");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 5 * 1024; i++) fprintf(f, "%01023d\n", i);
    fclose(f);
    struct stat st = {0};
    for (int i = 0; i < 100 && stat(logp, &st) == 0 && st.st_size > SANDBOX_LOG_KEEP + 128; i++)
        nanosleep(&(struct timespec){0, 50 * 1000000}, NULL);
    ck_assert_int_le(st.st_size, SANDBOX_LOG_KEEP + 128);
}
END_TEST

typedef struct cold_create {
    char id[32];
    int rc;
    bool pooled;
    cube_err err;
} cold_create;

static void *run_create(void *arg)
{
    cold_create *cc = arg;
    cc->rc = create(cc->id, "cold", &cc->pooled, &cc->err);
    return NULL;
}

START_TEST(creates_without_a_pool_start_their_own)
{
    /* more at once than the node starts at once: each gets a sandbox of its own, none from a pool */
    enum { N = 12 };
    cold_create cc[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        cc[i] = (cold_create){0};
        snprintf(cc[i].id, sizeof(cc[i].id), "cold-%d", i);
        pthread_create(&th[i], NULL, run_create, &cc[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(cc[i].rc == 0, "%s: %s", cc[i].id, cc[i].err.msg);
        ck_assert(!cc[i].pooled);
    }
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    cube_rpc_call_opts o = {.timeout_ms = 5000};
    ck_assert_int_eq(cube_rpc_call(client, "/cube.Cubelet/ListSandboxes", &e.base,
                                   &cube__node_list_response__descriptor, &resp, &o, &err),
                     0);
    ck_assert_uint_eq(((Cube__NodeListResponse *)resp)->n_sandboxes, N);
    protobuf_c_message_free_unpacked(resp, NULL);
}
END_TEST

typedef struct short_create {
    char id[32];
    int rc;
    int64_t took_ms;
    cube_err err;
} short_create;

static void *run_short_create(void *arg)
{
    short_create *sc = arg;
    Cube__NodeCreateRequest req = CUBE__NODE_CREATE_REQUEST__INIT;
    req.sandbox_id = sc->id;
    req.template_id = "cold";
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 2000};
    int64_t t0 = cube_now_mono_ms();
    sc->rc = cube_rpc_call(client, "/cube.Cubelet/CreateSandbox", &req.base, &cube__node_sandbox__descriptor,
                           &resp, &o, &sc->err);
    sc->took_ms = cube_now_mono_ms() - t0;
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return NULL;
}

START_TEST(a_busy_node_says_so_before_its_callers_deadline)
{
    /* every start takes 5 s (CPUs full): the creates beyond what the node starts at once do not start more
     * sandboxes; they answer "busy" (EAGAIN) before their caller's 2 s deadline, not a timeout */
    setenv("FAKE_HV_START_MS", "5000", 1);
    enum { EXTRA = 3 };
    int n = c.cold_max + EXTRA;
    ck_assert_int_le(n, 64);
    short_create sc[64];
    pthread_t th[64];
    for (int i = 0; i < n; i++) {
        sc[i] = (short_create){0};
        snprintf(sc[i].id, sizeof(sc[i].id), "busy-%d", i);
        pthread_create(&th[i], NULL, run_short_create, &sc[i]);
    }
    int busy = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(sc[i].rc, -1); /* none can start within 2 s */
        if (sc[i].err.code == EAGAIN) {
            busy++;
            ck_assert_msg(strstr(sc[i].err.msg, "busy") != NULL, "%s", sc[i].err.msg);
            ck_assert_int_lt(sc[i].took_ms, 2000);
        }
    }
    ck_assert_int_eq(busy, EXTRA);
    unsetenv("FAKE_HV_START_MS");
}
END_TEST

static void *run_pooled_create(void *arg)
{
    short_create *sc = arg;
    sc->rc = create(sc->id, "pooled", NULL, &sc->err);
    return NULL;
}

/* The highest nice value of any thread of pid (field 19 of /proc/PID/task/TID/stat), or -99 if none is read.
 */
static int highest_nice(pid_t pid)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/%d/task", (int)pid);
    DIR *d = opendir(p);
    int top = -99;
    for (struct dirent *de; d && (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        char sp[128], line[512];
        snprintf(sp, sizeof(sp), "/proc/%d/task/%s/stat", (int)pid, de->d_name);
        FILE *f = fopen(sp, "re");
        int nice;
        const char *after = f && fgets(line, sizeof(line), f) ? strrchr(line, ')') : NULL;
        if (after &&
            sscanf(after + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %d", &nice) ==
                1 &&
            nice > top)
            top = nice;
        if (f) fclose(f);
    }
    if (d) closedir(d);
    return top;
}

/* Sandboxes made ahead for the pool start at low priority (nice 10: creates being answered come first); one
 * made while creates wait for it starts at theirs. Claimed, a pooled one runs at normal priority, every
 * thread of its hypervisor and of its init. */
START_TEST(the_pool_refills_at_low_priority_unless_creates_wait)
{
    wait_count("Start", 2);
    ck_assert_int_eq(count("Nice:10"), 2);
    ck_assert_int_eq(count("Nice:0"), 0);
    /* no cold starts: creates the pool cannot serve wait for refills, each a second long */
    pthread_mutex_lock(&c.lock);
    c.cold_max = 0;
    pthread_mutex_unlock(&c.lock);
    setenv("FAKE_HV_START_MS", "1000", 1);
    enum { N = 4 }; /* two claim the pool's; two wait, so the second refill surely starts while one waits */
    short_create sc[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        sc[i] = (short_create){0};
        snprintf(sc[i].id, sizeof(sc[i].id), "wait-%d", i);
        pthread_create(&th[i], NULL, run_pooled_create, &sc[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(sc[i].rc == 0, "%s: %s", sc[i].id, sc[i].err.msg);
    }
    unsetenv("FAKE_HV_START_MS");
    ck_assert_int_ge(count("Nice:0"), 1);
    int claimed = 0;
    pthread_mutex_lock(&c.lock);
    for (cl_slot *x = c.slots; x; x = x->next) {
        if (x->state < SLOT_CLAIMED) continue;
        claimed++;
        ck_assert_int_eq(highest_nice(x->hv), 0);
        ck_assert_int_eq(highest_nice(x->init), 0);
    }
    pthread_mutex_unlock(&c.lock);
    ck_assert_int_eq(claimed, N);
}
END_TEST

static int rpc(const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
               ProtobufCMessage **resp, cube_err *err)
{
    cube_rpc_call_opts o = {.timeout_ms = 20000};
    *resp = NULL;
    return cube_rpc_call(client, method, req, rd, resp, &o, err);
}

static int start_build(const char *tpl, const char *build, const char *json, cube_err *err)
{
    Cube__BuildStartRequest req = CUBE__BUILD_START_REQUEST__INIT;
    req.template_id = (char *)tpl;
    req.build_id = (char *)build;
    req.template_json = (char *)json;
    ProtobufCMessage *resp;
    int rc = rpc("/cube.Cubelet/StartBuild", &req.base, &cube__empty__descriptor, &resp, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* Waits for the build to end; its state, and its log lines joined into logs. */
static void build_wait(const char *build, char *state, char *logs, size_t cap)
{
    for (int i = 0; i < 200; i++) {
        Cube__BuildStatusRequest req = CUBE__BUILD_STATUS_REQUEST__INIT;
        req.build_id = (char *)build;
        ProtobufCMessage *resp;
        cube_err err = {0};
        ck_assert_msg(
            rpc("/cube.Cubelet/GetBuildStatus", &req.base, &cube__build_status__descriptor, &resp, &err) == 0,
            "%s", err.msg);
        const Cube__BuildStatus *st = (const Cube__BuildStatus *)resp;
        snprintf(state, 16, "%s", st->state);
        size_t n = 0;
        logs[0] = '\0';
        for (size_t k = 0; k < st->n_logs && n < cap; k++)
            n += (size_t)snprintf(logs + n, cap - n, "%s\n", st->logs[k]->message);
        protobuf_c_message_free_unpacked(resp, NULL);
        if (strcmp(state, "ready") == 0 || strcmp(state, "error") == 0) return;
        nanosleep(&(struct timespec){0, 50000000}, NULL);
    }
    ck_abort_msg("build %s did not end", build);
}

static void read_text(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "re");
    ck_assert_msg(f != NULL, "%s", path);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
}

/* A build whose steps need no sandbox (ENV): published as a template that creates use at once; a rebuild
 * replaces it; what the build would read is checked before it starts. */
START_TEST(builds_publish_templates_and_check_their_input)
{
    cube_err err = {0};
    char state[16], logs[8192], cfg[8192], p[600];
    ck_assert_msg(
        start_build("built", "b1",
                    "{\"fromTemplate\":\"pooled\",\"steps\":[{\"type\":\"ENV\",\"args\":[\"A\",\"1\"]}]}",
                    &err) == 0,
        "%s", err.msg);
    build_wait("b1", state, logs, sizeof(logs));
    ck_assert_msg(strcmp(state, "ready") == 0, "%s: %s", state, logs);
    ck_assert_msg(strstr(logs, "[1/1] ENV A 1") && strstr(logs, "Template 'built' built in"), "%s", logs);
    snprintf(p, sizeof(p), "%s/templates/built/current/config.json", dir);
    read_text(p, cfg, sizeof(cfg));
    ck_assert_msg(strstr(cfg, "\"A\":\t\"1\"") && strstr(cfg, "\"id\":\t\"b1\""), "%s", cfg);
    ck_assert_msg(create("sb-built", "built", NULL, &err) == 0, "%s", err.msg);

    /* the same build id again is refused; a new build replaces the template */
    ck_assert_int_eq(start_build("built", "b1", "{\"fromTemplate\":\"pooled\"}", &err), -1);
    ck_assert_int_eq(err.code, EEXIST);
    ck_assert_int_eq(
        start_build("built", "b2",
                    "{\"fromTemplate\":\"pooled\",\"steps\":[{\"type\":\"ENV\",\"args\":[\"A\",\"2\"]}]}",
                    &err),
        0);
    build_wait("b2", state, logs, sizeof(logs));
    ck_assert_str_eq(state, "ready");
    read_text(p, cfg, sizeof(cfg));
    ck_assert_msg(strstr(cfg, "\"A\":\t\"2\"") && strstr(cfg, "\"id\":\t\"b2\""), "%s", cfg);
    ck_assert_msg(create("sb-built2", "built", NULL, &err) == 0, "%s", err.msg);

    const char *bad[][2] = {
        {"{\"fromTemplate\":\"no-such\"}", "fromTemplate"},
        {"{\"fromImage\":\"Not An Image!\"}", "fromImage"},
        {"{\"fromImage\":\"python:3\",\"fromImageRegistry\":{\"type\":\"aws\"}}", "fromImageRegistry.type"},
        {"{\"fromImage\":\"python:3\",\"fromImageRegistry\":{\"type\":\"registry\"}}", "fromImageRegistry"},
        {"{\"fromTemplate\":\"pooled\",\"steps\":[{\"type\":\"FROB\",\"args\":[]}]}", "steps[0].type"},
        {"{\"fromTemplate\":\"pooled\",\"steps\":[{\"type\":\"COPY\",\"args\":[\"a\",\"/b\"]}]}",
         "steps[0].filesHash"},
        {"{\"fromTemplate\":\"pooled\",\"steps\":[{\"type\":\"USER\",\"args\":[\"a b\"]}]}", "steps[0].args"},
        {"{\"fromTemplate\":\"pooled\",\"readyCmd\":\"true\"}", "readyCmd"},
        {"{\"fromTemplate\":\"pooled\",\"startCmd\":7}", "startCmd"},
        {"[1]", "template"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_int_eq(start_build("built", "b3", bad[i][0], &err), -1);
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, bad[i][1]), "%s: %s", bad[i][0], err.msg);
    }
    Cube__BuildStatusRequest sr = CUBE__BUILD_STATUS_REQUEST__INIT;
    sr.build_id = "b3";
    ProtobufCMessage *resp;
    ck_assert_int_eq(
        rpc("/cube.Cubelet/GetBuildStatus", &sr.base, &cube__build_status__descriptor, &resp, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
}
END_TEST

static int tags_rpc(const char *op, const char *name, const char *target, const char *tag,
                    Cube__TemplateTagsResponse **out, cube_err *err)
{
    Cube__TemplateTagsRequest req = CUBE__TEMPLATE_TAGS_REQUEST__INIT;
    char *tags[] = {(char *)tag};
    req.op = (char *)op;
    req.name = (char *)name;
    req.target = (char *)(target ? target : "");
    req.n_tags = tag ? 1 : 0;
    req.tags = tags;
    ProtobufCMessage *resp = NULL;
    int rc =
        rpc("/cube.Cubelet/TemplateTags", &req.base, &cube__template_tags_response__descriptor, &resp, err);
    if (out)
        *out = (Cube__TemplateTagsResponse *)resp;
    else if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* "a:b,c:d": the template's tags and their builds, as listed */
static void tags_of(const char *name, char *out, size_t cap)
{
    cube_err err = {0};
    Cube__TemplateTagsResponse *r;
    ck_assert_msg(tags_rpc("list", name, NULL, NULL, &r, &err) == 0, "%s", err.msg);
    /* sorted by tag, for a stable answer */
    size_t n = 0;
    out[0] = '\0';
    for (char last[64] = ""; n < r->n_tags; n++) {
        const Cube__TemplateTag *best = NULL;
        for (size_t i = 0; i < r->n_tags; i++)
            if (strcmp(r->tags[i]->tag, last) > 0 && (!best || strcmp(r->tags[i]->tag, best->tag) < 0))
                best = r->tags[i];
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s:%s", len ? "," : "", best->tag, best->build_id);
        snprintf(last, sizeof(last), "%s", best->tag);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* E2B's tags: a tagged build leaves the default where it was; "name:tag" starts that tag's build; a tag moves
 * to another build at once; a removed tag starts nothing; the default cannot be removed, only moved. */
START_TEST(tags_name_builds)
{
    cube_err err = {0};
    char state[16], logs[8192], tags[512];
    ck_assert_int_eq(start_build("tagged", "t1", "{\"fromTemplate\":\"pooled\"}", &err), 0);
    build_wait("t1", state, logs, sizeof(logs));
    ck_assert_msg(strcmp(state, "ready") == 0, "%s", logs);
    Cube__BuildStartRequest req = CUBE__BUILD_START_REQUEST__INIT;
    char *v2[] = {"v2", "stable"};
    req.template_id = "tagged";
    req.build_id = "t2";
    req.template_json = "{\"fromTemplate\":\"pooled\",\"steps\":[{\"type\":\"ENV\",\"args\":[\"A\",\"2\"]}]}";
    req.n_tags = 2;
    req.tags = v2;
    ProtobufCMessage *resp = NULL;
    ck_assert_msg(rpc("/cube.Cubelet/StartBuild", &req.base, &cube__empty__descriptor, &resp, &err) == 0,
                  "%s", err.msg);
    protobuf_c_message_free_unpacked(resp, NULL);
    build_wait("t2", state, logs, sizeof(logs));
    ck_assert_msg(strcmp(state, "ready") == 0, "%s", logs);
    tags_of("tagged", tags, sizeof(tags));
    ck_assert_str_eq(tags, "default:t1,stable:t2,v2:t2");
    ck_assert_msg(create("sb-v2", "tagged:v2", NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(create("sb-default", "tagged", NULL, &err) == 0, "%s", err.msg);

    /* moved: the default to v2's build; a new tag on the default's */
    Cube__TemplateTagsResponse *r;
    ck_assert_msg(tags_rpc("assign", "tagged", "tagged:v2", "default", &r, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(r->build_id, "t2");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    ck_assert_int_eq(tags_rpc("assign", "tagged", "tagged", "prod", NULL, &err), 0);
    tags_of("tagged", tags, sizeof(tags));
    ck_assert_str_eq(tags, "default:t2,prod:t2,stable:t2,v2:t2");
    ck_assert_msg(create("sb-prod", "tagged:prod", NULL, &err) == 0, "%s", err.msg);

    /* removed: it starts nothing; the default is not removed; bad input is named */
    ck_assert_int_eq(tags_rpc("remove", "tagged", NULL, "prod", NULL, &err), 0);
    ck_assert_int_eq(create("sb-gone", "tagged:prod", NULL, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_int_eq(tags_rpc("remove", "tagged", NULL, "prod", NULL, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_int_eq(tags_rpc("remove", "tagged", NULL, "default", NULL, &err), -1);
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_int_eq(tags_rpc("assign", "tagged", "tagged:nope", "x", NULL, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_int_eq(tags_rpc("assign", "tagged", "other:v2", "x", NULL, &err), -1);
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_int_eq(tags_rpc("assign", "tagged", "tagged", "Bad Tag", NULL, &err), -1);
    ck_assert(err.code == EINVAL && strstr(err.msg, "tags"));
    ck_assert_int_eq(tags_rpc("list", "no-such", NULL, NULL, NULL, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);

    /* deletion: not while a sandbox of it (a tag's included) is handed out, nor while a template stands on
     * it; then with its tags, at once */
    Cube__TemplateRef ref = CUBE__TEMPLATE_REF__INIT;
    ref.template_id = "tagged";
    ck_assert_int_eq(rpc("/cube.Cubelet/DeleteTemplate", &ref.base, &cube__empty__descriptor, &resp, &err),
                     -1);
    ck_assert_msg(err.code == EBUSY && strstr(err.msg, "sb-"), "%s", err.msg);
    const char *sbs[] = {"sb-v2", "sb-default", "sb-prod"};
    for (int i = 0; i < 3; i++)
        ck_assert_msg(by_ref("/cube.Cubelet/KillSandbox", sbs[i], &cube__empty__descriptor, &err) == 0, "%s",
                      err.msg);
    ref.template_id = "pooled";
    ck_assert_int_eq(rpc("/cube.Cubelet/DeleteTemplate", &ref.base, &cube__empty__descriptor, &resp, &err),
                     -1);
    ck_assert_msg(err.code == EBUSY && strstr(err.msg, "built on"), "%s", err.msg);
    ref.template_id = "tagged";
    ck_assert_msg(rpc("/cube.Cubelet/DeleteTemplate", &ref.base, &cube__empty__descriptor, &resp, &err) == 0,
                  "%s", err.msg);
    protobuf_c_message_free_unpacked(resp, NULL);
    ck_assert_int_eq(create("sb-after", "tagged:v2", NULL, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_int_eq(create("sb-after", "tagged", NULL, &err), -1);
    ck_assert_int_eq(rpc("/cube.Cubelet/DeleteTemplate", &ref.base, &cube__empty__descriptor, &resp, &err),
                     -1);
    ck_assert_int_eq(err.code, ENOENT);
}
END_TEST

/* ExportTemplate chunk by chunk from this node, ImportTemplate of them as name `as`; 0, or -1 with err. */
static int copy_template(const char *name, const char *as, const char *bad_digest, cube_err *err)
{
    for (uint64_t off = 0;;) {
        Cube__TemplateExportRequest er = CUBE__TEMPLATE_EXPORT_REQUEST__INIT;
        er.name = (char *)name;
        er.build_id = "b1";
        er.offset = off;
        ProtobufCMessage *chunk = NULL, *r = NULL;
        if (rpc("/cube.Cubelet/ExportTemplate", &er.base, &cube__template_chunk__descriptor, &chunk, err) < 0)
            return -1;
        Cube__TemplateChunk in = *(Cube__TemplateChunk *)chunk;
        in.name = (char *)as;
        if (bad_digest) in.digest = (char *)bad_digest;
        int rc = rpc("/cube.Cubelet/ImportTemplate", &in.base, &cube__empty__descriptor, &r, err);
        off += in.data.len;
        bool last = in.last;
        if (r) protobuf_c_message_free_unpacked(r, NULL);
        protobuf_c_message_free_unpacked(chunk, NULL);
        if (rc < 0 || last) return rc;
    }
}

/* A build copied to a node that lacks it: its layers arrive as they were (owners, modes, a whiteout, an
 * opaque directory's xattr, a symlink, a file over one chunk), on the base's rootfs there, checked by digest.
 */
START_TEST(a_build_is_copied_whole_to_another_node)
{
    char p[700], cmd[900];
    snprintf(p, sizeof(p), "%s/lay-layer", dir);
    snprintf(
        cmd, sizeof(cmd),
        "set -e; mkdir -p %s/etc/opaque && echo hi > %s/etc/hello && chown 101000:101000 %s/etc/hello && "
        "chmod 640 %s/etc/hello && mknod %s/etc/gone c 0 0 && ln -s hello %s/etc/link && "
        "head -c 2500000 /dev/urandom > %s/big",
        p, p, p, p, p, p, p);
    ck_assert_int_eq(system(cmd), 0);
    char opaque[800];
    snprintf(opaque, sizeof(opaque), "%s/etc/opaque", p);
    ck_assert_int_eq(setxattr(opaque, "trusted.overlay.opaque", "y", 1, 0), 0);
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/templates/lay/b1 && ln -s b1 %s/templates/lay/current", dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    char cfgp[700], cfg[1400];
    snprintf(cfgp, sizeof(cfgp), "%s/templates/lay/b1/config.json", dir);
    snprintf(
        cfg, sizeof(cfg),
        "{\"name\":\"lay\",\"id\":\"b1\",\"fromTemplate\":\"pooled\",\"fromBuild\":\"p1\",\"layers\":\"%s\","
        "\"user\":\"user\",\"pool\":0}",
        p);
    write_text(cfgp, cfg);
    cube_err err = {0};
    /* a copy whose bytes do not match its digest is refused, and leaves nothing */
    ck_assert_int_eq(copy_template("lay", "lay-bad",
                                   "00000000000000000000000000000000000000000000000000000000000"
                                   "00000",
                                   &err),
                     -1);
    ck_assert_msg((err.code == EBADMSG || err.code == EINVAL) && strstr(err.msg, "sha256"), "%s", err.msg);
    snprintf(p, sizeof(p), "%s/templates/lay-bad/current", dir);
    ck_assert_int_eq(access(p, F_OK), -1);
    /* the real copy */
    ck_assert_msg(copy_template("lay", "lay-copy", NULL, &err) == 0, "%s", err.msg);
    char got[700];
    snprintf(got, sizeof(got), "%s/templates/lay-copy/current/layers/0", dir);
    snprintf(cmd, sizeof(cmd),
             "set -e; cd %s; test \"$(stat -c '%%u %%a' etc/hello)\" = '101000 640'; test \"$(cat "
             "etc/hello)\" = hi; "
             "test \"$(stat -c '%%F %%t %%T' etc/gone)\" = 'character special file 0 0'; "
             "test \"$(readlink etc/link)\" = hello; cmp big %s/lay-layer/big",
             got, dir);
    ck_assert_msg(system(cmd) == 0, "the copy differs: %s", cmd);
    char xv[8] = "";
    snprintf(opaque, sizeof(opaque), "%s/etc/opaque", got);
    ck_assert_int_eq(getxattr(opaque, "trusted.overlay.opaque", xv, sizeof(xv)), 1);
    ck_assert_int_eq(xv[0], 'y');
    snprintf(p, sizeof(p), "%s/templates/lay-copy/current/config.json", dir);
    read_text(p, cfg, sizeof(cfg));
    ck_assert_msg(strstr(cfg, "templates/pooled/current/rootfs") && strstr(cfg, "lay-copy/b1/layers/0"), "%s",
                  cfg);
    bool pooled;
    ck_assert_msg(create("sb-copy", "lay-copy", &pooled, &err) == 0, "%s", err.msg);
    /* there already: said; no base of that build here: said */
    ck_assert_int_eq(copy_template("lay", "lay-copy", NULL, &err), -1);
    ck_assert_int_eq(err.code, EEXIST);
    snprintf(cmd, sizeof(cmd), "sed -i 's/\"p1\"/\"p9\"/' %s", cfgp);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "rm -f %s/exports/*", dir);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(copy_template("lay", "lay-other", NULL, &err), -1);
    ck_assert_msg(err.code == ENOENT && strstr(err.msg, "another build"), "%s", err.msg);
}
END_TEST

/* A COPY step's files arrive in chunks, in order, and are there once the last one is */
START_TEST(build_files_arrive_in_order)
{
    cube_err err = {0};
    ProtobufCMessage *resp;
    Cube__BuildFileChunk ch = CUBE__BUILD_FILE_CHUNK__INIT;
    ch.hash = "h1";
    ch.data.data = (uint8_t *)"abc";
    ch.data.len = 3;
    ck_assert_int_eq(rpc("/cube.Cubelet/PutBuildFile", &ch.base, &cube__empty__descriptor, &resp, &err), 0);
    protobuf_c_message_free_unpacked(resp, NULL);
    Cube__BuildFileRef ref = CUBE__BUILD_FILE_REF__INIT;
    ref.hash = "h1";
    ck_assert_int_eq(
        rpc("/cube.Cubelet/GetBuildFile", &ref.base, &cube__build_file_state__descriptor, &resp, &err), 0);
    ck_assert(!((Cube__BuildFileState *)resp)->present);
    protobuf_c_message_free_unpacked(resp, NULL);
    ch.offset = 5; /* a gap */
    ck_assert_int_eq(rpc("/cube.Cubelet/PutBuildFile", &ch.base, &cube__empty__descriptor, &resp, &err), -1);
    ck_assert_int_eq(err.code, EINVAL);
    ch.offset = 3;
    ch.data.data = (uint8_t *)"def";
    ch.last = true;
    ck_assert_int_eq(rpc("/cube.Cubelet/PutBuildFile", &ch.base, &cube__empty__descriptor, &resp, &err), 0);
    protobuf_c_message_free_unpacked(resp, NULL);
    ck_assert_int_eq(
        rpc("/cube.Cubelet/GetBuildFile", &ref.base, &cube__build_file_state__descriptor, &resp, &err), 0);
    ck_assert(((Cube__BuildFileState *)resp)->present);
    protobuf_c_message_free_unpacked(resp, NULL);
    char p[600], text[64];
    snprintf(p, sizeof(p), "%s/build-files/h1", dir);
    read_text(p, text, sizeof(text));
    ck_assert_str_eq(text, "abcdef");
    ref.hash = "../x";
    ck_assert_int_eq(
        rpc("/cube.Cubelet/GetBuildFile", &ref.base, &cube__build_file_state__descriptor, &resp, &err), -1);
    ck_assert_int_eq(err.code, EINVAL);
}
END_TEST

START_TEST(a_hypervisor_that_cannot_start_says_why)
{
    cube_err err = {0};
    ck_assert_int_eq(create("sb-b", "broken", NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "rootfs is broken"), "%s", err.msg);
    ck_assert_int_eq(create("sb-x", "no-such-template", NULL, &err), -1);
    ck_assert_int_eq(err.code, ENOENT);
    /* nothing of the failed start is left: the only state directories are the pool's two */
    wait_count("Start", 2);
    char p[400];
    snprintf(p, sizeof(p), "%s/sandboxes", dir);
    DIR *d = opendir(p);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *de; (de = readdir(d));) n += de->d_name[0] != '.';
    closedir(d);
    ck_assert_int_eq(n, 2);
}
END_TEST

/* fromImage names as Docker reads them: the registry, the repository, the tag or digest; http only to
 * loopback */
START_TEST(image_names_are_read_as_docker_reads_them)
{
    const char *good[][5] = {
        {"python:3", "registry-1.docker.io", "library/python", "3", "https"},
        {"ubuntu", "registry-1.docker.io", "library/ubuntu", "latest", "https"},
        {"oven/bun:1", "registry-1.docker.io", "oven/bun", "1", "https"},
        {"ghcr.io/o/r/x:tag", "ghcr.io", "o/r/x", "tag", "https"},
        {"localhost:5000/tiny", "localhost:5000", "tiny", "latest", "http"},
        {"127.0.0.1:5077/team/tiny:v1", "127.0.0.1:5077", "team/tiny", "v1", "http"},
        {"127.evil.example/x:1", "127.evil.example", "x", "1", "https"},
        {"r.example:443/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
         "r.example:443", "a", "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
         "https"},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        reg_image img;
        cube_err err = {0};
        ck_assert_msg(reg_parse(good[i][0], &img, &err) == 0, "%s: %s", good[i][0], err.msg);
        ck_assert_str_eq(img.host, good[i][1]);
        ck_assert_str_eq(img.repo, good[i][2]);
        ck_assert_str_eq(img.ref, good[i][3]);
        ck_assert_int_eq(img.plain, strcmp(good[i][4], "http") == 0);
    }
    const char *bad[] = {"", "Not An Image!", "Upper/Case", "a//b", "x@sha256:12", "../x", "a:", "/x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        reg_image img;
        cube_err err = {0};
        ck_assert_msg(reg_parse(bad[i], &img, &err) < 0, "'%s' accepted", bad[i]);
        ck_assert_msg(strncmp(err.msg, "fromImage", 9) == 0, "%s", err.msg);
    }
}
END_TEST

/* An image's declared size against the node's free disk: refused before a byte is pulled, saying why */
START_TEST(an_image_too_big_for_the_node_is_refused_before_pulling)
{
    cube_err err = {0};
    cJSON *small = cJSON_Parse("{\"layers\":[{\"digest\":\"x\",\"size\":1000},{\"size\":2000}]}");
    ck_assert_msg(reg_check_space(small, "/tmp", &err) == 0, "%s", err.msg);
    cJSON *huge = cJSON_Parse("{\"layers\":[{\"size\":1e15}]}");
    ck_assert_int_lt(reg_check_space(huge, "/tmp", &err), 0);
    ck_assert_int_eq(err.code, ENOSPC);
    ck_assert_msg(strstr(err.msg, "1000000000 MB compressed") && strstr(err.msg, "MB free"), "%s", err.msg);
    cJSON *sizeless = cJSON_Parse("{\"layers\":[{\"digest\":\"x\"}]}");
    ck_assert_int_lt(reg_check_space(sizeless, "/tmp", &err), 0);
    ck_assert_int_eq(err.code, EPROTO);
    cJSON_Delete(small);
    cJSON_Delete(huge);
    cJSON_Delete(sizeless);
}
END_TEST

/* ---- the volume content API on the node ---- */

static bool listed(const Cube__VolumeFileResponse *r, const char *path)
{
    for (size_t i = 0; i < r->n_entries; i++)
        if (strcmp(r->entries[i]->path, path) == 0) return true;
    return false;
}

START_TEST(volume_files_stay_inside_the_volume)
{
    char host[700];
    Cube__VolumeFileResponse *r;
    /* the part file of an upload whose end never came goes once a day old, when another upload starts there
     */
    char stale[700], cmd[1600];
    snprintf(stale, sizeof(stale), "%s/volumes/vol1/a/b", dir);
    snprintf(
        cmd, sizeof(cmd),
        "mkdir -p %s && touch -d '2 days ago' %s/.cube-upload-old00000 && touch %s/.cube-upload-new00000",
        stale, stale, stale);
    ck_assert_int_eq(system(cmd), 0);
    /* an upload in two chunks makes its parents and lands whole, owned by the sandboxes' user */
    vf_ok(&(vf_args){.op = "write", .path = "/a/b/hello.txt", .upload_id = "up000001", .data = "hello "}, &r);
    cube__volume_file_response__free_unpacked(r, NULL);
    snprintf(host, sizeof(host), "%s/volumes/vol1/a/b/hello.txt", dir);
    ck_assert_int_eq(access(host, F_OK), -1); /* not there before its last chunk */
    snprintf(cmd, sizeof(cmd), "test ! -e %s/.cube-upload-old00000 && test -e %s/.cube-upload-new00000",
             stale, stale);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(
        vf_errno(&(vf_args){
            .op = "write", .path = "/a/b/hello.txt", .upload_id = "up000001", .offset = 3, .data = "x"}),
        EINVAL); /* out of order */
    vf_ok(&(vf_args){.op = "write",
                     .path = "/a/b/hello.txt",
                     .upload_id = "up000001",
                     .offset = 6,
                     .data = "world",
                     .last = true},
          &r);
    ck_assert_int_eq(r->n_entries, 1);
    ck_assert_str_eq(r->entries[0]->path, "/a/b/hello.txt");
    ck_assert_str_eq(r->entries[0]->type, "file");
    ck_assert_int_eq(r->entries[0]->size, 11);
    ck_assert_int_eq(r->entries[0]->uid, 1000);
    ck_assert_int_eq(r->entries[0]->mode, 0644);
    cube__volume_file_response__free_unpacked(r, NULL);
    struct stat st;
    ck_assert_int_eq(stat(host, &st), 0);
    ck_assert_int_eq(st.st_uid, 101000);
    vf_ok(&(vf_args){.op = "read", .path = "a/b/hello.txt"}, &r);
    ck_assert_int_eq(r->data.len, 11);
    ck_assert(memcmp(r->data.data, "hello world", 11) == 0);
    ck_assert(r->eof);
    cube__volume_file_response__free_unpacked(r, NULL);
    vf_ok(&(vf_args){.op = "read", .path = "a/b/hello.txt", .offset = 6}, &r);
    ck_assert_int_eq(r->data.len, 5);
    cube__volume_file_response__free_unpacked(r, NULL);

    /* listings go as deep as asked */
    vf_ok(&(vf_args){.op = "list", .path = "/", .depth = 2}, &r);
    ck_assert(listed(r, "/a") && listed(r, "/a/b") && !listed(r, "/a/b/hello.txt"));
    cube__volume_file_response__free_unpacked(r, NULL);
    vf_ok(&(vf_args){.op = "list", .path = "/a", .depth = 5}, &r);
    ck_assert(listed(r, "/a/b/hello.txt"));
    cube__volume_file_response__free_unpacked(r, NULL);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "list", .path = "/a/b/hello.txt"}), EINVAL);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "stat", .path = "/nope"}), ENOENT);

    /* directories: parents only with force; an existing one only with force */
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "mkdir", .path = "/x/y"}), ENOENT);
    vf_ok(&(vf_args){.op = "mkdir", .path = "/x/y", .force = true, .mode = 0700}, &r);
    ck_assert_str_eq(r->entries[0]->type, "directory");
    ck_assert_int_eq(r->entries[0]->mode, 0700);
    cube__volume_file_response__free_unpacked(r, NULL);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "mkdir", .path = "/x/y"}), EEXIST);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "mkdir", .path = "/x/y", .force = true}), 0);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "mkdir", .path = "/a/b/hello.txt", .force = true}), EEXIST);

    /* owner and mode, in the sandboxes' ids */
    vf_ok(&(vf_args){.op = "chmeta", .path = "/a/b/hello.txt", .uid = -2, .mode = 0600}, &r);
    ck_assert_int_eq(r->entries[0]->uid, 0);
    ck_assert_int_eq(r->entries[0]->gid, 1000);
    ck_assert_int_eq(r->entries[0]->mode, 0600);
    cube__volume_file_response__free_unpacked(r, NULL);
    ck_assert_int_eq(stat(host, &st), 0);
    ck_assert_int_eq(st.st_uid, 100000);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "chmeta", .path = "/a", .uid = 70000}), EINVAL);

    /* what a sandbox plants cannot lead outside: symlinks to the host's root, "..", a FIFO */
    char link[760];
    snprintf(link, sizeof(link), "%s/volumes/vol1/esc", dir);
    ck_assert_int_eq(symlink("/", link), 0);
    snprintf(link, sizeof(link), "%s/volumes/vol1/passwd", dir);
    ck_assert_int_eq(symlink("/etc/passwd", link), 0);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "read", .path = "esc/etc/passwd"}), ENOENT);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "read", .path = "../../../../etc/passwd"}), ENOENT);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "read", .path = "passwd"}), ENOENT);
    vf_ok(&(vf_args){.op = "stat", .path = "passwd"}, &r);
    ck_assert_str_eq(r->entries[0]->type, "symlink");
    ck_assert_str_eq(r->entries[0]->target, "/etc/passwd");
    cube__volume_file_response__free_unpacked(r, NULL);
    struct stat before, after;
    ck_assert_int_eq(stat("/etc/passwd", &before), 0);
    vf_ok(&(vf_args){.op = "write", .path = "passwd", .upload_id = "up000002", .data = "mine", .last = true},
          &r);
    cube__volume_file_response__free_unpacked(r, NULL);
    ck_assert_int_eq(stat("/etc/passwd", &after), 0);
    ck_assert_int_eq(before.st_size, after.st_size);
    ck_assert_int_eq(lstat(link, &st), 0);
    ck_assert(S_ISREG(st.st_mode)); /* the link itself was replaced */
    vf_ok(
        &(vf_args){
            .op = "write", .path = "esc/tmp/cube-escape", .upload_id = "up000003", .data = "x", .last = true},
        &r);
    cube__volume_file_response__free_unpacked(r, NULL);
    ck_assert_int_eq(access("/tmp/cube-escape", F_OK), -1);
    snprintf(link, sizeof(link), "%s/volumes/vol1/tmp/cube-escape", dir);
    ck_assert_int_eq(access(link, F_OK), 0);
    snprintf(link, sizeof(link), "%s/volumes/vol1/fifo", dir);
    ck_assert_int_eq(mkfifo(link, 0666), 0);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "read", .path = "fifo"}), EINVAL);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "write", .path = "/q", .upload_id = "bad/id"}), EINVAL);

    /* removal: trees through descriptors; the root and ".." are refused; a link goes, not its target */
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "remove", .path = "esc"}), 0);
    ck_assert_int_eq(access("/etc/passwd", F_OK), 0);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "remove", .path = "/a"}), 0);
    snprintf(host, sizeof(host), "%s/volumes/vol1/a", dir);
    ck_assert_int_eq(access(host, F_OK), -1);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "remove", .path = "/"}), EINVAL);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "remove", .path = "x/.."}), EINVAL);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "remove", .path = "/a"}), ENOENT);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "frobnicate", .path = "/"}), EINVAL);

    /* the whole volume */
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "destroy"}), 0);
    snprintf(host, sizeof(host), "%s/volumes/vol1", dir);
    ck_assert_int_eq(access(host, F_OK), -1);
    ck_assert_int_eq(access("/etc/passwd", F_OK), 0);
}
END_TEST

/* With sandboxes_tmpfs (cubelet's main sets it), the sandboxes' state directories (sockets, logs, claims:
 * made and removed with every sandbox) are on a tmpfs of their own; a stop that leaves none unmounts it; a
 * directory that holds something when cubelet starts is left on the disk as it is. */
static bool is_tmpfs(const char *path)
{
    struct statfs fs;
    return statfs(path, &fs) == 0 && fs.f_type == TMPFS_MAGIC;
}

START_TEST(sandbox_state_lives_on_a_tmpfs)
{
    start_node(true);
    char sbs[400];
    snprintf(sbs, sizeof(sbs), "%s/sandboxes", dir);
    ck_assert(is_tmpfs(sbs));
    wait_count("Start", 2);
    cube_err err = {0};
    ck_assert_msg(create("sb-t", "pooled", NULL, &err) == 0, "%s", err.msg);
    /* the claim is recorded in the sandbox's state directory, on the tmpfs */
    DIR *d = opendir(sbs);
    ck_assert_ptr_nonnull(d);
    int claims = 0;
    for (struct dirent *de; (de = readdir(d));) {
        char p[700];
        snprintf(p, sizeof(p), "%s/%s/claim", sbs, de->d_name);
        if (access(p, F_OK) == 0 && is_tmpfs(p)) claims++;
    }
    closedir(d);
    ck_assert_int_eq(claims, 1);
    stop_node();
    ck_assert(!is_tmpfs(sbs));
    ck_assert_int_eq(cube_dir_empty(sbs), 1);

    /* something left in the directory (another run's files): kept where it is, no tmpfs over it */
    char left[500];
    snprintf(left, sizeof(left), "%s/left-behind", sbs);
    ck_assert_int_eq(mkdir(left, 0700), 0);
    cubelet_config cfg = {.data_dir = dir,
                          .node_id = "n2",
                          .master = "unix:/nonexistent.sock",
                          .hypervisor_bin = "/bin/false",
                          .agent_bin = "/bin/true",
                          .disk_mb = 16,
                          .sandboxes_tmpfs = true};
    cubelet c2;
    ck_assert_msg(cubelet_init(&c2, &cfg, &err) == 0, "%s", err.msg);
    ck_assert(!is_tmpfs(sbs));
    cubelet_stop(&c2);
    cube_rm_rf(dir);
    free(dir);
}
END_TEST

/* A node at the kernel's defaults for the node-wide counts sandboxes share (pid_max 32768 below 32 CPUs,
 * threads-max and file-max sized from memory, epoll watches and pipe pages per host uid): cubelet raises
 * each so that a few sandboxes at their own limits cannot take all of one. */
static long long read_long(const char *path)
{
    FILE *f = fopen(path, "re");
    long long v = -1;
    if (f && fscanf(f, "%lld", &v) != 1) v = -1;
    if (f) fclose(f);
    return v;
}

static void write_long(const char *path, long long v)
{
    FILE *f = fopen(path, "we");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_gt(fprintf(f, "%lld\n", v), 0);
    ck_assert_int_eq(fclose(f), 0);
}

START_TEST(the_nodes_shared_limits_outgrow_its_sandboxes)
{
    write_long("/proc/sys/kernel/pid_max", 32768);              /* the kernel's default on a small machine */
    write_long("/proc/sys/kernel/threads-max", 192735);         /* what it sizes for 24 GiB */
    write_long("/proc/sys/fs/file-max", 2466239);               /* the same */
    write_long("/proc/sys/fs/epoll/max_user_watches", 5491645); /* the same */
    write_long("/proc/sys/fs/pipe-user-pages-soft", 16384);     /* the kernel's default */
    write_long("/proc/sys/fs/aio-max-nr", 65536);               /* the kernel's default */
    write_long("/proc/sys/kernel/pty/max", 4096);               /* the kernel's default */
    start_node(false);
    ck_assert_int_ge(read_long("/proc/sys/kernel/pid_max"), 4194304);
    ck_assert_int_ge(read_long("/proc/sys/kernel/threads-max"), 4194304);
    ck_assert_int_eq(read_long("/proc/sys/fs/file-max"), LLONG_MAX);
    ck_assert_int_eq(read_long("/proc/sys/fs/epoll/max_user_watches"), LLONG_MAX);
    ck_assert_int_eq(read_long("/proc/sys/fs/pipe-user-pages-soft"), 0);
    ck_assert_int_eq(read_long("/proc/sys/fs/aio-max-nr"), LLONG_MAX);
    ck_assert_int_eq(read_long("/proc/sys/kernel/pty/max"), 1048576);
    stop_node();
    cube_rm_rf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    if (geteuid() != 0) {
        printf("SKIP test_cubelet: the fake hypervisor's agent needs a network namespace (root)\n");
        return 77;
    }
    Suite *s = suite_create("cubelet");
    TCase *tc = tcase_create("with a fake hypervisor");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, pool_claims_kills_pauses);
    tcase_add_test(tc, the_pool_refills_at_low_priority_unless_creates_wait);
    tcase_add_test(tc, creates_without_a_pool_start_their_own);
    tcase_add_test(tc, a_busy_node_says_so_before_its_callers_deadline);
    tcase_add_test(tc, a_hypervisor_that_cannot_start_says_why);
    tcase_add_test(tc, a_sandbox_keeps_its_metrics_history);
    tcase_add_test(tc, a_templates_size_is_its_sandboxes_limits);
    tcase_add_test(tc, builds_publish_templates_and_check_their_input);
    tcase_add_test(tc, build_files_arrive_in_order);
    tcase_add_test(tc, image_names_are_read_as_docker_reads_them);
    tcase_add_test(tc, an_image_too_big_for_the_node_is_refused_before_pulling);
    tcase_add_test(tc, volume_files_stay_inside_the_volume);
    tcase_add_test(tc, tags_name_builds);
    tcase_add_test(tc, a_build_is_copied_whole_to_another_node);
    suite_add_tcase(s, tc);
    TCase *tmpfs = tcase_create("state on a tmpfs");
    tcase_set_timeout(tmpfs, 60);
    tcase_add_test(tmpfs, sandbox_state_lives_on_a_tmpfs);
    tcase_add_test(tmpfs, the_nodes_shared_limits_outgrow_its_sandboxes);
    suite_add_tcase(s, tmpfs);
    return cube_run_suite(s);
}
