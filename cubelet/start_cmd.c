/* A template's start and ready commands in one of its sandboxes (see start_cmd.h). */
#include "start_cmd.h"

#include <errno.h>
#include <time.h>

#include "timeutil.h"

#define READY_TRY_MS   10000 /* one run of the ready command */
#define READY_PAUSE_MS 100   /* between runs */

int cl_start_cmd(const cl_template *t, const char *netns, build_line_fn on_line, build_cancel_fn cancelled,
                 void *arg, cube_err *err)
{
    if (!t->start_cmd || !*t->start_cmd) return 0;
    cJSON *env = t->env_json ? cJSON_Parse(t->env_json) : NULL;
    build_cmd cmd = {.netns = netns,
                     .user = t->user,
                     .cwd = t->workdir,
                     .env = env,
                     .script = t->start_cmd,
                     .timeout_ms = READY_TRY_MS,
                     .on_line = on_line,
                     .cancelled = cancelled,
                     .arg = arg,
                     .tag = "start-cmd",
                     .detach = true};
    int pid = 0, rc = build_exec(&cmd, &pid, err);
    if (rc < 0) {
        cube_err_prefix(err, "start command");
    } else if (t->ready_cmd && *t->ready_cmd) {
        cmd.detach = false;
        cmd.tag = NULL;
        cmd.script = t->ready_cmd;
        int64_t until = cube_now_mono_ms() + START_READY_WAIT_MS;
        for (int tries = 1;; tries++) {
            int code = -1;
            rc = build_exec(&cmd, &code, err);
            if (rc == 0 && code == 0) break;
            if (rc < 0 && err->code != ETIMEDOUT) {
                cube_err_prefix(err, "ready command");
                break;
            }
            if (cube_now_mono_ms() >= until) {
                rc = cube_err_set(
                    err, ETIMEDOUT,
                    "the start command was not ready within %d s (its ready command '%s' failed %d "
                    "times, last with exit code %d)",
                    START_READY_WAIT_MS / 1000, t->ready_cmd, tries, code);
                break;
            }
            nanosleep(&(struct timespec){0, READY_PAUSE_MS * 1000000L}, NULL);
        }
    }
    cJSON_Delete(env);
    return rc;
}
