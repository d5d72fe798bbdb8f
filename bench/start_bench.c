/* start_bench: sandbox start figures for bench/run.
 *   start_bench HV AGENT ROOTFS WORKDIR N
 * HV is cube-hypervisor (exec'd per sandbox) or cube-zygote (started once; each sandbox forked from it).
 * Prints tab-separated lines:
 *   cold <p50_ms> <p99_ms>      cube-hypervisor launched until its agent answers /health
 *   pooled <p50_ms> <p99_ms>    a pre-started sandbox made ready for a user: the agent's /init (what a pooled
 *                               create does on the node)
 *   pss_kb <per sandbox>        host PSS of an idle sandbox's processes (hypervisor, its janitor, the agent),
 *                               averaged over N */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "netns.h"
#include "timeutil.h"
#include "zygote.h"

typedef struct sb {
    pid_t hv, init;
    int pidfd; /* a zygote's child: watched through it */
    char state[512];
} sb;

static cube_zygote zy = {.sock = -1};

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void pct(const char *name, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp);
    printf("%s\t%.2f\t%.2f\n", name, v[n / 2], v[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1]);
}

static int start(const char *hv, const char *agent, const char *rootfs, const char *work, int i, sb *s)
{
    char id[32];
    snprintf(id, sizeof(id), "bench-%d", i);
    snprintf(s->state, sizeof(s->state), "%s/%s", work, id);
    mkdir(s->state, 0711);
    int p[2];
    if (pipe(p) < 0) return -1;
    s->pidfd = -1;
    if (zy.sock >= 0) {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC), fds[2] = {p[1], null}, targets[2] = {1, 2};
        char *args[] = {"cube-hypervisor", "--id",   id,        "--rootfs",    (char *)rootfs,
                        "--state",         s->state, "--agent", (char *)agent, NULL};
        cube_err err = {0};
        int rc = cube_zygote_spawn(&zy, args, fds, targets, 2, &s->hv, &s->pidfd, &err);
        close(null);
        if (rc < 0) {
            fprintf(stderr, "start_bench: %s\n", err.msg);
            close(p[0]);
            close(p[1]);
            return -1;
        }
    } else {
        s->hv = fork();
        if (s->hv == 0) {
            dup2(p[1], 1);
            int null = open("/dev/null", 1);
            dup2(null, 2);
            execl(hv, hv, "--id", id, "--rootfs", rootfs, "--state", s->state, "--agent", agent,
                  (char *)NULL);
            _exit(127);
        }
    }
    close(p[1]);
    char line[128] = {0};
    ssize_t n = read(p[0], line, sizeof(line) - 1);
    close(p[0]);
    if (n <= 0 || sscanf(line, "ready %d", &s->init) != 1) return -1;
    char ns[64];
    snprintf(ns, sizeof(ns), "/proc/%d/ns/net", s->init);
    for (;;) { /* the agent was exec'd; ready when it answers */
        int status = 0;
        cube_err err = {0};
        if (cube_netns_http(ns, 49983, "GET", "/health", NULL, &status, NULL, 0, 1000, &err) == 0 &&
            status == 204)
            return 0;
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
}

static long pss_kb(pid_t pid)
{
    char p[64], line[256];
    snprintf(p, sizeof(p), "/proc/%d/smaps_rollup", pid);
    FILE *f = fopen(p, "r");
    long v = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "Pss:", 4) == 0) v = atol(line + 4);
    if (f) fclose(f);
    return v;
}

/* Everything a sandbox costs the host: the hypervisor and its children (PID 1 inside, the janitor). */
static long sandbox_pss_kb(pid_t hv)
{
    long total = pss_kb(hv);
    char p[96], buf[4096];
    snprintf(p, sizeof(p), "/proc/%d/task/%d/children", hv, hv);
    FILE *f = fopen(p, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    for (char *q = buf; *q;) {
        char *end;
        long child = strtol(q, &end, 10);
        if (end == q) break;
        total += pss_kb((pid_t)child);
        q = end;
    }
    return total;
}

static void wait_hv(sb *s)
{
    if (s->pidfd < 0) {
        waitpid(s->hv, NULL, 0);
        return;
    }
    struct pollfd p = {s->pidfd, POLLIN, 0};
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    close(s->pidfd);
}

static void stop(sb *s)
{
    kill(s->hv, SIGTERM);
    wait_hv(s);
    rmdir(s->state);
}

static double host_exec_ms(void)
{
    int64_t t0 = cube_now_mono_ns();
    pid_t p = fork();
    if (p == 0) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    waitpid(p, NULL, 0);
    return (double)(cube_now_mono_ns() - t0) / 1e6;
}

static long mem_available_kb(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long v = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "MemAvailable:", 13) == 0) v = atol(line + 13);
    if (f) fclose(f);
    return v;
}

