/* Snapshots in cube-master: a snapshot is a template made from a sandbox's files, held by the node that ran
 * the sandbox (never copied to others). Its record in the store (id, sandbox, node, template, time) is what
 * the masters list and page through, whichever nodes are up; the files are the node's, made and deleted over
 * the Cubelet RPC. A node that reports a snapshot the store has no record of (one made before records, or
 * whose master died before writing it) gets it recorded when it registers. */
#ifndef CUBE_MASTER_SNAPSHOTS_H
#define CUBE_MASTER_SNAPSHOTS_H

#include "master.h"

int create_snapshot(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int list_snapshots(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);

/* A registering node's snapshots (from its heartbeat) that the store lacks are recorded. */
void snapshots_adopt(master *m, const Cube__NodeInfo *in);
/* DeleteTemplate of id after the nodes answered (deleted: how many removed its files): its record goes.
 * Returns 0 when id was a snapshot whose record is gone now, ENOENT-set -1 when it has no record, another
 * error when its node is not reachable (the record stays: the files are still there). */
int snapshot_forget(master *m, const char *id, int deleted, cube_err *err);

#endif
