/* cubemastercli: the operator's command line over cube-master's RPC.
 *   cubemastercli [--data DIR | --master ADDR] [--json] sandbox list | sandbox info ID | sandbox kill ID |
 *                                sandbox snapshot ID [NAME] | sandbox rollback ID SNAPSHOT |
 *                                node list | node wait | node drain|undrain|remove NODE | key create [NAME]
 * [--max-sandboxes N] | key list | key limit ID N | key revoke ID | tpl list */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "master.pb-c.h"
#include "rpc.h"
#include "fsutil.h"
#include "id.h"
#include "timeutil.h"

static int json_out;

static int call(cube_rpc_client *c, const char *method, const ProtobufCMessage *in,
                const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out)
{
    cube_err err = {0};
    cube_rpc_call_opts o = {.timeout_ms = 30000};
    if (cube_rpc_call(c, method, in, rd, out, &o, &err) < 0) {
        fprintf(stderr, "cubemastercli: %s\n", err.msg);
        return err.code == ENOENT ? 3 : 1;
    }
    return 0;
}

static void print_json(cJSON *o)
{
    char *s = cJSON_Print(o);
    puts(s);
    free(s);
    cJSON_Delete(o);
}

static cJSON *sandbox_obj(const Cube__Sandbox *sb)
{
    cJSON *o = cJSON_CreateObject();
    char ts[CUBE_RFC3339_MAX];
    cJSON_AddStringToObject(o, "sandboxID", sb->sandbox_id);
    cJSON_AddStringToObject(o, "templateID", sb->template_id);
    cJSON_AddStringToObject(o, "node", sb->node_id);
    cJSON_AddStringToObject(o, "state",
                            sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED ? "paused" : "running");
    cube_rfc3339_format(sb->started_at_ms, ts);
    cJSON_AddStringToObject(o, "startedAt", ts);
    cube_rfc3339_format(sb->end_at_ms, ts);
    cJSON_AddStringToObject(o, "endAt", ts);
    cJSON *md = cJSON_AddObjectToObject(o, "metadata");
    for (size_t i = 0; i < sb->n_metadata; i++)
        cJSON_AddStringToObject(md, sb->metadata[i]->key, sb->metadata[i]->value);
    /* the API key whose create or fork made it (what its limit counts); "" when made otherwise */
    cJSON_AddStringToObject(o, "keyID", sb->api_key_id ? sb->api_key_id : "");
    return o;
}

static int sandbox_cmd(cube_rpc_client *c, int argc, char **argv)
{
    ProtobufCMessage *out = NULL;
    int rc;
    if (argc == 1 && strcmp(argv[0], "list") == 0) {
        Cube__ListSandboxesRequest r = CUBE__LIST_SANDBOXES_REQUEST__INIT;
        r.limit = 1000;
        if ((rc = call(c, "/cube.Master/ListSandboxes", &r.base, &cube__list_sandboxes_response__descriptor,
                       &out)))
            return rc;
        Cube__ListSandboxesResponse *l = (Cube__ListSandboxesResponse *)out;
        if (json_out) {
            cJSON *arr = cJSON_CreateArray();
            for (size_t i = 0; i < l->n_sandboxes; i++)
                cJSON_AddItemToArray(arr, sandbox_obj(l->sandboxes[i]));
            print_json(arr);
        } else {
            printf("%-22s %-20s %-8s %-12s %-24s %s\n", "SANDBOX", "TEMPLATE", "STATE", "NODE", "ENDS",
                   "KEY");
            for (size_t i = 0; i < l->n_sandboxes; i++) {
                Cube__Sandbox *sb = l->sandboxes[i];
                char ts[CUBE_RFC3339_MAX];
                cube_rfc3339_format(sb->end_at_ms, ts);
                printf("%-22s %-20s %-8s %-12s %-24s %s\n", sb->sandbox_id, sb->template_id,
                       sb->state == CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED ? "paused" : "running",
                       sb->node_id, ts, sb->api_key_id && *sb->api_key_id ? sb->api_key_id : "-");
            }
        }
    } else if (argc == 2 && strcmp(argv[0], "info") == 0) {
        Cube__SandboxRef r = CUBE__SANDBOX_REF__INIT;
        r.sandbox_id = argv[1];
        if ((rc = call(c, "/cube.Master/GetSandbox", &r.base, &cube__get_sandbox_response__descriptor, &out)))
            return rc;
        print_json(sandbox_obj(((Cube__GetSandboxResponse *)out)->sandbox));
    } else if (argc == 2 && strcmp(argv[0], "kill") == 0) {
        Cube__SandboxRef r = CUBE__SANDBOX_REF__INIT;
        r.sandbox_id = argv[1];
        if ((rc = call(c, "/cube.Master/KillSandbox", &r.base, &cube__kill_sandbox_response__descriptor,
                       &out)))
            return rc;
        if (!json_out) printf("killed %s\n", argv[1]);
    } else if ((argc == 2 || argc == 3) && strcmp(argv[0], "snapshot") == 0) {
        Cube__CreateSnapshotRequest r = CUBE__CREATE_SNAPSHOT_REQUEST__INIT;
        r.sandbox_id = argv[1];
        r.name = argc == 3 ? argv[2] : NULL;
        if ((rc = call(c, "/cube.Master/CreateSnapshot", &r.base, &cube__snapshot_info__descriptor, &out)))
            return rc;
        const char *sid = ((Cube__SnapshotInfo *)out)->snapshot_id;
        if (json_out) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "snapshotID", sid);
            print_json(o);
        } else {
            printf("%s\n", sid);
        }
    } else if (argc == 3 && strcmp(argv[0], "rollback") == 0) {
        /* in place: same id, address and network; its files become the snapshot's, its processes restart */
        Cube__RollbackRequest r = CUBE__ROLLBACK_REQUEST__INIT;
        r.sandbox_id = argv[1];
        r.snapshot_id = argv[2];
        if ((rc = call(c, "/cube.Master/RollbackSandbox", &r.base, &cube__get_sandbox_response__descriptor,
                       &out)))
            return rc;
        if (json_out)
            print_json(sandbox_obj(((Cube__GetSandboxResponse *)out)->sandbox));
        else
            printf("rolled back %s to %s\n", argv[1], argv[2]);
    } else {
        fprintf(stderr,
                "cubemastercli: sandbox list | sandbox info ID | sandbox kill ID | sandbox snapshot ID "
                "[NAME] | sandbox rollback ID SNAPSHOT\n");
        return 2;
    }
    if (out) protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

