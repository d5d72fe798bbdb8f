/* Between master.c and nodes.c: the node side of cube-master. */
#ifndef CUBE_MASTER_NODES_H
#define CUBE_MASTER_NODES_H

#include "master.h"

/* With m->lock held. */
master_node *node_find(master *m, const char *node_id);
int node_alive(const master *m, const master_node *n, int64_t now);
/* Nodes a create has been refused by (busy, out of memory): it is not offered to them again. */
#define NODE_SKIP_MAX 8
typedef struct node_skip {
    char ids[NODE_SKIP_MAX][64];
    size_t n;
} node_skip;

/* With m->lock held: the node for a create (a ready pool slot wins, then the fewest running); only_node
 * (non-empty): that node or none (the one that holds the sandbox's volumes); none of skip's (may be NULL:
 * EBUSY when every node with the template is in it). */
master_node *schedule(master *m, const char *template_id, const char *only_node, const node_skip *skip,
                      cube_err *err);
/* The node for a create and a reference to its link; while no node is alive at all (a cluster starting, a
 * master just restarted) it waits up to wait_ms for a heartbeat instead of failing at once. */
node_link *schedule_wait(master *m, const char *template_id, const char *only_node, const node_skip *skip,
                         int64_t wait_ms, char node_id[64], cube_err *err);
/* With m->lock held: a live node taking work for a build or a new volume: one holding need_template (if
 * given) first, then the fewest running; NULL when none. */
master_node *pick_node(master *m, const char *need_template);
/* References to the links of the live nodes (at most max; node_link_put each). */
size_t live_links(master *m, node_link **out, size_t max);
/* A reference to a live node's link (node_link_put when done), or NULL + EHOSTUNREACH. */
node_link *node_link_get(master *m, const char *node_id, cube_err *err);
/* With m->lock held: a reference to n's link, or NULL when it has none. */
node_link *node_link_ref(master_node *n);
void node_link_put(node_link *l);
/* Frees a node entry (its reference to the link included); the node must be off the list. */
void node_free(master_node *n);
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
