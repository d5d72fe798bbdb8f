#include "template_import.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

int tpl_file_digest(const char *path, char digest[80], cube_err *err)
{
    FILE *f = fopen(path, "re");
    if (!f) return cube_err_sys(err, errno, "open %s", path);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    unsigned char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) EVP_DigestUpdate(ctx, buf, n);
    fclose(f);
    unsigned char md[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    int o = snprintf(digest, 80, "sha256:");
    for (unsigned i = 0; i < len; i++) o += snprintf(digest + o, 80 - (size_t)o, "%02x", md[i]);
    return 0;
}

static EVP_MD_CTX *walk_ctx;
static size_t walk_root_len;

static int walk_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)flag;
    (void)ftw;
    char line[PATH_MAX + 128];
    int n = snprintf(line, sizeof(line), "%s\t%o\t%u\t%u\t%lld\t%lld\n", p + walk_root_len, st->st_mode,
                     st->st_uid, st->st_gid, (long long)st->st_size, (long long)st->st_mtime);
    EVP_DigestUpdate(walk_ctx, line, (size_t)n);
    return 0;
}

int tpl_dir_digest(const char *dir, char digest[80], cube_err *err)
{
    walk_ctx = EVP_MD_CTX_new();
    walk_root_len = strlen(dir);
    EVP_DigestInit_ex(walk_ctx, EVP_sha256(), NULL);
    int rc = nftw(dir, walk_one, 64, FTW_PHYS);
    unsigned char md[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(walk_ctx, md, &len);
    EVP_MD_CTX_free(walk_ctx);
    walk_ctx = NULL;
    if (rc != 0) return cube_err_sys(err, errno, "read %s", dir);
    int o = snprintf(digest, 80, "sha256:");
    for (unsigned i = 0; i < len; i++) o += snprintf(digest + o, 80 - (size_t)o, "%02x", md[i]);
    return 0;
}

int tpl_copy_dir(const char *dir, const char *rootfs, cube_err *err)
{
    char src[PATH_MAX + 4];
    snprintf(src, sizeof(src), "%s/.", dir);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/cp", "cp", "-a", "--", src, rootfs, (char *)NULL); /* template import, not a hot path */
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return cube_err_set(err, EIO, "copying %s failed", dir);
    return 0;
}

/* A file an image names (a manifest's layer path, a blob, index.json) opened inside dir with every symlink on
 * the way resolved as if dir were / : an image can plant "layer.tar -> /etc/shadow" or "blobs -> /", and its
 * files must never reach the host's. *path gets /proc/self/fd/N for the readers below; close *fd after. */
static int open_within(const char *dir, const char *name, char *path, size_t cap, int *fd, cube_err *err)
{
    int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return cube_err_sys(err, errno, "open %s", dir);
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    *fd = (int)syscall(SYS_openat2, dfd, name, &how, sizeof(how));
    int e = errno;
    close(dfd);
    if (*fd < 0) return cube_err_sys(err, e, "open %s in %s", name, dir);
    struct stat st;
    if (fstat(*fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(*fd);
        *fd = -1;
        return cube_err_set(err, EBADMSG, "%s in %s is not a regular file", name, dir);
    }
    snprintf(path, cap, "/proc/self/fd/%d", *fd);
    return 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

static cJSON *read_json(const char *path, cube_err *err)
{
    FILE *f = fopen(path, "re");
    if (!f) return cube_err_sys(err, errno, "open %s", path), NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) fwrite(chunk, 1, n, mem);
    fclose(f);
    fclose(mem);
    cJSON *j = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!j) cube_err_set(err, EBADMSG, "%s is not valid JSON", path);
    return j;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS);
}

/* Normalises a member name; -1 for anything that could escape ("..", empty). */
static int clean_name(const char *in, char *out, size_t cap)
{
    while (*in == '/' || (in[0] == '.' && in[1] == '/')) in += *in == '/' ? 1 : 2;
    if (strlen(in) >= cap) return -1;
    snprintf(out, cap, "%s", in);
    size_t l = strlen(out);
    while (l && out[l - 1] == '/') out[--l] = '\0';
    if (strcmp(out, ".") == 0 || !*out) return 1; /* the root itself: nothing to do */
    char copy[PATH_MAX];
    snprintf(copy, sizeof(copy), "%s", out);
    char *save = NULL;
    for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save))
        if (strcmp(c, "..") == 0) return -1;
    return 0;
}

/* The decompressors libarchive has built in, and only those. For a compression it has no library for (lrzip,
 * lzop, grzip, ...) it would run an external program instead, and inside the chroot that program is the
 * image's own: an image could plant /usr/bin/lrzip in one layer and have it run as root by the next. */
static void support_builtin_filters(struct archive *a)
{
    static int (*const filters[])(struct archive *) = {
        archive_read_support_filter_gzip,    archive_read_support_filter_bzip2,
        archive_read_support_filter_xz,      archive_read_support_filter_lzma,
        archive_read_support_filter_zstd,    archive_read_support_filter_lz4,
        archive_read_support_filter_compress};
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
        /* ARCHIVE_WARN: it would fall back to an external program; such a filter is left out */
        struct archive *probe = archive_read_new();
        int builtin = probe && filters[i](probe) == ARCHIVE_OK;
        archive_read_free(probe);
        if (builtin) filters[i](a);
    }
}

