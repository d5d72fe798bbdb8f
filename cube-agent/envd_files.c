/* GET/POST /files: download (Range) and upload (multipart/form-data through libmicrohttpd's post processor,
 * or application/octet-stream), gzip request bodies, parent directories created, all as the request's user.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "agent.h"
#include "file_meta.h"
#include "file_signature.h"
#include "connect.h"

void envd_files_get(agent *a, http_req *req);
void envd_files_post(agent *a, http_req *req);
int envd_files_upload(agent *a, http_req *req, const char *data, size_t len);

/* Token header, or a valid unexpired signature for this path and operation. */
static int files_authorized(agent *a, http_req *req, const char *op, const char *user, const char *path)
{
    pthread_mutex_lock(&a->lock);
    int ok = agent_token_ok_locked(a, req);
    char *token = a->access_token ? strdup(a->access_token) : NULL;
    pthread_mutex_unlock(&a->lock);
    if (ok) {
        free(token);
        return 1;
    }
    const char *sig = http_query(req, "signature");
    const char *exp = http_query(req, "signature_expiration");
    if (sig && token && !(exp && *exp && strtoll(exp, NULL, 10) < (long long)time(NULL)))
        ok = cube_file_signature_ok(sig, path, op, user, token, exp);
    free(token);
    return ok;
}

/* The user named by ?username=, else the request's user. */
static int files_user(agent *a, http_req *req, agent_user *u, cube_err *err)
{
    const char *name = http_query(req, "username");
    if (name && *name) return agent_lookup_user(name, u, err);
    return agent_request_user(a, req, u, err);
}

static unsigned errno_status(int e)
{
    switch (e) {
    case ENOENT:
        return 404;
    case EACCES:
    case EPERM:
        return 401;
    case ENOSPC:
    case EDQUOT:
        return 507;
    default:
        return 400;
    }
}

/* Whether a file's size says how much it holds. The kernel's generated files do not: /proc's are 0 bytes
 * long, /sys's 4096, whatever reading them gives. */
static int size_is_content(int fd, const struct stat *st)
{
    struct statfs fs;
    if (st->st_size == 0 || fstatfs(fd, &fs) < 0) return 0;
    switch ((unsigned long)fs.f_type) {
    case PROC_SUPER_MAGIC:
    case SYSFS_MAGIC:
    case CGROUP_SUPER_MAGIC:
    case CGROUP2_SUPER_MAGIC:
    case DEBUGFS_MAGIC:
    case TRACEFS_MAGIC:
    case SECURITYFS_MAGIC:
        return 0;
    default:
        return 1;
    }
}

/* MHD's reader for a file streamed until its end (size_is_content: no length to give ahead) */
static ssize_t read_to_end(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos; /* read in order, never sought */
    ssize_t n;
    do n = read((int)(intptr_t)cls, buf, max);
    while (n < 0 && errno == EINTR);
    if (n == 0) return MHD_CONTENT_READER_END_OF_STREAM;
    return n < 0 ? MHD_CONTENT_READER_END_WITH_ERROR : n;
}

static void close_fd(void *cls)
{
    close((int)(intptr_t)cls);
}

void envd_files_get(agent *a, http_req *req)
{
    cube_err err = {0};
    agent_user u;
    char path[4096];
    if (files_user(a, req, &u, &err) < 0) return http_reply_error(req, 400, "%s", err.msg);
    const char *qpath = http_query(req, "path");
    if (agent_resolve_path(&u, qpath, path, sizeof(path), &err) < 0)
        return http_reply_error(req, 400, "%s", err.msg);
    if (!files_authorized(a, req, "read", http_query(req, "username"), qpath))
        return http_reply_error(req, 401, "missing or invalid access token or signature");
    uid_t ou;
    gid_t og;
    agent_fs_become(&u, &ou, &og);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int e = errno;
    agent_fs_restore(ou, og);
    if (fd < 0) {
        if (e == ENOENT) return http_reply_error(req, 404, "path '%s' does not exist", path);
        return http_reply_error(req, errno_status(e), "open '%s': %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return http_reply_error(req, 400, "path '%s' is not a regular file", path);
    }
    if (!size_is_content(fd, &st)) {
        /* streamed whole, chunked (a Range is ignored, as HTTP allows: there is no length to count from) */
        struct MHD_Response *resp = MHD_create_response_from_callback(
            MHD_SIZE_UNKNOWN, 64 * 1024, read_to_end, (void *)(intptr_t)fd, close_fd);
        if (!resp) {
            close(fd);
            return http_reply_error(req, 500, "cannot stream '%s'", path);
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
        return http_reply(req, 200, resp);
    }
    uint64_t size = (uint64_t)st.st_size, off = 0, len = size;
    unsigned status = 200;
    const char *range = http_header(req, "Range");
    if (range && strncmp(range, "bytes=", 6) == 0) {
        char *end;
        unsigned long long first = 0, last = size ? size - 1 : 0;
        const char *r = range + 6;
        int ok = 1;
        if (*r == '-') { /* suffix: the last N bytes */
            unsigned long long n = strtoull(r + 1, &end, 10);
            ok = end != r + 1 && *end == '\0' && n > 0;
            first = n >= size ? 0 : size - n;
        } else {
            first = strtoull(r, &end, 10);
            ok = end != r && *end == '-';
            if (ok && end[1] != '\0') {
                const char *l = end + 1;
                last = strtoull(l, &end, 10);
                ok = end != l && *end == '\0';
            } else if (ok) {
                ok = end[1] == '\0';
            }
        }
        if (!ok || first >= size || last < first) {
            close(fd);
            struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
            char cr[64];
            snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)size);
            MHD_add_response_header(resp, "Content-Range", cr);
            return http_reply(req, 416, resp);
        }
        if (last >= size) last = size - 1;
        off = first;
        len = last - first + 1;
        status = 206;
    }
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(len, fd, off);
    if (!resp) {
        close(fd);
        return http_reply_error(req, 500, "cannot stream '%s'", path);
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    MHD_add_response_header(resp, "Accept-Ranges", "bytes");
    if (status == 206) {
        char cr[96];
        snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)off,
                 (unsigned long long)(off + len - 1), (unsigned long long)size);
        MHD_add_response_header(resp, "Content-Range", cr);
    }
    http_reply(req, status, resp);
}