/* a key's sandbox limit as typed: digits only, 0 for no limit (its range is cube-master's to check) */
static int parse_limit(const char *s, uint32_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || errno || v > UINT32_MAX || !isdigit((unsigned char)*s)) {
        fprintf(stderr, "cubemastercli: max sandboxes '%s' must be a number (0: no limit)\n", s);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static void key_print(const Cube__ApiKey *k)
{
    char limit[16] = "-";
    if (k->max_sandboxes) snprintf(limit, sizeof(limit), "%u", k->max_sandboxes);
    printf("key %s (%s): sandbox limit %s\n", k->key_id, k->name, limit);
}

static int key_cmd(cube_rpc_client *c, int argc, char **argv)
{
    ProtobufCMessage *out = NULL;
    int rc;
    if (argc >= 1 && argc <= 4 && strcmp(argv[0], "create") == 0) {
        Cube__CreateKeyRequest r = CUBE__CREATE_KEY_REQUEST__INIT;
        r.name = "cli";
        for (int i = 1; i < argc; i++) {
            if (strcmp(argv[i], "--max-sandboxes") == 0 && i + 1 < argc) {
                if (parse_limit(argv[++i], &r.max_sandboxes) < 0) return 2;
            } else if (argv[i][0] != '-' && i == 1) {
                r.name = argv[i];
            } else {
                fprintf(stderr, "cubemastercli: key create [NAME] [--max-sandboxes N]\n");
                return 2;
            }
        }
        if ((rc = call(c, "/cube.Master/CreateKey", &r.base, &cube__api_key__descriptor, &out))) return rc;
        Cube__ApiKey *k = (Cube__ApiKey *)out;
        if (json_out) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "keyID", k->key_id);
            cJSON_AddStringToObject(o, "name", k->name);
            cJSON_AddStringToObject(o, "key", k->key);
            cJSON_AddNumberToObject(o, "maxSandboxes", k->max_sandboxes);
            print_json(o);
        } else {
            printf("key %s (%s): %s\nkeep it: it is stored hashed and cannot be shown again\n", k->key_id,
                   k->name, k->key);
            if (k->max_sandboxes)
                printf("it may hold at most %u sandboxes at once, and manages no keys\n", k->max_sandboxes);
        }
    } else if (argc == 1 && strcmp(argv[0], "list") == 0) {
        Cube__Empty e = CUBE__EMPTY__INIT;
        if ((rc = call(c, "/cube.Master/ListKeys", &e.base, &cube__list_keys_response__descriptor, &out)))
            return rc;
        Cube__ListKeysResponse *l = (Cube__ListKeysResponse *)out;
        cJSON *arr = cJSON_CreateArray();
        if (!json_out) printf("%-20s %-20s %-9s %-9s %s\n", "KEY", "NAME", "LIMIT", "SANDBOXES", "CREATED");
        for (size_t i = 0; i < l->n_keys; i++) {
            const Cube__ApiKey *k = l->keys[i];
            char ts[CUBE_RFC3339_MAX], limit[16] = "-";
            cube_rfc3339_format(k->created_at_ms, ts);
            if (k->max_sandboxes) snprintf(limit, sizeof(limit), "%u", k->max_sandboxes);
            if (!json_out) printf("%-20s %-20s %-9s %-9u %s\n", k->key_id, k->name, limit, k->sandboxes, ts);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "keyID", k->key_id);
            cJSON_AddStringToObject(o, "name", k->name);
            cJSON_AddStringToObject(o, "createdAt", ts);
            cJSON_AddNumberToObject(o, "maxSandboxes", k->max_sandboxes);
            cJSON_AddNumberToObject(o, "sandboxes", k->sandboxes);
            cJSON_AddItemToArray(arr, o);
        }
        if (json_out)
            print_json(arr);
        else
            cJSON_Delete(arr);
    } else if (argc == 3 && strcmp(argv[0], "limit") == 0) {
        Cube__KeyLimitRequest r = CUBE__KEY_LIMIT_REQUEST__INIT;
        r.key_id = argv[1];
        if (parse_limit(argv[2], &r.max_sandboxes) < 0) return 2;
        if ((rc = call(c, "/cube.Master/SetKeyLimit", &r.base, &cube__api_key__descriptor, &out))) return rc;
        const Cube__ApiKey *k = (const Cube__ApiKey *)out;
        if (json_out) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "keyID", k->key_id);
            cJSON_AddNumberToObject(o, "maxSandboxes", k->max_sandboxes);
            cJSON_AddNumberToObject(o, "sandboxes", k->sandboxes);
            print_json(o);
        } else {
            key_print(k);
            if (k->max_sandboxes && k->sandboxes > k->max_sandboxes)
                printf("it holds %u now: none is ended, its creates are refused until it holds fewer\n",
                       k->sandboxes);
        }
    } else if (argc == 2 && strcmp(argv[0], "revoke") == 0) {
        Cube__KeyRef r = CUBE__KEY_REF__INIT;
        r.key_id = argv[1];
        if ((rc = call(c, "/cube.Master/RevokeKey", &r.base, &cube__empty__descriptor, &out))) return rc;
        if (!json_out) printf("revoked %s\n", argv[1]);
    } else {
        fprintf(stderr,
                "cubemastercli: key create [NAME] [--max-sandboxes N] | key list | key limit ID N | key "
                "revoke ID\n");
        return 2;
    }
    if (out) protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

