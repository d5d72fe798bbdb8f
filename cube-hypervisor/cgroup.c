#include "cgroup.h"

#include "cgroup_caps.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define CG_ROOT "/sys/fs/cgroup"

static int write_file(const char *path, const char *value, cube_err *err)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return cube_err_sys(err, errno, "open %s", path);
    ssize_t n = write(fd, value, strlen(value));
    int e = errno;
    close(fd);
    if (n != (ssize_t)strlen(value))
        return cube_err_sys(err, n < 0 ? e : EIO, "write '%s' to %s", value, path);
    return 0;
}

static int read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = '\0';
    return 0;
}

static uint64_t read_u64(const char *path)
{
    char buf[64];
    return read_file(path, buf, sizeof(buf)) == 0 ? strtoull(buf, NULL, 10) : 0;
}

/* "key value" lines (memory.stat, cpu.stat) */
static uint64_t read_key(const char *path, const char *key)
{
    char buf[8192];
    if (read_file(path, buf, sizeof(buf)) < 0) return 0;
    size_t kl = strlen(key);
    for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ') return strtoull(line + kl + 1, NULL, 10);
    return 0;
}

int cgroup_init(cgroup *cg, const char *sandbox_id, cube_err *err)
{
    cg->ops = cgroup_detect(err);
    if (!cg->ops) return -1;
    snprintf(cg->name, sizeof(cg->name), "cube/%s", sandbox_id);
    return 0;
}

/* Kills every process in a cgroup.procs file until it stays empty (a fork bomb may race the first pass). */
static void kill_all(const char *procs_path)
{
    for (int round = 0; round < 100; round++) {
        char buf[65536];
        if (read_file(procs_path, buf, sizeof(buf)) < 0 || !*buf) return;
        for (char *p = buf; *p;) {
            char *end;
            long pid = strtol(p, &end, 10);
            if (end == p) break;
            if (pid > 0) kill((pid_t)pid, SIGKILL);
            p = end + (*end == '\n');
        }
        nanosleep(&(struct timespec){0, 2 * 1000000},
                  NULL); /* teardown only: give SIGKILL a moment to land */
    }
}

static void rmdir_retry(const char *path)
{
    for (int i = 0; i < 200 && rmdir(path) < 0 && errno == EBUSY; i++)
        nanosleep(&(struct timespec){0, 5 * 1000000}, NULL); /* teardown only: the last exits are in flight */
}

/* ---- v1: one hierarchy per controller ---- */

static const char *const v1_ctrls[] = {"memory", "pids", "cpu", "cpuacct", "freezer"};
#define V1_N (sizeof(v1_ctrls) / sizeof(v1_ctrls[0]))

static void v1_path(const cgroup *cg, const char *ctrl, const char *file, char *out, size_t cap)
{
    snprintf(out, cap, CG_ROOT "/%s/%s%s%s", ctrl, cg->name, file ? "/" : "", file ? file : "");
}

