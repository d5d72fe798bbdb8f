/* A handed-out sandbox's metrics over its life: every METRICS_SAMPLE_MS the node asks each running,
 * handed-out sandbox's hypervisor for its stats (one control-socket call each; pooled sandboxes are not
 * asked, so an idle pool still costs nothing) and keeps them in the slot's history. The same round keeps
 * each one's log on the node bounded (sandbox_log.h), and guards the node's disk (disk_guard). */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <string.h>
#include <time.h>

#include "cubelet_internal.h"
#include "disk.h"
#include "hypervisor.pb-c.h"
#include "log.h"
#include "metrics.h"
#include "metrics_history.h"
#include "sandbox_log.h"
#include "timeutil.h"

#define SAMPLE_CALL_MS 1000 /* a hypervisor that does not answer in time misses this round */

#define SAMPLE_TIGHT_MS                                                                                      \
    250 /* the round's period while the node's disk is short (disk_guard): a writer at                       \
         * 0.5 GB/s takes 125 MB of the node's reserve between two rounds */

typedef struct sample_target {
    char sandbox_id[32];
    char *control;
    char *log;             /* its sandbox.log */
    bool sampled;          /* it answered: */
    uint64_t disk_free;    /* what its disk could still take, bytes */
    uint64_t disk_pending; /* what it wrote that the node's disk is still to take */
    bool bounded;          /* the guard bounded it before this round */
} sample_target;

/* The node's volumes with a disk of their own, mounted now: their ids (at most max) and what each could still
 * take. */
static size_t mounted_volumes(cubelet *c, char (*id)[64], uint64_t *free_bytes, uint64_t *pending, size_t max)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/volumes", c->cfg.data_dir);
    DIR *d = *c->volume_template ? opendir(dir) : NULL;
    size_t n = 0;
    for (struct dirent *de; d && n < max && (de = readdir(d));) {
        /* <id>.img is not */
        if (de->d_name[0] == '.' || strchr(de->d_name, '.') || strlen(de->d_name) >= sizeof(id[0])) continue;
        struct stat st;
        struct statfs fs;
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (!hv_disk_mounted_at(path, &st) || statfs(path, &fs) < 0) continue;
        snprintf(id[n], sizeof(id[n]), "%s", de->d_name);
        pending[n] = hv_disk_pending(path);
        free_bytes[n++] = (uint64_t)fs.f_bfree * (uint64_t)fs.f_bsize;
    }
    if (d) closedir(d);
    return n;
}

#define GUARD_VOLUMES_MAX 256

/* Sandboxes' disks (and volumes) are sparse images that take the node's disk as they are written (disk.h):
 * while what they could all still write is more than the node's disk has free beyond its reserve, each
 * handed-out sandbox and each mounted volume may write an equal share of that, past which its writer gets
 * ENOSPC (hv_disk_set_room), rather than all writing on until the node's disk is full and their writes are
 * lost behind their filesystems. The bounds go once the node has the room again (sandboxes killed, space
 * freed), also those a cubelet before this one set. Without the lock. true: bounded now. */
