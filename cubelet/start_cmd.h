/* A template's start command (E2B's setStartCmd): run in the background in every sandbox of the template
 * before it is handed out (pooled ones ahead, on the pool's time), and its ready command run until it
 * succeeds. A build runs them once in its build sandbox to show that they work. */
#ifndef CUBE_CUBELET_START_CMD_H
#define CUBE_CUBELET_START_CMD_H

#include "build_exec.h"
#include "cubelet.h"

#define START_READY_WAIT_MS 120000 /* how long a start command has to become ready */

/* Nothing when t has no start command; else 0 once ready, or -1 (err says why: it could not start, or its
 * ready command did not succeed in time). on_line gets the ready command's output (NULL: dropped). */
int cl_start_cmd(const cl_template *t, const char *netns, build_line_fn on_line, build_cancel_fn cancelled,
                 void *arg, cube_err *err);

#endif
