/* The harness of cubelet's tests: a cubelet's core on a data directory of the test's own, serving its RPC
 * methods, against a fake cube-hypervisor (tests/helpers/fake_hypervisor.c) that logs each call it gets;
 * called as a master calls a node. Needs root (the fake's agent has a network namespace). */
#ifndef CUBE_TEST_CUBELET_NODE_H
#define CUBE_TEST_CUBELET_NODE_H

#include <check.h>
#include <stdbool.h>
#include <stdint.h>

#include "cubelet.h"
#include "cubelet_internal.h"
#include "rpc.h"

extern char *dir;                     /* the node's data directory */
extern char log_path[300], sock[300]; /* the fake hypervisors' log; the node's RPC address */
extern cubelet c;
extern cube_rpc_server *srv;
extern cube_rpc_client *client;               /* the test's client of the node, as a master is */
extern long long reserve_mb, disk_reserve_mb; /* the next start_node's memory_reserve_mb, disk_reserve_mb */
extern int volume_mb;                         /* and volume_mb (0: volumes are plain directories) */

void write_text(const char *path, const char *text);
/* A template named name in the node's data directory, with config.json's text. */
void template(const char *name, const char *config);
/* Lines of the fake's log that start with what; waiting (10 s at most) for at least so many. */
int count(const char *what);
void wait_count(const char *what, int at_least);
/* A cubelet on the data directory dir (start_node: a fresh one), serving RPC; sandboxes_tmpfs as cubelet's
 * main sets it, or not. */
void start_node_in_dir(bool sandboxes_tmpfs);
void start_node(bool sandboxes_tmpfs);
void stop_node(void);
/* The checked fixture: a node with no reserve on a fresh directory, and its end (its directory removed). */
void setup(void);
void teardown(void);
/* The node again, keeping these for itself (its memory_reserve_mb, disk_reserve_mb). */
void restart_node(long long memory_mb, long long disk_mb);
/* What the node's disk (its data directory's) has free, MB. */
long long node_free_mb(void);
/* CreateSandbox; 0 with *from_pool, or -1 with err. */
int create(const char *sandbox, const char *tpl, bool *from_pool, cube_err *err);
/* A call naming a sandbox (KillSandbox, PauseSandbox...); its answer dropped. */
int by_ref(const char *method, const char *sandbox, const ProtobufCMessageDescriptor *rd, cube_err *err);
/* ForkSandbox of parent into n (at most 4) children named <parent>-kid-<i>. */
int fork_children(const char *parent, unsigned n, cube_err *err);

typedef struct vf_args {
    const char *op, *path, *upload_id;
    int64_t uid, gid, mode; /* 0: not given (uid 0 is written -2) */
    bool force, last;
    uint64_t offset;
    const char *data;
    uint32_t depth;
} vf_args;

/* VolumeFiles on volume vol1; 0 with *out (free_unpacked), or -1 with err; vf_ok asserts it worked,
 * vf_errno gives the error's code (0: none). */
int vf(const vf_args *a, Cube__VolumeFileResponse **out, cube_err *err);
void vf_ok(const vf_args *a, Cube__VolumeFileResponse **out);
int vf_errno(const vf_args *a);

#endif
