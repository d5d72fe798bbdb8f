#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cleanup.h"

enum { PRIO_FILE = 1, PRIO_FLAG = 3 }; /* environment (2) is read at lookup time */

typedef struct entry {
    char *key;
    char *value;
    char *origin;
    int prio;
} entry;

struct cube_config {
    entry *entries;
    size_t n, cap;
};

cube_config *cube_config_new(void)
{
    return calloc(1, sizeof(cube_config));
}

void cube_config_free(cube_config *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < cfg->n; i++) {
        free(cfg->entries[i].key);
        free(cfg->entries[i].value);
        free(cfg->entries[i].origin);
    }
    free(cfg->entries);
    free(cfg);
}

static int valid_key(const char *k)
{
    if (!*k) return 0;
    for (const char *p = k; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-') return 0;
    return 1;
}

static int put(cube_config *cfg, const char *key, const char *value, const char *origin, int prio,
               cube_err *err)
{
    if (!valid_key(key)) return cube_err_set(err, EINVAL, "invalid config key '%s' (%s)", key, origin);
    for (size_t i = 0; i < cfg->n; i++) {
        entry *e = &cfg->entries[i];
        if (strcmp(e->key, key) != 0) continue;
        if (prio < e->prio) return 0;
        char *v = strdup(value), *o = strdup(origin);
        if (!v || !o) {
            free(v);
            free(o);
            return cube_err_set(err, ENOMEM, "config: out of memory");
        }
        free(e->value);
        free(e->origin);
        e->value = v;
        e->origin = o;
        e->prio = prio;
        return 0;
    }
    if (cfg->n == cfg->cap) {
        size_t cap = cfg->cap ? cfg->cap * 2 : 16;
        entry *ne = realloc(cfg->entries, cap * sizeof(entry));
        if (!ne) return cube_err_set(err, ENOMEM, "config: out of memory");
        cfg->entries = ne;
        cfg->cap = cap;
    }
    entry e = {strdup(key), strdup(value), strdup(origin), prio};
    if (!e.key || !e.value || !e.origin) {
        free(e.key);
        free(e.value);
        free(e.origin);
        return cube_err_set(err, ENOMEM, "config: out of memory");
    }
    cfg->entries[cfg->n++] = e;
    return 0;
}

int cube_config_set(cube_config *cfg, const char *key, const char *value, cube_err *err)
{
    return put(cfg, key, value, "flag", PRIO_FLAG, err);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
    return s;
}

int cube_config_load_string(cube_config *cfg, const char *text, const char *origin, cube_err *err)
{
    cube_autofree char *copy = strdup(text);
    if (!copy) return cube_err_set(err, ENOMEM, "config: out of memory");
    char section[256] = "";
    int lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close || close[1] != '\0')
                return cube_err_set(err, EINVAL, "%s:%d: malformed section header", origin, lineno);
            *close = '\0';
            snprintf(section, sizeof(section), "%s", trim(s + 1));
            if (*section && !valid_key(section))
                return cube_err_set(err, EINVAL, "%s:%d: invalid section name '%s'", origin, lineno, section);
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) return cube_err_set(err, EINVAL, "%s:%d: expected 'key = value'", origin, lineno);
        *eq = '\0';
        char *k = trim(s), *v = trim(eq + 1);
        size_t vl = strlen(v);
        if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') { /* quotes keep surrounding spaces */
            v[vl - 1] = '\0';
            v++;
        }
        char key[512];
        snprintf(key, sizeof(key), "%s%s%s", section, *section ? "." : "", k);
        char where[512];
        snprintf(where, sizeof(where), "%s:%d", origin, lineno);
        if (put(cfg, key, v, origin, PRIO_FILE, err) < 0) return cube_err_prefix(err, "%s", where);
    }
    return 0;
}

int cube_config_load_file(cube_config *cfg, const char *path, cube_err *err)
{
    cube_autofclose FILE *f = fopen(path, "re");
    if (!f) return cube_err_sys(err, errno, "open config %s", path);
    cube_autofree char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    if (!mem) return cube_err_set(err, ENOMEM, "config: out of memory");
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) fwrite(chunk, 1, n, mem);
    fclose(mem);
    if (ferror(f)) return cube_err_sys(err, EIO, "read config %s", path);
    return cube_config_load_string(cfg, buf ? buf : "", path, err);
}

