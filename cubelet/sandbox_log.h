/* A sandbox's log on the node (<state dir>/sandbox.log: its hypervisor's and agent's stderr, what GET
 * /sandboxes/{id}/logs reads). Its writers append; the node keeps it bounded, as what a sandbox's traffic
 * makes it say (a line per process started, per request) would otherwise grow with the sandbox's life, on
 * the node's tmpfs of sandbox state. */
#ifndef CUBE_CUBELET_SANDBOX_LOG_H
#define CUBE_CUBELET_SANDBOX_LOG_H

#include <stddef.h>
#include <sys/types.h>

#define SANDBOX_LOG_MAX  (4 << 20)   /* a log this large is cut to its tail */
#define SANDBOX_LOG_KEEP (256 << 10) /* the tail kept: what the logs call returns */

/* If path is over max bytes, keeps its last keep bytes (from a line's start) after a line saying how much
 * went. 1 when cut, 0 when not, -1 (errno) on error. A line appended while it is cut may be lost. */
int cl_sandbox_log_trim(const char *path, off_t max, size_t keep);

#endif
