/* cubelet's core: the node's sandboxes. A pool of ready sandboxes per template (hypervisor started, agent
 * answering) makes a create a claim plus the agent's /init; the pool refills in the background; a create with
 * an empty pool starts one cold. Each sandbox is a cube-hypervisor process this cubelet owns. */
#ifndef CUBE_CUBELET_H
#define CUBE_CUBELET_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#include "pool_demand.h"
#include "fair_line.h"
#include "rpc.h"
#include "zygote.h"

/* The node's RPC server threads: a create waiting for a sandbox holds one (see CREATES_WAITING_MAX). */
#define CUBELET_RPC_THREADS 256

typedef struct cl_template {
    char name[128]; /* "name", or "name:tag" for a tag's build */
    char rootfs[4096];
    unsigned uid_base;
    char user[64]; /* the default user and workdir the agent gets at /init */
    char workdir[512];
    int cpus, memory_mb;  /* each sandbox's limits (config.json "cpu", "memoryMB"; defaults 2 and 512) */
    char *env_json;       /* {"K": "V"} from the image, merged under the request's envVars */
    char layers[8192];    /* a snapshot template: its layers above the parent's rootfs ("a:b"), else empty */
    char snapshot_of[64]; /* a snapshot: the sandbox it was taken of; else empty */
    char build_id[64];    /* config.json "id": which build of the name this is */
    char from_template[128], from_build[64]; /* a build's base and its build; else empty */
    int64_t assigned_at_ms; /* when its link (name or name:tag) last moved here: unix ms (heartbeats) */
    char *start_cmd;        /* config.json "startCmd", "readyCmd" (start_cmd.h), or NULL */
    char *ready_cmd;
    int disk_mb;              /* each sandbox's disk: the node's, or more (config.json "diskMB", E2B's
                               * minFreeDiskMb) */
    char disk_template[4400]; /* the empty image of disk_mb when it is not the node's, else empty */
    int pool; /* ready sandboxes to keep at least: the node's pool size, or the template's own (snapshots: 0)
               */
    pool_demand demand; /* creates seen (with the cubelet's lock): the pool follows them up to pool_max */
    int gone;           /* its files were deleted: no new sandboxes, pool drained (atomic) */
    int ca_layer_state; /* the egress CA layer (ca_layer.c), with the cubelet's lock: 0 not made yet, 1 made
                         * (ca_layer is its directory), -1 none (its sandboxes get the CA at /init) */
    char ca_layer[4400];
    struct cl_template *next;
} cl_template;

typedef enum { SLOT_STARTING, SLOT_READY, SLOT_CLAIMED, SLOT_PAUSED } slot_state;

/* A network slot leased from cube-net under a slot id (the name a sandbox started on it then has). */
typedef struct cl_lease {
    char slot_id[32];
    char net_path[4200]; /* its namespace */
} cl_lease;
#define CL_LEASES_AHEAD 8 /* at most this many leased ahead (cubelet.ready_leases) */

