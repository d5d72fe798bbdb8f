/* A template's config.json, read and written in one place (see template_config.h). */
#include "template_config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONFIG_MAX (1u << 20)

void cube_tpl_config_init(cube_tpl_config *c)
{
    memset(c, 0, sizeof(*c));
    c->pool = -1;
}

void cube_tpl_config_free(cube_tpl_config *c)
{
    free(c->env_json);
    free(c->cmd_json);
    free(c->start_cmd);
    free(c->ready_cmd);
    cube_tpl_config_init(c);
}

static void get_str(const cJSON *j, const char *key, char *out, size_t cap)
{
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, key));
    if (v) snprintf(out, cap, "%s", v);
}

static char *dup_str(const cJSON *j, const char *key)
{
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, key));
    return v && *v ? strdup(v) : NULL;
}

/* a whole number in [lo, hi], else def */
static double get_num(const cJSON *j, const char *key, double lo, double hi, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(v) && v->valuedouble >= lo && v->valuedouble <= hi ? v->valuedouble : def;
}

static int parse_into(cJSON *j, cube_tpl_config *c, const char *what, cube_err *err);

char *cube_tpl_config_text(const char *path, cube_err *err)
{
    FILE *f = fopen(path, "re");
    if (!f) return cube_err_sys(err, errno, "read %s", path), NULL;
    char *buf = malloc(CONFIG_MAX + 1);
    size_t n = buf ? fread(buf, 1, CONFIG_MAX, f) : 0;
    fclose(f);
    if (!buf) return cube_err_set(err, ENOMEM, "out of memory"), NULL;
    buf[n] = '\0';
    return buf;
}

int cube_tpl_config_read(const char *path, cube_tpl_config *c, cube_err *err)
{
    cube_tpl_config_init(c);
    char *text = cube_tpl_config_text(path, err);
    if (!text) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return parse_into(j, c, path, err);
}

int cube_tpl_config_parse(const char *json, cube_tpl_config *c, cube_err *err)
{
    cube_tpl_config_init(c);
    return parse_into(cJSON_Parse(json ? json : ""), c, "template config", err);
}

/* takes j */
static int parse_into(cJSON *j, cube_tpl_config *c, const char *what, cube_err *err)
{
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return cube_err_set(err, EBADMSG, "%s: not a JSON object", what);
    }
    get_str(j, "name", c->name, sizeof(c->name));
    get_str(j, "id", c->id, sizeof(c->id));
    get_str(j, "source", c->source, sizeof(c->source));
    get_str(j, "recipe", c->recipe, sizeof(c->recipe));
    get_str(j, "fromTemplate", c->from_template, sizeof(c->from_template));
    get_str(j, "fromBuild", c->from_build, sizeof(c->from_build));
    get_str(j, "snapshotOf", c->snapshot_of, sizeof(c->snapshot_of));
    get_str(j, "parentTemplate", c->parent_template, sizeof(c->parent_template));
    get_str(j, "rootfs", c->rootfs, sizeof(c->rootfs));
    get_str(j, "layers", c->layers, sizeof(c->layers));
    get_str(j, "user", c->user, sizeof(c->user));
    get_str(j, "workdir", c->workdir, sizeof(c->workdir));
    c->created_at_ms = (int64_t)get_num(j, "createdAt", 0, 9e15, 0);
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(j, "env"),
                *cmd = cJSON_GetObjectItemCaseSensitive(j, "cmd");
    c->env_json = cJSON_IsObject(env) ? cJSON_PrintUnformatted(env) : NULL;
    c->cmd_json = cJSON_IsArray(cmd) ? cJSON_PrintUnformatted(cmd) : NULL;
    c->uid_base = (unsigned)get_num(j, "uidBase", 0, 4294967295.0, 0);
    /* sizes are kept as written (out of range included): the loader says what it does with them */
    c->cpu = (int64_t)get_num(j, "cpu", -9e15, 9e15, 0);
    c->memory_mb = (int64_t)get_num(j, "memoryMB", -9e15, 9e15, 0);
    c->disk_mb = (int64_t)get_num(j, "diskMB", -9e15, 9e15, 0);
    if (c->disk_mb == 0 && cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "diskMB")) &&
        cJSON_GetObjectItemCaseSensitive(j, "diskMB")->valuedouble > 9e15)
        c->disk_mb = INT64_MAX; /* beyond any size: the loader refuses it */
    c->pool = (int)get_num(j, "pool", 0, 1 << 20, -1);
    c->start_cmd = dup_str(j, "startCmd");
    c->ready_cmd = c->start_cmd ? dup_str(j, "readyCmd") : NULL;
    cJSON_Delete(j);
    return 0;
}

static void put_str(cJSON *o, const char *key, const char *v)
{
    if (v && *v) cJSON_AddStringToObject(o, key, v);
}

int cube_tpl_config_write(const char *path, const cube_tpl_config *c, cube_err *err)
{
    cJSON *o = cJSON_CreateObject();
    put_str(o, "name", c->name);
    put_str(o, "id", c->id);
    put_str(o, "source", c->source);
    put_str(o, "recipe", c->recipe);
    put_str(o, "fromTemplate", c->from_template);
    put_str(o, "fromBuild", c->from_build);
    put_str(o, "snapshotOf", c->snapshot_of);
    put_str(o, "parentTemplate", c->parent_template);
    if (c->created_at_ms) cJSON_AddNumberToObject(o, "createdAt", (double)c->created_at_ms);
    put_str(o, "rootfs", c->rootfs);
    put_str(o, "layers", c->layers);
    put_str(o, "user", c->user);
    put_str(o, "workdir", c->workdir);
    cJSON *env = c->env_json ? cJSON_Parse(c->env_json) : NULL;
    cJSON_AddItemToObject(o, "env", cJSON_IsObject(env) ? env : (cJSON_Delete(env), cJSON_CreateObject()));
    cJSON *cmd = c->cmd_json ? cJSON_Parse(c->cmd_json) : NULL;
    if (cJSON_IsArray(cmd))
        cJSON_AddItemToObject(o, "cmd", cmd);
    else
        cJSON_Delete(cmd);
    if (c->uid_base) cJSON_AddNumberToObject(o, "uidBase", c->uid_base);
    if (c->cpu) cJSON_AddNumberToObject(o, "cpu", (double)c->cpu);
    if (c->memory_mb) cJSON_AddNumberToObject(o, "memoryMB", (double)c->memory_mb);
    if (c->disk_mb) cJSON_AddNumberToObject(o, "diskMB", (double)c->disk_mb);
    if (c->pool >= 0) cJSON_AddNumberToObject(o, "pool", c->pool);
    put_str(o, "startCmd", c->start_cmd);
    if (c->start_cmd && *c->start_cmd) put_str(o, "readyCmd", c->ready_cmd);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return cube_err_set(err, ENOMEM, "out of memory");
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.new-%d", path, (int)getpid());
    FILE *f = fopen(tmp, "we");
    bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f) ok = fclose(f) == 0 && ok;
    free(text);
    if (!ok || rename(tmp, path) < 0) {
        int e = errno ? errno : EIO;
        unlink(tmp);
        return cube_err_sys(err, e, "write %s", path);
    }
    return 0;
}