static const cube_config_flag *find_flag(const cube_config_flag *flags, const char *name)
{
    for (; flags && flags->name; flags++)
        if (strcmp(flags->name, name) == 0) return flags;
    return NULL;
}

int cube_config_parse_args(cube_config *cfg, int argc, char **argv, const cube_config_flag *flags,
                           int *first_arg, cube_err *err)
{
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') break;
        char name[256];
        const char *value = NULL;
        const char *eq = strchr(a + 2, '=');
        if (eq) {
            snprintf(name, sizeof(name), "%.*s", (int)(eq - a - 2), a + 2);
            value = eq + 1;
        } else {
            snprintf(name, sizeof(name), "%s", a + 2);
        }
        const cube_config_flag *fl = find_flag(flags, name);
        int is_config = strcmp(name, "config") == 0;
        int takes_value = is_config || (fl ? fl->takes_value : strchr(name, '.') != NULL);
        if (!fl && !is_config && !strchr(name, '.'))
            return cube_err_set(err, EINVAL, "unknown flag --%s", name);
        if (takes_value && !value) {
            if (i + 1 >= argc) return cube_err_set(err, EINVAL, "flag --%s needs a value", name);
            value = argv[++i];
        }
        if (!takes_value && value) return cube_err_set(err, EINVAL, "flag --%s takes no value", name);
        if (is_config) {
            if (cube_config_load_file(cfg, value, err) < 0) return -1;
            continue;
        }
        if (put(cfg, fl ? fl->key : name, takes_value ? value : "true", "flag", PRIO_FLAG, err) < 0)
            return cube_err_prefix(err, "flag --%s", name);
    }
    if (first_arg) *first_arg = i;
    return 0;
}

static const entry *find(const cube_config *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->n; i++)
        if (strcmp(cfg->entries[i].key, key) == 0) return &cfg->entries[i];
    return NULL;
}

static const char *env_for(const char *key, char *name, size_t cap)
{
    size_t j = snprintf(name, cap, "CUBE_");
    for (const char *p = key; *p && j + 1 < cap; p++)
        name[j++] = (*p == '.' || *p == '-') ? '_' : (char)toupper((unsigned char)*p);
    name[j] = '\0';
    return getenv(name);
}

const char *cube_config_get(const cube_config *cfg, const char *key, const char *def)
{
    const entry *e = find(cfg, key);
    if (e && e->prio == PRIO_FLAG) return e->value;
    char name[512];
    const char *env = env_for(key, name, sizeof(name));
    if (env) return env; /* services never change their environment after start */
    return e ? e->value : def;
}

const char *cube_config_origin(const cube_config *cfg, const char *key)
{
    const entry *e = find(cfg, key);
    if (e && e->prio == PRIO_FLAG) return "flag";
    char name[512];
    if (env_for(key, name, sizeof(name))) return "env";
    return e ? e->origin : "default";
}

int cube_config_get_int(const cube_config *cfg, const char *key, long long def, long long min, long long max,
                        long long *out, cube_err *err)
{
    const char *v = cube_config_get(cfg, key, NULL);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end != '\0')
        return cube_err_set(err, EINVAL, "config %s = '%s' (%s): not an integer", key, v,
                            cube_config_origin(cfg, key));
    if (n < min || n > max)
        return cube_err_set(err, ERANGE, "config %s = %lld (%s): must be within %lld..%lld", key, n,
                            cube_config_origin(cfg, key), min, max);
    *out = n;
    return 0;
}

int cube_config_get_bool(const cube_config *cfg, const char *key, bool def, bool *out, cube_err *err)
{
    const char *v = cube_config_get(cfg, key, NULL);
    if (!v) {
        *out = def;
        return 0;
    }
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) return (*out = true), 0;
        if (strcasecmp(v, no[i]) == 0) return (*out = false), 0;
    }
    return cube_err_set(err, EINVAL, "config %s = '%s' (%s): not a boolean", key, v,
                        cube_config_origin(cfg, key));
}