typedef struct cl_slot {
    char slot_id[32];    /* the hypervisor's id: cgroup name, hostname */
    char sandbox_id[32]; /* the E2B id once claimed */
    const cl_template *tpl;
    slot_state state;
    pid_t hv;
    int hv_pidfd;   /* not our child (the zygote's, or adopted at start): its exit is watched here; else -1 */
    int init_pidfd; /* the sandbox's PID 1 (cl_slot_watch_init), or -1 */
    pid_t init;
    bool adopted;       /* found running at start: not our child, so it is watched, not waited for */
    int64_t claimed_ms; /* monotonic: when a create claimed it (adopted: when adopted) */
    char state_dir[4200];
    char control[4300];
    char netns[64];      /* /proc/<init>/ns/net: where the node reaches the agent */
    char net_path[4200]; /* cube-net's namespace for this slot, or empty */
    char layers[8192];   /* read-only layers above the template (a fork's snapshots), "a:b", or empty */
    bool stopped;        /* Stop answered: its processes are dead, the teardown is left */
    int disk_kept;       /* its disk, held across its stop for the next sandbox (hv_disk_keep), or -1 */
    int hv_keep_fd; /* the hypervisor's descriptor holding a clone of that disk (its "keep-fd="), or -1 */
    int agent_fd; /* a connection to the agent made while the slot waited in the pool (the agent's thread for
                   * it started then): the claim's /init goes over it; -1 when none */
    bool ca_trusted; /* the node's egress CA is in its trust store already (done on the pool's time) */
    bool ca_layer;   /* ... by the template's egress CA layer (ca_layer.c): /init sets the CA's variables */
    /* With the cubelet's lock: calls still using the slot after unlocking (a create setting it up, a pause or
     * resume); a kill marks it dying (no new user finds it) and waits for users to reach 0 before it takes
     * the slot off the list, so nobody frees a slot under a call. */
    int users;
    bool dying;
    bool rolling_back; /* with the lock: a rollback is under way (pauses, resumes and other rollbacks wait) */
    /* where its start went, ms: the network slot's lease, the hypervisor until ready, the agent connection */
    float lease_ms, hv_ms, connect_ms;
    struct metrics_history *history; /* with the lock: once handed out and sampled (metrics_history.h) */
    bool disk_bounded;               /* with the lock: the node's disk guard bounded what it may write */
    struct cl_slot *next;
} cl_slot;

typedef struct cubelet_config {
    const char *data_dir;
    const char *node_id;
    const char *listen; /* this cubelet's RPC address */
    const char *master; /* cube-master's RPC address; several, comma-separated, in a cluster */
    const char *hypervisor_bin;
    /* cube-zygote: sandboxes' hypervisors are forked from it, loaded and initialised, with the agent built
     * in; NULL: cube-hypervisor is exec'd for each */
    const char *zygote_bin;
    const char *agent_bin;
    const char *agent_bundle;  /* when set, sandboxes get this self-contained agent directory instead */
    const char *net;           /* cube-net's RPC address, or NULL: sandboxes get no network but loopback */
    const char *proxy_address; /* where this node's cube-proxy listens (reported to masters), or NULL */
    int pool_size;             /* ready sandboxes kept per template, at least */
    int pool_max;              /* the most a template's pool grows to after a burst of creates */
    int disk_mb;               /* each sandbox's writable layer, on the node's disk */
    const char *lxcfs;         /* an lxcfs mount for sandboxes' /proc views, or NULL */
    int metrics_sample_ms;     /* handed-out sandboxes' metrics history: one sample this often (0: 5 s) */
    /* sandboxes' state directories (sockets, logs, claims: small files made and removed with every sandbox)
     * on a tmpfs of their own, as a runtime's state under /run: see cube_tmpfs_over_empty_dir */
    bool sandboxes_tmpfs;
    /* memory the node keeps for itself, in MB: a create is refused while MemAvailable less this is below
     * the template's memory limit (main.c also caps all sandboxes together at the node's memory less it) */
    long long memory_reserve_mb;
    /* the same of its disk (the data directory's filesystem, where sandboxes' disks are sparse images) */
    long long disk_reserve_mb;
    /* each volume's size: a filesystem of its own (a sparse image beside it, as sandboxes' disks are), full
     * at this size; 0: volumes are plain directories on the node's disk, bounded by nothing */
    int volume_mb;
} cubelet_config;

