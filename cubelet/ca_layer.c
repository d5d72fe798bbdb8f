/* The node's egress CA as a read-only layer over a template (cubelet_internal.h). Made once per template and
 * CA under <data>/ca-layers/, it holds what the agent's /init would otherwise write into every sandbox: the
 * CA as /usr/local/share/ca-certificates/cube-egress.crt and the template's system bundle with the CA
 * appended. The template's view of each path is read as overlayfs shows it (top layer first; a whiteout or
 * an opaque directory hides what is below), and each directory of the layer takes its mode and owner from
 * that view, since overlayfs shows a merged directory with the attributes of its top-most copy. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cubelet_internal.h"
#include "fsutil.h"
#include "ca_paths.h"
#include "fsutil.h"
#include "log.h"

static const char *const layer_dirs[] = {
    "",    "etc",       "etc/ssl",         "etc/ssl/certs",
    "usr", "usr/local", "usr/local/share", "usr/local/share/ca-certificates"};

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return (h ^ 0xff) * 0x100000001b3ULL; /* a separator: ("ab","c") and ("a","bc") differ */
}

static bool opaque(const char *dir)
{
    char v[2];
    return (getxattr(dir, "trusted.overlay.opaque", v, 1) == 1 && v[0] == 'y') ||
           (getxattr(dir, "user.overlay.opaque", v, 1) == 1 && v[0] == 'y');
}

typedef enum { FOUND, ABSENT, LOOK_BELOW } layer_answer;

/* What one layer says of rel: it has it (host path in out, lstat in st), it hides it (a whiteout, a file in
 * the way, or an opaque directory above it), or it has nothing to say. */
static layer_answer in_layer(const char *layer, const char *rel, char *out, size_t cap, struct stat *st)
{
    bool hidden_below = false;
    for (const char *p = rel; *rel; p++) {
        if (*p != '/' && *p != '\0') continue;
        snprintf(out, cap, "%s/%.*s", layer, (int)(p - rel), rel);
        if (lstat(out, st) < 0) return LOOK_BELOW;
        if (*p == '\0') return S_ISCHR(st->st_mode) && st->st_rdev == 0 ? ABSENT : FOUND;
        if (!S_ISDIR(st->st_mode)) return ABSENT;
        hidden_below = hidden_below || opaque(out);
        if (hidden_below) {
            snprintf(out, cap, "%s/%s", layer, rel);
            if (lstat(out, st) < 0) return ABSENT;
            return S_ISCHR(st->st_mode) && st->st_rdev == 0 ? ABSENT : FOUND;
        }
    }
    snprintf(out, cap, "%s", layer); /* rel "": the layer's root */
    return lstat(out, st) == 0 ? FOUND : LOOK_BELOW;
}

/* The template's view of rel: 1 with its host path and lstat, 0 when it has none. */
static int resolve(const cl_template *t, const char *rel, char *out, size_t cap, struct stat *st)
{
    char layers[sizeof(t->layers)];
    snprintf(layers, sizeof(layers), "%s", t->layers);
    char *save = NULL;
    for (char *l = strtok_r(layers, ":", &save); l; l = strtok_r(NULL, ":", &save)) {
        layer_answer a = in_layer(l, rel, out, cap, st);
        if (a != LOOK_BELOW) return a == FOUND;
    }
    return in_layer(t->rootfs, rel, out, cap, st) == FOUND;
}

static int write_file(const char *path, const char *a, size_t alen, const char *b, size_t blen, mode_t mode,
                      uid_t uid, gid_t gid, cube_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return cube_err_sys(err, errno, "create %s", path);
    int rc = cube_write_all(fd, a, alen) < 0 || cube_write_all(fd, b, blen) < 0 || fchown(fd, uid, gid) < 0 ||
                     fchmod(fd, mode & 07777) < 0
                 ? -1
                 : 0;
    if (rc < 0) cube_err_sys(err, errno, "write %s", path);
    close(fd);
    return rc;
}

