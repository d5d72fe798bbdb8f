/* Structured logging: one line per event, `ts=… level=… svc=… msg="…" key=value …`, to stderr.
 * Under systemd (JOURNAL_STREAM names our stderr) lines carry a <N> priority prefix and no timestamp,
 * because the journal records both itself. */
#ifndef CUBE_LOG_H
#define CUBE_LOG_H

#include <stdio.h>

typedef enum cube_log_level {
    CUBE_LOG_DEBUG = 0,
    CUBE_LOG_INFO = 1,
    CUBE_LOG_WARN = 2,
    CUBE_LOG_ERROR = 3,
} cube_log_level;

/* Sets the service name and threshold; reads CUBE_LOG_LEVEL when level < 0. Safe to call again. */
void cube_log_init(const char *service, int level);
/* Parses "debug", "info", "warn", "error"; returns -1 for anything else. */
int cube_log_level_parse(const char *s);
/* Sends lines to f instead of stderr (tests capture them). NULL restores stderr. */
void cube_log_set_stream(FILE *f);
int cube_log_enabled(cube_log_level level);

/* msg is quoted as needed; kv_fmt (may be NULL) is printf-style and should produce `key=value` pairs. */
void cube_log(cube_log_level level, const char *msg, const char *kv_fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define cube_log_debug(msg, ...) cube_log(CUBE_LOG_DEBUG, msg, __VA_ARGS__)
#define cube_log_info(msg, ...)  cube_log(CUBE_LOG_INFO, msg, __VA_ARGS__)
#define cube_log_warn(msg, ...)  cube_log(CUBE_LOG_WARN, msg, __VA_ARGS__)
#define cube_log_error(msg, ...) cube_log(CUBE_LOG_ERROR, msg, __VA_ARGS__)

#endif
