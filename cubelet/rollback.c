/* RollbackSandbox: a handed-out sandbox returns in place to one of its snapshots (or to the snapshot it was
 * created from). The hypervisor ends its processes and starts a new PID 1 over the snapshot's files in the
 * same network namespace, cgroups and disk; here the sandbox is then set up as its create set it up (start
 * command, volumes, the agent's /init from the request kept beside the slot), so it keeps its id, address,
 * egress policy, limits and access token. Files only, as this backend's snapshots are. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cubelet_internal.h"
#include "hypervisor.pb-c.h"
#include "log.h"
#include "start_cmd.h"
#include "timeutil.h"

#define CLAIM_MAX (1 << 20)

Cube__NodeCreateRequest *cl_claim_request(const char *state_dir, cube_err *err)
{
    char p[4300];
    snprintf(p, sizeof(p), "%s/claim.pb", state_dir);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size > CLAIM_MAX) {
        if (fd >= 0) close(fd);
        return cube_err_set(err, EINVAL,
                            "this sandbox's create settings are not kept on its node (made by an older "
                            "cubelet): it cannot be rolled back"),
               NULL;
    }
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    ssize_t n = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    close(fd);
    Cube__NodeCreateRequest *req =
        n == st.st_size ? cube__node_create_request__unpack(NULL, (size_t)n, buf) : NULL;
    free(buf);
    if (!req) cube_err_set(err, EIO, "%s is unreadable", p);
    return req;
}

/* Is `to` a state this sandbox may return to: a snapshot of it, or the snapshot it was created from, on the
 * same rootfs and uids. */
static int check_target(const cl_slot *s, const cl_template *to, const char *sid, const char *snap,
                        cube_err *err)
{
    if (!to || !*to->snapshot_of)
        return cube_err_set(err, ENOENT, "snapshot '%s' not found on this node", snap);
    if (strcmp(to->snapshot_of, sid) != 0 && to != s->tpl)
        return cube_err_set(err, EINVAL, "snapshot '%s' is not of sandbox %s (it was taken of %s)", snap, sid,
                            to->snapshot_of);
    if (strcmp(to->rootfs, s->tpl->rootfs) != 0 || to->uid_base != s->tpl->uid_base)
        return cube_err_set(err, EINVAL, "snapshot '%s' stands on another template than sandbox %s", snap,
                            sid);
    return 0;
}

int cl_rollback_sandbox(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    cubelet *c = svc;
    const Cube__NodeRollbackRequest *req = reqp;
    const char *sid = req->sandbox_id ? req->sandbox_id : "",
               *snap = req->snapshot_id ? req->snapshot_id : "";
    int64_t t0 = cube_now_mono_ns();
    const cl_template *to = cl_find_template(c, snap);
    pthread_mutex_lock(&c->lock);
    cl_slot *s = cl_find_by_sandbox(c, sid);
    char control[sizeof(s->control)], state_dir[sizeof(s->state_dir)];
    bool busy = s && s->rolling_back;
    if (s && !busy) {
        s->users++; /* a kill waits for the rollback */
        s->rolling_back = true;
        snprintf(control, sizeof(control), "%s", s->control);
        snprintf(state_dir, sizeof(state_dir), "%s", s->state_dir);
    }
    pthread_mutex_unlock(&c->lock);
    if (!s) return cube_err_set(err, ENOENT, "sandbox '%s' is not on this node", sid);
    if (busy) return cube_err_set(err, EBUSY, "sandbox '%s' is being rolled back already", sid);
    Cube__NodeCreateRequest *claim = NULL;
    int rc = check_target(s, to, sid, snap, err);
    if (rc == 0) claim = cl_claim_request(state_dir, err);
    if (!claim) {
        pthread_mutex_lock(&c->lock);
        s->rolling_back = false;
        cl_slot_release(c, s);
        pthread_mutex_unlock(&c->lock);
        return -1;
    }

    Cube__HvRollbackRequest hr = CUBE__HV_ROLLBACK_REQUEST__INIT;
    hr.layers = (char *)to->layers;
    ProtobufCMessage *resp = NULL;
    rc = cube_rpc_call_once(control, "/cube.Hypervisor/Rollback", &hr.base, &cube__hv_info__descriptor, &resp,
                            60000, err);
    bool intact = rc < 0 && (err->code == ENOSYS || err->code == ENOTSUP || err->code == EBUSY);
    if (rc == 0) {
        pthread_mutex_lock(&c->lock);
        s->init = ((Cube__HvInfo *)resp)->init_pid;
        cl_slot_watch_init(s);
        snprintf(s->netns, sizeof(s->netns), "/proc/%d/ns/net", s->init);
        snprintf(s->layers, sizeof(s->layers), "%s", to->layers);
        if (s->state == SLOT_PAUSED) s->state = SLOT_CLAIMED; /* the new PID 1 runs */
        s->ca_trusted = false; /* a new PID 1 over the snapshot's layers: no CA layer among them */
        s->ca_layer = false;
        pthread_mutex_unlock(&c->lock);
        protobuf_c_message_free_unpacked(resp, NULL);
        /* set up again as the create did: the template's start command, the volumes, the agent's /init */
        if (s->tpl->start_cmd && cl_start_cmd(s->tpl, s->netns, NULL, NULL, NULL, err) < 0) rc = -1;
        for (size_t i = 0; rc == 0 && i < claim->n_volume_mounts; i++)
            rc = cl_mount_volume(c, s, claim->volume_mounts[i], err);
        if (rc == 0) rc = cl_init_agent(c, s, claim, err);
    }
    if (rc == 0) cl_running_sandbox(ctx, s, respp);
    cube__node_create_request__free_unpacked(claim, NULL);
    pthread_mutex_lock(&c->lock);
    s->rolling_back = false;
    cl_slot_release(c, s);
    pthread_mutex_unlock(&c->lock);
    if (rc == 0) {
        cube_log_info("audit", "action=rollback sandbox=%s snapshot=%s ms=%.1f", sid, snap,
                      (double)(cube_now_mono_ns() - t0) / 1e6);
        return 0;
    }
    if (intact) return cube_err_prefix(err, "rollback of %s", sid);
    /* its old processes are gone and the new ones are not what the sandbox should be: it ends */
    char why[sizeof(err->msg)];
    snprintf(why, sizeof(why), "%s", err->msg);
    cube_err kerr = {0};
    cl_kill_sandbox(c, sid, &kerr);
    cube_log_warn("rollback failed: sandbox ended", "sandbox=%s snapshot=%s err=\"%s\"", sid, snap, why);
    return cube_err_set(err, ENOTRECOVERABLE, "rollback of %s to %s failed and the sandbox ended: %s", sid,
                        snap, why);
}
