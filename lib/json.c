#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "cleanup.h"

static void json_hooks_init(void)
{
    static int done;
    if (done) return;
    cJSON_Hooks hooks = {malloc, free}; /* plain malloc/free so cJSON_free and free() mix safely */
    cJSON_InitHooks(&hooks);
    done = 1;
}

cJSON *cube_json_parse(const char *buf, size_t len, cube_err *err)
{
    json_hooks_init();
    if (!buf || len == 0) return cube_err_set(err, EBADMSG, "empty JSON body"), NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        size_t off = end && end >= buf ? (size_t)(end - buf) : 0;
        return cube_err_set(err, EBADMSG, "malformed JSON at byte %zu", off), NULL;
    }
    /* allow trailing whitespace only */
    for (const char *p = end; p && p < buf + len; p++) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != '\0') {
            cJSON_Delete(root);
            return cube_err_set(err, EBADMSG, "trailing data after JSON at byte %zu", (size_t)(p - buf)),
                   NULL;
        }
    }
    return root;
}

static const cJSON *member(const cJSON *obj, const char *name)
{
    const cJSON *m = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
    return cJSON_IsNull(m) ? NULL : m;
}

static int missing(const char *name, bool required, cube_err *err)
{
    return required ? cube_err_set(err, EINVAL, "missing required field '%s'", name) : 0;
}

int cube_json_get_string(const cJSON *obj, const char *name, bool required, const char **out, cube_err *err)
{
    const cJSON *m = member(obj, name);
    if (!m) return missing(name, required, err);
    if (!cJSON_IsString(m)) return cube_err_set(err, EINVAL, "field '%s' must be a string", name);
    *out = m->valuestring;
    return 0;
}

int cube_json_get_int(const cJSON *obj, const char *name, bool required, int64_t min, int64_t max,
                      int64_t *out, cube_err *err)
{
    const cJSON *m = member(obj, name);
    if (!m) return missing(name, required, err);
    if (!cJSON_IsNumber(m)) return cube_err_set(err, EINVAL, "field '%s' must be a number", name);
    double d = m->valuedouble;
    if (d != floor(d)) return cube_err_set(err, EINVAL, "field '%s' must be an integer", name);
    if (d < (double)min || d > (double)max)
        return cube_err_set(err, EINVAL, "field '%s' must be within %lld..%lld", name, (long long)min,
                            (long long)max);
    *out = (int64_t)d;
    return 0;
}

int cube_json_get_bool(const cJSON *obj, const char *name, bool required, bool *out, cube_err *err)
{
    const cJSON *m = member(obj, name);
    if (!m) return missing(name, required, err);
    if (!cJSON_IsBool(m)) return cube_err_set(err, EINVAL, "field '%s' must be a boolean", name);
    *out = cJSON_IsTrue(m);
    return 0;
}

int cube_json_get_object(const cJSON *obj, const char *name, bool required, const cJSON **out, cube_err *err)
{
    const cJSON *m = member(obj, name);
    *out = NULL;
    if (!m) return missing(name, required, err);
    if (!cJSON_IsObject(m)) return cube_err_set(err, EINVAL, "field '%s' must be an object", name);
    *out = m;
    return 0;
}

int cube_json_check_string_map(const cJSON *obj, const char *name, cube_err *err)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        if (!cJSON_IsString(it))
            return cube_err_set(err, EINVAL, "field '%s.%s' must be a string", name,
                                it->string ? it->string : "");
    }
    return 0;
}

char *cube_json_print(const cJSON *item)
{
    json_hooks_init();
    return cJSON_PrintUnformatted(item);
}

char *cube_json_error_body(int code, const char *msg)
{
    json_hooks_init();
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "code", code);
    cJSON_AddStringToObject(o, "message", msg ? msg : "");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}
