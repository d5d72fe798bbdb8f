#include "file_meta.h"

#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#define META_HEADER "x-metadata-"
#define META_XATTR  "user.e2b.meta."
#define META_MAX    64   /* pairs a file carries */
#define VALUE_MAX   1024 /* bytes of one value */

typedef struct header_scan {
    cJSON *meta;
    cube_err *err;
    int failed;
} header_scan;

/* RFC 9110 token characters, as the SDK checks keys */
static int token_char(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *name, const char *value)
{
    (void)kind;
    header_scan *s = cls;
    size_t pl = strlen(META_HEADER);
    if (s->failed || !name || strncasecmp(name, META_HEADER, pl) != 0) return MHD_YES;
    const char *key = name + pl;
    char lower[256];
    size_t kl = strlen(key);
    int ok = kl > 0 && kl < sizeof(lower) - strlen(META_XATTR);
    for (size_t i = 0; ok && i < kl; i++) {
        ok = token_char((unsigned char)key[i]);
        lower[i] = (char)tolower((unsigned char)key[i]);
    }
    if (!ok) {
        s->failed = 1;
        cube_err_set(s->err, EINVAL, "header %s: a metadata key is 1-200 token characters", name);
        return MHD_NO;
    }
    lower[kl] = '\0';
    value = value ? value : "";
    ok = strlen(value) <= VALUE_MAX;
    for (const char *c = value; ok && *c; c++) ok = *c >= 0x20 && *c <= 0x7e;
    if (!ok) {
        s->failed = 1;
        cube_err_set(s->err, EINVAL, "header %s: a metadata value is at most %d printable ASCII characters",
                     name, VALUE_MAX);
        return MHD_NO;
    }
    if (!s->meta) s->meta = cJSON_CreateObject();
    if (cJSON_GetArraySize(s->meta) >= META_MAX) {
        s->failed = 1;
        cube_err_set(s->err, EINVAL, "at most %d metadata headers", META_MAX);
        return MHD_NO;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(s->meta, lower);
    cJSON_AddStringToObject(s->meta, lower, value);
    return MHD_YES;
}

int file_meta_from_headers(http_req *req, cJSON **out, cube_err *err)
{
    header_scan s = {.err = err};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, scan_header, &s);
    if (s.failed) {
        cJSON_Delete(s.meta);
        *out = NULL;
        return -1;
    }
    *out = s.meta;
    return 0;
}

int file_meta_apply(int fd, const cJSON *meta, cube_err *err)
{
    char names[8192];
    ssize_t n = flistxattr(fd, names, sizeof(names));
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(names + i) + 1)
        if (strncmp(names + i, META_XATTR, strlen(META_XATTR)) == 0) fremovexattr(fd, names + i);
    const cJSON *it;
    cJSON_ArrayForEach(it, meta)
    {
        char name[300];
        snprintf(name, sizeof(name), "%s%s", META_XATTR, it->string);
        const char *v = cJSON_IsString(it) ? it->valuestring : "";
        if (fsetxattr(fd, name, v, strlen(v), 0) < 0)
            return cube_err_sys(err, errno, "metadata '%s' not kept with the file", it->string);
    }
    return 0;
}

cJSON *file_meta_read(const char *path)
{
    char names[8192];
    ssize_t n = llistxattr(path, names, sizeof(names));
    cJSON *meta = NULL;
    size_t pl = strlen(META_XATTR);
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(names + i) + 1) {
        if (strncmp(names + i, META_XATTR, pl) != 0) continue;
        char v[VALUE_MAX + 1];
        ssize_t vl = lgetxattr(path, names + i, v, VALUE_MAX);
        if (vl < 0) continue;
        v[vl] = '\0';
        if (!meta) meta = cJSON_CreateObject();
        cJSON_AddStringToObject(meta, names + i + pl, v);
    }
    return meta;
}
