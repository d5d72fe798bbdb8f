#include "control.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "hypervisor.pb-c.h"
#include "timeutil.h"

static void fill_info(hv_control *c, cube_rpc_ctx *ctx, pid_t pid, Cube__HvInfo *out)
{
    char ns[64];
    snprintf(ns, sizeof(ns), "/proc/%d/ns/net", pid);
    out->sandbox_id = cube_rpc_strdup(ctx, c->id);
    out->backend = cube_rpc_strdup(ctx, c->ops->name);
    out->init_pid = pid;
    out->netns_path = cube_rpc_strdup(ctx, ns);
    out->hv_pid = getpid();
}

static int info(void *svc, cube_rpc_ctx *ctx, const void *req, void *resp, cube_err *err)
{
    (void)req;
    (void)err;
    hv_control *c = svc;
    /* not under the lock: a snapshot may hold it for long, and a restarted cubelet asks this to adopt */
    fill_info(c, ctx, __atomic_load_n(&c->init_pid, __ATOMIC_ACQUIRE), resp);
    return 0;
}

static int lifecycle(hv_control *c, int (*op)(hv_sandbox *, cube_err *), cube_err *err)
{
    pthread_mutex_lock(&c->lock);
    int rc = c->stopping ? cube_err_set(err, EBUSY, "sandbox %s is stopping", c->id) : op(c->sb, err);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int pause_(void *svc, cube_rpc_ctx *ctx, const void *req, void *resp, cube_err *err)
{
    (void)ctx;
    (void)req;
    (void)resp;
    hv_control *c = svc;
    return lifecycle(c, c->ops->pause, err);
}

static int resume_(void *svc, cube_rpc_ctx *ctx, const void *req, void *resp, cube_err *err)
{
    (void)ctx;
    (void)req;
    (void)resp;
    hv_control *c = svc;
    return lifecycle(c, c->ops->resume, err);
}

static int snapshot(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    hv_control *c = svc;
    const Cube__HvSnapshotRequest *req = reqp;
    Cube__HvSnapshotResponse *resp = respp;
    if (!req->dir || req->dir[0] != '/')
        return cube_err_set(err, EINVAL, "snapshot dir must be an absolute path");
    bool ps = false;
    pthread_mutex_lock(&c->lock);
    int rc = c->stopping ? cube_err_set(err, EBUSY, "sandbox %s is stopping", c->id)
                         : c->ops->snapshot(c->sb, req->dir, &ps, err);
    pthread_mutex_unlock(&c->lock);
    if (rc < 0) return -1;
    resp->dir = cube_rpc_strdup(ctx, req->dir);
    resp->has_process_state = ps;
    return 0;
}

static int rollback(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    hv_control *c = svc;
    const Cube__HvRollbackRequest *req = reqp;
    if (!c->ops->rollback || !c->spec)
        return cube_err_set(err, ENOTSUP, "the %s backend cannot roll a sandbox back", c->ops->name);
    pthread_mutex_lock(&c->lock);
    int rc = c->stopping ? cube_err_set(err, EBUSY, "sandbox %s is stopping", c->id)
                         : c->ops->rollback(c->sb, c->spec, req->layers, err);
    pid_t pid = c->ops->init_pid(c->sb);
    __atomic_store_n(&c->init_pid, pid, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&c->lock);
    if (rc < 0) {
        /* no PID 1 now: the sandbox ends, as if it had exited */
        uint64_t one = 1;
        if (pid <= 0 && write(c->stop_fd, &one, sizeof(one)) < 0) {
        }
        return -1;
    }
    fill_info(c, ctx, pid, respp);
    return 0;
}

static uint64_t host_mem_total(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 0;
}

static int stats(void *svc, cube_rpc_ctx *ctx, const void *req, void *respp, cube_err *err)
{
    (void)ctx;
    (void)req;
    hv_control *c = svc;
    Cube__HvStats *out = respp;
    hv_stats st;
    pthread_mutex_lock(&c->lock);
    int rc = c->ops->stats(c->sb, &st, err);
    int64_t now = cube_now_mono_ns();
    double pct = 0;
    if (rc == 0 && c->last_sample_ns && now > c->last_sample_ns && st.cg.cpu_usage_ns >= c->last_cpu_ns)
        pct = 100.0 * (double)(st.cg.cpu_usage_ns - c->last_cpu_ns) / (double)(now - c->last_sample_ns);
    if (rc == 0) {
        c->last_cpu_ns = st.cg.cpu_usage_ns;
        c->last_sample_ns = now;
    }
    pthread_mutex_unlock(&c->lock);
    if (rc < 0) return -1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    out->cpu_count = (uint32_t)(ncpu > 0 ? ncpu : 1);
    out->cpu_used_pct = pct;
    out->mem_used = st.cg.mem_used;
    out->cpu_usage_ns = st.cg.cpu_usage_ns;
    out->mem_total =
        st.cg.mem_limit && st.cg.mem_limit < host_mem_total() ? st.cg.mem_limit : host_mem_total();
    out->mem_cache = st.cg.mem_cache;
    out->disk_used = st.disk_used;
    out->disk_total = st.disk_total;
    out->disk_pending = st.disk_pending;
    out->pids = st.cg.pids;
    out->state =
        st.cg.frozen ? CUBE__SANDBOX_STATE__SANDBOX_STATE_PAUSED : CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
    return 0;
}

static int set_disk_room(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *resp, cube_err *err)
{
    (void)ctx;
    (void)resp;
    hv_control *c = svc;
    const Cube__HvDiskRoom *req = reqp;
    if (!c->ops->disk_room)
        return cube_err_set(err, ENOSYS, "the %s backend has no disk of its own to bound", c->ops->name);
    pthread_mutex_lock(&c->lock);
    int rc = c->stopping || !c->sb ? cube_err_set(err, ENOENT, "the sandbox is stopping")
                                   : c->ops->disk_room(c->sb, req->limited, req->writable_bytes, err);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int stop(void *svc, cube_rpc_ctx *ctx, const void *req, void *resp, cube_err *err)
{
    (void)ctx;
    (void)req;
    (void)resp;
    (void)err;
    hv_control *c = svc;
    pthread_mutex_lock(&c->lock);
    if (!c->stopping && c->sb) c->ops->terminate(c->sb); /* dead when Stop answers; the teardown follows */
    c->stopping = 1;
    pthread_mutex_unlock(&c->lock);
    uint64_t one = 1;
    if (write(c->stop_fd, &one, sizeof(one)) < 0) return cube_err_sys(err, errno, "signal stop");
    return 0;
}

#define M(name, fn, req, resp) CUBE_RPC_METHOD("cube.Hypervisor", name, fn, req, resp)
const cube_rpc_method hv_control_methods[] = {
    M("Info", info, cube__empty, cube__hv_info),
    M("Pause", pause_, cube__empty, cube__empty),
    M("Resume", resume_, cube__empty, cube__empty),
    M("Snapshot", snapshot, cube__hv_snapshot_request, cube__hv_snapshot_response),
    M("Rollback", rollback, cube__hv_rollback_request, cube__hv_info),
    M("Stats", stats, cube__empty, cube__hv_stats),
    M("Stop", stop, cube__empty, cube__empty),
    M("SetDiskRoom", set_disk_room, cube__hv_disk_room, cube__empty),
    {0},
};
