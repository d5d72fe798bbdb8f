/* The node's heartbeat to every master (its pools, its sandboxes, its address), and the templates it picks up
 * or drops between two heartbeats. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "cubelet_internal.h"
#include "fsutil.h"
#include "log.h"
#include "master.pb-c.h"
#include "metrics.h"
#include "timeutil.h"

void cl_send_heartbeat(cubelet *c)
{
    Cube__NodeInfo ni = CUBE__NODE_INFO__INIT;
    ni.node_id = (char *)c->cfg.node_id;
    ni.address = (char *)c->cfg.listen;
    ni.proxy_address = (char *)(c->cfg.proxy_address ? c->cfg.proxy_address : "");
    ni.backend = "ns";
    /* what the node is and how busy its host is, for operators (cubemastercli, the console) */
    Cube__Resources cap = CUBE__RESOURCES__INIT;
    struct sysinfo si;
    cap.cpu_count = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
    if (sysinfo(&si) == 0) {
        cap.memory_mb = (uint64_t)si.totalram * si.mem_unit >> 20;
        ni.load1 = si.loads[0] / (double)(1 << SI_LOAD_SHIFT);
    }
    ni.capacity = &cap;
    long long avail_kb = cube_meminfo_kb("MemAvailable"); /* sysinfo's freeram leaves out the page cache */
    ni.mem_available_mb = avail_kb > 0 ? (uint64_t)avail_kb >> 10 : 0;
    long long mem_left, disk_left;
    cl_room_left(c, &mem_left, &disk_left);
    ni.room_reported = true;
    ni.memory_left_mb = mem_left;
    ni.disk_left_mb = disk_left;
    size_t nt = 0;
    for (cl_template *t = __atomic_load_n(&c->templates, __ATOMIC_ACQUIRE); t; t = t->next)
        nt += !__atomic_load_n(&t->gone, __ATOMIC_ACQUIRE);
    char **names = calloc(nt ? nt : 1, sizeof(char *));
    Cube__NodeInfo__PoolReadyEntry *entries = calloc(nt ? nt : 1, sizeof(*entries));
    Cube__NodeInfo__PoolReadyEntry **eptrs = calloc(nt ? nt : 1, sizeof(*eptrs));
    Cube__NodeInfo__PoolTargetEntry *targets = calloc(nt ? nt : 1, sizeof(*targets));
    Cube__NodeInfo__PoolTargetEntry **tptrs = calloc(nt ? nt : 1, sizeof(*tptrs));
    Cube__TemplateSize *sizes = calloc(nt ? nt : 1, sizeof(*sizes)),
                       **sptrs = calloc(nt ? nt : 1, sizeof(*sptrs));
    Cube__Resources *sres = calloc(nt ? nt : 1, sizeof(*sres));
    if (!names || !entries || !eptrs || !targets || !tptrs || !sizes || !sptrs || !sres) goto out;
    pthread_mutex_lock(&c->lock);
    size_t i = 0;
    for (cl_template *t = __atomic_load_n(&c->templates, __ATOMIC_ACQUIRE); t && i < nt; t = t->next) {
        if (__atomic_load_n(&t->gone, __ATOMIC_ACQUIRE)) continue;
        names[i] = t->name;
        cube__node_info__pool_ready_entry__init(&entries[i]);
        entries[i].key = t->name;
        eptrs[i] = &entries[i];
        cube__node_info__pool_target_entry__init(&targets[i]);
        targets[i].key = t->name;
        targets[i].value = (uint32_t)cl_pool_target(c, t);
        tptrs[i] = &targets[i];
        cube__template_size__init(&sizes[i]);
        cube__resources__init(&sres[i]);
        sres[i].cpu_count = (uint32_t)t->cpus;
        sres[i].memory_mb = (uint64_t)t->memory_mb;
        sres[i].disk_mb = (uint64_t)t->disk_mb;
        sizes[i].template_id = t->name;
        sizes[i].resources = &sres[i];
        sizes[i].build_id = t->build_id;
        sizes[i].from_template = t->from_template; /* a build: other nodes on the same base may take a copy */
        sizes[i].from_build = t->from_build;
        sizes[i].assigned_at_ms = t->assigned_at_ms;
        sizes[i].snapshot_of = t->snapshot_of; /* the masters record a snapshot they have no record of */
        sptrs[i] = &sizes[i];
        for (cl_slot *s = c->slots; s; s = s->next) {
            if (s->tpl == t && s->state == SLOT_READY) entries[i].value++;
            if (s->tpl == t && s->state >= SLOT_CLAIMED) ni.running++;
        }
        i++;
    }
    pthread_mutex_unlock(&c->lock);
    cube_metric_clear("cube_pool_ready{");
    for (size_t k = 0; k < i; k++) {
        char name[160];
        snprintf(name, sizeof(name), "cube_pool_ready{template=\"%s\"}", entries[k].key);
        cube_metric_set(name, "Ready sandboxes in the pool, by template", entries[k].value);
    }
    cube_metric_set("cube_node_sandboxes", "Sandboxes handed out on this node", ni.running);
    ni.n_templates = nt;
    ni.templates = names;
    ni.n_pool_ready = nt;
    ni.pool_ready = eptrs;
    ni.n_pool_target = i;
    ni.pool_target = tptrs;
    ni.n_template_sizes = i;
    ni.template_sizes = sptrs;
    ni.draining = __atomic_load_n(&c->draining, __ATOMIC_ACQUIRE);
    for (int m = 0; m < c->masters.n; m++) { /* every master learns the node itself: no shared node table */
        ProtobufCMessage *resp = NULL;
        cube_err err = {0};
        cube_rpc_call_opts o = {.timeout_ms = 2000};
        if (cube_rpc_call(c->masters.c[m], "/cube.Master/Heartbeat", &ni.base,
                          &cube__register_node_response__descriptor, &resp, &o, &err) == 0)
            protobuf_c_message_free_unpacked(resp, NULL);
        else
            cube_log_debug("heartbeat failed", "master=%d err=\"%s\"", m, err.msg);
    }
