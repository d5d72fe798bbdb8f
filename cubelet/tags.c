/* E2B's template tags on the node that holds a template's builds (<data>/templates/<name>/<build>/): the
 * default tag is the link `current` (what "name" alone starts), every other one a link tags/<tag> ->
 * ../<build> (template "name:tag"). A tag moves by renaming a new link over the old one, so a create sees the
 * old build or the new one, never none; the template it names is then reloaded (its pool, sandboxes of the
 * old build, kept running). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cubelet_internal.h"
#include "id.h"
#include "log.h"

#define DEFAULT_TAG "default"
#define TAGS_MAX    64

/* The build a link leads to (its last component), or -1 (ENOENT: no such tag). */
static int link_build(const char *link, char *build, size_t cap)
{
    char t[PATH_MAX];
    ssize_t n = readlink(link, t, sizeof(t) - 1);
    if (n < 0) return -1;
    t[n] = '\0';
    const char *slash = strrchr(t, '/');
    snprintf(build, cap, "%s", slash ? slash + 1 : t);
    return 0;
}

static int set_link(cubelet *c, const char *name, const char *tag, const char *build_id, cube_err *err)
{
    char full[160], link[4400], tmp[4500];
    bool is_default = strcmp(tag, DEFAULT_TAG) == 0;
    snprintf(full, sizeof(full), is_default ? "%s" : "%s:%s", name, tag);
    cl_template_link(c, full, link, sizeof(link));
    if (!is_default) {
        char dir[4300];
        snprintf(dir, sizeof(dir), "%s/templates/%s/tags", c->cfg.data_dir, name);
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", dir);
    }
    char target[128], now[128];
    snprintf(target, sizeof(target), is_default ? "%s" : "../%s", build_id);
    if (link_build(link, now, sizeof(now)) == 0 && strcmp(now, build_id) == 0 && cl_find_template(c, full))
        return 0; /* already there */
    snprintf(tmp, sizeof(tmp), "%s.new-%d", link, (int)getpid());
    unlink(tmp);
    if (symlink(target, tmp) < 0 || rename(tmp, link) < 0) {
        int e = errno;
        unlink(tmp);
        return cube_err_sys(err, e, "tag %s", full);
    }
    cube_log_info("template tagged", "template=%s build=%s", full, build_id);
    return cl_replace_template(c, full, err);
}

int cl_tags_link(cubelet *c, const char *name, const char *build_id, char **tags, size_t n,
                 bool first_default, cube_err *err)
{
    char cfgp[4500];
    snprintf(cfgp, sizeof(cfgp), "%s/templates/%s/%s/config.json", c->cfg.data_dir, name, build_id);
    if (!cl_valid_id(build_id, 63) || access(cfgp, F_OK) != 0)
        return cube_err_set(err, ENOENT, "template '%s' has no build '%s' here", name, build_id);
    for (size_t i = 0; i < n; i++)
        if (!cube_template_name_valid(tags[i]))
            return cube_err_set(err, EINVAL, "tags: '%s' is not 1-63 characters of [a-z0-9._-]", tags[i]);
    char cur[4400];
    cl_template_link(c, name, cur, sizeof(cur));
    bool has_default = access(cur, F_OK) == 0;
    bool gets_default = n == 0 || (first_default && !has_default); /* a first build: its bare name too */
    for (size_t i = 0; i < n; i++) gets_default |= strcmp(tags[i], DEFAULT_TAG) == 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(tags[i], DEFAULT_TAG) != 0 && set_link(c, name, tags[i], build_id, err) < 0) return -1;
    return gets_default ? set_link(c, name, DEFAULT_TAG, build_id, err) : 0;
}