static int v1_create(cgroup *cg, const cg_limits *lim, cube_err *err)
{
    char p[512], v[64];
    for (size_t i = 0; i < V1_N; i++) {
        snprintf(p, sizeof(p), CG_ROOT "/%s/cube", v1_ctrls[i]);
        if (mkdir(p, 0755) == 0 && i == 0) {
            /* the node's first sandbox since boot: all sandboxes' sockets together get their bound (cubelet
             * sets it at its start too) */
            unsigned long long cap;
            if (cube_cgroup_cap_sandbox_sockets(&cap, err) < 0) return -1;
        } else if (errno != EEXIST) {
            return cube_err_sys(err, errno, "mkdir %s", p);
        }
        v1_path(cg, v1_ctrls[i], NULL, p, sizeof(p));
        if (mkdir(p, 0755) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", p);
    }
    if (lim->memory_mb) {
        snprintf(v, sizeof(v), "%llu", (unsigned long long)lim->memory_mb << 20);
        v1_path(cg, "memory", "memory.limit_in_bytes", p, sizeof(p));
        if (write_file(p, v, err) < 0) return -1;
        v1_path(cg, "memory", "memory.memsw.limit_in_bytes", p, sizeof(p));
        if (access(p, F_OK) == 0 && write_file(p, v, err) < 0) return -1; /* memory+swap == memory: no swap */
        v1_path(cg, "memory", "memory.swappiness", p, sizeof(p));
        write_file(p, "0", NULL);
        /* its socket buffers, counted and bounded (cgroup_tune.h); a kernel without the counter has none */
        snprintf(v, sizeof(v), "%llu",
                 cube_cgroup_sandbox_socket_limit((unsigned long long)lim->memory_mb << 20));
        v1_path(cg, "memory", "memory.kmem.tcp.limit_in_bytes", p, sizeof(p));
        if (access(p, F_OK) == 0 && write_file(p, v, err) < 0) return -1;
    }
    if (lim->pids) {
        snprintf(v, sizeof(v), "%u", lim->pids);
        v1_path(cg, "pids", "pids.max", p, sizeof(p));
        if (write_file(p, v, err) < 0) return -1;
    }
    if (lim->cpus) {
        v1_path(cg, "cpu", "cpu.cfs_period_us", p, sizeof(p));
        if (write_file(p, "100000", err) < 0) return -1;
        snprintf(v, sizeof(v), "%u", lim->cpus * 100000);
        v1_path(cg, "cpu", "cpu.cfs_quota_us", p, sizeof(p));
        if (write_file(p, v, err) < 0) return -1;
    }
    return 0;
}

static int v1_add(cgroup *cg, pid_t pid, cube_err *err)
{
    char p[512], v[32];
    snprintf(v, sizeof(v), "%d", pid);
    for (size_t i = 0; i < V1_N; i++) {
        v1_path(cg, v1_ctrls[i], "cgroup.procs", p, sizeof(p));
        if (write_file(p, v, err) < 0) return -1;
    }
    return 0;
}

static int v1_freeze(cgroup *cg, bool frozen, cube_err *err)
{
    char p[512], st[32];
    v1_path(cg, "freezer", "freezer.state", p, sizeof(p));
    if (write_file(p, frozen ? "FROZEN" : "THAWED", err) < 0) return -1;
    /* FREEZING is transient: wait until every task is stopped (or thawed) */
    for (int i = 0; i < 1000; i++) {
        if (read_file(p, st, sizeof(st)) == 0 && strncmp(st, frozen ? "FROZEN" : "THAWED", 6) == 0) return 0;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    return cube_err_set(err, ETIMEDOUT, "cgroup %s: freezer stuck in '%s'", cg->name, st);
}

static int v1_stats(cgroup *cg, cg_stats *s, cube_err *err)
{
    (void)err;
    char p[512], st[32];
    v1_path(cg, "cpuacct", "cpuacct.usage", p, sizeof(p));
    s->cpu_usage_ns = read_u64(p);
    v1_path(cg, "memory", "memory.usage_in_bytes", p, sizeof(p));
    s->mem_used = read_u64(p);
    v1_path(cg, "memory", "memory.stat", p, sizeof(p));
    s->mem_cache = read_key(p, "cache");
    v1_path(cg, "memory", "memory.limit_in_bytes", p, sizeof(p));
    s->mem_limit = read_u64(p);
    v1_path(cg, "pids", "pids.current", p, sizeof(p));
    s->pids = (uint32_t)read_u64(p);
    v1_path(cg, "freezer", "freezer.state", p, sizeof(p));
    s->frozen = read_file(p, st, sizeof(st)) == 0 && strncmp(st, "FROZEN", 6) == 0;
    return 0;
}

static void v1_destroy(cgroup *cg)
{
    char p[512];
    v1_path(cg, "freezer", "freezer.state", p, sizeof(p));
    write_file(p, "THAWED", NULL); /* frozen tasks cannot die */
    v1_path(cg, "pids", "cgroup.procs", p, sizeof(p));
    kill_all(p);
    for (size_t i = 0; i < V1_N; i++) {
        v1_path(cg, v1_ctrls[i], NULL, p, sizeof(p));
        rmdir_retry(p);
    }
}

const cgroup_ops cgroup_v1_ops = {"v1", v1_create, v1_add, v1_freeze, v1_stats, v1_destroy};

/* ---- v2: the unified hierarchy ---- */

static void v2_path(const cgroup *cg, const char *file, char *out, size_t cap)
{
    snprintf(out, cap, CG_ROOT "/%s%s%s", cg->name, file ? "/" : "", file ? file : "");
}

static int v2_create(cgroup *cg, const cg_limits *lim, cube_err *err)
{
    char p[512], v[64];
    if (mkdir(CG_ROOT "/cube", 0755) < 0 && errno != EEXIST)
        return cube_err_sys(err, errno, "mkdir cube cgroup");
    write_file(CG_ROOT "/cgroup.subtree_control", "+memory +pids +cpu", NULL);
    if (write_file(CG_ROOT "/cube/cgroup.subtree_control", "+memory +pids +cpu", err) < 0) return -1;
    v2_path(cg, NULL, p, sizeof(p));
    if (mkdir(p, 0755) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", p);
    if (lim->memory_mb) {
        snprintf(v, sizeof(v), "%llu", (unsigned long long)lim->memory_mb << 20);
        v2_path(cg, "memory.max", p, sizeof(p));
        if (write_file(p, v, err) < 0) return -1;
        v2_path(cg, "memory.swap.max", p, sizeof(p));
        if (access(p, F_OK) == 0) write_file(p, "0", NULL);
    }
    if (lim->pids) {
        snprintf(v, sizeof(v), "%u", lim->pids);
        v2_path(cg, "pids.max", p, sizeof(p));
        if (write_file(p, v, err) < 0) return -1;
    }
    if (lim->cpus) {
        snprintf(v, sizeof(v), "%u 100000", lim->cpus * 100000);
        v2_path(cg, "cpu.max", p, sizeof(p));
        if (write_file(p, v, err) < 0) return -1;
    }
    return 0;
}

static int v2_add(cgroup *cg, pid_t pid, cube_err *err)
{
    char p[512], v[32];
    snprintf(v, sizeof(v), "%d", pid);
    v2_path(cg, "cgroup.procs", p, sizeof(p));
    return write_file(p, v, err);
}

static int v2_freeze(cgroup *cg, bool frozen, cube_err *err)
{
    char p[512];
    v2_path(cg, "cgroup.freeze", p, sizeof(p));
    if (write_file(p, frozen ? "1" : "0", err) < 0) return -1;
    v2_path(cg, "cgroup.events", p, sizeof(p));
    for (int i = 0; i < 1000; i++) {
        if (read_key(p, "frozen") == (frozen ? 1u : 0u)) return 0;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    return cube_err_set(err, ETIMEDOUT, "cgroup %s: did not %s", cg->name, frozen ? "freeze" : "thaw");
}

static int v2_stats(cgroup *cg, cg_stats *s, cube_err *err)
{
    (void)err;
    char p[512], buf[64];
    v2_path(cg, "cpu.stat", p, sizeof(p));
    s->cpu_usage_ns = read_key(p, "usage_usec") * 1000;
    v2_path(cg, "memory.current", p, sizeof(p));
    s->mem_used = read_u64(p);
    v2_path(cg, "memory.stat", p, sizeof(p));
    s->mem_cache = read_key(p, "file");
    v2_path(cg, "memory.max", p, sizeof(p));
    s->mem_limit =
        read_file(p, buf, sizeof(buf)) == 0 && strncmp(buf, "max", 3) != 0 ? strtoull(buf, NULL, 10) : 0;
    v2_path(cg, "pids.current", p, sizeof(p));
    s->pids = (uint32_t)read_u64(p);
    v2_path(cg, "cgroup.events", p, sizeof(p));
    s->frozen = read_key(p, "frozen") == 1;
    return 0;
}

static void v2_destroy(cgroup *cg)
{
    char p[512];
    v2_path(cg, "cgroup.kill", p, sizeof(p));
    if (write_file(p, "1", NULL) < 0) {
        v2_path(cg, "cgroup.freeze", p, sizeof(p));
        write_file(p, "0", NULL);
        v2_path(cg, "cgroup.procs", p, sizeof(p));
        kill_all(p);
    }
    v2_path(cg, NULL, p, sizeof(p));
    rmdir_retry(p);
}

const cgroup_ops cgroup_v2_ops = {"v2", v2_create, v2_add, v2_freeze, v2_stats, v2_destroy};

static int has_controllers(const char *file, const char *const *want, size_t n)
{
    char buf[512];
    if (read_file(file, buf, sizeof(buf)) < 0) return 0;
    for (size_t i = 0; i < n; i++) {
        char *hit = strstr(buf, want[i]);
        size_t l = strlen(want[i]);
        if (!hit || (hit != buf && hit[-1] != ' ') || (hit[l] != ' ' && hit[l] != '\n' && hit[l] != '\0'))
            return 0;
    }
    return 1;
}

const cgroup_ops *cgroup_detect(cube_err *err)
{
    static const char *const need[] = {"memory", "pids", "cpu"};
    struct statfs sf;
    if (statfs(CG_ROOT, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC &&
        has_controllers(CG_ROOT "/cgroup.controllers", need, 3))
        return &cgroup_v2_ops;
    char p[256];
    for (size_t i = 0; i < V1_N; i++) {
        snprintf(p, sizeof(p), CG_ROOT "/%s/cgroup.procs", v1_ctrls[i]);
        if (access(p, W_OK) < 0) {
            cube_err_set(
                err, ENOTSUP,
                "no usable cgroups: not a v2 hierarchy with memory, pids and cpu, and v1 '%s' is missing",
                v1_ctrls[i]);
            return NULL;
        }
    }
    return &cgroup_v1_ops;
}
