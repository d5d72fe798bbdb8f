/* Configuration shared by every service: one file format, environment overrides, command-line flags.
 *
 * File: `key = value` lines, `# comments`, `[section]` headers that prefix the keys below them
 * ("section.key"). Environment: key "cubelet.pool_size" is overridden by CUBE_CUBELET_POOL_SIZE. Flags:
 * `--section.key=value`, `--section.key value`, aliases from a table (`--port 3000`), `--config FILE`.
 * Precedence: flag > environment > file > the default given at lookup. */
#ifndef CUBE_CONFIG_H
#define CUBE_CONFIG_H

#include <stdbool.h>

#include "err.h"

typedef struct cube_config cube_config;

typedef struct cube_config_flag {
    const char *name; /* without dashes: "port" */
    const char *key;  /* the key it sets: "api.port" */
    bool takes_value; /* false: a switch that sets the key to "true" */
    const char *help;
} cube_config_flag;

cube_config *cube_config_new(void);
void cube_config_free(cube_config *cfg);

int cube_config_load_file(cube_config *cfg, const char *path, cube_err *err);
int cube_config_load_string(cube_config *cfg, const char *text, const char *origin, cube_err *err);
/* Parses argv[1..]; stops at "--" or the first non-flag argument, whose index goes to *first_arg.
 * `--config FILE` loads FILE. Unknown flags are errors (EINVAL) naming the flag. */
int cube_config_parse_args(cube_config *cfg, int argc, char **argv, const cube_config_flag *flags,
                           int *first_arg, cube_err *err);
/* Sets a value at flag precedence (used by tests and by services that compute values). */
int cube_config_set(cube_config *cfg, const char *key, const char *value, cube_err *err);

/* The effective value, or def when the key is set nowhere. The pointer lives as long as cfg. */
const char *cube_config_get(const cube_config *cfg, const char *key, const char *def);
int cube_config_get_int(const cube_config *cfg, const char *key, long long def, long long min, long long max,
                        long long *out, cube_err *err);
int cube_config_get_bool(const cube_config *cfg, const char *key, bool def, bool *out, cube_err *err);
/* Where the effective value came from: "flag", "env", a file path, or "default". */
const char *cube_config_origin(const cube_config *cfg, const char *key);

#endif