typedef struct cubelet {
    cubelet_config cfg;
    char sandboxes_dir[4096];
    bool sandboxes_tmpfs; /* sandboxes_dir is a tmpfs this process mounted (unmounted at a stop, empty) */
    cl_template *templates;
    pthread_mutex_t templates_lock; /* one publisher of templates at a time (readers take none) */
    pthread_mutex_t lock;
    cube_zygote zygote;    /* sock -1: hypervisors are exec'd */
    pthread_cond_t refill; /* signalled when a slot is claimed or lost: wakes the refill thread */
    pthread_cond_t tick;   /* the heartbeat thread's timer; broadcast on stop */
    cl_slot *slots;
    int stopping;
    pthread_cond_t reap;      /* a slot was put on retiring */
    pthread_cond_t slot_idle; /* a slot's users went down (kills wait for 0) */
    /* a pooled sandbox became ready, or a cold start ended: creates waiting wake */
    pthread_cond_t slot_ready;
    int cold_running;      /* cold starts under way (creates that found the pool empty) */
    int cold_max;          /* how many may be under way at once: COLD_PER_CPU per CPU, counted at init */
    int creates_waiting;   /* creates waiting for a pooled sandbox or their turn to start one */
    fair_line create_line; /* the creates under way here, in turns by key (fair_line.h; groups: templates) */
    int64_t last_claim_ms; /* monotonic: the latest create answered from a pool (the refill lets it settle) */
    /* writable layers ready for starts, cold and pooled (mount fds): made ahead for cold starts
     * (hv_disk_prepare), or ended sandboxes' disks emptied (hv_disk_renew) */
    int ready_disks[64];
    int nready_disks;
    bool disks_failed; /* making one failed: cold starts copy the template themselves */
    /* network slots leased ahead for cold starts (by the refill thread, as many as cold starts may run at
     * once): a cold create starts its hypervisor at once instead of asking cube-net first */
    cl_lease ready_leases[CL_LEASES_AHEAD];
    int nready_leases;
    bool leases_failed; /* leasing one ahead failed (cube-net away): none until a start's own lease works */
    cl_slot *retiring;  /* killed sandboxes whose hypervisor exit, files and network slot are still to go */
    int nretiring;      /* how many: while RETIRE_BEHIND or more, starts wait for teardowns (see cubelet.c) */
    int retire_credits; /* while behind: creates' starts allowed, one per teardown finished meanwhile */
    pthread_t refill_thread, heartbeat_thread, reaper_thread, sampler_thread;
    bool disk_tight; /* the sampler thread alone: its disk guard bounds sandboxes now (metrics_sampler.c) */
    bool disk_guard_ran; /* the sampler thread alone: the guard has looked once */
    /* what was left for new sandboxes at room_checked_ms (atomics: pool_refill.c reads it once a second) */
    int64_t room_checked_ms;
    long long room_memory_mb, room_disk_mb;
    cube_rpc_failover masters;    /* heartbeats go to every one of them */
    cube_rpc_client *net;         /* NULL without cube-net */
    int draining;                 /* no new sandboxes: reported in heartbeats; kept in <data>/draining */
    char disk_template[4400];     /* the empty ext4 image of cfg.disk_mb sandboxes' disks are copies of */
    char volume_template[4400];   /* the same of cfg.volume_mb, for volumes; empty: volumes are directories */
    pthread_mutex_t volumes_lock; /* a volume's disk mounted once (volume_files.c, cl_volume_dir) */
    char *egress_ca_pem;          /* the node's egress CA, for sandboxes to trust (read once it exists) */
    char disk_mb[16];
    /* template builds (build.c): with builds_lock */
    pthread_mutex_t builds_lock;
    pthread_cond_t builds_changed; /* a build ended or left the queue */
    struct cl_build *builds;       /* newest first; finished ones kept a while for their status */
    int builds_running;            /* threads under way (cubelet_stop waits for them) */
    int builds_active;             /* of those, holding a build sandbox (at most BUILDS_AT_ONCE) */
} cubelet;

int cubelet_init(cubelet *c, const cubelet_config *cfg, cube_err *err);
/* Starts the pool refill and heartbeat threads. */
void cubelet_start(cubelet *c);
/* Stops every sandbox of this node and the threads. */
void cubelet_stop(cubelet *c);

extern const cube_rpc_method cubelet_methods[];

#endif
