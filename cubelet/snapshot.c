/* SnapshotSandbox: a handed-out sandbox's files published as a template of this node. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cubelet_internal.h"
#include "hypervisor.pb-c.h"
#include "id.h"
#include "log.h"
#include "template_config.h"
#include "timeutil.h"

/* Snapshot as a template: the sandbox's writable layer is copied (paused meanwhile) under
 * <data>/templates/<snapshot id>/, with a config naming the parent's rootfs and layers, so creates from it
 * stack the same files. No pool is kept for it: creates from a snapshot start cold. */
int cl_snapshot_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    cubelet *c = svc;
    const Cube__NodeSnapshotRequest *req = reqp;
    const char *sid = req->snapshot_id ? req->snapshot_id : "";
    if (!*sid || strchr(sid, '/') || sid[0] == '.')
        return cube_err_set(err, EINVAL, "bad snapshot id '%s'", sid);
    if (cl_find_template(c, sid)) return cube_err_set(err, EEXIST, "a template named '%s' exists", sid);
    pthread_mutex_lock(&c->lock);
    cl_slot *p = cl_find_by_sandbox(c, req->sandbox_id ? req->sandbox_id : "");
    char control[sizeof(p->control)], layers[sizeof(p->layers)];
    const cl_template *tpl = p ? p->tpl : NULL;
    if (p) {
        snprintf(control, sizeof(control), "%s", p->control);
        snprintf(layers, sizeof(layers), "%s", p->layers);
    }
    pthread_mutex_unlock(&c->lock);
    if (!p) return cube_err_set(err, ENOENT, "sandbox '%s' is not on this node", req->sandbox_id);
    char what[96];
    snprintf(what, sizeof(what), "sandbox %s", req->sandbox_id);
    if (cl_room_for_copy(c, control, what, err) < 0) return -1;
    char dir[4400], build[16], layer[4500], cfgp[4500], cur[4500];
    if (cube_id_new(0, build, 12, err) < 0) return -1;
    snprintf(dir, sizeof(dir), "%s/templates/%s", c->cfg.data_dir, sid);
    if (mkdir(dir, 0755) < 0) return cube_err_sys(err, errno, "mkdir %s", dir);
    snprintf(dir, sizeof(dir), "%s/templates/%s/%s", c->cfg.data_dir, sid, build);
    snprintf(layer, sizeof(layer), "%s/layer", dir);
    snprintf(cfgp, sizeof(cfgp), "%s/config.json", dir);
    snprintf(cur, sizeof(cur), "%s/templates/%s/current", c->cfg.data_dir, sid);
    mkdir(dir, 0755);
    Cube__HvSnapshotRequest sr = CUBE__HV_SNAPSHOT_REQUEST__INIT;
    sr.dir = layer;
    ProtobufCMessage *resp = NULL;
    if (cube_rpc_call_once(control, "/cube.Hypervisor/Snapshot", &sr.base,
                           &cube__hv_snapshot_response__descriptor, &resp, 120000, err) < 0)
        return cube_err_prefix(err, "snapshot %s", req->sandbox_id);
    protobuf_c_message_free_unpacked(resp, NULL);
    chmod(layer, 0755);
    /* topmost first: the sandbox's own changes above the layers it ran on (its template's, a fork's) */
    cube_tpl_config cfg;
    cube_tpl_config_init(&cfg);
    int n = snprintf(cfg.layers, sizeof(cfg.layers), "%s%s%s", layer, *layers ? ":" : "", layers);
    if (n < 0 || (size_t)n >= sizeof(cfg.layers))
        return cube_err_set(err, E2BIG, "snapshot %s: too many layers", req->sandbox_id);
    snprintf(cfg.name, sizeof(cfg.name), "%s", sid);
    snprintf(cfg.id, sizeof(cfg.id), "%s", build);
    snprintf(cfg.snapshot_of, sizeof(cfg.snapshot_of), "%s", req->sandbox_id);
    snprintf(cfg.parent_template, sizeof(cfg.parent_template), "%s", tpl->name);
    cfg.created_at_ms = cube_now_unix_ms();
    snprintf(cfg.rootfs, sizeof(cfg.rootfs), "%s", tpl->rootfs);
    snprintf(cfg.user, sizeof(cfg.user), "%s", tpl->user);
    snprintf(cfg.workdir, sizeof(cfg.workdir), "%s", tpl->workdir);
    cfg.env_json = tpl->env_json ? strdup(tpl->env_json) : NULL;
    cfg.uid_base = tpl->uid_base;
    cfg.cpu = tpl->cpus;
    cfg.memory_mb = tpl->memory_mb;
    if (*tpl->disk_template) cfg.disk_mb = tpl->disk_mb;
    cfg.start_cmd = tpl->start_cmd ? strdup(tpl->start_cmd) : NULL;
    cfg.ready_cmd = tpl->ready_cmd ? strdup(tpl->ready_cmd) : NULL;
    cfg.pool = 0;
    int rc = cube_tpl_config_write(cfgp, &cfg, err);
    cube_tpl_config_free(&cfg);
    if (rc < 0) return -1;
    if (symlink(build, cur) < 0) return cube_err_sys(err, errno, "publish snapshot %s", sid);
    cube_log_info("sandbox snapshotted", "sandbox=%s snapshot=%s", req->sandbox_id, sid);
    /* known here and to every master at once: a create from it, or a rollback to it, can follow */
    cube_err lerr = {0};
    if (cl_load_templates(c, &lerr) < 0) cube_log_warn("template scan failed", "err=\"%s\"", lerr.msg);
    cl_send_heartbeat(c);
    return 0;
}
