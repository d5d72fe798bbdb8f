/* The node's templates: read from <data>/templates/<name>/current/config.json (and a tag's from
 * <name>/tags/<tag>: template "name:tag"), published on a list that
 * readers walk without a lock (a template is never freed while the cubelet runs, only retired), replaced
 * whole when rebuilt; and the empty disk images their sandboxes' writable layers are copies of. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cubelet.h"
#include "cubelet_internal.h"
#include "disk.h"
#include "fsutil.h"
#include "log.h"
#include "template_config.h"
#include "timeutil.h"

int cl_node_disk_mb(const cubelet *c)
{
    return c->cfg.disk_mb > 0 ? c->cfg.disk_mb : 1024;
}

int cl_disk_template(cubelet *c, int size_mb, char *out, size_t cap, cube_err *err)
{
    char disks[4200];
    snprintf(disks, sizeof(disks), "%s/disks", c->cfg.data_dir);
    return hv_disk_template(disks, (uint64_t)size_mb, out, cap, err);
}

/* Disks made ahead by an earlier cubelet's version, which named its copies (<template>.ahead-<pid>-<n>) until
 * a loop device held them: one killed while copying left its copy on the node's disk. Now copies have no name
 * (hv_disk_prepare); those of a process no longer alive go. */
void cl_sweep_disk_copies(const cubelet *c)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/disks", c->cfg.data_dir);
    DIR *d = opendir(dir);
    for (struct dirent *de; d && (de = readdir(d));) {
        const char *ahead = strstr(de->d_name, ".img.ahead-");
        int pid = ahead ? atoi(ahead + strlen(".img.ahead-")) : 0;
        if (pid <= 0) continue;
        if (pid != getpid() && (kill(pid, 0) == 0 || errno != ESRCH)) continue; /* its maker may live */
        if (unlinkat(dirfd(d), de->d_name, 0) == 0)
            cube_log_info("stale disk copy removed", "file=%s", de->d_name);
    }
    if (d) closedir(d);
}

void cl_template_link(const cubelet *c, const char *full, char *out, size_t cap)
{
    const char *colon = strchr(full, ':');
    if (colon)
        snprintf(out, cap, "%s/templates/%.*s/tags/%s", c->cfg.data_dir, (int)(colon - full), full,
                 colon + 1);
    else
        snprintf(out, cap, "%s/templates/%s/current", c->cfg.data_dir, full);
}

/* One template ("name", its default build, or "name:tag") from its link, not yet published; NULL when it has
 * no readable config. */