/* A node answers (and, unless an operator drained it, takes creates), and with `pool`, every template's pool
 * is as deep as the node keeps it. */
static int node_ready(const Cube__NodeInfo *n, int pool)
{
    if (n->lost || n->silent) return 0;
    if (n->draining) return 1;
    for (size_t k = 0; pool && k < n->n_pool_target; k++) {
        uint32_t ready = 0;
        for (size_t j = 0; j < n->n_pool_ready; j++)
            if (strcmp(n->pool_ready[j]->key, n->pool_target[k]->key) == 0) ready = n->pool_ready[j]->value;
        if (ready < n->pool_target[k]->value) return 0;
    }
    return 1;
}

/* `node wait`: until COUNT nodes (default 1) are ready (with --pool: their pools full), or the timeout
 * (default 60 s): what `deploy/cube up` waits for before it says the stack is up. Start-up tooling, so it
 * polls. */
static int node_wait(cube_rpc_client *c, int argc, char **argv)
{
    long count = 1, timeout_s = 60;
    int pool = 0;
    for (int i = 0; i < argc; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--pool") == 0) {
            pool = 1;
        } else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            count = strtol(argv[++i], &end, 10);
            if (*end || count < 1 || count > 10000) {
                fprintf(stderr, "cubemastercli: --count must be 1..10000, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            timeout_s = strtol(argv[++i], &end, 10);
            if (*end || timeout_s < 0 || timeout_s > 86400) {
                fprintf(stderr, "cubemastercli: --timeout must be 0..86400 seconds, got '%s'\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "cubemastercli: node wait [--count N] [--pool] [--timeout S]: unknown '%s'\n",
                    argv[i]);
            return 2;
        }
    }
    int64_t until = cube_now_mono_ms() + timeout_s * 1000;
    char last[256] = "no answer from the master";
    for (;;) {
        Cube__Empty e = CUBE__EMPTY__INIT;
        ProtobufCMessage *out = NULL;
        cube_err err = {0};
        cube_rpc_call_opts o = {.timeout_ms = 2000};
        if (cube_rpc_call(c, "/cube.Master/ListNodes", &e.base, &cube__list_nodes_response__descriptor, &out,
                          &o, &err) == 0) {
            const Cube__ListNodesResponse *l = (const Cube__ListNodesResponse *)out;
            long ready = 0;
            for (size_t i = 0; i < l->n_nodes; i++) ready += node_ready(l->nodes[i], pool);
            snprintf(last, sizeof(last), "%ld of %zu node(s) ready%s, %ld wanted", ready, l->n_nodes,
                     pool ? " with full pools" : "", count);
            protobuf_c_message_free_unpacked(out, NULL);
            if (ready >= count) {
                if (!json_out) printf("%s\n", last);
                return 0;
            }
        } else {
            snprintf(last, sizeof(last), "%s", err.msg);
        }
        if (cube_now_mono_ms() >= until) break;
        usleep(100 * 1000);
    }
    fprintf(stderr, "cubemastercli: node wait: timed out after %ld s: %s\n", timeout_s, last);
    return 1;
}

static int node_cmd(cube_rpc_client *c, int argc, char **argv)
{
    if (argc == 2 &&
        (!strcmp(argv[0], "drain") || !strcmp(argv[0], "undrain") || !strcmp(argv[0], "remove"))) {
        Cube__NodeRef ref = CUBE__NODE_REF__INIT;
        ref.node_id = argv[1];
        ref.undo = strcmp(argv[0], "undrain") == 0;
        ProtobufCMessage *out = NULL;
        int rc =
            call(c, strcmp(argv[0], "remove") == 0 ? "/cube.Master/RemoveNode" : "/cube.Master/DrainNode",
                 &ref.base, &cube__empty__descriptor, &out);
        if (out) protobuf_c_message_free_unpacked(out, NULL);
        const char *state = !strcmp(argv[0], "remove") ? "removed" : ref.undo ? "ready" : "draining";
        if (rc == 0 && json_out) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "node", argv[1]);
            cJSON_AddStringToObject(o, "state", state);
            print_json(o);
        } else if (rc == 0) {
            printf("%s %s\n", argv[1], state);
        }
        return rc;
    }
    if (argc >= 1 && strcmp(argv[0], "wait") == 0) return node_wait(c, argc - 1, argv + 1);
    if (argc != 1 || strcmp(argv[0], "list") != 0) {
        fprintf(stderr,
                "cubemastercli: node list | node wait [--count N] [--pool] [--timeout S] | node drain "
                "NODE | node undrain NODE | node remove NODE\n");
        return 2;
    }
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *out = NULL;
    int rc = call(c, "/cube.Master/ListNodes", &e.base, &cube__list_nodes_response__descriptor, &out);
    if (rc) return rc;
    Cube__ListNodesResponse *l = (Cube__ListNodesResponse *)out;
    cJSON *arr = cJSON_CreateArray();
    if (!json_out)
        printf("%-16s %-9s %-8s %-8s %-11s %-15s %-28s %s\n", "NODE", "STATE", "BACKEND", "RUNNING",
               "LOAD/CPUS", "LEFT MEM/DISK", "ADDRESS", "POOL (ready/target)");
    for (size_t i = 0; i < l->n_nodes; i++) {
        Cube__NodeInfo *n = l->nodes[i];
        const char *state = n->lost ? "lost" : n->silent ? "silent" : n->draining ? "draining" : "ready";
        if (!json_out) {
            char load[32] = "-";
            if (n->capacity && n->capacity->cpu_count)
                snprintf(load, sizeof(load), "%.2f/%u", n->load1, n->capacity->cpu_count);
            char left[48] = "-"; /* what is left for sandboxes beyond the node's reserves, GB */
            if (n->room_reported)
                snprintf(left, sizeof(left), "%.1fG/%.0fG", (double)n->memory_left_mb / 1024,
                         (double)n->disk_left_mb / 1024);
            printf("%-16s %-9s %-8s %-8u %-11s %-15s %-28s", n->node_id, state, n->backend, n->running, load,
                   left, n->address);
            for (size_t k = 0; k < n->n_pool_target; k++) {
                uint32_t ready = 0;
                for (size_t j = 0; j < n->n_pool_ready; j++)
                    if (strcmp(n->pool_ready[j]->key, n->pool_target[k]->key) == 0)
                        ready = n->pool_ready[j]->value;
                printf(" %s %u/%u", n->pool_target[k]->key, ready, n->pool_target[k]->value);
            }
            printf("\n");
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "node", n->node_id);
        cJSON_AddStringToObject(o, "state", state);
        cJSON_AddStringToObject(o, "backend", n->backend);
        cJSON_AddNumberToObject(o, "running", n->running);
        cJSON_AddStringToObject(o, "address", n->address);
        cJSON_AddNumberToObject(o, "load1", n->load1);
        cJSON_AddNumberToObject(o, "cpus", n->capacity ? n->capacity->cpu_count : 0);
        cJSON_AddNumberToObject(o, "memory_mb", n->capacity ? (double)n->capacity->memory_mb : 0);
        cJSON_AddNumberToObject(o, "memory_available_mb", (double)n->mem_available_mb);
        if (n->room_reported) { /* for new sandboxes, beyond the node's reserves (below 0: into them) */
            cJSON_AddNumberToObject(o, "memory_left_mb", (double)n->memory_left_mb);
            cJSON_AddNumberToObject(o, "disk_left_mb", (double)n->disk_left_mb);
        }
        cJSON *pool = cJSON_AddObjectToObject(o, "pool_ready"); /* template -> sandboxes ready in its pool */
        for (size_t k = 0; k < n->n_pool_ready; k++)
            cJSON_AddNumberToObject(pool, n->pool_ready[k]->key, n->pool_ready[k]->value);
        cJSON *target = cJSON_AddObjectToObject(o, "pool_target"); /* template -> slots it keeps ready */
        for (size_t k = 0; k < n->n_pool_target; k++)
            cJSON_AddNumberToObject(target, n->pool_target[k]->key, n->pool_target[k]->value);
        cJSON_AddItemToArray(arr, o);
    }
    if (json_out)
        print_json(arr);
    else
        cJSON_Delete(arr);
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

