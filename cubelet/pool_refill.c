/* Pools of ready sandboxes kept at their targets (see cubelet.h): the refill thread. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "cubelet_internal.h"
#include "disk.h"
#include "log.h"
#include "netclient.h"
#include "pool_sched.h"
#include "timeutil.h"

/* How much memory (MB) beyond what is left for sandboxes (cl_room_left) the node has to lend to idle
 * sandboxes beyond the configured pools. */
#define POOL_MEM_FLOOR_MB 1024
/* How long after a create is answered from a pool its refill waits, while the pool holds half its target. */
#define REFILL_SETTLE_MS 40

/* What is left for new sandboxes beyond the node's reserves (cl_room_left), read at most once a second: the
 * refill thread and heartbeats ask at every turn. */
static void room_now(cubelet *c, long long *memory_mb, long long *disk_mb)
{
    int64_t now = cube_now_mono_ms(), at = __atomic_load_n(&c->room_checked_ms, __ATOMIC_RELAXED);
    if (at == 0 || now - at >= 1000) {
        long long m, d;
        cl_room_left(c, &m, &d);
        __atomic_store_n(&c->room_memory_mb, m, __ATOMIC_RELAXED);
        __atomic_store_n(&c->room_disk_mb, d, __ATOMIC_RELAXED);
        __atomic_store_n(&c->room_checked_ms, now ? now : 1, __ATOMIC_RELAXED);
        *memory_mb = m;
        *disk_mb = d;
        return;
    }
    *memory_mb = __atomic_load_n(&c->room_memory_mb, __ATOMIC_RELAXED);
    *disk_mb = __atomic_load_n(&c->room_disk_mb, __ATOMIC_RELAXED);
}

/* With the lock: how many ready sandboxes t's pool should hold now (pool_demand.h): it follows demand while
 * the node has memory to spare, else keeps the configured size; and none while the node has not the room
 * for one more of t's sandboxes (creates are refused then: cl_room_admit), so that idle ones give theirs
 * back and none is started. */
int cl_pool_target(cubelet *c, cl_template *t)
{
    long long mem_left, disk_left;
    room_now(c, &mem_left, &disk_left);
    int disk_mb = t->disk_mb > 0 ? t->disk_mb : cl_node_disk_mb(c);
    if (mem_left < t->memory_mb || disk_left < disk_mb) return 0;
    int max = c->cfg.pool_max > t->pool ? c->cfg.pool_max : t->pool;
    if (mem_left <= POOL_MEM_FLOOR_MB) max = t->pool;
    return pool_demand_target(&t->demand, cube_now_mono_ms(), t->pool, max);
}

/* Keeps each template's pool at its target (cl_pool_target); sleeps until a claim or a loss wakes it, and
 * while a pool is above its configured size, looks again every second to let it shrink when demand goes. */
