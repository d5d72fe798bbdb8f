#include "children.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct child {
    pid_t pid;
    child_exit_cb cb;
    void *arg;
    struct child *next;
} child;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static child *head;

void children_lock(void)
{
    pthread_mutex_lock(&lock);
}

void children_unlock(void)
{
    pthread_mutex_unlock(&lock);
}

int children_add(pid_t pid, child_exit_cb cb, void *arg)
{
    child *c = malloc(sizeof(*c));
    if (!c) return -1;
    *c = (child){pid, cb, arg, head};
    head = c;
    return 0;
}

void children_reap(void)
{
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG | __WALL);
        if (pid < 0 && errno == EINTR) continue;
        if (pid <= 0) return; /* none left that exited (0), or no children at all (ECHILD) */
        pthread_mutex_lock(&lock);
        child *found = NULL;
        for (child **pp = &head; *pp; pp = &(*pp)->next) {
            if ((*pp)->pid == pid) {
                found = *pp;
                *pp = found->next;
                break;
            }
        }
        pthread_mutex_unlock(&lock);
        if (found) {
            found->cb(found->arg, pid, st);
            free(found);
        }
    }
}

int children_start(void)
{
    /* SIGCHLD stays pending (blocked, taken by sigwait) rather than discarded: its default action is to
     * ignore it, and an ignored SIGCHLD would make the kernel reap children before waitpid sees them */
    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static long nproc_limit;

void children_set_nproc(long n)
{
    nproc_limit = n;
}

void children_confine(void)
{
    /* Default dispositions, as a process started by a login or by envd has them: an ignored SIGINT or SIGQUIT
     * survives exec, and the agent may have inherited one from whatever started the node (a background job
     * of a shell script ignores both), which would make Ctrl-C and the interpreter's interrupt do nothing. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
    /* and none blocked: the agent's threads block SIGINT, SIGTERM and SIGCHLD (taken by its sigwait) */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, "500", 3) < 0) { /* no /proc: nothing to do */
        }
        close(fd);
    }
    if (nproc_limit > 0) {
        struct rlimit rl = {(rlim_t)nproc_limit, (rlim_t)nproc_limit};
        setrlimit(RLIMIT_NPROC, &rl);
    }
}

int children_become(uid_t uid, gid_t gid, const gid_t *groups, int ngroups)
{
    if (syscall(SYS_setgroups, (size_t)ngroups, groups) < 0 || syscall(SYS_setresgid, gid, gid, gid) < 0)
        return -1;
    if (uid != 0 && syscall(SYS_setresuid, uid, uid, uid) < 0) return -1;
    prctl(PR_SET_DUMPABLE, 1);
    return 0;
}
