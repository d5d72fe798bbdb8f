#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file_meta.h"
#include "id.h"
#include "timeutil.h"
#include "users.h"

typedef struct wdir {
    int wd;
    char *rel; /* "" for the root */
    struct wdir *next;
} wdir;

struct watcher {
    int fd;
    char *root;
    bool recursive, include_entry;
    wdir *dirs;
};

typedef struct watch_entry {
    char id[40];
    watcher *w;
    struct watch_entry *next;
} watch_entry;

struct watch_table {
    pthread_mutex_t lock;
    watch_entry *head;
};

static void perm_string(mode_t m, char out[11])
{
    out[0] = S_ISDIR(m) ? 'd' : S_ISLNK(m) ? 'L' : '-';
    const char *rwx = "rwxrwxrwx";
    for (int i = 0; i < 9; i++) out[i + 1] = (m & (1u << (8 - i))) ? rwx[i] : '-';
    out[10] = '\0';
}

cJSON *entry_info(const char *path, cube_err *err)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT) return cube_err_set(err, ENOENT, "path '%s' does not exist", path), NULL;
        return cube_err_sys(err, errno, "stat '%s'", path), NULL;
    }
    cJSON *o = cJSON_CreateObject();
    const char *slash = strrchr(path, '/');
    cJSON_AddStringToObject(o, "name", slash && slash[1] ? slash + 1 : path);
    cJSON_AddStringToObject(o, "type",
                            S_ISDIR(st.st_mode)   ? "FILE_TYPE_DIRECTORY"
                            : S_ISLNK(st.st_mode) ? "FILE_TYPE_SYMLINK"
                                                  : "FILE_TYPE_FILE");
    cJSON_AddStringToObject(o, "path", path);
    char size[32];
    snprintf(size, sizeof(size), "%lld", (long long)st.st_size); /* int64 travels as a string */
    cJSON_AddStringToObject(o, "size", size);
    cJSON_AddNumberToObject(o, "mode", st.st_mode & 07777);
    char perms[11];
    perm_string(st.st_mode, perms);
    cJSON_AddStringToObject(o, "permissions", perms);
    char name[256];
    if (users_name_of_uid(USERS_PASSWD, st.st_uid, name, sizeof(name)) < 0)
        snprintf(name, sizeof(name), "%u", st.st_uid);
    cJSON_AddStringToObject(o, "owner", name);
    if (users_name_of_gid(USERS_GROUP, st.st_gid, name, sizeof(name)) < 0)
        snprintf(name, sizeof(name), "%u", st.st_gid);
    cJSON_AddStringToObject(o, "group", name);
    char ts[CUBE_RFC3339_MAX];
    cube_rfc3339_format((int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000, ts);
    cJSON_AddStringToObject(o, "modifiedTime", ts);
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n >= 0) {
            target[n] = '\0';
            cJSON_AddStringToObject(o, "symlinkTarget", target);
        }
    }
    cJSON *meta = file_meta_read(path);
    if (meta) cJSON_AddItemToObject(o, "metadata", meta);
    return o;
}

#define WATCH_MASK (IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_ONLYDIR)

static cJSON *event_json(watcher *w, const char *name, const char *type, bool with_entry);

/* What one directory made at once may report of its contents: as many as the kernel's own queue of events
 * holds by default (max_queued_events); a tree moved in with more (a node_modules) is watched whole but its
 * further entries are not listed, as the kernel drops events past its queue. The events are built in the
 * agent, PID 1 of the sandbox, within its memory. */
#define WATCH_SCAN_MAX 16384

/* Watches root/rel and, when recursive, every directory below it. found: NULL for the directories there when
 * the watch began; else the directory was just made, and what is already in it (made before its watch was
 * added: a `mkdir -p a/b && touch a/b/c`, a clone, an unpacked archive) is reported into found as made, while
 * *budget lasts. */
static int add_dir(watcher *w, const char *rel, cJSON *found, int *budget)
{
    char abs[PATH_MAX];
    snprintf(abs, sizeof(abs), "%s%s%s", w->root, *rel ? "/" : "", rel);
    int wd = inotify_add_watch(w->fd, abs, WATCH_MASK);
    if (wd < 0) return -1;
    wdir *d = NULL;
    for (wdir *x = w->dirs; x && !d; x = x->next)
        if (x->wd == wd) d = x; /* already watched (reported twice, or moved here): its name is the new one */
    if (d) {
        free(d->rel);
    } else {
        if (!(d = malloc(sizeof(*d)))) return -1;
        d->wd = wd;
        d->next = w->dirs;
        w->dirs = d;
    }
    d->rel = strdup(rel);
    if (!w->recursive) return 0;
    DIR *dir = opendir(abs);
    if (!dir) return 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        char sub[PATH_MAX];
        snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        if (found && *budget > 0) {
            cJSON *e = event_json(w, sub, "EVENT_TYPE_CREATE", w->include_entry);
            if (e) cJSON_AddItemToArray(found, e), --*budget;
        }
        if (de->d_type == DT_DIR) add_dir(w, sub, found, budget);
    }
    closedir(dir);
    return 0;
}