typedef struct upload {
    agent *a;
    agent_user u;
    struct MHD_PostProcessor *pp;
    int octet;
    int gz;
    z_stream z;
    int fd;
    char path[4096];
    const char *qpath; /* ?path= (MHD owns the string for the request's lifetime) */
    cJSON *written;
    cJSON *meta; /* X-Metadata-* pairs every file written gets; NULL: none given */
    int failed;
    /* the part being written: MHD may call with offset 0 twice for one part (first with no bytes, before
     * its data arrived), so a new part is offset 0 after bytes of this one, or under another name */
    uint64_t part_bytes;
    char part_name[4096];
} upload;

static void upload_free(void *p)
{
    upload *up = p;
    if (up->pp) MHD_destroy_post_processor(up->pp);
    if (up->fd >= 0) close(up->fd);
    if (up->gz) inflateEnd(&up->z);
    cJSON_Delete(up->written);
    cJSON_Delete(up->meta);
    free(up);
}

/* mkdir -p of path's parent, as the current fs identity */
static int make_parents(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int rc = mkdir(path, 0755);
        int e = errno;
        *p = '/';
        if (rc < 0 && e != EEXIST) {
            errno = e;
            return -1;
        }
    }
    return 0;
}

static int open_dest(upload *up, http_req *req, const char *name)
{
    cube_err err = {0};
    if (up->fd >= 0) close(up->fd);
    up->fd = -1;
    if (agent_resolve_path(&up->u, name, up->path, sizeof(up->path), &err) < 0) {
        http_reply_error(req, 400, "%s", err.msg);
        return -1;
    }
    uid_t ou;
    gid_t og;
    agent_fs_become(&up->u, &ou, &og);
    int rc = make_parents(up->path);
    int fd = rc < 0 ? -1 : open(up->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int e = errno;
    agent_fs_restore(ou, og);
    if (fd < 0) {
        http_reply_error(req, errno_status(e), "cannot write '%s': %s", up->path, strerror(e));
        return -1;
    }
    up->fd = fd;
    cube_err merr = {0};
    if (up->meta && file_meta_apply(fd, up->meta, &merr) < 0) {
        http_reply_error(req, merr.code == ENOSPC || merr.code == E2BIG ? 400 : 500, "%s: %s", up->path,
                         merr.msg);
        return -1;
    }
    cJSON *entry = cJSON_CreateObject();
    char *copy = strdup(up->path);
    cJSON_AddStringToObject(entry, "path", up->path);
    cJSON_AddStringToObject(entry, "name", copy ? basename(copy) : up->path);
    cJSON_AddStringToObject(entry, "type", "file");
    if (up->meta) cJSON_AddItemToObject(entry, "metadata", cJSON_Duplicate(up->meta, 1));
    free(copy);
    cJSON_AddItemToArray(up->written, entry);
    return 0;
}

static int write_all(upload *up, http_req *req, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(up->fd, data, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            http_reply_error(req, errno_status(errno), "write '%s': %s", up->path, strerror(errno));
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                               const char *content_type, const char *transfer_encoding, const char *data,
                               uint64_t off, size_t size)
{
    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    http_req *req = cls;
    upload *up = req->state;
    if (up->failed || !key || strcmp(key, "file") != 0)
        return MHD_YES; /* a part without a name is not a file */
    bool same_part =
        up->fd >= 0 && up->part_bytes == 0 && strcmp(filename ? filename : "", up->part_name) == 0;
    if (off == 0 && !same_part) {
        /* a new part: ?path= names the single destination, else the part's filename does */
        const char *dest = up->qpath && *up->qpath ? up->qpath : filename;
        if (!dest || !*dest) {
            http_reply_error(req, 400, "no destination: give ?path= or a filename in the form part");
            up->failed = 1;
            return MHD_NO;
        }
        if (open_dest(up, req, dest) < 0) {
            up->failed = 1;
            return MHD_NO;
        }
        up->part_bytes = 0;
        snprintf(up->part_name, sizeof(up->part_name), "%s", filename ? filename : "");
    }
    up->part_bytes += size;
    if (size && write_all(up, req, data, size) < 0) {
        up->failed = 1;
        return MHD_NO;
    }
    return MHD_YES;
}

/* After (optional) gunzip: bytes of the body proper. */
static int consume(upload *up, http_req *req, const char *data, size_t len)
{
    if (up->octet) return write_all(up, req, data, len);
    if (MHD_post_process(up->pp, data, len) != MHD_YES) {
        if (!req->replied) http_reply_error(req, 400, "malformed multipart body");
        return -1;
    }
    return 0;
}

static int begin_upload(agent *a, http_req *req)
{
    upload *up = calloc(1, sizeof(*up));
    if (!up) return -1;
    up->a = a;
    up->fd = -1;
    up->written = cJSON_CreateArray();
    req->state = up;
    req->state_free = upload_free;
    cube_err err = {0};
    up->qpath = http_query(req, "path");
    if (files_user(a, req, &up->u, &err) < 0) {
        http_reply_error(req, 400, "%s", err.msg);
        return -1;
    }
    if (!files_authorized(a, req, "write", http_query(req, "username"), up->qpath ? up->qpath : "")) {
        http_reply_error(req, 401, "missing or invalid access token or signature");
        return -1;
    }
    if (file_meta_from_headers(req, &up->meta, &err) < 0) {
        http_reply_error(req, 400, "%s", err.msg);
        return -1;
    }
    const char *ct = http_header(req, "Content-Type");
    const char *ce = http_header(req, "Content-Encoding");
    if (ce && strcmp(ce, "gzip") == 0) {
        up->gz = 1;
        if (inflateInit2(&up->z, 16 + MAX_WBITS) != Z_OK) {
            up->gz = 0;
            http_reply_error(req, 500, "cannot start gzip decoder");
            return -1;
        }
    } else if (ce && *ce && strcmp(ce, "identity") != 0) {
        http_reply_error(req, 415, "unsupported Content-Encoding '%s'", ce);
        return -1;
    }
    if (ct && strncmp(ct, "multipart/form-data", 19) == 0) {
        up->pp = MHD_create_post_processor(req->conn, 64 * 1024, on_part, req);
        if (!up->pp) {
            http_reply_error(req, 400, "malformed multipart Content-Type (boundary?)");
            return -1;
        }
    } else {
        up->octet = 1;
        if (!up->qpath || !*up->qpath) {
            http_reply_error(req, 400, "octet-stream upload needs ?path=");
            return -1;
        }
        if (open_dest(up, req, up->qpath) < 0) return -1;
    }
    return 0;
}

int envd_files_upload(agent *a, http_req *req, const char *data, size_t len)
{
    if (!req->state && begin_upload(a, req) < 0) return -1;
    upload *up = req->state;
    if (up->failed) return -1;
    int rc;
    if (!up->gz) {
        rc = consume(up, req, data, len);
    } else {
        char out[65536];
        up->z.next_in = (unsigned char *)data;
        up->z.avail_in = (unsigned)len;
        rc = 0;
        while (up->z.avail_in > 0 && rc == 0) {
            up->z.next_out = (unsigned char *)out;
            up->z.avail_out = sizeof(out);
            int zr = inflate(&up->z, Z_NO_FLUSH);
            if (zr != Z_OK && zr != Z_STREAM_END) {
                http_reply_error(req, 400, "malformed gzip body");
                rc = -1;
                break;
            }
            rc = consume(up, req, out, sizeof(out) - up->z.avail_out);
            if (zr == Z_STREAM_END) break;
        }
    }
    if (rc < 0) up->failed = 1;
    return rc;
}

void envd_files_post(agent *a, http_req *req)
{
    if (!req->state && begin_upload(a, req) < 0) return; /* empty body */
    upload *up = req->state;
    if (up->failed) return; /* replied already */
    if (up->pp && MHD_destroy_post_processor(up->pp) != MHD_YES) {
        up->pp = NULL;
        return http_reply_error(req, 400, "truncated multipart body");
    }
    up->pp = NULL;
    if (cJSON_GetArraySize(up->written) == 0) return http_reply_error(req, 400, "no file in the request");
    if (up->fd >= 0 && close(up->fd) < 0) {
        up->fd = -1;
        return http_reply_error(req, 507, "write '%s': %s", up->path, strerror(errno));
    }
    up->fd = -1;
    char *s = cJSON_PrintUnformatted(up->written);
    http_reply_json(req, 200, s);
    free(s);
}
