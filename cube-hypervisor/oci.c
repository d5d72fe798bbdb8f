/* Reading a container's process from an OCI config.json (see oci.h). */
#include "oci.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char **strings(const cJSON *arr, const char *what, cube_err *err)
{
    int n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : 0;
    if (arr && !cJSON_IsArray(arr)) {
        cube_err_set(err, EINVAL, "config.json: %s must be an array of strings", what);
        return NULL;
    }
    char **v = calloc((size_t)n + 1, sizeof(char *));
    if (!v) {
        cube_err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (!cJSON_IsString(it) || !(v[i++] = strdup(it->valuestring))) {
            for (int k = 0; k < i; k++) free(v[k]);
            free(v);
            cube_err_set(err, EINVAL, "config.json: %s must be an array of strings", what);
            return NULL;
        }
    }
    return v;
}

int oci_process_load(const char *path, oci_process *out, cube_err *err)
{
    memset(out, 0, sizeof(*out));
    FILE *f = fopen(path, "re");
    if (!f) return cube_err_sys(err, errno, "open %s", path);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            char *nb = realloc(buf, cap = cap ? cap * 2 : 65536);
            if (!nb || cap > (64u << 20)) {
                free(nb ? nb : buf);
                fclose(f);
                return cube_err_set(err, E2BIG, "%s is too large", path);
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    fclose(f);
    cJSON *j = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!j) return cube_err_set(err, EINVAL, "%s is not valid JSON", path);
    int rc = -1;
    const cJSON *proc = cJSON_GetObjectItemCaseSensitive(j, "process");
    const cJSON *args = proc ? cJSON_GetObjectItemCaseSensitive(proc, "args") : NULL;
    if (!cJSON_IsObject(proc) || !cJSON_IsArray(args) || cJSON_GetArraySize(args) < 1) {
        cube_err_set(err, EINVAL, "%s: process.args is required", path);
        goto out;
    }
    const cJSON *term = cJSON_GetObjectItemCaseSensitive(proc, "terminal");
    if (cJSON_IsTrue(term)) {
        cube_err_set(err, ENOTSUP, "%s: process.terminal (a tty) is not supported", path);
        goto out;
    }
    if (!(out->argv = strings(args, "process.args", err)) ||
        !(out->envp = strings(cJSON_GetObjectItemCaseSensitive(proc, "env"), "process.env", err)))
        goto out;
    const cJSON *cwd = cJSON_GetObjectItemCaseSensitive(proc, "cwd");
    out->cwd = strdup(cJSON_IsString(cwd) && cwd->valuestring[0] == '/' ? cwd->valuestring : "/");
    const cJSON *hn = cJSON_GetObjectItemCaseSensitive(j, "hostname");
    if (cJSON_IsString(hn) && *hn->valuestring) out->hostname = strdup(hn->valuestring);
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(proc, "user");
    const cJSON *uid = user ? cJSON_GetObjectItemCaseSensitive(user, "uid") : NULL;
    const cJSON *gid = user ? cJSON_GetObjectItemCaseSensitive(user, "gid") : NULL;
    out->uid = cJSON_IsNumber(uid) && uid->valuedouble >= 0 && uid->valuedouble < 65536
                   ? (uid_t)uid->valuedouble
                   : 0;
    out->gid = cJSON_IsNumber(gid) && gid->valuedouble >= 0 && gid->valuedouble < 65536
                   ? (gid_t)gid->valuedouble
                   : 0;
    rc = 0;
out:
    cJSON_Delete(j);
    if (rc < 0) oci_process_free(out);
    return rc;
}

void oci_process_free(oci_process *p)
{
    for (char **v = p->argv; v && *v; v++) free(*v);
    for (char **v = p->envp; v && *v; v++) free(*v);
    free(p->argv);
    free(p->envp);
    free(p->cwd);
    free(p->hostname);
    memset(p, 0, sizeof(*p));
}

const char *oci_find_program(const char *prog, char *const *envp, char *buf, size_t len)
{
    if (strchr(prog, '/')) return prog;
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (char *const *e = envp; e && *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(buf, len, "%.*s/%s", (int)n, path, prog);
        if (n && access(buf, X_OK) == 0) return buf;
        path += n + (path[n] == ':');
    }
    return prog;
}