/* Extraction proper, inside a chroot at the rootfs: an image's symlinks (/lib -> /usr/lib, or an absolute one
 * planted to point at the host) then resolve inside the rootfs, never on the host. */
static int extract_here(int fd, const char *layer, cube_err *err)
{
    struct archive *in = archive_read_new();
    support_builtin_filters(in);
    archive_read_support_format_all(in);
    struct archive *out = archive_write_disk_new();
    archive_write_disk_set_options(out, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_OWNER |
                                            ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_UNLINK |
                                            ARCHIVE_EXTRACT_SECURE_NODOTDOT);
    int rc = 0;
    if (archive_read_open_fd(in, fd, 65536) != ARCHIVE_OK) {
        rc = cube_err_set(err, EBADMSG, "layer %s: %s", layer, archive_error_string(in));
        goto out;
    }
    struct archive_entry *e;
    int r;
    while ((r = archive_read_next_header(in, &e)) == ARCHIVE_OK) {
        char name[PATH_MAX];
        int c = clean_name(archive_entry_pathname(e), name, sizeof(name));
        if (c < 0) {
            rc = cube_err_set(err, EPERM, "layer %s: member '%s' would leave the rootfs", layer,
                              archive_entry_pathname(e));
            goto out;
        }
        if (c > 0) continue;
        char *slash = strrchr(name, '/');
        const char *base = slash ? slash + 1 : name;
        if (strncmp(base, ".wh.", 4) == 0) {
            char target[PATH_MAX + 8];
            if (strcmp(base, ".wh..wh..opq") ==
                0) { /* opaque: drop what lower layers had in this directory */
                snprintf(target, sizeof(target), "/%.*s", slash ? (int)(slash - name) : 0, name);
                rm_rf(target);
                mkdir(target, 0755);
            } else {
                snprintf(target, sizeof(target), "/%.*s%s", slash ? (int)(slash - name) + 1 : 0, name,
                         base + 4);
                rm_rf(target);
            }
            continue;
        }
        archive_entry_set_pathname(e, name);
        const char *hl = archive_entry_hardlink(e);
        if (hl) {
            char hn[PATH_MAX];
            if (clean_name(hl, hn, sizeof(hn)) != 0) {
                rc = cube_err_set(err, EPERM, "layer %s: hard link target '%s' is outside the rootfs", layer,
                                  hl);
                goto out;
            }
            archive_entry_set_hardlink(e, hn);
        }
        if (archive_write_header(out, e) < ARCHIVE_WARN) {
            rc = cube_err_set(err, EIO, "extract %s: %s", name, archive_error_string(out));
            goto out;
        }
        const void *buf;
        size_t size;
        la_int64_t off;
        while ((r = archive_read_data_block(in, &buf, &size, &off)) == ARCHIVE_OK)
            if (archive_write_data_block(out, buf, size, off) < ARCHIVE_OK) break;
        archive_write_finish_entry(out);
    }
    if (r != ARCHIVE_EOF) rc = cube_err_set(err, EBADMSG, "layer %s: %s", layer, archive_error_string(in));
out:
    archive_read_free(in);
    archive_write_free(out);
    return rc;
}

