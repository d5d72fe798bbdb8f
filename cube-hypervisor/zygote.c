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
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fsutil.h"
#include "janitor.h"
#include "log.h"
#include "proc_title.h"
#include "zygote.h"
#include "zygote_proto.h"

/* the open-file limit the zygote was started with, which its children get back */
static struct rlimit child_nofile;

/* In the child: the request's descriptors at their places, everything else of the zygote closed, signals as
 * a freshly exec'd process would have them; then the entry point, as main. */
static void child(const zygote_req *h, int *fds, int nfds, int argc, char **argv, const char *args_end,
                  int (*entry)(int, char **), int janitor_sock)
{
    setpgid(0, 0); /* its own group: a signal to the node's group does not reach sandboxes directly */
    setpriority(PRIO_PROCESS, 0, h->nice); /* its caller's; its threads and PID 1 inherit it */
    /* ps, pgrep -f and the operator see the command line it was asked to run, not the zygote's */
    proc_title_set(argv[0], (size_t)(args_end - argv[0]), NULL, 0);
    const char *base = strrchr(argv[0], '/');
    prctl(PR_SET_NAME, base ? base + 1 : argv[0]);
    int high[ZYGOTE_MAX_FDS];
    for (int i = 0; i < nfds; i++) /* out of the way first, so that placing one cannot close another */
        if ((high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 64)) < 0) _exit(127);
    int janitor = fcntl(janitor_sock, F_DUPFD_CLOEXEC, 64);
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
    /* the zygote's socket for janitor hand-overs, just above the request's descriptors */
    hv_janitor_sock = janitor >= 0 && dup3(janitor, top + 1, O_CLOEXEC) == top + 1 ? top + 1 : -1;
    close_range((unsigned)top + (hv_janitor_sock >= 0 ? 2 : 1), ~0U, 0);
    setrlimit(RLIMIT_NOFILE, &child_nofile); /* what the node gave, not the zygote's own raised one */
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

/* The zygote forks at its caller's nice value too: a fork copies the zygote's page tables in the zygote, ~1
 * ms here, which a pool refill must not take from the creates being answered. Set back after each fork, which
 * needs CAP_SYS_NICE: without it (found once, by a child that tries) the zygote leaves its own alone. */
static int own_nice;
static bool nice_follows;

