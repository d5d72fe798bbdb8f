/* What cubelet's files share (not for use outside cubelet/): cubelet.c owns the slots (a sandbox's hypervisor
 * from spawn to teardown) and the RPC methods; pool_refill.c keeps the pools at their targets; heartbeat.c
 * reports the node to the masters and picks up new and deleted templates. */
#ifndef CUBE_CUBELET_INTERNAL_H
#define CUBE_CUBELET_INTERNAL_H

#include "cubelet.h"
#include "cubelet.pb-c.h"

/* Cold starts at once per CPU: a start waits on its processes part of the time, so a couple per CPU keep it
 * busy; as many writable layers are kept made ahead for them. */
#define COLD_PER_CPU 2
/* Killed sandboxes whose teardown is still to finish, past which the node tears down at normal priority and
 * starts no sandbox for its pools, and a create's cold start waits for a teardown to finish (one start per
 * teardown: the line does not grow, and a create after a mass kill waits for one teardown, not for the whole
 * line): under creates faster than the node can serve, teardowns at the lowest priority starved, and
 * thousands of killed sandboxes' processes and memory piled up. */
#define RETIRE_BEHIND 32

/* Starts a sandbox of tpl (its hypervisor, its network slot) and waits until its agent answers; *out is not
 * on the list yet. layers: the template's own (NULL) or a snapshot's. disk_fd: a writable layer made ahead
 * (taken: closed here), or -1 for the hypervisor to make its own. ahead: a network slot leased ahead (taken:
 * released here if the start fails), or NULL to lease one. */
int cl_spawn_slot(cubelet *c, const cl_template *tpl, const char *layers, int disk_fd, const cl_lease *ahead,
                  cl_slot **out, cube_err *err);
/* Leases a network slot ahead under a new slot id (pool_refill.c keeps cubelet.ready_leases). */
int cl_lease_ahead(cubelet *c, cl_lease *out, cube_err *err);
/* The template's start command in a spawned slot, ready before anyone gets the sandbox (see start_cmd.h);
 * nothing when it has none. On failure the slot is destroyed. */
int cl_slot_start_cmd(cubelet *c, cl_slot *s, const cl_template *tpl, cube_err *err);
/* Stops the sandbox and removes its state; the slot is already off the list. */
void cl_destroy_slot(cubelet *c, cl_slot *s);
/* Takes a pidfd of s->init (PID 1 now), in place of one of an earlier PID 1: how a slot's network namespace
 * is known to be vacated once the sandbox is gone (see cl_destroy_slot). */
void cl_slot_watch_init(cl_slot *s);
/* disk_reuse.c. Before a sandbox's stop: its disk held, when it is of the node's own size. After its
 * hypervisor exited: that disk emptied into the ready ones, or let go. */
void cl_disk_keep(cubelet *c, cl_slot *s);
void cl_disk_reuse(cubelet *c, cl_slot *s);
#define ENVD_PORT   49983 /* the agent's envd API in every sandbox */
#define INTERP_PORT 49999 /* the code interpreter's, in templates that have one */
/* out: a handed-out, running sandbox as the masters record it (its id, state, the agent's addresses) */
void cl_running_sandbox(cube_rpc_ctx *ctx, const cl_slot *s, Cube__NodeSandbox *out);

/* The agent's /init for a sandbox handed out as req: env vars, the access token, the default user and workdir
 * of its template, the node's egress CA (unless the pool gave it already). */
int cl_init_agent(cubelet *c, cl_slot *s, const Cube__NodeCreateRequest *req, cube_err *err);
/* A pool slot, before anyone can claim it: the node's egress CA into its trust store, on the pool's time (the
 * claim's /init then skips it). Failing here only leaves it to the claim. */
void cl_slot_trust_ca(cubelet *c, cl_slot *s);
/* The node's egress CA (cube-net keeps it under <data>/net/ca), or NULL while it has none (no uplink). */
const char *cl_egress_ca(cubelet *c);
/* The egress CA as a read-only layer over template t (ca_layer.c): its directory in out, made the first time
 * (<data>/ca-layers/). -1 when the template's trust store cannot be covered so: its sandboxes then get the
 * CA at /init. */
int cl_ca_layer(cubelet *c, cl_template *t, const char *pem, char *out, size_t cap);
/* With the lock: takes s off the list. */
void cl_unlink_slot(cubelet *c, cl_slot *s);
/* With the lock: one user fewer (see cl_slot.users). */
void cl_slot_release(cubelet *c, cl_slot *s);
/* Kills a handed-out sandbox (after the calls using it let go) and retires its slot; ENOENT when none. */
int cl_kill_sandbox(cubelet *c, const char *sandbox_id, cube_err *err);
/* Mounts a volume's directory into a running sandbox at its path. */
int cl_mount_volume(cubelet *c, const cl_slot *s, const Cube__VolumeMount *vm, cube_err *err);
/* The create request that handed out the slot whose state directory this is (kept beside it as claim.pb);
 * NULL with the reason (an older cubelet's sandbox has none). free_unpacked. */
Cube__NodeCreateRequest *cl_claim_request(const char *state_dir, cube_err *err);
/* rollback.c: RollbackSandbox */
int cl_rollback_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
/* snapshot.c: SnapshotSandbox, the sandbox's writable layer published as a template of its own. */
int cl_snapshot_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
/* A template's sandbox size (config.json "cpu", "memoryMB") */
#define TEMPLATE_CPUS_DEFAULT      2
#define TEMPLATE_CPUS_MAX          64
#define TEMPLATE_MEMORY_MB_DEFAULT 512
#define TEMPLATE_MEMORY_MB_MIN     64
#define TEMPLATE_MEMORY_MB_MAX     (1 << 20)
#define TEMPLATE_DISK_MB_MAX       (1 << 18) /* 256 GiB: a sandbox disk is a sparse image, not a reservation */