static cl_template *load_template(cubelet *c, const char *name)
{
    char link[4400], cfgp[4500], rootfs[4500];
    cl_template_link(c, name, link, sizeof(link));
    snprintf(cfgp, sizeof(cfgp), "%s/config.json", link);
    snprintf(rootfs, sizeof(rootfs), "%s/rootfs", link);
    cube_tpl_config cfg;
    cube_err rerr = {0};
    if (cube_tpl_config_read(cfgp, &cfg, &rerr) < 0) {
        if (rerr.code != ENOENT)
            cube_log_warn("template config unreadable", "template=%s err=\"%s\"", name, rerr.msg);
        return NULL;
    }
    cl_template *t = calloc(1, sizeof(*t));
    if (!t) {
        cube_tpl_config_free(&cfg);
        return NULL;
    }
    snprintf(t->name, sizeof(t->name), "%s", name);
    struct stat lst;
    if (lstat(link, &lst) == 0)
        t->assigned_at_ms = (int64_t)lst.st_mtim.tv_sec * 1000 + lst.st_mtim.tv_nsec / 1000000;
    /* a snapshot or a build names the rootfs it stands on and the layers above it */
    if (*cfg.rootfs) snprintf(rootfs, sizeof(rootfs), "%s", cfg.rootfs);
    snprintf(t->layers, sizeof(t->layers), "%s", cfg.layers);
    snprintf(t->snapshot_of, sizeof(t->snapshot_of), "%s", cfg.snapshot_of);
    t->pool = cfg.pool >= 0 ? cfg.pool : c->cfg.pool_size;
    if (strchr(name, ':')) t->pool = 0; /* a tag's own build pools only while creates ask for it */
    if (!realpath(rootfs, t->rootfs)) snprintf(t->rootfs, sizeof(t->rootfs), "%s", rootfs);
    t->uid_base = cfg.uid_base ? cfg.uid_base : CL_UID_BASE_DEFAULT;
    snprintf(t->user, sizeof(t->user), "%s", *cfg.user ? cfg.user : "root");
    snprintf(t->workdir, sizeof(t->workdir), "%s", *cfg.workdir ? cfg.workdir : "/");
    snprintf(t->build_id, sizeof(t->build_id), "%s", cfg.id);
    snprintf(t->from_template, sizeof(t->from_template), "%s", cfg.from_template);
    snprintf(t->from_build, sizeof(t->from_build), "%s", cfg.from_build);
    t->env_json = cfg.env_json;
    t->start_cmd = cfg.start_cmd;
    t->ready_cmd = cfg.ready_cmd;
    cfg.env_json = cfg.start_cmd = cfg.ready_cmd = NULL; /* the template has them */
    /* each sandbox's size; out of range is a template mistake: said, and the default used */
    t->cpus = TEMPLATE_CPUS_DEFAULT;
    t->memory_mb = TEMPLATE_MEMORY_MB_DEFAULT;
    if (cfg.cpu >= 1 && cfg.cpu <= TEMPLATE_CPUS_MAX)
        t->cpus = (int)cfg.cpu;
    else if (cfg.cpu)
        cube_log_warn("template cpu out of range: default used", "template=%s max=%d", t->name,
                      TEMPLATE_CPUS_MAX);
    if (cfg.memory_mb >= TEMPLATE_MEMORY_MB_MIN && cfg.memory_mb <= TEMPLATE_MEMORY_MB_MAX)
        t->memory_mb = (int)cfg.memory_mb;
    else if (cfg.memory_mb)
        cube_log_warn("template memoryMB out of range: default used", "template=%s min=%d max=%d", t->name,
                      TEMPLATE_MEMORY_MB_MIN, TEMPLATE_MEMORY_MB_MAX);
    /* a disk larger than the node's: its empty image made now, off every create's path (it runs mkfs) */
    int node_disk = cl_node_disk_mb(c);
    t->disk_mb = node_disk;
    if (cfg.disk_mb > node_disk && cfg.disk_mb <= TEMPLATE_DISK_MB_MAX) {
        cube_err derr = {0};
        if (cl_disk_template(c, (int)cfg.disk_mb, t->disk_template, sizeof(t->disk_template), &derr) == 0)
            t->disk_mb = (int)cfg.disk_mb;
        else
            cube_log_warn("template disk not made: the node's size used", "template=%s err=\"%s\"", t->name,
                          derr.msg);
    } else if (cfg.disk_mb > TEMPLATE_DISK_MB_MAX) {
        cube_log_warn("template diskMB out of range: the node's size used", "template=%s max=%d", t->name,
                      TEMPLATE_DISK_MB_MAX);
    }
    cube_tpl_config_free(&cfg);
    return t;
}

static void publish_template(cubelet *c, cl_template *t)
{
    t->next = c->templates;
    __atomic_store_n(&c->templates, t, __ATOMIC_RELEASE);
    cube_log_info("template found", "template=%s rootfs=%s", t->name, t->rootfs);
}

/* Adds the templates built since the last scan (at start, then once a heartbeat). Templates are never removed
 * while the cubelet runs, and a new one is published whole, so readers walk the list without the lock. */
int cl_load_templates(cubelet *c, cube_err *err)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/templates", c->cfg.data_dir);
    DIR *d = opendir(dir);
    if (!d) return 0; /* no templates yet: the node runs nothing until some are built */
    struct dirent *de;
    pthread_mutex_lock(&c->templates_lock); /* one publisher at a time: heartbeat scans, builds */
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || strlen(de->d_name) > 63) continue;
        if (!cl_find_template(c, de->d_name)) {
            cl_template *t = load_template(c, de->d_name);
            if (t) publish_template(c, t);
        }
        /* its tags: name:tag each */
        char tags[4500];
        snprintf(tags, sizeof(tags), "%s/%s/tags", dir, de->d_name);
        DIR *td = opendir(tags);
        struct dirent *te;
        while (td && (te = readdir(td))) {
            char full[128];
            if (te->d_name[0] == '.' || strlen(te->d_name) > 63) continue;
            snprintf(full, sizeof(full), "%s:%s", de->d_name, te->d_name);
            if (cl_find_template(c, full)) continue;
            cl_template *t = load_template(c, full);
            if (t) publish_template(c, t);
        }
        if (td) closedir(td);
    }
    pthread_mutex_unlock(&c->templates_lock);
    closedir(d);
    (void)err;
    return 0;
}

int cl_replace_template(cubelet *c, const char *name, cube_err *err)
{
    pthread_mutex_lock(&c->templates_lock);
    cl_template *old = (cl_template *)cl_find_template(c, name), *t = load_template(c, name);
    if (!t) {
        pthread_mutex_unlock(&c->templates_lock);
        return cube_err_set(err, EIO, "template '%s': its new config cannot be read", name);
    }
    publish_template(c, t); /* found first from now on */
    pthread_mutex_unlock(&c->templates_lock);
    if (old) cl_retire_template(c, old);
    return 0;
}