/* The whole of a regular file of at most 16 MB: malloc'd, its size in *len; NULL with err. */
static char *read_all(const char *path, size_t *len, cube_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (16 << 20)) {
        cube_err_sys(err, fd < 0 ? errno : EFBIG, "read %s", path);
        if (fd >= 0) close(fd);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t n = 0;
    ssize_t k = 0;
    while (buf && n < (size_t)st.st_size && (k = read(fd, buf + n, (size_t)st.st_size - n)) > 0)
        n += (size_t)k;
    close(fd);
    if (!buf || k < 0) {
        free(buf);
        cube_err_sys(err, buf ? errno : ENOMEM, "read %s", path);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Builds the layer in dir (new). ENOTSUP: the template's trust store is not laid out as this layer can
 * cover (a symlinked directory or bundle): its sandboxes get the CA through /init instead. */
static int build(const cl_template *t, const char *pem, const char *dir, cube_err *err)
{
    char host[8600], path[4600];
    struct stat st;
    for (size_t i = 0; i < sizeof(layer_dirs) / sizeof(layer_dirs[0]); i++) {
        bool has = resolve(t, layer_dirs[i], host, sizeof(host), &st);
        if (has && !S_ISDIR(st.st_mode))
            return cube_err_set(err, ENOTSUP, "template %s: /%s is not a directory", t->name, layer_dirs[i]);
        mode_t mode = has ? st.st_mode & 07777 : 0755;
        uid_t uid = has ? st.st_uid : t->uid_base;
        gid_t gid = has ? st.st_gid : t->uid_base;
        snprintf(path, sizeof(path), "%s/%s", dir, layer_dirs[i]);
        if ((i > 0 && mkdir(path, 0700) < 0) || chown(path, uid, gid) < 0 || chmod(path, mode) < 0)
            return cube_err_sys(err, errno, "make %s", path);
    }
    size_t plen = strlen(pem);
    snprintf(path, sizeof(path), "%s" CA_CUBE_FILE, dir);
    if (write_file(path, pem, plen, "", 0, 0644, t->uid_base, t->uid_base, err) < 0) return -1;
    if (!resolve(t, CA_SYSTEM_BUNDLE + 1, host, sizeof(host), &st))
        return 0; /* no bundle: the file above still tells */
    if (!S_ISREG(st.st_mode))
        return cube_err_set(err, ENOTSUP, "template %s: " CA_SYSTEM_BUNDLE " is a link", t->name);
    size_t blen = 0;
    char *bundle = read_all(host, &blen, err);
    if (!bundle) return -1;
    const char mark[] = "\n# cube egress CA\n";
    char *tail = malloc(sizeof(mark) + plen);
    if (!tail) {
        free(bundle);
        return cube_err_set(err, ENOMEM, "out of memory");
    }
    memcpy(tail, mark, sizeof(mark) - 1);
    memcpy(tail + sizeof(mark) - 1, pem, plen);
    snprintf(path, sizeof(path), "%s" CA_SYSTEM_BUNDLE, dir);
    int rc =
        write_file(path, bundle, blen, tail, sizeof(mark) - 1 + plen, st.st_mode, st.st_uid, st.st_gid, err);
    free(bundle);
    free(tail);
    return rc;
}

int cl_ca_layer(cubelet *c, cl_template *t, const char *pem, char *out, size_t cap)
{
    pthread_mutex_lock(&c->lock);
    int state = t->ca_layer_state;
    if (state > 0) snprintf(out, cap, "%s", t->ca_layer);
    pthread_mutex_unlock(&c->lock);
    if (state != 0) return state > 0 ? 0 : -1;
    /* made once per template and CA (a template's files never change under its directory) */
    char key[24];
    uint64_t h = fnv1a(fnv1a(fnv1a(0xcbf29ce484222325ULL, t->rootfs), t->layers), pem);
    snprintf(key, sizeof(key), "%016llx", (unsigned long long)h);
    char top[4200], final[4300], tmp[4400];
    snprintf(top, sizeof(top), "%s/ca-layers", c->cfg.data_dir);
    snprintf(final, sizeof(final), "%s/%s", top, key);
    static unsigned seq;
    snprintf(tmp, sizeof(tmp), "%s/.%s-%d-%u", top, key, (int)getpid(),
             __atomic_fetch_add(&seq, 1, __ATOMIC_RELAXED));
    cube_err err = {0};
    struct stat st;
    int rc = 0;
    if (stat(final, &st) < 0) {
        if ((mkdir(top, 0755) < 0 && errno != EEXIST) || mkdir(tmp, 0700) < 0) {
            cube_err_sys(&err, errno, "mkdir %s", tmp);
            rc = -1;
        }
        if (rc == 0) rc = build(t, pem, tmp, &err);
        /* another start made it meanwhile: theirs is the same */
        if (rc == 0 && rename(tmp, final) < 0 && errno != EEXIST && errno != ENOTEMPTY)
            rc = cube_err_sys(&err, errno, "rename %s", tmp);
        cube_rm_rf(tmp);
    }
    if (rc < 0)
        cube_log_warn("no egress CA layer: the template's sandboxes get the CA at /init",
                      "template=%s err=\"%s\"", t->name, err.msg);
    pthread_mutex_lock(&c->lock);
    t->ca_layer_state = rc == 0 ? 1 : -1;
    if (rc == 0) snprintf(t->ca_layer, sizeof(t->ca_layer), "%s", final);
    pthread_mutex_unlock(&c->lock);
    if (rc == 0) snprintf(out, cap, "%s", final);
    return rc;
}
