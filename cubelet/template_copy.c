/* A built template copied between nodes (cube-master moves the chunks): the exporting node packs the build's
 * layers into one tar (<data>/exports/<build>.tar, made once, with its sha256), answers it a chunk a call;
 * the importing node writes the chunks in order, checks the whole against the digest, unpacks the layers
 * under templates/<name>/<build>/layers/<i> (owners, modes, overlay whiteouts and xattrs kept; no entry may
 * leave that directory) and publishes the template on its own base, which must be the same build as the
 * exporter's. Background work of the masters', never a create's. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "cubelet_internal.h"
#include "fsutil.h"
#include "id.h"
#include "log.h"
#include "template_config.h"
#include "timeutil.h"

#define COPY_CHUNK     (1u << 20)
#define LAYERS_MAX     128
#define EXPORT_KEEP_MS (10 * 60 * 1000) /* an archive stays this long after it was made, for other nodes */

static int file_sha256(const char *path, char hex[65], cube_err *err)
{
    cube_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cube_err_sys(err, errno, "open %s", path);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return cube_err_set(err, EIO, "sha256");
    }
    static __thread unsigned char buf[1 << 16];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) EVP_DigestUpdate(md, buf, (size_t)n);
    unsigned char d[32];
    unsigned dl = 0;
    EVP_DigestFinal_ex(md, d, &dl);
    EVP_MD_CTX_free(md);
    if (n < 0) return cube_err_sys(err, errno, "read %s", path);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return 0;
}

/* The layers "a:b:c" into up to LAYERS_MAX paths (in place). */
static int split_layers(char *layers, char **out)
{
    int n = 0;
    for (char *save = NULL, *p = strtok_r(layers, ":", &save); p && n < LAYERS_MAX;
         p = strtok_r(NULL, ":", &save))
        out[n++] = p;
    return n;
}

/* layer's tree into a as layers/<i>/..., numeric owners, xattrs and devices (whiteouts) as they are */
static int pack_layer(struct archive *a, const char *layer, int i, cube_err *err)
{
    struct archive *disk = archive_read_disk_new();
    archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS);
    if (archive_read_disk_open(disk, layer) != ARCHIVE_OK) {
        cube_err_set(err, EIO, "read layer %s: %s", layer, archive_error_string(disk));
        archive_read_free(disk);
        return -1;
    }
    size_t ll = strlen(layer);
    int rc = 0;
    struct archive_entry *e = archive_entry_new();
    static __thread char buf[1 << 16];
    for (;;) {
        archive_entry_clear(e);
        int r = archive_read_next_header2(disk, e);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) {
            rc = cube_err_set(err, EIO, "read layer %s: %s", layer, archive_error_string(disk));
            break;
        }
        archive_read_disk_descend(disk);
        const char *src = archive_entry_sourcepath(e);
        char name[4200];
        snprintf(name, sizeof(name), "layers/%d%s", i, src && strlen(src) >= ll ? src + ll : "");
        archive_entry_set_pathname(e, name);
        archive_entry_set_uname(e, NULL);
        archive_entry_set_gname(e, NULL);
        if (archive_write_header(a, e) < ARCHIVE_WARN) {
            rc = cube_err_set(err, EIO, "pack %s: %s", name, archive_error_string(a));
            break;
        }
        if (archive_entry_filetype(e) != AE_IFREG || archive_entry_size(e) == 0) continue;
        cube_autoclose int fd = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            rc = cube_err_sys(err, errno, "read %s", src);
            break;
        }
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0)
            if (archive_write_data(a, buf, (size_t)n) < 0) break;
        if (n < 0) rc = cube_err_sys(err, errno, "read %s", src);
        if (rc < 0) break;
    }
    archive_entry_free(e);
    archive_read_close(disk);
    archive_read_free(disk);
    return rc;
}

