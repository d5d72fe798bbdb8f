/* The sandbox tests' harness (hv_sandbox.h). */
#include "hv_sandbox.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.pb-c.h"
#include "connect.h"
#include "rpc.h"
#include "testutil.h"

char rootfs[320];
char workdir[256];

/* The "forked from cube-zygote" test case runs every ns case again with sandboxes the zygote forks (the
 * hypervisor not exec'd, the agent built in) instead of an exec'd cube-hypervisor. */
cube_zygote zygote = {.sock = -1};
/* in the zygote's environment (the node's, as cubelet's would be): never visible to a sandbox */
#define NODE_SECRET "CUBE_NODE_SECRET=zygote-env-must-not-leak"

void zygote_up(void)
{
    putenv(NODE_SECRET);
    cube_err err = {0};
    ck_assert_msg(cube_zygote_start(&zygote, getenv("CUBE_ZYGOTE_BIN"), &err) == 0, "%s", err.msg);
    unsetenv("CUBE_NODE_SECRET");
}

void zygote_down(void)
{
    cube_zygote_stop(&zygote);
}

void msleep(int ms)
{
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000}, NULL);
}

/* Starts cube-hypervisor; extra flags may follow (NULL-terminated). Fails the test unless it says ready. */
void sb_start(sandbox *sb, const char *id, ...)
{
    memset(sb, 0, sizeof(*sb));
    snprintf(sb->id, sizeof(sb->id), "%s", id);
    snprintf(sb->state, sizeof(sb->state), "%s/%s", workdir, id);
    mkdir(sb->state, 0700);
    char *argv[32] = {
        getenv("CUBE_HV_BIN"),   "--id", sb->id, "--rootfs", rootfs, "--state", sb->state, "--agent",
        getenv("CUBE_AGENT_BIN")};
    int n = 9;
    va_list ap;
    va_start(ap, id);
    for (char *a; (a = va_arg(ap, char *)) && n < 31;) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    int out[2];
    ck_assert_int_eq(pipe(out), 0);
    sb->pidfd = -1;
    if (zygote.sock >= 0) {
        /* as cubelet does: the zygote's mount namespace has no network namespace mounts, so one goes as a
         * descriptor (an exec'd hypervisor, below, opens the path) */
        int fds[2] = {out[1]}, targets[2] = {1, 4}, nfds = 1;
        for (int i = 9; i + 1 < n; i++)
            if (strcmp(argv[i], "--netns") == 0 && n < 30) {
                fds[nfds++] = open(argv[i + 1], O_RDONLY | O_CLOEXEC);
                ck_assert_int_ge(fds[1], 0);
                argv[n++] = "--netns-fd";
                argv[n++] = "4";
                argv[n] = NULL;
                break;
            }
        cube_err err = {0};
        argv[0] = "cube-hypervisor";
        ck_assert_msg(cube_zygote_spawn(&zygote, argv, fds, targets, nfds, &sb->hv, &sb->pidfd, &err) == 0,
                      "%s", err.msg);
        if (nfds > 1) close(fds[1]);
    } else {
        sb->hv = fork();
        if (sb->hv == 0) {
            dup2(out[1], 1);
            close(out[0]);
            execv(argv[0], argv);
            _exit(127);
        }
    }
    close(out[1]);
    char line[128] = {0};
    FILE *f = fdopen(out[0], "r");
    char *got = fgets(line, sizeof(line), f);
    fclose(f);
    ck_assert_msg(got && sscanf(line, "ready %d", &sb->init) == 1, "hypervisor for %s did not start: '%s'",
                  id, line);
    const char *keep = strstr(line, " keep-fd=");
    sb->keep_fd = keep ? atoi(keep + 9) : -1;
}

int hv_call(sandbox *sb, const char *method, const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, cube_err *err)
{
    char addr[600];
    snprintf(addr, sizeof(addr), "unix:%s/control.sock", sb->state);
    return cube_rpc_call_once(addr, method, req, rd, resp, 10000, err);
}

