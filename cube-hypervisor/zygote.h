/* cube-zygote: a warm parent for sandboxes. It has cube-hypervisor and cube-agent loaded and initialised, and
 * forks a sandbox's hypervisor on request instead of the node exec'ing one; that hypervisor's sandbox then
 * runs the agent from the same image (hv_builtin_agent) instead of exec'ing it. A cold start skips two execs
 * and their dynamic loading. The wire format is in zygote_proto.h. */
#pragma once

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

/* The zygote's side: answers requests on sock until the peer closes it, each child running entry(argc, argv)
 * and exiting with its return. Reaps its children, and is their janitor (janitor.h: hv_janitor_sock): after
 * the peer's close it goes on until every lifeline handed to it has hung up and been cleaned. Returns 0 on
 * the peer's close, -1 on a socket error. */
int zygote_serve(int sock, int (*entry)(int argc, char **argv));

/* The node's side: one zygote process and the socket to it; spawns may come from many threads. */
typedef struct cube_zygote {
    pthread_mutex_t lock;
    const char *bin;
    int sock; /* -1: none now (not started, or it died) */
    pid_t pid;
    int64_t started_ms; /* monotonic: the last start, which bounds how often a dead one is replaced */
} cube_zygote;

/* Starts bin (cube-zygote) as a child of this process; it exits when this process closes its socket (or
 * dies) and the sandboxes it started have ended. */
int cube_zygote_start(cube_zygote *z, const char *bin, cube_err *err);
/* Forks argv in the zygote with fds[i] placed at targets[i] (stdout, stderr, ...) in its own process group.
 * On success *pid and *pidfd (close-on-exec) are the child's. A zygote found dead is replaced (at most once a
 * second); ECONNRESET when there is none: the caller may exec instead. */
int cube_zygote_spawn(cube_zygote *z, char *const argv[], const int fds[], const int targets[], int nfds,
                      pid_t *pid, int *pidfd, cube_err *err);
/* Closes the socket and reaps the zygote, which exits once the children it forked have ended: the caller
 * stops them first. */
void cube_zygote_stop(cube_zygote *z);
