/* Volumes in cube-master: records in the store, each naming the node that holds its files (set when it is
 * created, or at its first use while no node was up). Sandboxes that mount it run on that node; its content
 * API (E2B's /volumecontent) and its deletion are that node's work, asked over the Cubelet RPC: cube-master
 * never touches a node's directories. */
#ifndef CUBE_MASTER_VOLUMES_H
#define CUBE_MASTER_VOLUMES_H

#include "master.h"

int create_volume(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int get_volume(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int list_volumes(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int delete_volume(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int volume_files(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);

/* A create's mounts: each volume must exist (its id is filled in); node gets the node that holds them, or ""
 * when none is placed yet. Mounts of volumes on different nodes are refused (EINVAL). */
int volumes_resolve(master *m, cube_rpc_ctx *ctx, Cube__VolumeMount **mounts, size_t n, char node[64],
                    cube_err *err);
/* The mounts' volumes not placed yet go to node_id (where the create was scheduled). */
int volumes_place(master *m, Cube__VolumeMount **mounts, size_t n, const char *node_id, cube_err *err);

#endif
