/* cube-master's core: the Master RPC service over the store, scheduling onto cubelets, the timeout reaper.
 * main.c is a thin shell over it; tests drive it directly. */
#ifndef CUBE_MASTER_H
#define CUBE_MASTER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "rpc.h"
#include "secret_box.h"
#include "store.h"

/* A node's RPC client, shared by the threads calling it: the node entry holds one reference, each call in
 * flight another, so an address change or `node remove` never frees a client a call still uses. */
typedef struct node_link {
    cube_rpc_client *rpc;
    atomic_int refs;
} node_link;

typedef struct master_node {
    char node_id[64];
    char address[256];    /* the address `link` was made for ("" until one could be made) */
    Cube__NodeInfo *info; /* last heartbeat (unpacked copy) */
    int64_t last_seen_ms;
    node_link *link;
    int reconcile; /* newly registered: compare its sandboxes with the store */
    int lost;      /* stopped heartbeating; its sandboxes were marked lost */
    struct master_node *next;
} master_node;

#define COPY_FAILURES  16
#define KEY_HOLD_SLOTS 64

typedef struct master {
    store *st;
    pthread_mutex_t lock;         /* nodes */
    pthread_cond_t nodes_changed; /* a heartbeat arrived (with lock): creates waiting for a node look again */
    master_node *nodes;
    int64_t heartbeat_ms;
    int64_t node_lost_ms;
    int64_t orphan_after_ms;      /* a sandbox a node runs without a record this long is killed */
    int64_t last_orphan_sweep_ms; /* silence after which a node's sandboxes are reported gone (scheduling
                                   * stops after three heartbeats already) */
    uint8_t secret_key[SECRET_KEY_LEN]; /* seals secrets in the store (every master of a store: the same) */
    bool has_secret_key;
    pthread_t reaper;
    /* replicate.c: the template copy under way (started and joined by the reaper only), and the copies that
     * failed lately (with lock), not tried again for a while */
    pthread_t copy_thread;
    bool copy_started;
    int copy_running; /* atomic */
    struct {
        char name[192], node[64]; /* "name" or "name:tag" */
        int64_t until_ms;
    } copy_failures[COPY_FAILURES];
    unsigned copy_failure_next;
    /* keys.c: sandboxes this master is making for keys with a limit, not recorded yet (with keys_lock) */
    pthread_mutex_t keys_lock;
    struct {
        char key_id[64];
        uint32_t n;
    } key_holds[KEY_HOLD_SLOTS];
    int stopping;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
} master;

int master_init(master *m, store *st, cube_err *err);
/* Registers `key` (the operator's bootstrap key) if the store lacks it. */
int master_ensure_key(master *m, const char *key, const char *name, cube_err *err);
void master_start_reaper(master *m);
void master_stop(master *m);

extern const cube_rpc_method master_methods[];

#endif