/* The kernel dropped a watch (its directory was removed, or the filesystem unmounted): so does the list. */
static void forget_dir(watcher *w, int wd)
{
    for (wdir **pp = &w->dirs; *pp; pp = &(*pp)->next)
        if ((*pp)->wd == wd) {
            wdir *d = *pp;
            *pp = d->next;
            free(d->rel);
            free(d);
            return;
        }
}

watcher *watcher_new(const char *dir, bool recursive, bool include_entry, cube_err *err)
{
    struct stat st;
    if (stat(dir, &st) < 0) return cube_err_set(err, ENOENT, "path '%s' does not exist", dir), NULL;
    if (!S_ISDIR(st.st_mode)) return cube_err_set(err, ENOTDIR, "path '%s' is not a directory", dir), NULL;
    watcher *w = calloc(1, sizeof(*w));
    if (!w) return cube_err_set(err, ENOMEM, "out of memory"), NULL;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    w->root = strdup(dir);
    w->recursive = recursive;
    w->include_entry = include_entry;
    if (w->fd < 0 || !w->root || add_dir(w, "", NULL, NULL) < 0) {
        cube_err_sys(err, errno, "watch '%s'", dir);
        watcher_free(w);
        return NULL;
    }
    return w;
}

void watcher_free(watcher *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    for (wdir *d = w->dirs, *n; d; d = n) {
        n = d->next;
        free(d->rel);
        free(d);
    }
    free(w->root);
    free(w);
}

static const char *event_type(uint32_t mask)
{
    if (mask & (IN_CREATE | IN_MOVED_TO)) return "EVENT_TYPE_CREATE";
    if (mask & IN_MODIFY) return "EVENT_TYPE_WRITE";
    if (mask & IN_DELETE) return "EVENT_TYPE_REMOVE";
    if (mask & IN_MOVED_FROM) return "EVENT_TYPE_RENAME";
    if (mask & IN_ATTRIB) return "EVENT_TYPE_CHMOD";
    return NULL;
}

static cJSON *event_json(watcher *w, const char *name, const char *type, bool with_entry)
{
    cJSON *e = cJSON_CreateObject();
    if (!e) return NULL;
    cJSON_AddStringToObject(e, "name", name);
    cJSON_AddStringToObject(e, "type", type);
    if (with_entry) {
        char abs[PATH_MAX * 2];
        snprintf(abs, sizeof(abs), "%s/%s", w->root, name);
        cube_err err = {0};
        cJSON *info = entry_info(abs, &err);
        if (info) cJSON_AddItemToObject(e, "entry", info);
    }
    return e;
}

int watcher_read(watcher *w, int timeout_ms, cJSON *out)
{
    struct pollfd pfd = {w->fd, POLLIN, 0};
    if (timeout_ms > 0 && poll(&pfd, 1, timeout_ms) <= 0) return 0;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    int before = cJSON_GetArraySize(out), budget = WATCH_SCAN_MAX;
    ssize_t n;
    while ((n = read(w->fd, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->mask & IN_IGNORED) {
                forget_dir(w, ev->wd);
                continue;
            }
            const char *type = event_type(ev->mask);
            if (!type || !ev->len) continue;
            const char *rel = NULL;
            for (wdir *d = w->dirs; d; d = d->next)
                if (d->wd == ev->wd) rel = d->rel;
            if (!rel) continue;
            char name[PATH_MAX];
            snprintf(name, sizeof(name), "%s%s%s", rel, *rel ? "/" : "", ev->name);
            cJSON *e =
                event_json(w, name, type, w->include_entry && !(ev->mask & (IN_DELETE | IN_MOVED_FROM)));
            if (e) cJSON_AddItemToArray(out, e);
            if (w->recursive && (ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO)))
                add_dir(w, name, out, &budget); /* after the directory's own event: what it holds follows */
        }
    }
    return cJSON_GetArraySize(out) - before;
}

watch_table *watch_table_new(void)
{
    watch_table *t = calloc(1, sizeof(*t));
    if (t) pthread_mutex_init(&t->lock, NULL);
    return t;
}

int watch_table_add(watch_table *t, watcher *w, char *id_out, size_t cap)
{
    watch_entry *e = calloc(1, sizeof(*e));
    cube_err err = {0};
    if (!e || cube_id_new('w', e->id, 20, &err) < 0) {
        free(e);
        return -1;
    }
    e->w = w;
    snprintf(id_out, cap, "%s", e->id);
    pthread_mutex_lock(&t->lock);
    e->next = t->head;
    t->head = e;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

int watch_table_with(watch_table *t, const char *id, int (*fn)(watcher *w, void *arg), void *arg)
{
    pthread_mutex_lock(&t->lock);
    int rc = -1;
    for (watch_entry *e = t->head; e; e = e->next) {
        if (strcmp(e->id, id) == 0) {
            rc = fn(e->w, arg);
            break;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

int watch_table_remove(watch_table *t, const char *id)
{
    pthread_mutex_lock(&t->lock);
    for (watch_entry **pp = &t->head; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, id) == 0) {
            watch_entry *e = *pp;
            *pp = e->next;
            pthread_mutex_unlock(&t->lock);
            watcher_free(e->w);
            free(e);
            return 0;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return -1;
}