/* <data>/exports/<build>.tar and its digest, made when missing. */
static int ensure_archive(cubelet *c, const char *name, const char *build, char *tar, size_t cap,
                          char digest[65], char **config_json, cube_err *err)
{
    char dir[4200], cfgp[4400], dgp[4400];
    snprintf(dir, sizeof(dir), "%s/exports", c->cfg.data_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", dir);
    snprintf(cfgp, sizeof(cfgp), "%s/templates/%s/%s/config.json", c->cfg.data_dir, name, build);
    /* read once: parsed here, and its text sent with the archive */
    char *text = cube_tpl_config_text(cfgp, err);
    if (!text)
        return err->code == ENOENT
                   ? cube_err_set(err, ENOENT, "template %s has no build %s here", name, build)
                   : -1;
    cube_tpl_config cfg;
    if (cube_tpl_config_parse(text, &cfg, err) < 0) {
        free(text);
        return -1;
    }
    if (!*cfg.from_template || !*cfg.from_build || *cfg.snapshot_of) {
        free(text);
        cube_tpl_config_free(&cfg);
        return cube_err_set(err, EINVAL, "template %s: only a build (on a base build) is copied", name);
    }
    *config_json = text;
    snprintf(tar, cap, "%s/%s.tar", dir, build);
    snprintf(dgp, sizeof(dgp), "%s/%s.sha256", dir, build);
    FILE *d = fopen(dgp, "re");
    bool have = d && fscanf(d, "%64s", digest) == 1 && strlen(digest) == 64 && access(tar, R_OK) == 0;
    if (d) fclose(d);
    if (have) {
        cube_tpl_config_free(&cfg);
        return 0;
    }
    char tmp[4500], *layers[LAYERS_MAX];
    snprintf(tmp, sizeof(tmp), "%s.new-%d-%lld", tar, (int)getpid(), (long long)cube_now_mono_ns());
    int n = split_layers(cfg.layers, layers), rc = 0;
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    if (archive_write_open_filename(a, tmp) != ARCHIVE_OK)
        rc = cube_err_set(err, EIO, "write %s: %s", tmp, archive_error_string(a));
    for (int i = 0; rc == 0 && i < n; i++) rc = pack_layer(a, layers[i], i, err);
    if (archive_write_close(a) != ARCHIVE_OK && rc == 0)
        rc = cube_err_set(err, EIO, "write %s: %s", tmp, archive_error_string(a));
    archive_write_free(a);
    cube_tpl_config_free(&cfg);
    if (rc == 0) rc = file_sha256(tmp, digest, err);
    if (rc == 0 && rename(tmp, tar) < 0) rc = cube_err_sys(err, errno, "rename %s", tmp);
    if (rc == 0) {
        char dtmp[4500];
        snprintf(dtmp, sizeof(dtmp), "%s.new-%d", dgp, (int)getpid());
        FILE *o = fopen(dtmp, "we");
        bool ok = o && fprintf(o, "%s\n", digest) > 0;
        if (o) ok = fclose(o) == 0 && ok;
        if (!ok || rename(dtmp, dgp) < 0) rc = cube_err_sys(err, errno ? errno : EIO, "write %s", dgp);
    }
    if (rc < 0) {
        unlink(tmp);
        free(*config_json);
        *config_json = NULL;
        return -1;
    }
    cube_log_info("template packed for a copy", "template=%s build=%s layers=%d digest=%.12s", name, build, n,
                  digest);
    return 0;
}

int cl_export_template(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    cubelet *c = svc;
    const Cube__TemplateExportRequest *req = reqp;
    Cube__TemplateChunk *out = respp;
    if (!cl_valid_id(req->name, 63) || !cl_valid_id(req->build_id, 63))
        return cube_err_set(err, EINVAL, "bad template name or build id");
    char tar[4400], digest[65];
    char *config = NULL;
    if (ensure_archive(c, req->name, req->build_id, tar, sizeof(tar), digest, &config, err) < 0) return -1;
    out->config_json = cube_rpc_strdup(ctx, config);
    free(config);
    cube_autoclose int fd = open(tar, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) return cube_err_sys(err, errno, "open %s", tar);
    uint8_t *buf = cube_rpc_alloc(ctx, COPY_CHUNK);
    if (!buf) return cube_err_set(err, ENOMEM, "out of memory");
    ssize_t n = pread(fd, buf, COPY_CHUNK, (off_t)req->offset);
    if (n < 0) return cube_err_sys(err, errno, "read %s", tar);
    out->name = cube_rpc_strdup(ctx, req->name);
    out->build_id = cube_rpc_strdup(ctx, req->build_id);
    out->offset = req->offset;
    out->data.data = buf;
    out->data.len = (size_t)n;
    out->size = (uint64_t)st.st_size;
    out->last = req->offset + (uint64_t)n >= (uint64_t)st.st_size;
    out->digest = cube_rpc_strdup(ctx, digest);
    return 0;
}

/* One entry's path inside the archive: layers/<i>[/...], no "..", within the n layers. */
static bool entry_ok(const char *p, int n)
{
    int i = -1, used = 0;
    if (sscanf(p, "layers/%d%n", &i, &used) != 1 || i < 0 || i >= n || (p[used] && p[used] != '/'))
        return false;
    for (const char *s = p; (s = strstr(s, "..")); s += 2)
        if ((s == p || s[-1] == '/') && (s[2] == '\0' || s[2] == '/')) return false;
    return true;
}

int cl_unpack_layers(const char *tar, const char *into, int nlayers, cube_err *err)
{
    struct archive *a = archive_read_new(), *w = archive_write_disk_new();
    archive_read_support_format_tar(a);
    archive_write_disk_set_options(w, ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME |
                                          ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                          ARCHIVE_EXTRACT_SECURE_SYMLINKS);
    int rc = 0;
    if (archive_read_open_filename(a, tar, 1 << 16) != ARCHIVE_OK)
        rc = cube_err_set(err, EIO, "open %s: %s", tar, archive_error_string(a));
    struct archive_entry *e;
    while (rc == 0) {
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) {
            rc = cube_err_set(err, EBADMSG, "unpack: %s", archive_error_string(a));
            break;
        }
        /* copies: setting the entry's names below frees what these pointed at */
        char p[4200], hl[4200];
        const char *ep = archive_entry_pathname(e), *eh = archive_entry_hardlink(e);
        snprintf(p, sizeof(p), "%s", ep ? ep : "");
        snprintf(hl, sizeof(hl), "%s", eh ? eh : "");
        if (!ep || strlen(ep) >= sizeof(p) || (eh && strlen(eh) >= sizeof(hl)) || !entry_ok(p, nlayers) ||
            (eh && !entry_ok(hl, nlayers))) {
            rc = cube_err_set(err, EBADMSG, "unpack: entry '%.200s' is outside the layers", p);
            break;
        }
        mode_t type = archive_entry_filetype(e);
        if (type == AE_IFBLK || (type == AE_IFCHR && archive_entry_rdev(e) != 0)) {
            rc = cube_err_set(err, EBADMSG, "unpack: entry '%s' is a device (only whiteouts, 0/0, are taken)",
                              p);
            break;
        }
        char full[8400];
        snprintf(full, sizeof(full), "%s/%s", into, p);
        archive_entry_set_pathname(e, full);
        if (eh) {
            char link[8400];
            snprintf(link, sizeof(link), "%s/%s", into, hl);
            archive_entry_set_hardlink(e, link);
        }
        if (archive_write_header(w, e) < ARCHIVE_WARN) {
            rc = cube_err_set(err, EIO, "unpack %s: %s", p, archive_error_string(w));
            break;
        }
        const void *buf;
        size_t len;
        la_int64_t off;
        while ((r = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK)
            if (archive_write_data_block(w, buf, len, off) < ARCHIVE_WARN) break;
        if (r < ARCHIVE_WARN && r != ARCHIVE_EOF) rc = cube_err_set(err, EIO, "unpack %s", p);
        if (rc == 0 && archive_write_finish_entry(w) < ARCHIVE_WARN)
            rc = cube_err_set(err, EIO, "unpack %s: %s", p, archive_error_string(w));
    }
    archive_read_free(a);
    archive_write_free(w);
    return rc;
}

/* Checks and publishes the whole archive as template name on this node's base. */
static int import_whole(cubelet *c, const Cube__TemplateChunk *req, const char *part, cube_err *err)
{
    char got[65];
    if (file_sha256(part, got, err) < 0) return -1;
    if (strcmp(got, req->digest ? req->digest : "") != 0)
        return cube_err_set(err, EBADMSG, "template %s build %s: the copy's sha256 is %.12s, not %.12s",
                            req->name, req->build_id, got, req->digest ? req->digest : "");
    cube_tpl_config cfg;
    if (cube_tpl_config_parse(req->config_json, &cfg, err) < 0) return -1;
    int rc = 0;
    const cl_template *base = cl_find_template(c, cfg.from_template);
    if (!base || strcmp(base->build_id, cfg.from_build) != 0)
        rc = cube_err_set(err, ENOENT, "template %s stands on %s build %s, which this node %s", req->name,
                          cfg.from_template, cfg.from_build, base ? "has in another build" : "lacks");
    char *layers[LAYERS_MAX], lcopy[sizeof(cfg.layers)];
    snprintf(lcopy, sizeof(lcopy), "%s", cfg.layers);
    int n = split_layers(lcopy, layers);
    char dir[4400], into[4500], final[4500];
    snprintf(dir, sizeof(dir), "%s/templates/%s", c->cfg.data_dir, req->name);
    snprintf(final, sizeof(final), "%s/%s", dir, req->build_id);
    snprintf(into, sizeof(into), "%s.importing-%d", final, (int)getpid());
    if (access(final, F_OK) == 0) { /* here already (under another tag, or a default that moved on): linked */
        cube_tpl_config_free(&cfg);
        if (cl_tags_link(c, req->name, req->build_id, req->tags, req->n_tags, false, err) < 0) return -1;
        cl_send_heartbeat(c);
        return 0;
    }
    if (rc == 0 && mkdir(dir, 0755) < 0 && errno != EEXIST) rc = cube_err_sys(err, errno, "mkdir %s", dir);
    if (rc == 0) {
        cube_rm_rf(into);
        char layers_dir[4600];
        snprintf(layers_dir, sizeof(layers_dir), "%s/layers", into);
        if (mkdir(into, 0755) < 0 || mkdir(layers_dir, 0755) < 0)
            rc = cube_err_sys(err, errno, "mkdir %s", into);
    }
    /* by its canonical path: libarchive refuses to extract through any symlink on the way (an entry that
     * made one, or one in the data directory's own path) */
    char real_into[PATH_MAX];
    if (rc == 0 && !realpath(into, real_into)) rc = cube_err_sys(err, errno, "realpath %s", into);
    if (rc == 0) rc = cl_unpack_layers(part, real_into, n, err);
    /* the same template here: the base's rootfs, its own layers where they were unpacked (an empty layer has
     * no entries: made here) */
    size_t len = 0;
    cfg.layers[0] = '\0';
    for (int i = 0; rc == 0 && i < n; i++) {
        char l[4700];
        snprintf(l, sizeof(l), "%s/layers/%d", into, i);
        mkdir(l, 0755);
        snprintf(l, sizeof(l), "%s/layers/%d", final, i);
        int w = snprintf(cfg.layers + len, sizeof(cfg.layers) - len, "%s%s", i ? ":" : "", l);
        if (w < 0 || (size_t)w >= sizeof(cfg.layers) - len) rc = cube_err_set(err, E2BIG, "too many layers");
        len += (size_t)w;
    }
    if (rc == 0) {
        snprintf(cfg.rootfs, sizeof(cfg.rootfs), "%s", base->rootfs);
        char cfgp[4600];
        snprintf(cfgp, sizeof(cfgp), "%s/config.json", into);
        rc = cube_tpl_config_write(cfgp, &cfg, err);
    }
    if (rc == 0 && rename(into, final) < 0) rc = cube_err_sys(err, errno, "rename %s", into);
    if (rc < 0) cube_rm_rf(into);
    cube_tpl_config_free(&cfg);
    if (rc < 0) return -1;
    if (cl_tags_link(c, req->name, req->build_id, req->tags, req->n_tags, false, err) < 0) return -1;
    cube_log_info("template copied here", "template=%s build=%s layers=%d", req->name, req->build_id, n);
    cl_send_heartbeat(c); /* every master may send its creates here now */
    return 0;
}

int cl_import_template(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    (void)ctx;
    (void)respp;
    cubelet *c = svc;
    const Cube__TemplateChunk *req = reqp;
    if (!cl_valid_id(req->name, 63) || !cl_valid_id(req->build_id, 63) || !req->digest ||
        strlen(req->digest) != 64)
        return cube_err_set(err, EINVAL, "bad template name, build id or digest");
    /* nothing to do when what it links (the bare name, or its tag) leads to this build already: another
     * master's copy got here first */
    char full[200], cur[4400], to[256];
    const char *tag = req->n_tags ? req->tags[0] : "default";
    if (req->n_tags > 1 || !cube_template_name_valid(tag))
        return cube_err_set(err, EINVAL, "tags: one tag name");
    snprintf(full, sizeof(full), strcmp(tag, "default") == 0 ? "%s" : "%s:%s", req->name, tag);
    cl_template_link(c, full, cur, sizeof(cur));
    ssize_t tl = readlink(cur, to, sizeof(to) - 1);
    if (tl > 0) {
        to[tl] = '\0';
        const char *last = strrchr(to, '/');
        if (strcmp(last ? last + 1 : to, req->build_id) == 0)
            return cube_err_set(err, EEXIST, "template %s is on this node already", full);
    }
    char dir[4200], part[4400];
    snprintf(dir, sizeof(dir), "%s/imports", c->cfg.data_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", dir);
    snprintf(part, sizeof(part), "%s/%s-%s.part", dir, req->name, req->build_id);
    cube_autoclose int fd =
        open(part, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | (req->offset == 0 ? O_CREAT | O_TRUNC : 0), 0600);
    if (fd < 0) return cube_err_sys(err, errno, "open %s", part);
    struct stat st;
    if (fstat(fd, &st) < 0) return cube_err_sys(err, errno, "stat %s", part);
    if ((uint64_t)st.st_size != req->offset)
        return cube_err_set(err, EINVAL, "offset: the copy has %lld bytes, this chunk starts at %llu",
                            (long long)st.st_size, (unsigned long long)req->offset);
    for (size_t done = 0; done < req->data.len;) {
        ssize_t w = pwrite(fd, req->data.data + done, req->data.len - done, (off_t)(req->offset + done));
        if (w < 0) return cube_err_sys(err, errno, "write %s", part);
        done += (size_t)w;
    }
    if (!req->last) return 0;
    int rc = import_whole(c, req, part, err);
    unlink(part);
    return rc;
}

void cl_sweep_exports(cubelet *c)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/exports", c->cfg.data_dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    int64_t now = cube_now_unix_ms();
    while (d && (de = readdir(d))) {
        struct stat st;
        if (de->d_name[0] == '.' || fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
        if (now - ((int64_t)st.st_mtim.tv_sec * 1000) > EXPORT_KEEP_MS) unlinkat(dirfd(d), de->d_name, 0);
    }
    if (d) closedir(d);
}