static int list_tags(cubelet *c, cube_rpc_ctx *ctx, const char *name, Cube__TemplateTagsResponse *out,
                     cube_err *err)
{
    char dir[4400], link[4600];
    cl_template_link(c, name, link, sizeof(link));
    struct stat st;
    if (lstat(link, &st) < 0) return cube_err_set(err, ENOENT, "template '%s' not found", name);
    out->tags = cube_rpc_alloc(ctx, TAGS_MAX * sizeof(*out->tags));
    if (!out->tags) return cube_err_set(err, ENOMEM, "out of memory");
    snprintf(dir, sizeof(dir), "%s/templates/%s/tags", c->cfg.data_dir, name);
    DIR *d = opendir(dir);
    struct dirent *de = NULL;
    for (bool first = true; first || (d && (de = readdir(d))); first = false) {
        if (!first) {
            if (de->d_name[0] == '.' || strstr(de->d_name, ".new-")) continue;
            snprintf(link, sizeof(link), "%s/%s", dir, de->d_name);
        }
        char build[128];
        if (out->n_tags >= TAGS_MAX || lstat(link, &st) < 0 || link_build(link, build, sizeof(build)) < 0)
            continue;
        Cube__TemplateTag *t = cube_rpc_alloc(ctx, sizeof(*t));
        if (!t) break;
        cube__template_tag__init(t);
        t->tag = cube_rpc_strdup(ctx, first ? DEFAULT_TAG : de->d_name);
        t->build_id = cube_rpc_strdup(ctx, build);
        t->created_at_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
        out->tags[out->n_tags++] = t;
    }
    if (d) closedir(d);
    return 0;
}

static int remove_tags(cubelet *c, const char *name, char **tags, size_t n, cube_err *err)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(tags[i], DEFAULT_TAG) == 0)
            return cube_err_set(err, EINVAL,
                                "tags: the default tag is what '%s' alone starts: assign it to another build "
                                "instead of removing it",
                                name);
        char full[160], link[4400];
        snprintf(full, sizeof(full), "%s:%s", name, tags[i]);
        cl_template_link(c, full, link, sizeof(link));
        if (unlink(link) < 0)
            return errno == ENOENT ? cube_err_set(err, ENOENT, "template '%s' has no tag '%s'", name, tags[i])
                                   : cube_err_sys(err, errno, "remove tag %s", full);
        cl_template *t = (cl_template *)cl_find_template(c, full);
        if (t) cl_retire_template(c, t);
        cube_log_info("template tag removed", "template=%s", full);
    }
    return 0;
}

int cl_template_tags(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *respp, cube_err *err)
{
    cubelet *c = svc;
    const Cube__TemplateTagsRequest *req = reqp;
    Cube__TemplateTagsResponse *out = respp;
    const char *name = req->name ? req->name : "", *op = req->op ? req->op : "";
    if (!cube_template_name_valid(name))
        return cube_err_set(err, EINVAL, "name: a template name of [a-z0-9._-]");
    for (size_t i = 0; i < req->n_tags; i++)
        if (!cube_template_name_valid(req->tags[i]))
            return cube_err_set(err, EINVAL, "tags: '%s' is not 1-63 characters of [a-z0-9._-]",
                                req->tags[i]);
    if (strcmp(op, "list") == 0) return list_tags(c, ctx, name, out, err);
    if (req->n_tags == 0) return cube_err_set(err, EINVAL, "tags: at least one");
    if (strcmp(op, "remove") == 0) {
        int rc = remove_tags(c, name, req->tags, req->n_tags, err);
        cl_send_heartbeat(c); /* every master knows at once: a create right after finds what it names */
        return rc;
    }
    if (strcmp(op, "assign") != 0) return cube_err_set(err, EINVAL, "op: assign, remove or list");
    /* by the build's id (a master bringing this node to a tag's build it holds already) */
    if (req->build_id && *req->build_id) {
        int rc = cl_tags_link(c, name, req->build_id, req->tags, req->n_tags, false, err);
        cl_send_heartbeat(c);
        out->build_id = cube_rpc_strdup(ctx, req->build_id);
        return rc;
    }
    /* the target's build: "name" (its default) or "name:tag" */
    const char *target = req->target && *req->target ? req->target : name;
    const char *colon = strchr(target, ':');
    if (strncmp(target, name, colon ? (size_t)(colon - target) : strlen(target)) != 0 ||
        (colon ? (size_t)(colon - target) : strlen(target)) != strlen(name))
        return cube_err_set(err, EINVAL, "target: '%s' is not a build of template '%s'", target, name);
    if (colon && strcmp(colon + 1, DEFAULT_TAG) == 0) target = name;
    char link[4400], build[128];
    cl_template_link(c, target, link, sizeof(link));
    if (link_build(link, build, sizeof(build)) < 0)
        return cube_err_set(err, ENOENT, "target: template '%s' not found", target);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < req->n_tags; i++) rc = set_link(c, name, req->tags[i], build, err);
    cl_send_heartbeat(c); /* every master knows at once: a create right after finds what it names */
    out->build_id = cube_rpc_strdup(ctx, build);
    return rc;
}
