/* Starting a sandbox's janitor (see janitor.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "janitor.h"

extern char **environ;

/* cube-janitor beside this program, with the lifeline at 3 in its own session (a group kill of the
 * hypervisor's must not take it), no signal blocked. posix_spawn shares the address space until the exec
 * (vfork-like): a fork would copy the hypervisor's page tables and fault them back in, one of the dearest
 * steps of a sandbox's start on hosts where page tables are virtualised. */
static pid_t spawn_janitor(int lifeline_r, const char *cgroup, const char *rw, const char *root)
{
    char self[PATH_MAX], janitor[PATH_MAX + 16];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return -1;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) *slash = '\0';
    snprintf(janitor, sizeof(janitor), "%s/cube-janitor", self);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    /* dup2 onto 3 clears close-on-exec; the caller made sure the pipe's end is not 3 already */
    posix_spawn_file_actions_adddup2(&fa, lifeline_r, 3);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
    char *argv[] = {"cube-janitor", "3", (char *)cgroup, (char *)rw, (char *)root, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, janitor, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    return rc == 0 ? pid : -1;
}

pid_t hv_janitor_start(const char *cgroup, const char *rw, const char *root, int *lifeline, cube_err *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) return cube_err_sys(err, errno, "janitor pipe");
    if (fds[0] ==
        3) { /* dup2 onto itself would keep close-on-exec: the janitor would see it closed at once */
        int moved = fcntl(fds[0], F_DUPFD_CLOEXEC, 4);
        if (moved < 0) {
            int e = errno;
            close(fds[0]);
            close(fds[1]);
            return cube_err_sys(err, e, "janitor pipe");
        }
        close(fds[0]);
        fds[0] = moved;
    }
    pid_t pid = spawn_janitor(fds[0], cgroup, rw, root);
    if (pid > 0) {
        close(fds[0]);
        *lifeline = fds[1];
        return pid;
    }
    /* no cube-janitor beside us: a fork of this process does the job */
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return cube_err_sys(err, errno, "fork janitor");
    }
    if (pid == 0) {
        setsid();
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        close(fds[1]);
        char c;
        while (read(fds[0], &c, 1) > 0 || errno == EINTR) {
        }
        hv_janitor_clean(cgroup, rw, root);
        _exit(0);
    }
    close(fds[0]);
    *lifeline = fds[1];
    return pid;
}
