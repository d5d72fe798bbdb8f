/* Starting a sandbox's janitor (see janitor.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fsutil.h"
#include "janitor.h"
#include "log.h"

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

int hv_janitor_sock = -1;

/* what was handed to the zygote, for a janitor process in its place should the zygote die first */
static struct {
    int lifeline;
    char cgroup[256], rw[4200], root[4200];
} handed = {.lifeline = -1};

/* The zygote takes the job: a socket pair, the paths queued in our end's direction, the other end sent to
 * the zygote. 0, or -1 (no zygote to take it, paths too long to keep): the caller starts a janitor. */
static int hand_to_zygote(const char *cgroup, const char *rw, const char *root, int *lifeline)
{
    size_t lc = strlen(cgroup) + 1, lr = strlen(rw) + 1, lo = strlen(root) + 1;
    if (hv_janitor_sock < 0 || lc > sizeof(handed.cgroup) || lr > sizeof(handed.rw) ||
        lo > sizeof(handed.root))
        return -1;
    char rec[sizeof(handed.cgroup) + sizeof(handed.rw) + sizeof(handed.root)];
    memcpy(rec, cgroup, lc);
    memcpy(rec + lc, rw, lr);
    memcpy(rec + lc + lr, root, lo);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -1;
    /* queued at the zygote's end before the zygote has it: it can never see the hang-up without the paths */
    if (send(sv[1], rec, lc + lr + lo, MSG_NOSIGNAL) != (ssize_t)(lc + lr + lo)) goto fail;
    if (cube_send_with_fd(hv_janitor_sock, "j", 1, sv[0]) != 1) goto fail;
    close(sv[0]);
    memcpy(handed.cgroup, cgroup, lc);
    memcpy(handed.rw, rw, lr);
    memcpy(handed.root, root, lo);
    handed.lifeline = sv[1];
    *lifeline = sv[1];
    return 0;
fail:
    close(sv[0]);
    close(sv[1]);
    return -1;
}

int hv_janitor_watch_fd(void)
{
    return handed.lifeline;
}

void hv_janitor_orphaned(void)
{
    if (handed.lifeline < 0) return;
    int fd = handed.lifeline;
    handed.lifeline = -1;
    int sock = hv_janitor_sock;
    hv_janitor_sock = -1; /* a process of its own this time */
    cube_err err = {0};
    int lifeline;
    pid_t pid = hv_janitor_start(handed.cgroup, handed.rw, handed.root, &lifeline, &err);
    hv_janitor_sock = sock;
    if (pid < 0) {
        cube_log_error("the zygote died and no janitor could replace it", "err=\"%s\"", err.msg);
        return;
    }
    /* the backend closes fd when it has cleaned up: the new janitor's lifeline takes its number */
    if (dup3(lifeline, fd, O_CLOEXEC) < 0) cube_log_error("janitor lifeline not placed", "errno=%d", errno);
    close(lifeline);
    cube_log_warn("the zygote died: this sandbox has a janitor process of its own", "janitor=%d", pid);
}

pid_t hv_janitor_start(const char *cgroup, const char *rw, const char *root, int *lifeline, cube_err *err)
{
    if (hand_to_zygote(cgroup, rw, root, lifeline) == 0) return 0;
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
