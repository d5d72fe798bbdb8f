/* Between master.c and nodes.c: the node side of cube-master. */
#ifndef CUBE_MASTER_NODES_H
#define CUBE_MASTER_NODES_H

#include "master.h"

/* With m->lock held. */
master_node *node_find(master *m, const char *node_id);
int node_alive(const master *m, const master_node *n, int64_t now);
/* With m->lock held: the node for a create (a ready pool slot wins, then the fewest running). */
master_node *schedule(master *m, const char *template_id, cube_err *err);
/* The RPC client of a live node, or NULL + EHOSTUNREACH. */
cube_rpc_client *node_client(master *m, const char *node_id, cube_err *err);
/* The reaper's node chores. */
void mark_lost_nodes(master *m);
void sweep_orphans(master *m);
/* protobuf-c allocator free for rpc arenas */
void noop_free(void *d, void *p);

int heartbeat(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int list_nodes(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int drain_node(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int remove_node(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);

#endif
