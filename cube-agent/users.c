#include "users.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* glibc's parsers of the files' lines (no NSS), over a copy of the file in memory: they note the stream's
 * position before each line (on ERANGE they put it back there, and a bigger buffer reads the line again),
 * which on a file is an lseek per line. A line longer than 1 MiB ends the walk; so does a file over 16 MiB.
 */
#define LINE_MAX_BYTES (1 << 20)
#define FILE_MAX_BYTES (16 << 20)

typedef struct walk {
    FILE *f;
    char *text; /* the file */
    char small[4096];
    char *buf; /* one line's fields */
    size_t cap;
} walk;

static char *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    size_t cap = 8192, n = 0;
    char *text = malloc(cap);
    while (text) {
        if (n == cap) {
            char *nt = cap < FILE_MAX_BYTES ? realloc(text, cap * 2) : NULL;
            if (!nt) {
                free(text);
                text = NULL;
                break;
            }
            text = nt;
            cap *= 2;
        }
        ssize_t r = read(fd, text + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            free(text);
            text = NULL;
        } else if (r == 0) {
            break;
        } else {
            n += (size_t)r;
        }
    }
    close(fd);
    *len = n;
    return text;
}

static int walk_open(walk *w, const char *path)
{
    *w = (walk){.buf = NULL};
    w->buf = w->small;
    w->cap = sizeof(w->small);
    size_t len = 0;
    w->text = read_file(path, &len);
    if (!w->text) return -1;
    /* an empty file has no entries (and fmemopen wants a size) */
    w->f = len ? fmemopen(w->text, len, "r") : NULL;
    if (len && !w->f) {
        free(w->text);
        return -1;
    }
    return 0;
}

static void walk_close(walk *w)
{
    if (w->f) fclose(w->f);
    free(w->text);
    if (w->buf != w->small) free(w->buf);
}

/* grows the buffer after ERANGE: false when it may not or cannot */
static bool walk_grow(walk *w)
{
    if (w->cap >= LINE_MAX_BYTES) return false;
    char *nb = malloc(w->cap * 2);
    if (!nb) return false;
    if (w->buf != w->small) free(w->buf);
    w->buf = nb;
    w->cap *= 2;
    return true;
}

static struct passwd *next_pw(walk *w, struct passwd *pw)
{
    while (w->f) {
        struct passwd *res = NULL;
        int rc = fgetpwent_r(w->f, pw, w->buf, w->cap, &res);
        if (rc == 0 && res) return res;
        if (rc != ERANGE || !walk_grow(w)) return NULL;
    }
    return NULL;
}

static struct group *next_gr(walk *w, struct group *gr)
{
    while (w->f) {
        struct group *res = NULL;
        int rc = fgetgrent_r(w->f, gr, w->buf, w->cap, &res);
        if (rc == 0 && res) return res;
        if (rc != ERANGE || !walk_grow(w)) return NULL;
    }
    return NULL;
}

int users_by_name(const char *passwd, const char *name, users_entry *out)
{
    walk w;
    if (!name || !*name) return errno = ENOENT, -1;
    if (walk_open(&w, passwd) < 0) return -1;
    struct passwd pw, *p;
    int rc = -1;
    while ((p = next_pw(&w, &pw)))
        if (strcmp(p->pw_name, name) == 0) {
            snprintf(out->name, sizeof(out->name), "%s", p->pw_name);
            out->uid = p->pw_uid;
            out->gid = p->pw_gid;
            snprintf(out->home, sizeof(out->home), "%s", p->pw_dir && *p->pw_dir ? p->pw_dir : "/");
            rc = 0;
            break;
        }
    walk_close(&w);
    if (rc < 0) errno = ENOENT;
    return rc;
}

int users_name_of_uid(const char *passwd, uid_t uid, char *out, size_t cap)
{
    walk w;
    if (walk_open(&w, passwd) < 0) return -1;
    struct passwd pw, *p;
    int rc = -1;
    while (rc < 0 && (p = next_pw(&w, &pw)))
        if (p->pw_uid == uid) rc = snprintf(out, cap, "%s", p->pw_name) < (int)cap ? 0 : -1;
    walk_close(&w);
    return rc;
}

int users_name_of_gid(const char *group, gid_t gid, char *out, size_t cap)
{
    walk w;
    if (walk_open(&w, group) < 0) return -1;
    struct group gr, *g;
    int rc = -1;
    while (rc < 0 && (g = next_gr(&w, &gr)))
        if (g->gr_gid == gid) rc = snprintf(out, cap, "%s", g->gr_name) < (int)cap ? 0 : -1;
    walk_close(&w);
    return rc;
}

int users_groups(const char *group, const char *name, gid_t gid, gid_t *out, int cap)
{
    if (cap < 1) return 0;
    int n = 0;
    out[n++] = gid;
    walk w;
    if (!name || walk_open(&w, group) < 0) return n;
    struct group gr, *g;
    while (n < cap && (g = next_gr(&w, &gr))) {
        bool member = false;
        for (char **m = g->gr_mem; m && *m && !member; m++) member = strcmp(*m, name) == 0;
        for (int i = 0; i < n && member; i++) member = out[i] != g->gr_gid;
        if (member) out[n++] = g->gr_gid;
    }
    walk_close(&w);
    return n;
}