int tpl_apply_layer(const char *rootfs, const char *layer, cube_err *err)
{
    int fd = open(layer, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cube_err_sys(err, errno, "open layer %s", layer);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        close(fd);
        return cube_err_sys(err, errno, "pipe");
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        cube_err cerr = {0};
        if (chroot(rootfs) < 0 || chdir("/") < 0)
            cube_err_sys(&cerr, errno, "chroot %s", rootfs);
        else
            extract_here(fd, layer, &cerr);
        if (cerr.code && write(pipefd[1], &cerr, sizeof(cerr)) < 0) _exit(2);
        _exit(cerr.code ? 1 : 0);
    }
    close(pipefd[1]);
    close(fd);
    if (pid < 0) {
        close(pipefd[0]);
        return cube_err_sys(err, errno, "fork");
    }
    cube_err cerr = {0};
    ssize_t n = read(pipefd[0], &cerr, sizeof(cerr));
    close(pipefd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (n == (ssize_t)sizeof(cerr) && cerr.code) {
        if (err) *err = cerr;
        return -1;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return cube_err_set(err, EIO, "extracting %s failed", layer);
    return 0;
}

/* The blob blobs/<alg>/<hex> of a digest "alg:hex", opened within the layout (open_within); -1 when the
 * digest is malformed or the blob cannot be opened. */
static int blob_open(const char *layout, const char *digest, char *out, size_t cap, int *fd, cube_err *err)
{
    const char *colon = digest ? strchr(digest, ':') : NULL;
    if (!colon || strchr(digest, '/') || strstr(digest, ".."))
        return cube_err_set(err, EBADMSG, "malformed digest '%.80s'", digest ? digest : "");
    char name[400];
    snprintf(name, sizeof(name), "blobs/%.*s/%.200s", (int)(colon - digest), digest, colon + 1);
    return open_within(layout, name, out, cap, fd, err);
}

static cJSON *image_config(const char *path, cube_err *err)
{
    cJSON *cfg = read_json(path, err);
    if (!cfg) return NULL;
    cJSON *c = cJSON_DetachItemFromObjectCaseSensitive(cfg, "config");
    cJSON_Delete(cfg);
    return c;
}

int tpl_import_oci(const char *layout, const char *rootfs, cJSON **config, char digest[80], cube_err *err)
{
    *config = NULL;
    char path[64];
    int fd = -1;
    if (open_within(layout, "index.json", path, sizeof(path), &fd, err) < 0)
        return cube_err_prefix(err, "OCI layout %s", layout);
    cJSON *index = read_json(path, err);
    close_fd(&fd);
    if (!index) return cube_err_prefix(err, "OCI layout %s", layout);
    const cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItem(index, "manifests"), 0);
    const char *md = cJSON_GetStringValue(cJSON_GetObjectItem(m, "digest"));
    int rc = 0;
    cJSON *manifest = NULL;
    if (!md || blob_open(layout, md, path, sizeof(path), &fd, err) < 0) {
        rc = cube_err_set(err, EBADMSG, "OCI layout %s: index.json names no manifest (%s)", layout,
                          md ? err->msg : "no digest");
        goto out;
    }
    snprintf(digest, 80, "%s", md);
    manifest = read_json(path, err);
    close_fd(&fd);
    if (!manifest) {
        rc = -1;
        goto out;
    }
    const char *cd =
        cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(manifest, "config"), "digest"));
    if (cd && blob_open(layout, cd, path, sizeof(path), &fd, err) == 0) {
        *config = image_config(path, err);
        close_fd(&fd);
    }
    cube_err_clear(err); /* an image without a usable config runs with the template's defaults */
    const cJSON *layer;
    int nl = cJSON_GetArraySize(cJSON_GetObjectItem(manifest, "layers")), li = 0;
    cJSON_ArrayForEach(layer, cJSON_GetObjectItem(manifest, "layers"))
    {
        const char *ld = cJSON_GetStringValue(cJSON_GetObjectItem(layer, "digest"));
        fprintf(stderr, "cube-template: layer %d/%d %.19s\n", ++li, nl, ld ? ld : "?");
        if (!ld || blob_open(layout, ld, path, sizeof(path), &fd, err) < 0) {
            rc = cube_err_set(err, EBADMSG, "OCI layout %s: a layer has no valid digest (%s)", layout,
                              ld ? err->msg : "none");
            goto out;
        }
        rc = tpl_apply_layer(rootfs, path, err);
        close_fd(&fd);
        if (rc < 0) goto out;
    }
out:
    cJSON_Delete(manifest);
    cJSON_Delete(index);
    return rc;
}

int tpl_import_docker_save(const char *tarball, const char *scratch, const char *rootfs, cJSON **config,
                           char digest[80], cube_err *err)
{
    *config = NULL;
    /* the outer tarball holds manifest.json, the image config and one tar per layer */
    if (mkdir(scratch, 0700) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", scratch);
    if (tpl_apply_layer(scratch, tarball, err) < 0) return cube_err_prefix(err, "docker save tarball");
    char path[64];
    int fd = -1;
    if (open_within(scratch, "manifest.json", path, sizeof(path), &fd, err) < 0)
        return cube_err_prefix(err, "docker save tarball %s", tarball);
    cJSON *man = read_json(path, err);
    close_fd(&fd);
    if (!man) return cube_err_prefix(err, "docker save tarball %s", tarball);
    const cJSON *img = cJSON_GetArrayItem(man, 0);
    const char *cfg = cJSON_GetStringValue(cJSON_GetObjectItem(img, "Config"));
    int rc = 0;
    char name[PATH_MAX];
    if (!cfg || clean_name(cfg, name, sizeof(name)) != 0) {
        rc = cube_err_set(err, EBADMSG, "docker save tarball %s: manifest.json names no config", tarball);
        goto out;
    }
    if (open_within(scratch, name, path, sizeof(path), &fd, err) < 0 ||
        tpl_file_digest(path, digest, err) < 0 || !(*config = image_config(path, err))) {
        close_fd(&fd);
        rc = -1;
        goto out;
    }
    close_fd(&fd);
    const cJSON *l;
    cJSON_ArrayForEach(l, cJSON_GetObjectItem(img, "Layers"))
    {
        const char *lp = cJSON_GetStringValue(l);
        fprintf(stderr, "cube-template: layer %s\n", lp ? lp : "?");
        if (!lp || clean_name(lp, name, sizeof(name)) != 0) {
            rc = cube_err_set(err, EBADMSG, "docker save tarball %s: bad layer path", tarball);
            goto out;
        }
        if ((rc = open_within(scratch, name, path, sizeof(path), &fd, err)) < 0) goto out;
        rc = tpl_apply_layer(rootfs, path, err);
        close_fd(&fd);
        if (rc < 0) goto out;
    }
out:
    cJSON_Delete(man);
    return rc;
}
