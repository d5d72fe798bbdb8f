/* Template builds in cube-master: a build is a record in the store naming the node that runs it (picked when
 * the build is requested, so the COPY steps' files are uploaded to where the build will read them); its
 * progress, logs and files are that node's, asked through the Cubelet build RPCs. */
#ifndef CUBE_MASTER_BUILDS_H
#define CUBE_MASTER_BUILDS_H

#include "master.h"

int request_build(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int start_build(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int get_build_status(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int get_build_file(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
/* E2B's tags (assign, remove, list), done by the node that holds the template's builds */
int template_tags(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
/* A template's builds, newest first, with their states */
int list_builds(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int put_build_file(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);

#endif