/* A method that takes and answers Empty (Pause, Resume), which must succeed. */
void hv_call_empty(sandbox *sb, const char *method)
{
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    ck_assert_msg(hv_call(sb, method, &e.base, &cube__empty__descriptor, &resp, &err) == 0, "%s: %s", method,
                  err.msg);
    protobuf_c_message_free_unpacked(resp, NULL);
}

/* Waits for the hypervisor's exit: this test's child, or the zygote's */
void hv_wait(sandbox *sb)
{
    if (sb->pidfd >= 0) {
        struct pollfd p = {sb->pidfd, POLLIN, 0};
        ck_assert_int_eq(poll(&p, 1, 30000), 1);
        close(sb->pidfd);
        sb->pidfd = -1;
    } else {
        waitpid(sb->hv, NULL, 0);
    }
    sb->hv = 0;
}

void sb_stop(sandbox *sb)
{
    if (sb->hv <= 0) return;
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *r = NULL;
    cube_err err = {0};
    if (hv_call(sb, "/cube.Hypervisor/Stop", &e.base, &cube__empty__descriptor, &r, &err) == 0)
        protobuf_c_message_free_unpacked(r, NULL);
    else
        kill(sb->hv, SIGTERM);
    hv_wait(sb);
}

/* Runs `bash -c cmd` inside the sandbox through cube-agent (process.Process/Start), from a child that joins
 * the sandbox's network namespace. */
void sb_run(sandbox *sb, const char *cmd, run_result *r)
{
    memset(r, 0, sizeof(*r));
    r->exit_code = -1000;
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        char ns[64];
        snprintf(ns, sizeof(ns), "/proc/%d/ns/net", sb->init);
        int nsfd = open(ns, O_RDONLY);
        if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) _exit(3);
        cJSON *req = cJSON_CreateObject(), *proc = cJSON_AddObjectToObject(req, "process");
        cJSON_AddStringToObject(proc, "cmd", "/bin/bash");
        cJSON *args = cJSON_AddArrayToObject(proc, "args");
        cJSON_AddItemToArray(args, cJSON_CreateString("-c"));
        cJSON_AddItemToArray(args, cJSON_CreateString(cmd));
        char *body = cJSON_PrintUnformatted(req);
        size_t elen;
        unsigned char *env = connect_envelope(0, body, strlen(body), &elen);
        int s = -1;
        for (int i = 0; i < 300; i++) { /* the agent may still be starting */
            s = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(49983)};
            inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
            if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) break;
            close(s);
            s = -1;
            msleep(10);
        }
        if (s < 0) _exit(4);
        char head[256];
        int hl = snprintf(head, sizeof(head),
                          "POST /process.Process/Start HTTP/1.0\r\nContent-Type: application/connect+json\r\n"
                          "Content-Length: %zu\r\n\r\n",
                          elen);
        if (write(s, head, (size_t)hl) != hl || write(s, env, elen) != (ssize_t)elen) _exit(5);
        char buf[65536];
        ssize_t n;
        while ((n = read(s, buf, sizeof(buf))) > 0)
            if (write(pipefd[1], buf, (size_t)n) != n) _exit(6);
        _exit(0);
    }
    close(pipefd[1]);
    size_t cap = 1 << 20, len = 0;
    char *resp = malloc(cap);
    ssize_t n;
    while ((n = read(pipefd[0], resp + len, cap - len)) > 0) len += (size_t)n;
    close(pipefd[0]);
    int st;
    waitpid(pid, &st, 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "talking to the agent failed (%d)", WEXITSTATUS(st));
    char *p = memmem(resp, len, "\r\n\r\n", 4);
    ck_assert_ptr_nonnull(p);
    p += 4;
    while (p + 5 <= resp + len) {
        uint32_t plen = (uint32_t)(unsigned char)p[1] << 24 | (uint32_t)(unsigned char)p[2] << 16 |
                        (uint32_t)(unsigned char)p[3] << 8 | (unsigned char)p[4];
        cJSON *j = cJSON_ParseWithLength(p + 5, plen);
        p += 5 + plen;
        cJSON *ev = cJSON_GetObjectItem(j, "event");
        cJSON *data = cJSON_GetObjectItem(ev, "data"), *end = cJSON_GetObjectItem(ev, "end");
        const char *o = cJSON_GetStringValue(cJSON_GetObjectItem(data, "stdout"));
        const char *e = cJSON_GetStringValue(cJSON_GetObjectItem(data, "stderr"));
        size_t dl;
        if (o) {
            unsigned char *d = b64_decode(o, &dl);
            if (r->out_len + dl < sizeof(r->out)) memcpy(r->out + r->out_len, d, dl), r->out_len += dl;
            free(d);
        }
        if (e) {
            unsigned char *d = b64_decode(e, &dl);
            strncat(r->err, (char *)d, dl < sizeof(r->err) - strlen(r->err) - 1 ? dl : 0);
            free(d);
        }
        if (end) {
            cJSON *code = cJSON_GetObjectItem(end, "exitCode");
            r->exit_code = code ? (int)code->valuedouble : 0;
            snprintf(r->status, sizeof(r->status), "%s",
                     cJSON_GetStringValue(cJSON_GetObjectItem(end, "status")));
        }
        cJSON_Delete(j);
    }
    r->out[r->out_len] = '\0';
    free(resp);
}