static bool disk_guard(cubelet *c, sample_target *t, size_t n)
{
    struct statvfs vfs;
    if (statvfs(c->cfg.data_dir, &vfs) < 0) return false;
    char vid[GUARD_VOLUMES_MAX][64];
    uint64_t vfree[GUARD_VOLUMES_MAX], vpending[GUARD_VOLUMES_MAX];
    size_t nv = mounted_volumes(c, vid, vfree, vpending, GUARD_VOLUMES_MAX);
    /* the node's free space less what is written above it and not yet on it (the sandboxes' delayed
     * allocation: their page cache, which the node's free space does not show until it is written back) */
    long long room =
        (long long)((unsigned long long)vfs.f_bavail * vfs.f_frsize) - c->cfg.disk_reserve_mb * 1024 * 1024;
    unsigned long long could = 0;
    size_t k = nv;
    for (size_t i = 0; i < nv; i++) {
        could += vfree[i];
        room -= (long long)vpending[i];
    }
    for (size_t i = 0; i < n; i++)
        if (t[i].sampled) {
            could += t[i].disk_free;
            room -= (long long)t[i].disk_pending;
            k++;
        }
    bool tight = k > 0 && (room < 0 || could > (unsigned long long)room);
    uint64_t share = tight && room > 0 ? (uint64_t)room / k : 0;
    size_t bounded = 0;
    for (size_t i = 0; i < n; i++) {
        if (!t[i].sampled || (!tight && !t[i].bounded)) continue;
        Cube__HvDiskRoom req = CUBE__HV_DISK_ROOM__INIT;
        req.limited = tight;
        req.writable_bytes = share;
        ProtobufCMessage *resp = NULL;
        cube_err err = {0};
        if (cube_rpc_call_once(t[i].control, "/cube.Hypervisor/SetDiskRoom", &req.base,
                               &cube__empty__descriptor, &resp, SAMPLE_CALL_MS, &err) < 0) {
            if (err.code != ENOTSUP && err.code != ENOSYS) /* no disk of its own: nothing to bound */
                cube_log_warn("sandbox disk not bounded", "sandbox=%s err=\"%s\"", t[i].sandbox_id, err.msg);
            continue;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        pthread_mutex_lock(&c->lock);
        cl_slot *s = cl_find_by_sandbox(c, t[i].sandbox_id);
        if (s) s->disk_bounded = tight;
        pthread_mutex_unlock(&c->lock);
        if (tight) bounded++;
    }
    /* volumes: bounded here (the node has them mounted); lifted whenever the node has room and they may have
     * been bounded (by this cubelet's last rounds, or before it started) */
    bool lift = !tight && (c->disk_tight || !c->disk_guard_ran);
    for (size_t i = 0; i < nv && (tight || lift); i++) {
        cube_err err = {0};
        char path[4400];
        snprintf(path, sizeof(path), "%s/volumes/%s", c->cfg.data_dir, vid[i]);
        if (hv_disk_set_room(path, tight, share, &err) < 0)
            cube_log_warn("volume disk not bounded", "volume=%s err=\"%s\"", vid[i], err.msg);
        else if (tight)
            bounded++;
    }
    cube_metric_set(
        "cube_node_disk_bounded_sandboxes",
        "Sandboxes and volumes whose writes the node bounds while its disk is short of what theirs "
        "could take",
        (double)bounded);
    if (tight != c->disk_tight)
        cube_log_warn(
            tight ? "node disk short: each sandbox and volume may write an equal share of what is left"
                  : "node disk has room again: sandboxes' and volumes' disk bounds lifted",
            "free_mb=%llu reserve_mb=%lld could_write_mb=%llu share_mb=%llu",
            (unsigned long long)vfs.f_bavail * vfs.f_frsize >> 20, c->cfg.disk_reserve_mb, could >> 20,
            (unsigned long long)share >> 20);
    c->disk_tight = tight; /* the sampler's thread alone */
    c->disk_guard_ran = true;
    return tight;
}

static void fill_sample(metrics_sample *x, const Cube__HvStats *st, int64_t at_ms)
{
    memset(x, 0, sizeof(*x));
    x->at_ms = at_ms;
    x->cpu_count = st->cpu_count;
    x->mem_used = st->mem_used;
    x->mem_total = st->mem_total;
    x->mem_cache = st->mem_cache;
    x->disk_used = st->disk_used;
    x->disk_total = st->disk_total;
}

/* One round: who to ask (with the lock), then each asked without it, each answer kept if the sandbox is
 * still there. true: the node's disk is short (disk_guard). */
static bool sample_round(cubelet *c)
{
    size_t n = 0, cap = 0;
    sample_target *t = NULL;
    for (cl_slot *s = c->slots; s; s = s->next) {
        if (s->state != SLOT_CLAIMED || s->dying || s->stopped) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            sample_target *nt = realloc(t, nc * sizeof(*t));
            if (!nt) break;
            t = nt;
            cap = nc;
        }
        snprintf(t[n].sandbox_id, sizeof(t[n].sandbox_id), "%s", s->sandbox_id);
        t[n].sampled = false;
        t[n].bounded = s->disk_bounded;
        if (!(t[n].control = strdup(s->control))) break;
        if (asprintf(&t[n].log, "%s/sandbox.log", s->state_dir) < 0) {
            free(t[n].control);
            break;
        }
        n++;
    }
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        Cube__Empty e = CUBE__EMPTY__INIT;
        ProtobufCMessage *resp = NULL;
        cube_err err = {0};
        int rc = cube_rpc_call_once(t[i].control, "/cube.Hypervisor/Stats", &e.base,
                                    &cube__hv_stats__descriptor, &resp, SAMPLE_CALL_MS, &err);
        if (cl_sandbox_log_trim(t[i].log, SANDBOX_LOG_MAX, SANDBOX_LOG_KEEP) > 0)
            cube_log_info("sandbox log cut to its tail", "sandbox=%s kept=%d", t[i].sandbox_id,
                          SANDBOX_LOG_KEEP);
        free(t[i].log);
        if (rc < 0) continue;
        const Cube__HvStats *st = (const Cube__HvStats *)resp;
        t[i].sampled = st->disk_total > 0;
        t[i].disk_free = st->disk_total > st->disk_used ? st->disk_total - st->disk_used : 0;
        t[i].disk_pending = st->disk_pending;
        metrics_sample x;
        fill_sample(&x, st, cube_now_unix_ms());
        int64_t mono = cube_now_mono_ns();
        pthread_mutex_lock(&c->lock);
        cl_slot *s = cl_find_by_sandbox(c, t[i].sandbox_id);
        if (s && s->state == SLOT_CLAIMED && !s->history) s->history = calloc(1, sizeof(*s->history));
        if (s && s->state == SLOT_CLAIMED && s->history)
            metrics_history_add(s->history, &x, st->cpu_usage_ns, mono);
        pthread_mutex_unlock(&c->lock);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    bool tight = disk_guard(c, t, n);
    for (size_t i = 0; i < n; i++) free(t[i].control);
    free(t);
    pthread_mutex_lock(&c->lock);
    return tight;
}

