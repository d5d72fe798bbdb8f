/* The node's side of cube-zygote (zygote.h, zygote_proto.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <spawn.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "timeutil.h"
#include "zygote.h"
#include "zygote_proto.h"

extern char **environ;

/* The zygote's environment is every sandbox's hypervisor's and, in memory, every agent's (which runs from
 * the same image and cannot unread what a runtime copied at start): only what they use comes along, not the
 * node's environment (credentials an operator exported, say). */
static bool zygote_keeps(const char *kv)
{
    static const char *const keep[] = {"PATH=",          "CUBE_LOG_LEVEL=", "CUBE_HV_",      "ASAN_OPTIONS=",
                                       "UBSAN_OPTIONS=", "LSAN_OPTIONS=",   "TSAN_OPTIONS=", NULL};
    for (int i = 0; keep[i]; i++)
        if (strncmp(kv, keep[i], strlen(keep[i])) == 0) return true;
    return false;
}

/* With z->lock held (or before anyone else can use z). */
static int start_locked(cube_zygote *z, cube_err *err)
{
    if (z->pid > 0) { /* the one that died: reaped before its replacement */
        kill(z->pid, SIGKILL);
        waitpid(z->pid, NULL, 0);
        z->pid = -1;
    }
    z->started_ms = cube_now_mono_ms();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return cube_err_sys(err, errno, "zygote socket pair");
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
    char *argv[] = {(char *)z->bin, "--socket-fd", "3", NULL};
    char *envp[16];
    int n = 0;
    for (char **e = environ; *e && n < 15; e++)
        if (zygote_keeps(*e)) envp[n++] = *e;
    envp[n] = NULL;
    int rc = posix_spawn(&z->pid, z->bin, &fa, &at, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(sv[1]);
    if (rc != 0) {
        close(sv[0]);
        z->pid = -1;
        return cube_err_sys(err, rc, "start %s", z->bin);
    }
    z->sock = sv[0];
    return 0;
}

int cube_zygote_start(cube_zygote *z, const char *bin, cube_err *err)
{
    pthread_mutex_init(&z->lock, NULL);
    z->bin = bin;
    z->sock = -1;
    z->pid = -1;
    return start_locked(z, err);
}

int cube_zygote_spawn(cube_zygote *z, char *const argv[], const int fds[], const int targets[], int nfds,
                      pid_t *pid, int *pidfd, cube_err *err)
{
    if (nfds > ZYGOTE_MAX_FDS) return cube_err_set(err, EINVAL, "at most %d descriptors", ZYGOTE_MAX_FDS);
    char msg[ZYGOTE_MAX_MSG];
    /* the caller's priority goes with the request: a pool refill's thread runs at a low one, and so must the
     * sandbox it starts, though the zygote forks it */
    errno = 0;
    int prio = getpriority(PRIO_PROCESS, (id_t)gettid());
    if (errno) prio = 0;
    zygote_req h = {.magic = ZYGOTE_MAGIC,
                    .nfds = (uint8_t)nfds,
                    .nice = (uint8_t)(prio < 0    ? 0
                                      : prio > 19 ? 19
                                                  : prio)};
    for (int i = 0; i < nfds; i++) h.target[i] = (uint8_t)targets[i];
    memcpy(msg, &h, sizeof(h));
    size_t len = sizeof(h);
    for (int i = 0; argv[i]; i++) {
        size_t k = strlen(argv[i]) + 1;
        if (i == ZYGOTE_MAX_ARGS || len + k > sizeof(msg))
            return cube_err_set(err, E2BIG, "command line too long for the zygote");
        memcpy(msg + len, argv[i], k);
        len += k;
    }
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * ZYGOTE_MAX_FDS)];
    } u;
    memset(&u, 0, sizeof(u));
    struct iovec iov = {msg, len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        m.msg_control = u.buf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    zygote_reply r = {0};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ru;
    struct iovec riov = {&r, sizeof(r)};
    struct msghdr rm = {
        .msg_iov = &riov, .msg_iovlen = 1, .msg_control = ru.buf, .msg_controllen = sizeof(ru.buf)};
    /* one request in flight: the zygote answers in order and a reply must meet its own request */
    pthread_mutex_lock(&z->lock);
    ssize_t n = -1;
    int e = 0;
    if (z->sock < 0 && z->bin && cube_now_mono_ms() - z->started_ms >= 1000) {
        cube_err serr = {0};
        if (start_locked(z, &serr) == 0)
            cube_log_warn("the zygote died: a new one is started", "pid=%d", z->pid);
    }
    if (z->sock >= 0) {
        n = sendmsg(z->sock, &m, MSG_NOSIGNAL);
        if (n == (ssize_t)len) {
            do n = recvmsg(z->sock, &rm, MSG_CMSG_CLOEXEC);
            while (n < 0 && errno == EINTR);
        }
        if (n <= 0) {
            e = n == 0 ? 0 : errno; /* why, for the message; the caller is told ECONNRESET */
            close(z->sock);         /* gone or out of step: no later request may read this one's reply */
            z->sock = -1;
        }
    }
    pthread_mutex_unlock(&z->lock);
    if (n != (ssize_t)sizeof(r))
        return cube_err_set(err, ECONNRESET, "the zygote is gone%s%s", e ? ": " : "", e ? strerror(e) : "");
    int got = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&rm); c; c = CMSG_NXTHDR(&rm, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(&got, CMSG_DATA(c), sizeof(int));
    if (r.pid <= 0 || got < 0) {
        if (got >= 0) close(got);
        return cube_err_sys(err, r.error ? r.error : EIO, "the zygote could not fork %s", argv[0]);
    }
    *pid = r.pid;
    *pidfd = got;
    return 0;
}

void cube_zygote_stop(cube_zygote *z)
{
    pthread_mutex_lock(&z->lock);
    if (z->sock >= 0) close(z->sock);
    z->sock = -1;
    pthread_mutex_unlock(&z->lock);
    if (z->pid > 0) waitpid(z->pid, NULL, 0);
    z->pid = -1;
}