void *cl_refill_loop(void *arg)
{
    cubelet *c = arg;
    /* Refills run at low priority, so that a burst of creates is not slowed by the sandboxes
     * being made to replace them (on a 2-core node one start costs tens of ms of CPU); see pool_sched.h. */
    cl_sched_refill(false);
    int lock_fd = cl_pool_lock_open(CL_POOL_LOCK);
    pthread_mutex_lock(&c->lock);
    /* as many writable layers made ahead as cold starts may run at once */
    int max_disks = (int)(sizeof(c->ready_disks) / sizeof(c->ready_disks[0]));
    int disks_want = c->cold_max < max_disks ? c->cold_max : max_disks;
    int leases_want = c->cold_max < CL_LEASES_AHEAD ? c->cold_max : CL_LEASES_AHEAD;
    unsigned made = 0;
    while (!c->stopping) {
        if (c->nready_disks < disks_want && !c->disks_failed && *c->disk_template) {
            /* writable layers for cold starts first: a few, cheap (a sparse copy and a mount) */
            char scratch[4400];
            snprintf(scratch, sizeof(scratch), "%s.ahead-%d-%u", c->disk_template, (int)getpid(), made++);
            pthread_mutex_unlock(&c->lock);
            cube_err derr = {0};
            int fd = hv_disk_prepare(c->disk_template, scratch, &derr);
            pthread_mutex_lock(&c->lock);
            if (fd < 0) {
                cube_log_warn("no writable layers made ahead: cold starts copy the template", "err=\"%s\"",
                              derr.msg);
                c->disks_failed = true;
            } else if (c->nready_disks < max_disks) {
                c->ready_disks[c->nready_disks++] = fd;
            } else {
                close(fd);
            }
            continue;
        }
        if (c->net && c->nready_leases < leases_want &&
            !__atomic_load_n(&c->leases_failed, __ATOMIC_RELAXED)) {
            /* network slots for cold starts too (a round trip to cube-net each) */
            pthread_mutex_unlock(&c->lock);
            cl_lease l;
            cube_err lerr = {0};
            int rc = cl_lease_ahead(c, &l, &lerr);
            pthread_mutex_lock(&c->lock);
            if (rc < 0) {
                cube_log_warn("no network slots leased ahead: cold starts lease their own", "err=\"%s\"",
                              lerr.msg);
                __atomic_store_n(&c->leases_failed, true, __ATOMIC_RELAXED);
            } else if (c->stopping) {
                pthread_mutex_unlock(&c->lock);
                cl_net_release(c, l.slot_id, false);
                pthread_mutex_lock(&c->lock);
            } else {
                c->ready_leases[c->nready_leases++] = l;
            }
            continue;
        }
        cl_template *need = NULL;
        cl_slot *extra = NULL;
        bool raised = false;
        int need_ready = 0, need_target = 0;
        for (cl_template *t = __atomic_load_n(&c->templates, __ATOMIC_ACQUIRE); t && !need && !extra;
             t = t->next) {
            if (__atomic_load_n(&t->gone, __ATOMIC_ACQUIRE)) continue;
            int ready = 0, target = cl_pool_target(c, t);
            cl_slot *idle = NULL;
            for (cl_slot *s = c->slots; s; s = s->next)
                if (s->tpl == t && (s->state == SLOT_READY || s->state == SLOT_STARTING)) {
                    ready++;
                    if (s->state == SLOT_READY) idle = s;
                }
            bool busy = pool_demand_busy(&t->demand, cube_now_mono_ms());
            /* busy: the target may rise once the creates stop (a burst over), which nothing else signals; a
             * target below the pool's size (no room for it) rises again when the node has room */
            raised = raised || target != t->pool || ready > t->pool || busy;
            if (ready < target) {
                need = t;
                need_ready = ready;
                need_target = target;
            } else if (ready > target && idle && !busy)
                extra = idle; /* demand went: one idle sandbox at a time goes (in a quiet: pool_demand.h) */
        }
        if (extra) {
            cl_unlink_slot(c, extra);
            pthread_mutex_unlock(&c->lock);
            cl_destroy_slot(c, extra);
            pthread_mutex_lock(&c->lock);
            continue;
        }
        if (need && c->nretiring >= RETIRE_BEHIND) need = NULL; /* teardowns first: the reaper wakes us */
        if (!need && !raised && c->nready_disks > disks_want) {
            /* demand went and the pools are back to their size: the ended sandboxes' disks kept for it go
             * too, but for the few kept for cold starts (each holds a loop device and its image) */
            int fd = c->ready_disks[--c->nready_disks];
            pthread_mutex_unlock(&c->lock);
            close(fd);
            pthread_mutex_lock(&c->lock);
            continue;
        }
        if (!need) {
            if (raised) {
                struct timespec dl;
                clock_gettime(CLOCK_REALTIME, &dl);
                dl.tv_sec += 1; /* background only: looked at again to grow after a burst, or to shrink */
                pthread_cond_timedwait(&c->refill, &c->lock, &dl);
            } else {
                pthread_cond_wait(&c->refill, &c->lock);
            }
            continue;
        }
        /* a sandbox just handed out is at its busiest (its first commands): while the pool still holds half
         * its target for the next creates, its refill waits for it to settle */
        int64_t settle = c->last_claim_ms + REFILL_SETTLE_MS - cube_now_mono_ms();
        if (settle > 0 && need_ready > 0 && 2 * need_ready >= need_target && c->creates_waiting == 0) {
            struct timespec dl = cube_timespec_after_ms(CLOCK_REALTIME, settle);
            pthread_cond_timedwait(&c->refill, &c->lock, &dl);
            continue;
        }
        /* creates waiting for a sandbox take this one as soon as it is ready: it is theirs, at their priority
         */
        bool urgent = c->creates_waiting > 0;
        /* an ended sandbox's disk, emptied, spares this start a copy of the template (made-ahead ones are
         * kept for cold starts) */
        int disk_fd = -1;
        if (c->nready_disks > disks_want && !*need->disk_template)
            disk_fd = c->ready_disks[--c->nready_disks];
        pthread_mutex_unlock(&c->lock);
        cl_sched_refill(urgent);
        cl_slot *s = NULL;
        cube_err err = {0};
        cl_pool_lock(lock_fd, 1);
        int rc = cl_spawn_slot(c, need, NULL, disk_fd, NULL, &s, &err);
        if (rc == 0) cl_slot_trust_ca(c, s);
        cl_pool_lock(lock_fd, 0);
        /* outside the pool lock: a slow start command delays this template's pool, not every one's */
        if (rc == 0) rc = cl_slot_start_cmd(c, s, need, &err);
        pthread_mutex_lock(&c->lock);
        if (rc < 0) {
            cube_log_error("pool refill failed", "template=%s err=\"%s\"", need->name, err.msg);
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_sec += 2; /* back off before trying again: background only */
            pthread_cond_timedwait(&c->refill, &c->lock, &dl);
            continue;
        }
        if (c->stopping) {
            pthread_mutex_unlock(&c->lock);
            cl_destroy_slot(c, s);
            pthread_mutex_lock(&c->lock);
            break;
        }
        s->next = c->slots;
        c->slots = s;
        /* a create waiting for this template's pool takes it (all wake: waiters may want other templates) */
        pthread_cond_broadcast(&c->slot_ready);
    }
    pthread_mutex_unlock(&c->lock);
    if (lock_fd >= 0) close(lock_fd);
    return NULL;
}
