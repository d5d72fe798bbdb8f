/* A fake cubelet for cube-master's tests: an RPC server in the test's process that answers as a node does,
 * keeping its sandboxes, the header rules and volume calls it was sent, the templates and snapshots it holds,
 * and a gate that holds Pause/Resume until the test opens it. */
#ifndef CUBE_TEST_FAKE_NODE_H
#define CUBE_TEST_FAKE_NODE_H

#include <pthread.h>

#include "rpc.h"

#define MAX_SB 64

/* A node as the master sees it: its sandboxes, and a gate that holds Pause/Resume until the test opens it. */
typedef struct fake_node {
    char id[32], addr[300];
    cube_rpc_server *srv;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char sandboxes[MAX_SB][32];
    int n, creates, forks;
    int hold;        /* Pause/Resume wait while set */
    int holding;     /* calls waiting at the gate */
    char rules[512]; /* the header rules of the last create or network update: "host header=value;..." */
    int network_updates;
    char vol_ops[512];  /* the VolumeFiles calls it answered: "op:volume:path;..." */
    char holds[128];    /* its templates and snapshots, ",a,b,": SnapshotSandbox, DeleteTemplate */
    int refuse_delete;  /* DeleteTemplate answers EBUSY */
    int refuse_creates; /* CreateSandbox answers "busy" (EAGAIN), as a node out of memory does; counted */
    int refused;
} fake_node;

/* Listens on unix:<dir>/<id>.sock. */
void fake_start(fake_node *f, const char *dir, const char *id);
void fake_stop(fake_node *f);
/* Until a Pause or Resume waits at the gate. */
void wait_holding(fake_node *f);
/* Lets the calls held at the gate go on. */
void open_gate(fake_node *f);
/* The header rules of its last create or network update, "host header=value;...". */
void fake_rules(fake_node *f, char out[512]);

#endif