/* hold: N idle sandboxes at once; then how the host and one sandbox answer */
static int hold(char **argv, int n)
{
    sb *s = calloc((size_t)n, sizeof(*s));
    double idle_exec[20], loaded_exec[20], health[20];
    for (int i = 0; i < 20; i++) idle_exec[i] = host_exec_ms();
    long avail0 = mem_available_kb();
    int64_t t0 = cube_now_mono_ns();
    int started = 0;
    for (; started < n; started++)
        if (start(argv[2], argv[3], argv[4], argv[5], started, &s[started]) < 0) break;
    double secs = (double)(cube_now_mono_ns() - t0) / 1e9;
    sleep(2);
    long avail1 = mem_available_kb();
    for (int i = 0; i < 20; i++) {
        loaded_exec[i] = host_exec_ms();
        sb *x = &s[(i * 7919) % (started ? started : 1)];
        char ns[64];
        snprintf(ns, sizeof(ns), "/proc/%d/ns/net", x->init);
        int64_t h0 = cube_now_mono_ns();
        int status = 0;
        cube_err err = {0};
        cube_netns_http(ns, 49983, "GET", "/health", NULL, &status, NULL, 0, 5000, &err);
        health[i] = status == 204 ? (double)(cube_now_mono_ns() - h0) / 1e6 : 9999;
    }
    for (int i = 0; i < started; i++) kill(s[i].hv, SIGTERM);
    for (int i = 0; i < started; i++) {
        wait_hv(&s[i]);
        rmdir(s[i].state);
    }
    printf("held\t%d\t%.1f\t%.0f\n", started, secs, (double)(avail0 - avail1) / 1024.0);
    pct("host_exec_idle", idle_exec, 20);
    pct("host_exec_loaded", loaded_exec, 20);
    pct("sandbox_health_loaded", health, 20);
    return started == n ? 0 : 1;
}

/* HV named cube-zygote: start it once; sandboxes are then forked from it */
static int zygote_if_named(const char *hv)
{
    const char *base = strrchr(hv, '/');
    if (strcmp(base ? base + 1 : hv, "cube-zygote") != 0) return 0;
    cube_err err = {0};
    if (cube_zygote_start(&zy, hv, &err) < 0) {
        fprintf(stderr, "start_bench: %s\n", err.msg);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (zygote_if_named(argc == 7 ? argv[2] : argc > 1 ? argv[1] : "") < 0) return 1;
    if (argc == 7 && strcmp(argv[1], "hold") == 0) return hold(argv, atoi(argv[6]));
    if (argc != 6) {
        fprintf(stderr, "usage: start_bench HV AGENT ROOTFS WORKDIR N\n");
        return 2;
    }
    int n = atoi(argv[5]);
    sb *s = calloc((size_t)n, sizeof(*s));
    double *cold = calloc((size_t)n, sizeof(double)), *pooled = calloc((size_t)n, sizeof(double));
    for (int i = 0; i < n; i++) {
        int64_t t0 = cube_now_mono_ns();
        if (start(argv[1], argv[2], argv[3], argv[4], i, &s[i]) < 0) {
            fprintf(stderr, "start_bench: sandbox %d did not start\n", i);
            return 1;
        }
        cold[i] = (double)(cube_now_mono_ns() - t0) / 1e6;
    }
    sleep(1); /* idle: let start-up allocations settle before PSS is read */
    long pss = 0;
    for (int i = 0; i < n; i++) {
        pss += sandbox_pss_kb(s[i].hv);
        char ns[64];
        snprintf(ns, sizeof(ns), "/proc/%d/ns/net", s[i].init);
        int64_t t0 = cube_now_mono_ns();
        int status = 0;
        cube_err err = {0};
        if (cube_netns_http(ns, 49983, "POST", "/init", "{\"envVars\":{\"A\":\"1\"},\"accessToken\":\"t\"}",
                            &status, NULL, 0, 5000, &err) < 0 ||
            status != 204) {
            fprintf(stderr, "start_bench: /init failed: %s %d\n", err.msg, status);
            return 1;
        }
        pooled[i] = (double)(cube_now_mono_ns() - t0) / 1e6;
    }
    for (int i = 0; i < n; i++) stop(&s[i]);
    pct("cold", cold, n);
    pct("pooled", pooled, n);
    printf("pss_kb\t%ld\n", pss / n);
    return 0;
}