const cl_template *cl_find_template(cubelet *c, const char *name)
{
    for (cl_template *t = __atomic_load_n(&c->templates, __ATOMIC_ACQUIRE); t; t = t->next)
        if (!__atomic_load_n(&t->gone, __ATOMIC_ACQUIRE) && strcmp(t->name, name) == 0) return t;
    return NULL;
}

void cl_free_templates(cubelet *c)
{
    for (cl_template *t = c->templates, *n; t; t = n) {
        n = t->next;
        free(t->env_json);
        free(t->start_cmd);
        free(t->ready_cmd);
        free(t);
    }
    c->templates = NULL;
}

/* ---- deletion: the node's own files, asked by the masters ---- */

/* t is name itself or one of its tags */
static bool of_template(const cl_template *t, const char *name)
{
    size_t n = strlen(name);
    return strncmp(t->name, name, n) == 0 && (t->name[n] == '\0' || t->name[n] == ':');
}

/* Is one of layers ("a:b") under the directory dir (of length dl)? */
static bool layers_under(const char *layers, const char *dir, size_t dl)
{
    for (const char *p = layers; (p = strstr(p, dir)); p += dl)
        if ((p == layers || p[-1] == ':') && p[dl] == '/') return true;
    return false;
}

/* A template's files go once nothing here stands on them: no sandbox of it (or of its tags) handed out, no
 * other template built or snapshotted on top of its rootfs. They are renamed aside at once (no new sandbox
 * finds them) and removed a little later (cl_sweep_deleted_templates), after any start already under way. */
int cl_delete_template(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    cubelet *c = svc;
    const Cube__TemplateRef *req = reqp;
    const char *name = req->template_id ? req->template_id : "";
    char dir[4400], real[PATH_MAX], gone[4600];
    if (!*name || name[0] == '.' || strchr(name, '/') || strchr(name, ':') || strlen(name) > 63)
        return cube_err_set(err, EINVAL, "template '%s': not a template name", name);
    snprintf(dir, sizeof(dir), "%s/templates/%s", c->cfg.data_dir, name);
    char cur[4500];
    cl_template_link(c, name, cur, sizeof(cur));
    if (access(cur, F_OK) != 0 || !realpath(dir, real))
        return cube_err_set(err, ENOENT, "template '%s' not found", name);
    size_t rl = strlen(real);
    int rc = 0;
    pthread_mutex_lock(&c->lock);
    /* (a sandbox rolled back to a snapshot runs on the snapshot's layers) */
    for (cl_slot *s = c->slots; s && rc == 0; s = s->next)
        if ((of_template(s->tpl, name) || layers_under(s->layers, real, rl)) &&
            (s->state == SLOT_CLAIMED || s->state == SLOT_PAUSED))
            rc = cube_err_set(err, EBUSY, "template '%s' is used by sandbox %s", name, s->sandbox_id);
    pthread_mutex_unlock(&c->lock);
    for (cl_template *t = __atomic_load_n(&c->templates, __ATOMIC_ACQUIRE); t && rc == 0; t = t->next) {
        if (__atomic_load_n(&t->gone, __ATOMIC_ACQUIRE) || of_template(t, name)) continue;
        bool on_it =
            (strncmp(t->rootfs, real, rl) == 0 && t->rootfs[rl] == '/') || layers_under(t->layers, real, rl);
        if (on_it)
            rc = cube_err_set(err, EBUSY, "template '%s' is what template '%s' is built on", name, t->name);
    }
    if (rc < 0) return -1;
    snprintf(gone, sizeof(gone), "%s/templates/.deleted-%lld-%s", c->cfg.data_dir,
             (long long)cube_now_unix_ms(), name);
    if (rename(dir, gone) < 0) return cube_err_sys(err, errno, "remove template %s", name);
    for (cl_template *t = __atomic_load_n(&c->templates, __ATOMIC_ACQUIRE); t; t = t->next)
        if (!__atomic_load_n(&t->gone, __ATOMIC_ACQUIRE) && of_template(t, name)) cl_retire_template(c, t);
    cube_log_info("template deleted", "template=%s", name);
    cl_send_heartbeat(c); /* every master stops sending creates for it now */
    return 0;
}

void cl_sweep_deleted_templates(cubelet *c)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/templates", c->cfg.data_dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    int64_t now = cube_now_unix_ms();
    while (d && (de = readdir(d))) {
        long long at;
        if (sscanf(de->d_name, ".deleted-%lld-", &at) != 1 || now - at < 10000) continue;
        char p[4500];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        cube_rm_rf(p);
    }
    if (d) closedir(d);
}
