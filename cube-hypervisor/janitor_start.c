/* Starting a sandbox's janitor (see janitor.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "janitor.h"

pid_t hv_janitor_start(const char *cgroup, const char *rw, const char *root, int *lifeline, cube_err *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) return cube_err_sys(err, errno, "janitor pipe");
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return cube_err_sys(err, errno, "fork janitor");
    }
    if (pid == 0) {
        setsid(); /* not in the hypervisor's process group: a group kill must not take the janitor too */
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        close(fds[1]);
        char self[PATH_MAX], janitor[PATH_MAX + 16];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        /* the lifeline at 3, open across exec (were it closed there, the janitor would tear the new sandbox
         * down at once) */
        if (n > 0 && cube_fd_at(fds[0], 3) == 0) {
            self[n] = '\0';
            char *slash = strrchr(self, '/');
            if (slash) *slash = '\0';
            snprintf(janitor, sizeof(janitor), "%s/cube-janitor", self);
            execl(janitor, "cube-janitor", "3", cgroup, rw, root, (char *)NULL);
        }
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