out:
    free(names);
    free(entries);
    free(eptrs);
    free(targets);
    free(tptrs);
    free(sizes);
    free(sptrs);
    free(sres);
}

void cl_retire_template(cubelet *c, cl_template *t)
{
    __atomic_store_n(&t->gone, 1, __ATOMIC_RELEASE);
    cl_slot *drop = NULL;
    pthread_mutex_lock(&c->lock);
    for (cl_slot **pp = &c->slots; *pp;) {
        if ((*pp)->tpl == t && (*pp)->state == SLOT_READY) {
            cl_slot *s = *pp;
            *pp = s->next;
            s->next = drop;
            drop = s;
        } else {
            pp = &(*pp)->next;
        }
    }
    pthread_cond_broadcast(&c->slot_ready); /* creates waiting for its pool get their answer now */
    pthread_mutex_unlock(&c->lock);
    while (drop) {
        cl_slot *n = drop->next;
        cl_destroy_slot(c, drop);
        drop = n;
    }
}

/* A template whose current/ link (or a tag's) was removed (cubemastercli tpl delete, a tag removed) takes no
 * new sandboxes, and its ready pool goes: those sandboxes sit on files about to be deleted. */
static void drop_deleted_templates(cubelet *c)
{
    for (cl_template *t = __atomic_load_n(&c->templates, __ATOMIC_ACQUIRE); t; t = t->next) {
        if (__atomic_load_n(&t->gone, __ATOMIC_ACQUIRE)) continue;
        char cur[4400];
        cl_template_link(c, t->name, cur, sizeof(cur));
        if (access(cur, F_OK) == 0) continue;
        cube_log_info("template removed", "template=%s", t->name);
        cl_retire_template(c, t);
    }
}

void *cl_heartbeat_loop(void *arg)
{
    cubelet *c = arg;
    pthread_mutex_lock(&c->lock);
    while (!c->stopping) {
        pthread_mutex_unlock(&c->lock);
        cube_err err = {0};
        drop_deleted_templates(c);
        cl_sweep_deleted_templates(c);
        cl_sweep_exports(c);
        if (cl_load_templates(c, &err) < 0) cube_log_warn("template scan failed", "err=\"%s\"", err.msg);
        pthread_cond_signal(&c->refill); /* a new template wants its pool */
        cl_send_heartbeat(c);
        pthread_mutex_lock(&c->lock);
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 1;
        if (!c->stopping) pthread_cond_timedwait(&c->tick, &c->lock, &dl);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}