void expect_run(sandbox *sb, const char *cmd, const char *want_out)
{
    run_result r;
    sb_run(sb, cmd, &r);
    ck_assert_msg(r.exit_code == 0, "'%s' exited %d: %s", cmd, r.exit_code, r.err);
    ck_assert_msg(strcmp(r.out, want_out) == 0, "'%s' printed '%s', want '%s'", cmd, r.out, want_out);
}

int path_exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

int mounted_under(const char *dir)
{
    FILE *f = fopen("/proc/self/mounts", "r");
    char line[4096];
    int found = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strstr(line, dir)) found = 1;
    if (f) fclose(f);
    return found;
}

void assert_nothing_left(sandbox *sb)
{
    char p[600];
    for (int i = 0; i < 300 && kill(sb->init, 0) == 0; i++) msleep(10);
    ck_assert_msg(kill(sb->init, 0) < 0, "PID 1 of %s survived", sb->id);
    for (int i = 0; i < 300 && mounted_under(sb->state); i++) msleep(10);
    ck_assert_msg(!mounted_under(sb->state), "a mount under %s survived", sb->state);
    const char *ctrls[] = {"memory", "pids", "cpu", "freezer"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "/sys/fs/cgroup/%s/cube/%s", ctrls[i], sb->id);
        for (int k = 0; k < 300 && path_exists(p); k++) msleep(10);
        ck_assert_msg(!path_exists(p), "cgroup %s survived", p);
    }
    snprintf(p, sizeof(p), "/sys/fs/cgroup/cube/%s", sb->id);
    ck_assert_msg(!path_exists(p), "cgroup %s survived", p);
}

int hv_sandbox_setup(const char *suite)
{
    if (geteuid() != 0) {
        printf("SKIP %s: needs root to create user namespaces with uid maps and cgroups\n", suite);
        return 77;
    }
    snprintf(workdir, sizeof(workdir), "/tmp/cube-hv-test-%d", getpid());
    mkdir(workdir, 0711);
    snprintf(rootfs, sizeof(rootfs), "%s/rootfs", workdir);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "CUBE_PROBE=%s %s %s %s", getenv("CUBE_PROBE_BIN"), getenv("CUBE_MKROOTFS"),
             rootfs, getenv("CUBE_AGENT_BIN"));
    if (system(cmd) != 0) {
        fprintf(stderr, "mkrootfs failed\n");
        return 1;
    }
    return 0;
}

void hv_sandbox_cleanup(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", workdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", workdir);
}
