/* Snapshot file format (see snapshot.h). */
#include "snapshot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static const char magic[8] = {'C', 'U', 'B', 'E', 'S', 'N', 'P', '1'};
#define HEADER  16 /* magic, version, sections */
#define SECTION 20 /* type, id, length, crc */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

int snap_create(snap_writer *w, const char *path, cube_err *err)
{
    memset(w, 0, sizeof(*w));
    w->f = fopen(path, "wbe");
    if (!w->f) return cube_err_sys(err, errno, "create snapshot %s", path);
    uint8_t h[HEADER] = {0};
    memcpy(h, magic, 8);
    put32(h + 8, SNAP_VERSION);
    if (fwrite(h, 1, HEADER, w->f) != HEADER) w->failed = 1; /* the count is filled in by snap_finish */
    return 0;
}

void snap_put(snap_writer *w, uint32_t type, uint32_t id, const void *data, uint64_t len)
{
    uint8_t h[SECTION];
    put32(h, type);
    put32(h + 4, id);
    put64(h + 8, len);
    put32(h + 16, (uint32_t)crc32(0, data, (uInt)len));
    if (fwrite(h, 1, SECTION, w->f) != SECTION || fwrite(data, 1, len, w->f) != len) w->failed = 1;
    w->n++;
}

int snap_finish(snap_writer *w, cube_err *err)
{
    uint8_t n[4];
    put32(n, w->n);
    if (fseek(w->f, 12, SEEK_SET) < 0 || fwrite(n, 1, 4, w->f) != 4 || fflush(w->f) != 0 ||
        fsync(fileno(w->f)) < 0)
        w->failed = 1;
    int e = errno;
    if (fclose(w->f) != 0) w->failed = 1;
    w->f = NULL;
    return w->failed ? cube_err_sys(err, e ? e : EIO, "write snapshot") : 0;
}

int snap_parse(snap_file *s, uint8_t *buf, size_t size, cube_err *err)
{
    memset(s, 0, sizeof(*s));
    s->buf = buf;
    s->size = size;
    if (size < HEADER || memcmp(buf, magic, 8) != 0) {
        cube_err_set(err, EINVAL, "not a cube snapshot");
        goto bad;
    }
    uint32_t version = get32(buf + 8), n = get32(buf + 12);
    if (version != SNAP_VERSION) {
        cube_err_set(err, EINVAL, "snapshot version %u (this cube-hypervisor reads %d)", version,
                     SNAP_VERSION);
        goto bad;
    }
    /* every section takes at least its header: a count beyond that is a lie, not an allocation */
    if (n > (size - HEADER) / SECTION) {
        cube_err_set(err, EINVAL, "snapshot claims %u sections, more than fit in it", n);
        goto bad;
    }
    s->secs = calloc(n ? n : 1, sizeof(*s->secs));
    if (!s->secs) {
        cube_err_set(err, ENOMEM, "snapshot sections");
        goto bad;
    }
    size_t off = HEADER;
    for (uint32_t i = 0; i < n; i++) {
        if (size - off < SECTION) {
            cube_err_set(err, EINVAL, "snapshot truncated at section %u", i);
            goto bad;
        }
        snap_section *sec = &s->secs[i];
        sec->type = get32(buf + off);
        sec->id = get32(buf + off + 4);
        sec->len = get64(buf + off + 8);
        uint32_t crc = get32(buf + off + 16);
        off += SECTION;
        if (sec->len > size - off) {
            cube_err_set(err, EINVAL, "snapshot section %u runs past the end of the file", i);
            goto bad;
        }
        sec->data = buf + off;
        if ((uint32_t)crc32(0, sec->data, (uInt)sec->len) != crc) {
            cube_err_set(err, EINVAL, "snapshot section %u (type %u) is corrupt (CRC mismatch)", i,
                         sec->type);
            goto bad;
        }
        off += sec->len;
        s->n++;
    }
    if (off != size) {
        cube_err_set(err, EINVAL, "snapshot has %zu stray bytes after its last section", size - off);
        goto bad;
    }
    /* sections follow each other at any offset in the file: each is copied to a 16-byte aligned place, so
     * that its struct (vCPU registers, the clock) is read where its type may be */
    size_t total = 0;
    for (uint32_t i = 0; i < s->n; i++) total += (s->secs[i].len + 15) & ~(size_t)15;
    s->aligned = aligned_alloc(16, total ? total : 16);
    if (!s->aligned) {
        cube_err_set(err, ENOMEM, "snapshot sections");
        goto bad;
    }
    for (size_t i = 0, at = 0; i < s->n; i++) {
        memcpy(s->aligned + at, s->secs[i].data, s->secs[i].len);
        s->secs[i].data = s->aligned + at;
        at += (s->secs[i].len + 15) & ~(size_t)15;
    }
    return 0;
bad:
    snap_close(s);
    return -1;
}

int snap_open(snap_file *s, const char *path, cube_err *err)
{
    FILE *f = fopen(path, "rbe");
    if (!f) return cube_err_sys(err, errno, "open snapshot %s", path);
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += got;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return cube_err_set(err, EIO, "read snapshot %s", path);
    }
    return snap_parse(s, buf, len, err);
}

void snap_close(snap_file *s)
{
    free(s->buf);
    free(s->aligned);
    free(s->secs);
    memset(s, 0, sizeof(*s));
}

const void *snap_get(const snap_file *s, uint32_t type, uint32_t id, uint64_t len)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (s->secs[i].type == type && s->secs[i].id == id)
            return s->secs[i].len == len ? s->secs[i].data : NULL;
    return NULL;
}