static void nice_probe(void)
{
    errno = 0;
    own_nice = getpriority(PRIO_PROCESS, 0);
    if (errno || own_nice >= 19) return;
    pid_t pid = fork();
    if (pid == 0)
        _exit(setpriority(PRIO_PROCESS, 0, own_nice + 1) == 0 && setpriority(PRIO_PROCESS, 0, own_nice) == 0
                  ? 0
                  : 1);
    int st = 0;
    nice_follows = pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void reap(void)
{
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static void reply(int sock, pid_t pid, int error, int pidfd)
{
    zygote_reply r = {.pid = pid, .error = error};
    if (cube_send_with_fd(sock, &r, sizeof(r), pidfd) < 0)
        cube_log_warn("zygote reply not sent", "pid=%d errno=%d", pid, errno);
}

/* One request: checks it, forks, answers. Bad requests are answered with EINVAL, never served. */
static void serve_one(int sock, int (*entry)(int, char **), const char *msg, size_t len, int *fds, int nfds,
                      int janitor_sock)
{
    zygote_req h;
    if (len < sizeof(h)) goto bad;
    memcpy(&h, msg, sizeof(h));
    if (h.magic != ZYGOTE_MAGIC || h.nfds != nfds || h.nice > 19) goto bad;
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
    bool niced = nice_follows && h.nice != own_nice && setpriority(PRIO_PROCESS, 0, h.nice) == 0;
    pid_t pid = fork();
    if (pid == 0) child(&h, fds, nfds, argc, argv, end, entry, janitor_sock);
    if (niced) setpriority(PRIO_PROCESS, 0, own_nice);
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

/* epoll tags: a lifeline is tagged with its descriptor (>= 0) */
#define TAG_REQUESTS -1
#define TAG_SIGNALS  -2
#define TAG_HANDOVER -3

/* A hypervisor hands its janitor's job over: the lifeline's other end arrives, watched for its hang-up. */
static void take_lifeline(int ep, int janitor_sock, int *lifelines)
{
    char one;
    struct iovec iov = {&one, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    if (recvmsg(janitor_sock, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT) <= 0) return;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int fd;
        memcpy(&fd, CMSG_DATA(c), sizeof(int));
        /* no EPOLLIN: the paths wait in it until the peer hangs up */
        struct epoll_event ev = {.events = EPOLLRDHUP, .data.u64 = (uint64_t)fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            cube_log_warn("a janitor hand-over not watched", "errno=%d", errno);
            close(fd);
            continue;
        }
        (*lifelines)++;
    }
}

/* A lifeline hung up (its hypervisor stopped or died): what it queued is cleaned. */
static void clean_lifeline(int ep, int fd, int *lifelines)
{
    static char rec[12800];
    ssize_t n = recv(fd, rec, sizeof(rec), MSG_DONTWAIT);
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    (*lifelines)--;
    if (n <= 0) return;
    hv_janitor_clean_record(rec, (size_t)n);
    explicit_bzero(rec, (size_t)n); /* later children are copies of this memory */
}

int zygote_serve(int sock, int (*entry)(int argc, char **argv))
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    /* a descriptor per running sandbox (its lifeline): as many as the hard limit allows. Past it a hand-over
     * fails and that hypervisor starts a janitor process of its own (it sees its lifeline hang up). */
    getrlimit(RLIMIT_NOFILE, &child_nofile);
    nice_probe(); /* its child is reaped there; the SIGCHLD left pending finds nothing more to reap */
    struct rlimit raised = {child_nofile.rlim_max, child_nofile.rlim_max};
    setrlimit(RLIMIT_NOFILE, &raised);
    int jsv[2] = {-1, -1}, ep = epoll_create1(EPOLL_CLOEXEC);
    if (sfd < 0 || ep < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, jsv) < 0) return -1;
    struct epoll_event add[] = {{.events = EPOLLIN, .data.u64 = (uint64_t)(int64_t)TAG_REQUESTS},
                                {.events = EPOLLIN, .data.u64 = (uint64_t)(int64_t)TAG_SIGNALS},
                                {.events = EPOLLIN, .data.u64 = (uint64_t)(int64_t)TAG_HANDOVER}};
    int addfd[] = {sock, sfd, jsv[0]};
    for (int i = 0; i < 3; i++)
        if (epoll_ctl(ep, EPOLL_CTL_ADD, addfd[i], &add[i]) < 0) return -1;
    static char msg[ZYGOTE_MAX_MSG];
    int lifelines = 0, rc = -1;
    bool serving = true;
    /* after the node closes its end, the zygote stays the janitor of the sandboxes it still has */
    while (serving || lifelines > 0) {
        struct epoll_event evs[64];
        int nev = epoll_wait(ep, evs, 64, -1);
        if (nev < 0) {
            if (errno == EINTR) continue;
            break;
        }
        /* hand-overs before hang-ups: a lifeline that arrives with its hang-up is cleaned in this round */
        bool requests = false;
        for (int i = 0; i < nev; i++) {
            int64_t tag = (int64_t)evs[i].data.u64;
            if (tag == TAG_REQUESTS) requests = true;
            if (tag == TAG_HANDOVER) take_lifeline(ep, jsv[0], &lifelines);
            if (tag == TAG_SIGNALS) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                }
                reap();
            }
        }
        for (int i = 0; i < nev; i++) {
            int64_t tag = (int64_t)evs[i].data.u64;
            if (tag >= 0) clean_lifeline(ep, (int)tag, &lifelines);
        }
        if (!requests || !serving) continue;
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
            /* the node closed its end (or died): no more sandboxes to start */
            rc = n == 0 ? 0 : -1;
            serving = false;
            epoll_ctl(ep, EPOLL_CTL_DEL, sock, NULL);
            continue;
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
            serve_one(sock, entry, msg, (size_t)n, fds, nfds, jsv[1]);
        for (int i = 0; i < nfds; i++) close(fds[i]);
        /* what the request carried (paths, ids) does not stay in memory that later children are copies of */
        explicit_bzero(msg, (size_t)n);
    }
    close(sfd);
    close(ep);
    close(jsv[0]);
    close(jsv[1]);
    return serving ? -1 : rc;
}
