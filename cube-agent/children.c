#include "children.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct child {
    pid_t pid;
    child_exit_cb cb;
    void *arg;
    struct child *next;
} child;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t have_children = PTHREAD_COND_INITIALIZER;
static child *head;
static int forks; /* children ever registered: the reaper sleeps until there is one to wait for */

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
    forks++;
    pthread_cond_signal(&have_children);
    return 0;
}

static void *reaper(void *unused)
{
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&lock);
        int seen = forks; /* read before waitpid so a fork in between is not missed */
        pthread_mutex_unlock(&lock);
        int st;
        pid_t pid = waitpid(-1, &st, __WALL);
        if (pid < 0) {
            if (errno == EINTR) continue;
            /* ECHILD: nothing to wait for until the next registration */
            pthread_mutex_lock(&lock);
            while (forks == seen) pthread_cond_wait(&have_children, &lock);
            pthread_mutex_unlock(&lock);
            continue;
        }
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
    return NULL;
}

int children_start(void)
{
    /* children we spawn inherit default dispositions; SIGCHLD itself must not be ignored or waitpid fails */
    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t th;
    if (pthread_create(&th, NULL, reaper, NULL) != 0) return -1;
    pthread_detach(th);
    return 0;
}

static long nproc_limit;

void children_set_nproc(long n)
{
    nproc_limit = n;
}

void children_confine(void)
{
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
