/* The volume content API (E2B's /volumecontent/{id}/...) on the node that holds a volume:
 * <data>/volumes/<id>, which running sandboxes also write in. So every path is resolved beneath the volume's
 * root (openat2 RESOLVE_IN_ROOT: a symlink or ".." planted by a sandbox stays inside, and no mount inside is
 * crossed), the last component is acted on without following it, only regular files are opened for their
 * bytes (a FIFO would hold this thread), and trees are removed through descriptors, never by path. Owners are
 * the sandboxes' ids: on the host, the templates' uid base plus the id inside. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "cubelet_internal.h"
#include "disk.h"
#include "fsutil.h"
#include "log.h"

#define VOLUME_USER      1000      /* new entries' owner when none is given: the sandboxes' `user` */
#define VOLUME_ID_MAX    65535     /* ids inside a sandbox's user namespace */
#define READ_CHUNK_MAX   (1 << 20) /* bytes one read answers at most (an RPC message stays small) */
#define LIST_ENTRIES_MAX 10000
#define LIST_DEPTH_MAX   16
#define UPLOAD_PREFIX    ".cube-upload-"

typedef struct vreq {
    cubelet *c;
    cube_rpc_ctx *ctx;
    int root; /* the volume's directory, O_PATH */
    unsigned base;
    const Cube__VolumeFileRequest *r;
    Cube__VolumeFileResponse *out;
} vreq;

