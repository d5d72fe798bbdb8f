/* cube-master's core for tests: a master on a SQLite store in a temp dir, served on unix:<dir>/master.sock,
 * and the test's client of it (as cube-api is); nodes are fake_node.h's, heard from by node_reports(). */
#ifndef CUBE_TEST_MASTER_FIXTURE_H
#define CUBE_TEST_MASTER_FIXTURE_H

#include "fake_node.h"
#include "master.h"
#include "rpc.h"

extern char dir[256];
extern store *st;
extern master m;
extern cube_rpc_server *master_srv;
extern cube_rpc_client *mc;

/* check fixtures: a fresh master (heartbeats every 100 ms; a node lost after 400 ms), and its removal */
void setup(void);
void teardown(void);
/* The node's heartbeat to the master, reporting `ready` pooled sandboxes of base; with memory_left_mb >= 0,
 * also base's size (512 MB, 1 GB of disk) and that much memory left for sandboxes (disk: plenty). */
void node_reports_room(fake_node *f, unsigned ready, long long memory_left_mb);
void node_reports(fake_node *f, unsigned ready);
/* a heartbeat as given */
void node_sends(const Cube__NodeInfo *ni);

#endif
