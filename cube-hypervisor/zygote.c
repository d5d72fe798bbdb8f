/* cube-zygote's serving loop: one request, one fork (zygote_proto.h). The loop is single-threaded, so a child
 * forked from it holds no lock another thread had taken. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"
#include "proc_title.h"
#include "zygote.h"
#include "zygote_proto.h"

/* In the child: the request's descriptors at their places, everything else of the zygote closed, signals as
 * a freshly exec'd process would have them; then the entry point, as main. */
static void child(const zygote_req *h, int *fds, int nfds, int argc, char **argv, const char *args_end,
                  int (*entry)(int, char **))
{
    setpgid(0, 0); /* its own group: a signal to the node's group does not reach sandboxes directly */
    /* ps, pgrep -f and the operator see the command line it was asked to run, not the zygote's */
    proc_title_set(argv[0], (size_t)(args_end - argv[0]), NULL, 0);
    const char *base = strrchr(argv[0], '/');
    prctl(PR_SET_NAME, base ? base + 1 : argv[0]);
    int high[ZYGOTE_MAX_FDS];
    for (int i = 0; i < nfds; i++) /* out of the way first, so that placing one cannot close another */
        if ((high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 64)) < 0) _exit(127);
    int top = 2;
    for (int i = 0; i < nfds; i++) {
        if (cube_fd_at(high[i], h->target[i]) < 0) _exit(127);
        if (h->target[i] > top) top = h->target[i];
    }
    for (int fd = 3; fd <= top; fd++) {
        bool wanted = false;
        for (int i = 0; i < nfds; i++) wanted |= h->target[i] == fd;
        if (!wanted) close(fd);
    }
    close_range((unsigned)top + 1, ~0U, 0);
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGCHLD, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int rc = entry(argc, argv);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    exit(rc); /* the sanitizers' leak and race reports run at exit */
#else
    /* the libraries' destructors (TLS, PKCS#11 and the like, which nothing here used) cost each sandbox's
     * teardown more than the rest of its exit: stdio is all that needs flushing */
    fflush(NULL);
    _exit(rc);
#endif
}

static void reap(void)
{
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static void reply(int sock, pid_t pid, int error, int pidfd)
{
    zygote_reply r = {.pid = pid, .error = error};
    struct iovec iov = {&r, sizeof(r)};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (pidfd >= 0) {
        memset(&u, 0, sizeof(u));
        m.msg_control = u.buf;
        m.msg_controllen = sizeof(u.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pidfd, sizeof(int));
    }
    if (sendmsg(sock, &m, MSG_NOSIGNAL) < 0)
        cube_log_warn("zygote reply not sent", "pid=%d errno=%d", pid, errno);
}

/* One request: checks it, forks, answers. Bad requests are answered with EINVAL, never served. */
static void serve_one(int sock, int (*entry)(int, char **), const char *msg, size_t len, int *fds, int nfds)
{
    zygote_req h;
    if (len < sizeof(h)) goto bad;
    memcpy(&h, msg, sizeof(h));
    if (h.magic != ZYGOTE_MAGIC || h.nfds != nfds) goto bad;
    for (int i = 0; i < nfds; i++)
        if (h.target[i] > 63) goto bad;
    const char *p = msg + sizeof(h), *end = msg + len;
    if (p == end || end[-1] != '\0') goto bad;
    char *argv[ZYGOTE_MAX_ARGS + 1];
    int argc = 0;
    while (p < end) {
        if (argc == ZYGOTE_MAX_ARGS) goto bad;
        argv[argc++] = (char *)p;
        p += strlen(p) + 1;
    }
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid == 0) child(&h, fds, nfds, argc, argv, end, entry);
    if (pid < 0) {
        reply(sock, -1, errno, -1);
        return;
    }
    /* taken before this loop can reap it: the pid cannot have been reused */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        int e = errno;
        kill(pid, SIGKILL);
        reply(sock, -1, e, -1);
        return;
    }
    reply(sock, pid, 0, pidfd);
    close(pidfd);
    return;
bad:
    reply(sock, -1, EINVAL, -1);
}

int zygote_serve(int sock, int (*entry)(int argc, char **argv))
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) return -1;
    static char msg[ZYGOTE_MAX_MSG];
    for (;;) {
        struct pollfd pfd[2] = {{sock, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (pfd[1].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
            }
            reap();
        }
        if (!pfd[0].revents) continue;
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int) * ZYGOTE_MAX_FDS)];
        } u;
        struct iovec iov = {msg, sizeof(msg)};
        struct msghdr m = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
        ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            close(sfd);
            return n == 0 ? 0 : -1; /* the node closed its end (or died): the zygote's work is over */
        }
        int fds[ZYGOTE_MAX_FDS], nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                if (nfds < ZYGOTE_MAX_FDS)
                    fds[nfds++] = fd;
                else
                    close(fd);
            }
        }
        if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
            reply(sock, -1, EMSGSIZE, -1);
        else
            serve_one(sock, entry, msg, (size_t)n, fds, nfds);
        for (int i = 0; i < nfds; i++) close(fds[i]);
        /* what the request carried (paths, ids) does not stay in memory that later children are copies of */
        explicit_bzero(msg, (size_t)n);
    }
    close(sfd);
    return -1;
}