static int open_in(int dirfd, const char *path, int flags, uint64_t resolve)
{
    struct open_how how = {.flags = (uint64_t)flags | O_CLOEXEC, .mode = 0, .resolve = resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/* path (inside the volume) resolved from its root; a final symlink is opened itself unless follow */
static int open_path(const vreq *q, const char *path, int flags, bool follow)
{
    return open_in(q->root, path, flags | (follow ? 0 : O_NOFOLLOW),
                   RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV);
}

/* A volume is a filesystem of its own (cfg.volume_mb): its image <id>.img beside its mount point <id>,
 * mounted on the node once (the first time a sandbox or the volume API needs it after a boot) and cloned from
 * there into sandboxes. Writes past its size are ENOSPC to the writer, whoever it is, instead of filling the
 * node's disk (its store, logs and every sandbox's disk with it). A volume made as a plain directory (before,
 * or with volume_mb 0) stays one. */
static int volume_mount_locked(cubelet *c, const char *volume_id, const char *dir, unsigned uid_base,
                               cube_err *err)
{
    struct stat st;
    if (hv_disk_mounted_at(dir, &st)) return 0;
    char image[4400];
    snprintf(image, sizeof(image), "%s/volumes/%s.img", c->cfg.data_dir, volume_id);
    bool is_new = access(image, F_OK) < 0;
    if (is_new && cube_dir_empty(dir) == 0) return 0; /* a directory volume with files: as it was */
    int mfd = hv_disk_open_kept(c->volume_template, image, err);
    if (mfd < 0) return -1;
    /* owned by the sandboxes' `user` (uid 1000 inside); mkfs's lost+found is nothing of the volume's */
    if (is_new) unlinkat(mfd, "lost+found", AT_REMOVEDIR);
    int rc = hv_disk_place(mfd, dir, uid_base + VOLUME_USER, err);
    close(mfd);
    if (rc == 0 && is_new)
        cube_log_info("volume disk made", "volume=%s size_mb=%d", volume_id, c->cfg.volume_mb);
    return rc;
}

int cl_volume_dir(cubelet *c, const char *volume_id, unsigned uid_base, char *out, size_t cap, cube_err *err)
{
    if (!cl_valid_id(volume_id, 63)) return cube_err_set(err, EINVAL, "bad volume id '%s'", volume_id);
    snprintf(out, cap, "%s/volumes", c->cfg.data_dir);
    if (mkdir(out, 0711) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", out);
    snprintf(out, cap, "%s/volumes/%s", c->cfg.data_dir, volume_id);
    if (mkdir(out, 0755) == 0) { /* new: owned by the sandboxes' `user` (uid 1000 inside) */
        if (chown(out, uid_base + VOLUME_USER, uid_base + VOLUME_USER) < 0)
            return cube_err_sys(err, errno, "chown %s", out);
    } else if (errno != EEXIST) {
        return cube_err_sys(err, errno, "mkdir %s", out);
    }
    if (!*c->volume_template) return 0;
    pthread_mutex_lock(&c->volumes_lock);
    int rc = volume_mount_locked(c, volume_id, out, uid_base, err);
    pthread_mutex_unlock(&c->volumes_lock);
    return rc;
}

/* "/a/b/", "a//b" -> "a/b"; "" or "/" -> "." (the root). Components "." and ".." stay: resolution keeps them
 * inside. */
static int clean_path(const char *in, char *out, size_t cap, cube_err *err)
{
    size_t n = 0;
    if (!in) in = "";
    for (const char *p = in; *p;) {
        while (*p == '/') p++;
        const char *e = strchrnul(p, '/');
        if (e == p) break;
        if (n + (size_t)(e - p) + 2 > cap)
            return cube_err_set(err, EINVAL, "path: longer than %zu bytes", cap);
        if (n) out[n++] = '/';
        memcpy(out + n, p, (size_t)(e - p));
        n += (size_t)(e - p);
        p = e;
    }
    if (n == 0) out[n++] = '.';
    out[n] = '\0';
    return 0;
}

/* Splits a clean path into its parent ("." at the top) and last name; the root, "." or ".." as the last
 * name is refused (an operation on a name needs one). */
static int split_path(const char *path, char *parent, size_t cap, const char **name, cube_err *err)
{
    const char *slash = strrchr(path, '/');
    *name = slash ? slash + 1 : path;
    if (strcmp(*name, ".") == 0 || strcmp(*name, "..") == 0)
        return cube_err_set(err, EINVAL, "path: must name an entry inside the volume, not its root or '..'");
    snprintf(parent, cap, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    return 0;
}

static int id_in(unsigned base, unsigned host)
{
    return host >= base && host - base <= VOLUME_ID_MAX ? (int)(host - base) : 65534; /* nobody */
}

/* The entry at (dirfd, name) (name "" with dirfd itself), not followed, as shown at path. */
static Cube__VolumeEntry *entry_at(const vreq *q, int dirfd, const char *name, const char *path,
                                   cube_err *err)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW | (*name ? 0 : AT_EMPTY_PATH)) < 0) {
        cube_err_sys(err, errno, "stat %s", path);
        return NULL;
    }
    Cube__VolumeEntry *e = cube_rpc_alloc(q->ctx, sizeof(*e));
    if (!e) {
        cube_err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    cube__volume_entry__init(e);
    char shown[4200];
    snprintf(shown, sizeof(shown), "/%s", strcmp(path, ".") == 0 ? "" : path);
    const char *slash = strrchr(shown, '/');
    e->path = cube_rpc_strdup(q->ctx, shown);
    e->name = cube_rpc_strdup(q->ctx, slash[1] ? slash + 1 : "/");
    e->type = S_ISREG(st.st_mode)   ? "file"
              : S_ISDIR(st.st_mode) ? "directory"
              : S_ISLNK(st.st_mode) ? "symlink"
                                    : "unknown";
    if (S_ISLNK(st.st_mode)) {
        char t[4096];
        ssize_t n = readlinkat(dirfd, name, t, sizeof(t) - 1);
        t[n > 0 ? n : 0] = '\0';
        e->target = cube_rpc_strdup(q->ctx, t);
    }
    e->size = (uint64_t)st.st_size;
    e->uid = (uint32_t)id_in(q->base, st.st_uid);
    e->gid = (uint32_t)id_in(q->base, st.st_gid);
    e->mode = st.st_mode & 07777;
    e->atime_ms = (int64_t)st.st_atim.tv_sec * 1000 + st.st_atim.tv_nsec / 1000000;
    e->mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    e->ctime_ms = (int64_t)st.st_ctim.tv_sec * 1000 + st.st_ctim.tv_nsec / 1000000;
    return e;
}

static int answer_entry(vreq *q, int dirfd, const char *name, const char *path, cube_err *err)
{
    Cube__VolumeEntry *e = entry_at(q, dirfd, name, path, err);
    if (!e) return -1;
    q->out->entries = cube_rpc_alloc(q->ctx, sizeof(*q->out->entries));
    if (!q->out->entries) return cube_err_set(err, ENOMEM, "out of memory");
    q->out->entries[0] = e;
    q->out->n_entries = 1;
    return 0;
}

/* The owner and mode asked for (inside ids), else the defaults; applied to a new entry or a changed one. */
static int set_meta(const vreq *q, int dirfd, const char *name, const char *path, bool is_new,
                    mode_t def_mode, cube_err *err)
{
    const Cube__VolumeFileRequest *r = q->r;
    int flags = AT_SYMLINK_NOFOLLOW | (*name ? 0 : AT_EMPTY_PATH);
    if (is_new || r->uid >= 0 || r->gid >= 0) {
        uid_t u = r->uid >= 0 ? q->base + (uid_t)r->uid : is_new ? q->base + VOLUME_USER : (uid_t)-1;
        gid_t g = r->gid >= 0 ? q->base + (gid_t)r->gid : is_new ? q->base + VOLUME_USER : (gid_t)-1;
        if (fchownat(dirfd, name, u, g, flags) < 0) return cube_err_sys(err, errno, "chown %s", path);
    }
    if (is_new || r->mode >= 0) {
        mode_t m = r->mode >= 0 ? (mode_t)r->mode : def_mode;
        struct stat st;
        if (fstatat(dirfd, name, &st, flags) < 0) return cube_err_sys(err, errno, "stat %s", path);
        if (S_ISLNK(st.st_mode)) {
            if (r->mode >= 0) return cube_err_set(err, EINVAL, "mode: %s is a symlink, which has none", path);
        } else {
            /* the entry itself, not what a name might point at by now: through its descriptor */
            cube_autoclose int fd =
                *name ? open_in(dirfd, name, O_PATH | O_NOFOLLOW, RESOLVE_BENEATH | RESOLVE_NO_XDEV)
                      : fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
            char proc[64];
            snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
            if (fd < 0 || fchmodat(AT_FDCWD, proc, m, 0) < 0)
                return cube_err_sys(err, errno, "chmod %s", path);
        }
    }
    return 0;
}

static int check_ids(const Cube__VolumeFileRequest *r, cube_err *err)
{
    if (r->uid > VOLUME_ID_MAX || r->uid < -1)
        return cube_err_set(err, EINVAL, "uid: 0 to %d", VOLUME_ID_MAX);
    if (r->gid > VOLUME_ID_MAX || r->gid < -1)
        return cube_err_set(err, EINVAL, "gid: 0 to %d", VOLUME_ID_MAX);
    if (r->mode > 07777 || r->mode < -1)
        return cube_err_set(err, EINVAL, "mode: permission bits, 0 to 0o7777");
    return 0;
}

static int op_stat(vreq *q, const char *path, cube_err *err)
{
    cube_autoclose int fd = open_path(q, path, O_PATH, false);
    if (fd < 0) return cube_err_sys(err, errno, "%s", path);
    return answer_entry(q, fd, "", path, err);
}

typedef struct listing {
    Cube__VolumeEntry **v;
    size_t n, cap;
} listing;

static int list_dir(vreq *q, int dirfd, const char *path, unsigned depth, listing *l, cube_err *err)
{
    cube_autoclose int own = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    DIR *d = own >= 0 ? fdopendir(own) : NULL;
    if (!d) return cube_err_sys(err, errno, "list %s", path);
    own = -1; /* the DIR has it */
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (l->n >= LIST_ENTRIES_MAX) {
            rc = cube_err_set(err, EFBIG, "more than %d entries: list a subdirectory, or with less depth",
                              LIST_ENTRIES_MAX);
            break;
        }
        char sub[4200];
        if (snprintf(sub, sizeof(sub), "%s%s%s", strcmp(path, ".") == 0 ? "" : path,
                     strcmp(path, ".") == 0 ? "" : "/", de->d_name) >= 4096)
            continue; /* deeper than any path the API takes */
        Cube__VolumeEntry *e = entry_at(q, dirfd, de->d_name, sub, err);
        if (!e) {
            if (err->code == ENOENT) { /* removed meanwhile */
                cube_err_clear(err);
                continue;
            }
            rc = -1;
            break;
        }
        if (l->n == l->cap) {
            size_t nc = l->cap ? l->cap * 2 : 64;
            Cube__VolumeEntry **nv = cube_rpc_alloc(q->ctx, nc * sizeof(*nv));
            if (!nv) {
                rc = cube_err_set(err, ENOMEM, "out of memory");
                break;
            }
            if (l->n) memcpy(nv, l->v, l->n * sizeof(*nv));
            l->v = nv;
            l->cap = nc;
        }
        l->v[l->n++] = e;
        if (depth > 1 && strcmp(e->type, "directory") == 0) {
            cube_autoclose int sd = open_in(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW,
                                            RESOLVE_BENEATH | RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS);
            if (sd >= 0) rc = list_dir(q, sd, sub, depth - 1, l, err);
        }
    }
    closedir(d);
    return rc;
}

static int op_list(vreq *q, const char *path, cube_err *err)
{
    unsigned depth = q->r->depth ? q->r->depth : 1;
    if (depth > LIST_DEPTH_MAX) return cube_err_set(err, EINVAL, "depth: 1 to %d", LIST_DEPTH_MAX);
    cube_autoclose int fd = open_path(q, path, O_RDONLY | O_DIRECTORY, true);
    if (fd < 0)
        return errno == ENOTDIR ? cube_err_set(err, EINVAL, "path: %s is not a directory", path)
                                : cube_err_sys(err, errno, "%s", path);
    listing l = {0};
    if (list_dir(q, fd, path, depth, &l, err) < 0) return -1;
    q->out->entries = l.v;
    q->out->n_entries = l.n;
    return 0;
}

/* mkdir of each missing component (force), or of the last one only. */
static int op_mkdir(vreq *q, const char *path, cube_err *err)
{
    char parent[4096];
    const char *name;
    if (split_path(path, parent, sizeof(parent), &name, err) < 0) return -1;
    if (q->r->force && strcmp(parent, ".") != 0) {
        char prefix[4096];
        for (const char *p = path; (p = strchr(p, '/')); p++) {
            snprintf(prefix, sizeof(prefix), "%.*s", (int)(p - path), path);
            char pp[4096];
            const char *pn;
            if (split_path(prefix, pp, sizeof(pp), &pn, err) < 0) return -1;
            cube_autoclose int pd = open_path(q, pp, O_PATH | O_DIRECTORY, true);
            if (pd < 0) return cube_err_sys(err, errno, "%s", pp);
            if (mkdirat(pd, pn, 0700) == 0) {
                if (set_meta(q, pd, pn, prefix, true, 0755, err) < 0) return -1;
            } else if (errno != EEXIST) {
                return cube_err_sys(err, errno, "mkdir %s", prefix);
            }
        }
    }
    cube_autoclose int pd = open_path(q, parent, O_PATH | O_DIRECTORY, true);
    if (pd < 0)
        return errno == ENOENT ? cube_err_set(err, ENOENT, "%s does not exist (force makes it)", parent)
                               : cube_err_sys(err, errno, "%s", parent);
    if (mkdirat(pd, name, 0700) == 0) {
        if (set_meta(q, pd, name, path, true, 0755, err) < 0) return -1;
    } else if (errno == EEXIST) {
        struct stat st;
        if (!q->r->force || fstatat(pd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
            return cube_err_set(err, EEXIST, "%s exists", path);
    } else {
        return cube_err_sys(err, errno, "mkdir %s", path);
    }
    return answer_entry(q, pd, name, path, err);
}

static int op_chmeta(vreq *q, const char *path, cube_err *err)
{
    cube_autoclose int fd = open_path(q, path, O_PATH, false);
    if (fd < 0) return cube_err_sys(err, errno, "%s", path);
    if (set_meta(q, fd, "", path, false, 0, err) < 0) return -1;
    return answer_entry(q, fd, "", path, err);
}

static int op_read(vreq *q, const char *path, cube_err *err)
{
    cube_autoclose int fd = open_path(q, path, O_RDONLY | O_NONBLOCK | O_NOCTTY, true);
    if (fd < 0)
        return errno == EISDIR ? cube_err_set(err, EINVAL, "path: %s is a directory", path)
                               : cube_err_sys(err, errno, "%s", path);
    struct stat st;
    if (fstat(fd, &st) < 0) return cube_err_sys(err, errno, "stat %s", path);
    if (S_ISDIR(st.st_mode)) return cube_err_set(err, EINVAL, "path: %s is a directory", path);
    if (!S_ISREG(st.st_mode)) return cube_err_set(err, EINVAL, "path: %s is not a regular file", path);
    size_t want = q->r->max_bytes && q->r->max_bytes < READ_CHUNK_MAX ? q->r->max_bytes : READ_CHUNK_MAX;
    uint8_t *buf = cube_rpc_alloc(q->ctx, want);
    if (!buf) return cube_err_set(err, ENOMEM, "out of memory");
    ssize_t n = pread(fd, buf, want, (off_t)q->r->offset);
    if (n < 0) return cube_err_sys(err, errno, "read %s", path);
    q->out->data.data = buf;
    q->out->data.len = (size_t)n;
    q->out->size = (uint64_t)st.st_size;
    q->out->eof = (size_t)n < want || q->r->offset + (uint64_t)n >= (uint64_t)st.st_size;
    return 0;
}

static bool upload_id_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 8 || n > 64) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9'))) return false;
    return true;
}

/* Part files of uploads whose end never came (a cube-api that died mid-upload), a day old, beside a new one:
 * only regular files this node made (owned by the host's root). */
static void drop_stale_uploads(int pd)
{
    cube_autoclose int own = openat(pd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = own >= 0 ? fdopendir(own) : NULL;
    if (!d) return;
    own = -1;
    time_t now = time(NULL);
    struct dirent *de;
    struct stat st;
    while ((de = readdir(d)))
        if (strncmp(de->d_name, UPLOAD_PREFIX, strlen(UPLOAD_PREFIX)) == 0 &&
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            st.st_uid == 0 && now - st.st_mtime > 86400)
            unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
}

/* An upload goes to a file of its own beside the target (created here, so owned by the host's root: a
 * sandbox cannot have swapped in one of its own), in order, and takes the target's place at its last chunk.
 * Missing parents are made, as a sandbox's files.write does. */
static int op_write(vreq *q, const char *path, bool abort_it, cube_err *err)
{
    const Cube__VolumeFileRequest *r = q->r;
    if (!upload_id_ok(r->upload_id)) return cube_err_set(err, EINVAL, "upload_id: 8-64 letters or digits");
    char parent[4096], tmp[128];
    const char *name;
    if (split_path(path, parent, sizeof(parent), &name, err) < 0) return -1;
    snprintf(tmp, sizeof(tmp), UPLOAD_PREFIX "%s", r->upload_id);
    if (r->offset == 0 && !abort_it && strcmp(parent, ".") != 0) {
        Cube__VolumeFileRequest mk = *r;
        mk.force = true;
        mk.uid = mk.gid = mk.mode = -1;
        vreq mq = *q;
        Cube__VolumeFileResponse scratch = CUBE__VOLUME_FILE_RESPONSE__INIT;
        mq.r = &mk;
        mq.out = &scratch;
        if (op_mkdir(&mq, parent, err) < 0) return -1;
    }
    cube_autoclose int pd = open_path(q, parent, O_PATH | O_DIRECTORY, true);
    if (pd < 0) return cube_err_sys(err, errno, "%s", parent);
    if (abort_it) {
        if (unlinkat(pd, tmp, 0) < 0 && errno != ENOENT) return cube_err_sys(err, errno, "remove an upload");
        return 0;
    }
    if (r->offset == 0) drop_stale_uploads(pd);
    cube_autoclose int fd = r->offset == 0
                                ? openat(pd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)
                                : openat(pd, tmp, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT
                   ? cube_err_set(err, ENOENT, "upload %s of %s is not under way", r->upload_id, path)
                   : cube_err_sys(err, errno, "write %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0) return cube_err_sys(err, errno, "write %s", path);
    if (!S_ISREG(st.st_mode) || st.st_uid != 0)
        return cube_err_set(err, EPERM, "upload %s of %s was tampered with", r->upload_id, path);
    if ((uint64_t)st.st_size != r->offset)
        return cube_err_set(err, EINVAL, "offset: the upload has %lld bytes, this chunk starts at %llu",
                            (long long)st.st_size, (unsigned long long)r->offset);
    for (size_t done = 0; done < r->data.len;) {
        ssize_t n = pwrite(fd, r->data.data + done, r->data.len - done, (off_t)(r->offset + done));
        if (n < 0) {
            int e = errno;
            unlinkat(pd, tmp, 0);
            return cube_err_sys(err, e, "write %s", path);
        }
        done += (size_t)n;
    }
    if (!r->last) return 0;
    int rc = set_meta(q, fd, "", path, true, 0644, err);
    if (rc == 0 && fsync(fd) < 0) rc = cube_err_sys(err, errno, "write %s", path);
    if (rc == 0 && renameat(pd, tmp, pd, name) < 0)
        rc = errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST
                 ? cube_err_set(err, EEXIST, "%s is a directory", path)
                 : cube_err_sys(err, errno, "write %s", path);
    if (rc < 0) {
        unlinkat(pd, tmp, 0);
        return -1;
    }
    return answer_entry(q, pd, name, path, err);
}

static int op_remove(vreq *q, const char *path, cube_err *err)
{
    char parent[4096];
    const char *name;
    if (split_path(path, parent, sizeof(parent), &name, err) < 0) return -1;
    cube_autoclose int pd = open_path(q, parent, O_PATH | O_DIRECTORY, true);
    if (pd < 0) return cube_err_sys(err, errno, "%s", parent);
    struct stat st;
    if (fstatat(pd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return cube_err_sys(err, errno, "%s", path);
    if (cube_rm_rf_at(pd, name) < 0) return cube_err_sys(err, errno, "remove %s", path);
    return 0;
}

static int destroy(cubelet *c, const char *volume_id, cube_err *err)
{
    if (!cl_valid_id(volume_id, 63)) return cube_err_set(err, EINVAL, "bad volume id '%s'", volume_id);
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/volumes", c->cfg.data_dir);
    cube_autoclose int d = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (d < 0) return errno == ENOENT ? 0 : cube_err_sys(err, errno, "open %s", dir);
    /* a volume with a disk of its own: unmounted (no sandbox has it any more: the masters check), its image
     * removed */
    char mnt[4400], image[4400];
    snprintf(mnt, sizeof(mnt), "%s/%s", dir, volume_id);
    snprintf(image, sizeof(image), "%s.img", volume_id);
    struct stat st;
    pthread_mutex_lock(&c->volumes_lock);
    if (hv_disk_mounted_at(mnt, &st) && umount2(mnt, MNT_DETACH) < 0) {
        int e = errno;
        pthread_mutex_unlock(&c->volumes_lock);
        return cube_err_sys(err, e, "unmount volume %s", volume_id);
    }
    int rc = unlinkat(d, image, 0) < 0 && errno != ENOENT
                 ? cube_err_sys(err, errno, "remove volume %s's disk", volume_id)
                 : 0;
    pthread_mutex_unlock(&c->volumes_lock);
    if (rc < 0) return -1;
    if (cube_rm_rf_at(d, volume_id) < 0) return cube_err_sys(err, errno, "remove volume %s", volume_id);
    cube_log_info("volume removed", "volume=%s", volume_id);
    return 0;
}

int cl_volume_files(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    cubelet *c = svc;
    const Cube__VolumeFileRequest *r = reqp;
    const char *op = r->op ? r->op : "";
    if (strcmp(op, "destroy") == 0) return destroy(c, r->volume_id, err);
    if (check_ids(r, err) < 0) return -1;
    char path[4096];
    if (clean_path(r->path, path, sizeof(path), err) < 0) return -1;
    unsigned base = CL_UID_BASE_DEFAULT;
    char dir[4400];
    if (cl_volume_dir(c, r->volume_id, base, dir, sizeof(dir), err) < 0) return -1;
    cube_autoclose int root = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root < 0) return cube_err_sys(err, errno, "open %s", dir);
    vreq q = {.c = c, .ctx = ctx, .root = root, .base = base, .r = r, .out = respp};
    if (strcmp(op, "stat") == 0) return op_stat(&q, path, err);
    if (strcmp(op, "list") == 0) return op_list(&q, path, err);
    if (strcmp(op, "mkdir") == 0) return op_mkdir(&q, path, err);
    if (strcmp(op, "chmeta") == 0) return op_chmeta(&q, path, err);
    if (strcmp(op, "read") == 0) return op_read(&q, path, err);
    if (strcmp(op, "write") == 0) return op_write(&q, path, false, err);
    if (strcmp(op, "abort") == 0) return op_write(&q, path, true, err);
    if (strcmp(op, "remove") == 0) return op_remove(&q, path, err);
    return cube_err_set(err, EINVAL,
                        "op: one of stat, list, mkdir, chmeta, read, write, abort, remove, destroy");
}