/* Background builds: `create-from-image ... --async` prints a job id and builds in a detached process whose
 * output goes to <data>/jobs/<id>.log; when it ends, <id>.status holds its exit code. `tpl watch --job-id ID`
 * follows the log until then and exits with that code. In the builder, returns 0 to go on building. */
static int start_job(const char *data, const char *name)
{
    char dir[4200], id[32], rnd[12], logp[4300], statusp[4300];
    snprintf(dir, sizeof(dir), "%s/jobs", data);
    mkdir(dir, 0755);
    cube_err err = {0};
    if (cube_id_new(0, rnd, 10, &err) < 0) {
        fprintf(stderr, "cubemastercli: %s\n", err.msg);
        return -1;
    }
    snprintf(id, sizeof(id), "tpl-%s", rnd);
    snprintf(logp, sizeof(logp), "%s/%s.log", dir, id);
    snprintf(statusp, sizeof(statusp), "%s/%s.status", dir, id);
    int logfd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (logfd < 0) {
        fprintf(stderr, "cubemastercli: cannot create %s: %s\n", logp, strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(logfd);
        return -1;
    }
    if (pid > 0) {
        close(logfd);
        if (json_out)
            printf("{\"jobID\": \"%s\", \"template\": \"%s\"}\n", id, name);
        else
            printf("job %s building template %s; follow it: cubemastercli tpl watch --job-id %s\n", id, name,
                   id);
        exit(0);
    }
    setsid();
    dup2(logfd, 1);
    dup2(logfd, 2);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    /* a second fork: the builder execs, this process records its exit code */
    pid_t b = fork();
    if (b == 0) return 0;
    int st = 0;
    waitpid(b, &st, 0);
    FILE *f = fopen(statusp, "w");
    if (f) {
        fprintf(f, "%d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 1);
        fclose(f);
    }
    exit(0);
}

static int tpl_watch(const char *data, const char *id)
{
    char logp[4300], statusp[4300];
    if (strchr(id, '/') || strncmp(id, "tpl-", 4) != 0) {
        fprintf(stderr, "cubemastercli: no job '%s'\n", id);
        return 3;
    }
    snprintf(logp, sizeof(logp), "%s/jobs/%s.log", data, id);
    snprintf(statusp, sizeof(statusp), "%s/jobs/%s.status", data, id);
    FILE *log = fopen(logp, "r");
    if (!log) {
        fprintf(stderr, "cubemastercli: no job '%s'\n", id);
        return 3;
    }
    char buf[4096];
    for (;;) {
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), log)) > 0) fwrite(buf, 1, n, stdout);
        fflush(stdout);
        clearerr(log);
        FILE *sf = fopen(statusp, "r");
        if (sf) {
            int code = 1;
            if (fscanf(sf, "%d", &code) != 1) code = 1;
            fclose(sf);
            while ((n = fread(buf, 1, sizeof(buf), log)) > 0) fwrite(buf, 1, n, stdout);
            fclose(log);
            printf("job %s %s\n", id, code == 0 ? "done" : "failed");
            return code == 0 ? 0 : 1;
        }
        usleep(200 * 1000); /* an operator's terminal, not a request path */
    }
}

