/* JSON helpers on cJSON: parsing with a clear error, typed field access that says which field is wrong. */
#ifndef CUBE_JSON_H
#define CUBE_JSON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Parses exactly len bytes (no NUL needed). Errors are EBADMSG with the byte offset. The caller owns the
 * tree. */
cJSON *cube_json_parse(const char *buf, size_t len, cube_err *err);
/* The object's member as a type; a missing member yields def (required=false) or EINVAL (required=true);
 * a member of the wrong type is always EINVAL naming it. JSON null counts as missing. */
int cube_json_get_string(const cJSON *obj, const char *name, bool required, const char **out, cube_err *err);
int cube_json_get_int(const cJSON *obj, const char *name, bool required, int64_t min, int64_t max,
                      int64_t *out, cube_err *err);
int cube_json_get_bool(const cJSON *obj, const char *name, bool required, bool *out, cube_err *err);
/* An object member (e.g. metadata); NULL in *out when absent and not required. */
int cube_json_get_object(const cJSON *obj, const char *name, bool required, const cJSON **out, cube_err *err);
/* Checks every member of obj is a string (metadata, envVars). */
int cube_json_check_string_map(const cJSON *obj, const char *name, cube_err *err);
/* Compact text; the caller frees it with free(). NULL on allocation failure. */
char *cube_json_print(const cJSON *item);
/* {"code": code, "message": msg} — the E2B REST error body; caller frees. */
char *cube_json_error_body(int code, const char *msg);

#endif
