/* A build step's command inside a build sandbox, through its agent's envd process API (the same Connect
 * stream the SDK's commands.run reads): run as a user, in a directory, with an environment; its output is
 * handed over line by line as it comes. */
#ifndef CUBE_CUBELET_BUILD_EXEC_H
#define CUBE_CUBELET_BUILD_EXEC_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "err.h"

/* One line of the command's output (without its newline); stream is "stdout" or "stderr". */
typedef void (*build_line_fn)(void *arg, const char *stream, const char *line);
/* Polled while the command runs (at least every half second): true ends it early (ECANCELED). */
typedef bool (*build_cancel_fn)(void *arg);

typedef struct build_cmd {
    const char *netns; /* /proc/<pid>/ns/net of the build sandbox */
    const char *user;
    const char *cwd;    /* NULL: the user's home */
    const cJSON *env;   /* {"K": "V"} or NULL */
    const char *script; /* run with /bin/sh -c */
    int timeout_ms;
    build_line_fn on_line;
    build_cancel_fn cancelled;
    void *arg;
    const char *tag; /* the process's tag (commands.list shows it), or NULL */
    bool detach;     /* return once it started (its pid in *exit_code); it keeps running in the sandbox */
} build_cmd;

/* Runs it to its end: 0 with its exit code in *exit_code (non-zero exits are not errors here), or -1 when it
 * could not be run or followed (the agent's reason in err). detach: 0 once it started, its pid in *exit_code.
 */
int build_exec(const build_cmd *cmd, int *exit_code, cube_err *err);

#endif
