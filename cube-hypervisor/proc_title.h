/* What /proc/PID/cmdline and /proc/PID/environ show for this process. A process forked from cube-zygote
 * runs without exec, so it would show the zygote's command line and the node's environment: it points them
 * at its own. PR_SET_MM_MAP, which needs no privilege (CRIU's call), not the single-field PR_SET_MM ones,
 * which need CAP_SYS_RESOURCE (that some hosts withhold from root, this project's included). */
#pragma once

#include <stddef.h>

/* Reads the process's layout once for this image and every process forked from it (the zygote calls it
 * before it forks anything; proc_title_set calls it where nobody did). -1 with errno. */
int proc_title_prepare(void);
/* args and env: blocks of NUL-terminated strings (copied); env NULL shows the environment the layout was
 * read with. -1 with errno. */
int proc_title_set(const char *args, size_t args_len, const char *env, size_t env_len);