void *cl_sampler_loop(void *arg)
{
    cubelet *c = arg;
    pthread_mutex_lock(&c->lock);
    bool tight = true; /* the first round soon after a start: the guard has not looked yet */
    while (!c->stopping) {
        int every = c->cfg.metrics_sample_ms > 0 ? c->cfg.metrics_sample_ms : METRICS_SAMPLE_MS;
        if (tight && every > SAMPLE_TIGHT_MS) every = SAMPLE_TIGHT_MS;
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += every / 1000;
        dl.tv_nsec += (long)(every % 1000) * 1000000;
        if (dl.tv_nsec >= 1000000000) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000;
        }
        while (!c->stopping && pthread_cond_timedwait(&c->tick, &c->lock, &dl) != ETIMEDOUT) {
        }
        if (!c->stopping) tight = sample_round(c);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static Cube__HvStats *to_proto(cube_rpc_ctx *ctx, const metrics_sample *x)
{
    Cube__HvStats *o = cube_rpc_alloc(ctx, sizeof(*o));
    cube__hv_stats__init(o);
    o->sampled_at_ms = x->at_ms;
    o->cpu_used_pct = x->cpu_pct;
    o->cpu_count = x->cpu_count;
    o->mem_used = x->mem_used;
    o->mem_total = x->mem_total;
    o->mem_cache = x->mem_cache;
    o->disk_used = x->disk_used;
    o->disk_total = x->disk_total;
    return o;
}

int cl_sandbox_stats_history(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    cubelet *c = svc;
    const Cube__NodeSandboxRef *req = reqp;
    Cube__HvStatsHistory *out = respp;
    metrics_history *h = malloc(sizeof(*h));
    if (!h) return cube_err_set(err, ENOMEM, "out of memory");
    pthread_mutex_lock(&c->lock);
    cl_slot *s = cl_find_by_sandbox(c, req->sandbox_id ? req->sandbox_id : "");
    char control[sizeof(s->control)];
    if (s) {
        snprintf(control, sizeof(control), "%s", s->control);
        if (s->history)
            *h = *s->history;
        else
            memset(h, 0, sizeof(*h));
    }
    pthread_mutex_unlock(&c->lock);
    if (!s) {
        free(h);
        return cube_err_set(err, ENOENT, "sandbox '%s' is not on this node", req->sandbox_id);
    }
    /* and one taken now, its CPU over the time since the last kept sample */
    Cube__Empty e = CUBE__EMPTY__INIT;
    ProtobufCMessage *resp = NULL;
    int rc = cube_rpc_call_once(control, "/cube.Hypervisor/Stats", &e.base, &cube__hv_stats__descriptor,
                                &resp, 5000, err);
    if (rc < 0 && h->n == 0) {
        free(h);
        return -1;
    }
    out->samples = cube_rpc_alloc(ctx, (size_t)(h->n + 1) * sizeof(*out->samples));
    for (int i = 0; i < h->n; i++) out->samples[out->n_samples++] = to_proto(ctx, &h->s[i]);
    if (rc == 0) {
        const Cube__HvStats *st = (const Cube__HvStats *)resp;
        metrics_sample now;
        fill_sample(&now, st, cube_now_unix_ms());
        h->every = 1;
        h->skipped = 0;
        if (h->last_mono_ns) {
            metrics_history_add(h, &now, st->cpu_usage_ns, cube_now_mono_ns());
        } else {
            now.cpu_pct = (float)st->cpu_used_pct;
        }
        out->samples[out->n_samples++] = to_proto(ctx, &now);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    free(h);
    return 0;
}