/* A template build's tool, watched: on a terminal one live line (the time so far and the tool's last line of
 * output), else each line as it comes (a job's log); then how long it took, or its last lines when it failed.
 * Returns the tool's exit code. */
static int run_build_tool(const char *label, char *const argv[])
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return 1;
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        execv(argv[0], argv);
        fprintf(stderr, "cubemastercli: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(p[1]);
    bool tty = isatty(2);
    int64_t t0 = cube_now_mono_ms();
    char tail[20][256], line[256]; /* the last lines, for a failure */
    int ntail = 0;
    size_t ll = 0;
    for (;;) {
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        int pr =
            poll(&pf, 1, tty ? 500 : -1); /* an operator's terminal: the clock ticks while the tool works */
        char buf[4096];
        ssize_t n = pr > 0 ? read(p[0], buf, sizeof(buf)) : 0;
        if (pr > 0 && n <= 0) break;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n' && ll < sizeof(line) - 1) {
                if (buf[i] != '\r') line[ll++] = buf[i];
                continue;
            }
            if (buf[i] != '\n') continue; /* a long line: the rest of it is dropped */
            line[ll] = '\0';
            ll = 0;
            snprintf(tail[ntail % 20], sizeof(tail[0]), "%s", line);
            ntail++;
            if (!tty) fprintf(stderr, "%s\n", line);
        }
        if (tty)
            fprintf(stderr, "\r%s ... %.0f s  %.60s\033[K", label, (double)(cube_now_mono_ms() - t0) / 1000,
                    ntail ? tail[(ntail - 1) % 20] : "");
    }
    close(p[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    double secs = (double)(cube_now_mono_ms() - t0) / 1000;
    if (tty) fprintf(stderr, "\r\033[K");
    if (code == 0) {
        fprintf(stderr, "%s: done in %.1f s\n", label, secs);
        return 0;
    }
    fprintf(stderr, "%s failed after %.1f s (exit %d)%s\n", label, secs, code,
            tty ? "; its last lines:" : "");
    for (int i = ntail > 20 ? ntail - 20 : 0; tty && i < ntail; i++) fprintf(stderr, "  %s\n", tail[i % 20]);
    return code;
}

/* The build's process ends here, whatever runs in it: an --async builder is a fork of a process with an RPC
 * client, whose threads did not come along; going back through its teardown would wait for them forever. */
static _Noreturn void build_done(int code)
{
    fflush(stdout);
    fflush(stderr);
    _exit(code);
}

/* Templates are files on the node (DATA/templates/NAME/current/...); building one runs cube-template (image
 * files) or deploy/templates/build (debootstrap). */
static int tpl_cmd(cube_rpc_client *c, const char *data, int argc, char **argv)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/templates", data);
    if (argc == 3 && strcmp(argv[0], "watch") == 0 && strcmp(argv[1], "--job-id") == 0)
        return tpl_watch(data, argv[2]);
    int async = argc >= 1 && strcmp(argv[argc - 1], "--async") == 0;
    if (async) argc--;
    if (argc >= 1 && strcmp(argv[0], "create-from-image") == 0) {
        /* each sandbox's size: --cpus N, --memory-mb N (image sources only) */
        const char *cpus = NULL, *mem = NULL;
        while (argc >= 6 &&
               (strcmp(argv[argc - 2], "--cpus") == 0 || strcmp(argv[argc - 2], "--memory-mb") == 0)) {
            if (strcmp(argv[argc - 2], "--cpus") == 0)
                cpus = argv[argc - 1];
            else
                mem = argv[argc - 1];
            argc -= 2;
        }
        if (argc != 4 ||
            (strcmp(argv[2], "--oci") && strcmp(argv[2], "--docker-save") && strcmp(argv[2], "--rootfs") &&
             strcmp(argv[2], "--debootstrap")) ||
            ((cpus || mem) && strcmp(argv[2], "--debootstrap") == 0)) {
            fprintf(stderr,
                    "cubemastercli: tpl create-from-image NAME (--oci LAYOUT | --docker-save TAR | --rootfs "
                    "TAR|DIR) [--cpus N] [--memory-mb N] | tpl create-from-image NAME --debootstrap "
                    "base|code-interpreter-v1\n");
            return 2;
        }
        char tool[4200];
        if (async && start_job(data, argv[1]) < 0) return 1; /* the parent printed the job id and exited */
        if (strcmp(argv[2], "--debootstrap") == 0) {
            if (strcmp(argv[1], argv[3]) != 0) {
                fprintf(stderr, "cubemastercli: a debootstrap template is named after its recipe (%s)\n",
                        argv[3]);
                return 2;
            }
            cube_sibling_path("cube-template-build", "../../deploy/templates/build", tool, sizeof(tool));
            char label[160];
            snprintf(label, sizeof(label), "building %s with debootstrap (minutes the first time)", argv[3]);
            char *targv[] = {tool, argv[3], "--data", (char *)data, NULL};
            build_done(run_build_tool(label, targv));
        }
        cube_sibling_path("cube-template", "../cube-hypervisor/cube-template", tool, sizeof(tool));
        char label[160];
        snprintf(label, sizeof(label), "importing %s from %s", argv[1], argv[3]);
        char *targv[] = {tool,
                         "import",
                         argv[1],
                         "--data",
                         (char *)data,
                         argv[2],
                         argv[3],
                         "--cpus",
                         (char *)(cpus ? cpus : "2"),
                         "--memory-mb",
                         (char *)(mem ? mem : "512"),
                         NULL};
        build_done(run_build_tool(label, targv));
    }
    if (argc == 2 && strcmp(argv[0], "delete") == 0) {
        /* through the masters: every node that holds it deletes it (with its tags), unless a sandbox uses it
         */
        Cube__TemplateRef r = CUBE__TEMPLATE_REF__INIT;
        r.template_id = argv[1];
        ProtobufCMessage *out = NULL;
        int rc = call(c, "/cube.Master/DeleteTemplate", &r.base, &cube__empty__descriptor, &out);
        if (out) protobuf_c_message_free_unpacked(out, NULL);
        if (rc == 0 && !json_out) printf("deleted template %s\n", argv[1]);
        return rc;
    }
    if (argc >= 2 &&
        (strcmp(argv[0], "tags") == 0 || strcmp(argv[0], "tag") == 0 || strcmp(argv[0], "untag") == 0)) {
        /* tags NAME | tag NAME[:TAG] TAG... (the tags move to that build) | untag NAME TAG... */
        bool list = strcmp(argv[0], "tags") == 0, assign = strcmp(argv[0], "tag") == 0;
        if ((list && argc != 2) || (!list && argc < 3)) {
            fprintf(stderr,
                    "cubemastercli: tpl tags NAME | tpl tag NAME[:TAG] TAG... | tpl untag NAME TAG...\n");
            return 2;
        }
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(argv[1], ":"), argv[1]);
        Cube__TemplateTagsRequest r = CUBE__TEMPLATE_TAGS_REQUEST__INIT;
        r.name = name;
        r.op = list ? "list" : assign ? "assign" : "remove";
        r.target = argv[1];
        r.n_tags = list ? 0 : (size_t)(argc - 2);
        r.tags = argv + 2;
        ProtobufCMessage *out = NULL;
        int rc =
            call(c, "/cube.Master/TemplateTags", &r.base, &cube__template_tags_response__descriptor, &out);
        if (rc) return rc;
        const Cube__TemplateTagsResponse *t = (const Cube__TemplateTagsResponse *)out;
        cJSON *arr = cJSON_CreateArray();
        if (list && !json_out) printf("%-24s %s\n", "TAG", "BUILD");
        for (size_t i = 0; i < t->n_tags; i++) {
            if (!json_out) printf("%-24s %s\n", t->tags[i]->tag, t->tags[i]->build_id);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "tag", t->tags[i]->tag);
            cJSON_AddStringToObject(o, "buildID", t->tags[i]->build_id);
            cJSON_AddItemToArray(arr, o);
        }
        if (!list && !json_out)
            printf("%s %s\n", assign ? "tagged build" : "untagged", assign ? t->build_id : name);
        if (json_out && list)
            print_json(arr);
        else
            cJSON_Delete(arr);
        protobuf_c_message_free_unpacked(out, NULL);
        return 0;
    }
    if (argc == 2 && strcmp(argv[0], "info") == 0) {
        char cfgp[4600];
        snprintf(cfgp, sizeof(cfgp), "%s/%s/current/config.json", dir, argv[1]);
        if (strchr(argv[1], '/') || access(cfgp, R_OK) != 0) {
            fprintf(stderr, "cubemastercli: template '%s' not found\n", argv[1]);
            return 3;
        }
        FILE *f = fopen(cfgp, "re");
        char buf[8192];
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f) fclose(f);
        buf[n] = '\0';
        fputs(buf, stdout);
        return 0;
    }
    if (argc != 1 || strcmp(argv[0], "list") != 0) {
        fprintf(stderr, "cubemastercli: tpl list | tpl info NAME | tpl delete NAME | tpl tags NAME | tpl tag "
                        "NAME[:TAG] TAG... "
                        "| tpl untag NAME TAG... | tpl create-from-image NAME ...\n");
        return 2;
    }
    DIR *d = opendir(dir);
    cJSON *arr = cJSON_CreateArray();
    if (!json_out) printf("%-24s %s\n", "TEMPLATE", "ID");
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char cur[4400], target[256];
        snprintf(cur, sizeof(cur), "%s/%s/current", dir, de->d_name);
        ssize_t n = readlink(cur, target, sizeof(target) - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        if (!json_out) printf("%-24s %s\n", de->d_name, target);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "templateID", de->d_name);
        cJSON_AddStringToObject(o, "buildID", target);
        cJSON_AddItemToArray(arr, o);
    }
    if (d) closedir(d);
    if (json_out)
        print_json(arr);
    else
        cJSON_Delete(arr);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: cubemastercli [--data DIR | --master ADDR [--tls-dir DIR]] [--json] COMMAND\n"
                    "  sandbox list | sandbox info ID | sandbox kill ID\n"
                    "  sandbox snapshot ID [NAME] | sandbox rollback ID SNAPSHOT\n"
                    "  node list | node wait [--count N] [--pool] [--timeout S]\n"
                    "  node drain NODE | node undrain NODE | node remove NODE\n"
                    "  key create [NAME] [--max-sandboxes N] | key list | key limit ID N | key revoke ID\n"
                    "  tpl list | tpl info NAME | tpl delete NAME\n"
                    "  tpl tags NAME | tpl tag NAME[:TAG] TAG... | tpl untag NAME TAG...\n"
                    "  tpl create-from-image NAME (--oci LAYOUT | --docker-save TAR | --rootfs TAR|DIR |\n"
                    "                              --debootstrap base|code-interpreter-v1) [--async]\n"
                    "  tpl watch --job-id ID\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *data = "/var/lib/cube", *master = NULL, *tls_dir = NULL;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json_out = 1;
        else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else if (strcmp(argv[i], "--master") == 0 && i + 1 < argc)
            master = argv[++i];
        else if (strcmp(argv[i], "--tls-dir") == 0 && i + 1 < argc)
            tls_dir = argv[++i];
        else
            return usage();
    }
    if (argc - i < 1) return usage();
    const char *noun = argv[i++];
    char addr[4200];
    snprintf(addr, sizeof(addr), "unix:%s/run/master.sock", data);
    cube_err err = {0};
    if (cube_rpc_tls_configure(tls_dir, &err) < 0) {
        fprintf(stderr, "cubemastercli: %s\n", err.msg);
        return 1;
    }
    cube_rpc_client *c = cube_rpc_client_new(master ? master : addr, &err);
    if (!c) {
        fprintf(stderr, "cubemastercli: %s\n", err.msg);
        return 1;
    }
    int rc;
    if (strcmp(noun, "sandbox") == 0)
        rc = sandbox_cmd(c, argc - i, argv + i);
    else if (strcmp(noun, "key") == 0)
        rc = key_cmd(c, argc - i, argv + i);
    else if (strcmp(noun, "node") == 0)
        rc = node_cmd(c, argc - i, argv + i);
    else if (strcmp(noun, "tpl") == 0)
        rc = tpl_cmd(c, data, argc - i, argv + i);
    else
        rc = usage();
    cube_rpc_client_free(c);
    return rc;
}
