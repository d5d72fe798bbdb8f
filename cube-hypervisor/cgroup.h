/* Per-sandbox cgroups behind one ops table: v2 (unified) where the host offers memory, pids and cpu there,
 * v1 (one hierarchy per controller) otherwise. Hybrid hosts are detected, not assumed. */
#ifndef CUBE_HV_CGROUP_H
#define CUBE_HV_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

typedef struct cg_limits {
    uint32_t cpus;      /* 0: unlimited */
    uint64_t memory_mb; /* 0: unlimited; swap is always off */
    uint32_t pids;      /* 0: unlimited */
} cg_limits;

typedef struct cg_stats {
    uint64_t cpu_usage_ns;
    uint64_t mem_used, mem_cache, mem_limit;
    uint32_t pids;
    bool frozen;
} cg_stats;

typedef struct cgroup cgroup;

typedef struct cgroup_ops {
    const char *name; /* "v1" | "v2" */
    int (*create)(cgroup *cg, const cg_limits *lim, cube_err *err);
    int (*add)(cgroup *cg, pid_t pid, cube_err *err);
    int (*freeze)(cgroup *cg, bool frozen, cube_err *err);
    int (*stats)(cgroup *cg, cg_stats *st, cube_err *err);
    /* Kills what is left inside, then removes the directories. Safe on a partly created group. */
    void (*destroy)(cgroup *cg);
} cgroup_ops;

struct cgroup {
    const cgroup_ops *ops;
    char name[96]; /* "cube/<sandbox id>" below each hierarchy root */
};

/* Picks v2 or v1 for this host; NULL with err when neither has what sandboxes need. */
const cgroup_ops *cgroup_detect(cube_err *err);
/* The same choice, but for a given root (tests point it at fake trees). */
extern const cgroup_ops cgroup_v1_ops, cgroup_v2_ops;

int cgroup_init(cgroup *cg, const char *sandbox_id, cube_err *err);

#endif