/* With the lock: a handed-out sandbox's slot, unless a kill has it (dying); or NULL. */
cl_slot *cl_find_by_sandbox(cubelet *c, const char *sandbox_id);
/* metrics_sampler.c: every handed-out, running sandbox sampled every METRICS_SAMPLE_MS into its history, and
 * the RPC that answers it */
void *cl_sampler_loop(void *arg);
int cl_sandbox_stats_history(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
/* The link a template's files are reached by: <data>/templates/<name>/current, or for "name:tag",
 * <data>/templates/<name>/tags/<tag>. */
void cl_template_link(const cubelet *c, const char *full, char *out, size_t cap);
/* tags.c: links tags (none: "default") to one build of name, each moved atomically, and the templates they
 * name reloaded; the RPC TemplateTags (assign, remove, list). */
int cl_tags_link(cubelet *c, const char *name, const char *build_id, char **tags, size_t n,
                 bool first_default, cube_err *err);
int cl_template_tags(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
/* The masters' DeleteTemplate, on this node's files; deleted ones' files removed a while after (the heartbeat
 * loop). */
int cl_delete_template(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
void cl_sweep_deleted_templates(cubelet *c);
/* template_copy.c: a build's layers packed for another node (ExportTemplate), a copy taken in
 * (ImportTemplate); packed archives removed a while after (the heartbeat loop) */
int cl_export_template(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int cl_import_template(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
void cl_sweep_exports(cubelet *c);
/* The archive's entries (layers/<i>/..., i < nlayers, nothing else) under into, a canonical path; exposed for
 * fuzz_template_copy. */
int cl_unpack_layers(const char *tar, const char *into, int nlayers, cube_err *err);
/* Adds the templates built since the last scan. */
int cl_load_templates(cubelet *c, cube_err *err);
/* A template rebuilt under its name: the new config is published (creates take it from now on) and the old
 * one retired. */
int cl_replace_template(cubelet *c, const char *name, cube_err *err);
/* Takes no new sandboxes from now on; its ready pool is destroyed (handed-out sandboxes keep running). */
void cl_retire_template(cubelet *c, cl_template *t);
/* The template named so, unless retired; NULL when none. */
const cl_template *cl_find_template(cubelet *c, const char *name);
/* At stop: every template, retired or not. */
void cl_free_templates(cubelet *c);
/* Each sandbox's disk unless its template asks for more (--disk-mb, default 1024). */
int cl_node_disk_mb(const cubelet *c);
/* The empty ext4 image of size_mb in <data>/disks (made once per size: it runs mkfs, so never on a create's
 * path); its path into out. */
int cl_disk_template(cubelet *c, int size_mb, char *out, size_t cap, cube_err *err);
/* Removes the disk copies an older cubelet named and a process killed while copying left beside the
 * templates (templates.c). */
void cl_sweep_disk_copies(const cubelet *c);
/* 1-max characters of [A-Za-z0-9._-], not starting with '.' or '-': a build, template or file name that is
 * safe in a path */
bool cl_valid_id(const char *s, size_t max);
/* build.c: template builds (the RPCs StartBuild, GetBuildStatus, GetBuildFile, PutBuildFile) */
int cl_start_build(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int cl_build_status(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int cl_get_build_file(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
int cl_put_build_file(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);
void cl_builds_init(cubelet *c);
/* Builds end at their next step (cancelled); returns once no build thread runs. */
void cl_builds_stop(cubelet *c);

/* A template's sandboxes' uids on the host start here unless its config.json says ("uidBase"). */
#define CL_UID_BASE_DEFAULT 100000
/* volume_files.c: volumes' directories (<data>/volumes/<id>) and the content API on them */
/* <data>/volumes/<id> into out, made (owned by the sandboxes' `user`) when missing */
int cl_volume_dir(cubelet *c, const char *volume_id, unsigned uid_base, char *out, size_t cap, cube_err *err);
int cl_volume_files(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err);

/* With the lock: how many ready sandboxes t's pool should hold now. */
int cl_pool_target(cubelet *c, cl_template *t);
/* Whether the node has the memory and the disk for n more sandboxes of tpl (node_room.c): 0, or -1 with
 * EAGAIN and the figures in words. */
/* Raises the node-wide counts sandboxes share past what a few sandboxes at their own limits could take
 * (node_limits.c). */
void cl_raise_node_limits(void);
int cl_room_admit(const cubelet *c, const cl_template *tpl, unsigned n, cube_err *err);
/* What is left for new sandboxes beyond the node's reserves, MB (below 0: into them). */
void cl_room_left(const cubelet *c, long long *memory_mb, long long *disk_mb);
/* Whether the node's disk (beyond its reserve) holds a copy of the files of the sandbox whose hypervisor
 * answers at control (a snapshot, a fork's, a build's layer); what: the sandbox in words. 0, or -1 with
 * EAGAIN and the figures in words. */
int cl_room_for_copy(const cubelet *c, const char *control, const char *what, cube_err *err);
void *cl_refill_loop(void *arg);
void *cl_heartbeat_loop(void *arg);
/* One heartbeat to every master now (the heartbeat thread's, and a build's once its template is published:
 * a build is ready when the masters know the template). */
void cl_send_heartbeat(cubelet *c);

#endif
