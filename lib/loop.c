#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "timeutil.h"

typedef struct fd_watch {
    cube_loop_fd_cb cb;
    void *arg;
    uint32_t gen; /* bumped on every add/del so stale events from one epoll_wait batch are ignored */
    bool active;
} fd_watch;

typedef struct timer {
    uint64_t id;
    int64_t due_ms;
    cube_loop_cb cb;
    void *arg;
    struct timer *next;
} timer;

typedef struct posted {
    cube_loop_cb cb;
    void *arg;
    struct posted *next;
} posted;

struct cube_loop {
    int epfd;
    int wakefd;
    int stop; /* atomic: set from any thread (cube_loop_stop), read by the loop */
    fd_watch *fds;
    size_t nfds;
    timer *timers; /* sorted by due_ms; small counts in practice */
    uint64_t next_timer_id;
    pthread_mutex_t post_lock;
    posted *post_head, *post_tail;
};

static uint32_t to_epoll(int events)
{
    return (events & CUBE_LOOP_READ ? EPOLLIN : 0) | (events & CUBE_LOOP_WRITE ? EPOLLOUT : 0);
}

cube_loop *cube_loop_new(cube_err *err)
{
    cube_loop *loop = calloc(1, sizeof(*loop));
    if (!loop) return cube_err_set(err, ENOMEM, "loop: out of memory"), NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&loop->post_lock, NULL);
    if (loop->epfd < 0 || loop->wakefd < 0) {
        cube_err_sys(err, errno, "loop: epoll/eventfd");
        cube_loop_free(loop);
        return NULL;
    }
    /* the wake fd is registered with a sentinel key outside the fd table */
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) < 0) {
        cube_err_sys(err, errno, "loop: register eventfd");
        cube_loop_free(loop);
        return NULL;
    }
    return loop;
}

void cube_loop_free(cube_loop *loop)
{
    if (!loop) return;
    if (loop->epfd >= 0) close(loop->epfd);
    if (loop->wakefd >= 0) close(loop->wakefd);
    for (timer *t = loop->timers, *n; t; t = n) {
        n = t->next;
        free(t);
    }
    for (posted *p = loop->post_head, *n; p; p = n) {
        n = p->next;
        free(p);
    }
    pthread_mutex_destroy(&loop->post_lock);
    free(loop->fds);
    free(loop);
}

int cube_loop_add_fd(cube_loop *loop, int fd, int events, cube_loop_fd_cb cb, void *arg, cube_err *err)
{
    if (fd < 0) return cube_err_set(err, EBADF, "loop: bad fd %d", fd);
    if ((size_t)fd >= loop->nfds) {
        size_t n = loop->nfds ? loop->nfds : 64;
        while (n <= (size_t)fd) n *= 2;
        fd_watch *nf = realloc(loop->fds, n * sizeof(*nf));
        if (!nf) return cube_err_set(err, ENOMEM, "loop: out of memory");
        memset(nf + loop->nfds, 0, (n - loop->nfds) * sizeof(*nf));
        loop->fds = nf;
        loop->nfds = n;
    }
    fd_watch *w = &loop->fds[fd];
    if (w->active) return cube_err_set(err, EEXIST, "loop: fd %d already watched", fd);
    w->gen++;
    struct epoll_event ev = {.events = to_epoll(events), .data.u64 = (uint64_t)w->gen << 32 | (uint32_t)fd};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return cube_err_sys(err, errno, "loop: watch fd %d", fd);
    w->cb = cb;
    w->arg = arg;
    w->active = true;
    return 0;
}

int cube_loop_mod_fd(cube_loop *loop, int fd, int events, cube_err *err)
{
    if (fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].active)
        return cube_err_set(err, ENOENT, "loop: fd %d not watched", fd);
    struct epoll_event ev = {.events = to_epoll(events),
                             .data.u64 = (uint64_t)loop->fds[fd].gen << 32 | (uint32_t)fd};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
        return cube_err_sys(err, errno, "loop: modify fd %d", fd);
    return 0;
}

void cube_loop_del_fd(cube_loop *loop, int fd)
{
    if (fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].active) return;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
    loop->fds[fd].active = false;
    loop->fds[fd].gen++;
}

uint64_t cube_loop_add_timer(cube_loop *loop, int64_t delay_ms, cube_loop_cb cb, void *arg)
{
    timer *t = calloc(1, sizeof(*t));
    if (!t) return 0;
    t->id = ++loop->next_timer_id;
    t->due_ms = cube_now_mono_ms() + (delay_ms > 0 ? delay_ms : 0);
    t->cb = cb;
    t->arg = arg;
    timer **pp = &loop->timers;
    while (*pp && (*pp)->due_ms <= t->due_ms) pp = &(*pp)->next;
    t->next = *pp;
    *pp = t;
    return t->id;
}

void cube_loop_del_timer(cube_loop *loop, uint64_t id)
{
    for (timer **pp = &loop->timers; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            timer *t = *pp;
            *pp = t->next;
            free(t);
            return;
        }
    }
}

int cube_loop_post(cube_loop *loop, cube_loop_cb cb, void *arg, cube_err *err)
{
    posted *p = malloc(sizeof(*p));
    if (!p) return cube_err_set(err, ENOMEM, "loop: out of memory");
    p->cb = cb;
    p->arg = arg;
    p->next = NULL;
    pthread_mutex_lock(&loop->post_lock);
    if (loop->post_tail)
        loop->post_tail->next = p;
    else
        loop->post_head = p;
    loop->post_tail = p;
    pthread_mutex_unlock(&loop->post_lock);
    uint64_t one = 1;
    ssize_t n = write(loop->wakefd, &one, sizeof(one));
    (void)n; /* EAGAIN means the counter is already non-zero: the loop will wake anyway */
    return 0;
}

void cube_loop_stop(cube_loop *loop)
{
    __atomic_store_n(&loop->stop, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    ssize_t n = write(loop->wakefd, &one, sizeof(one));
    (void)n;
}

static void run_posted(cube_loop *loop)
{
    uint64_t v;
    ssize_t n = read(loop->wakefd, &v, sizeof(v));
    (void)n;
    pthread_mutex_lock(&loop->post_lock);
    posted *p = loop->post_head;
    loop->post_head = loop->post_tail = NULL;
    pthread_mutex_unlock(&loop->post_lock);
    while (p) {
        posted *next = p->next;
        p->cb(loop, p->arg);
        free(p);
        p = next;
    }
}

static void run_timers(cube_loop *loop)
{
    int64_t now = cube_now_mono_ms();
    /* take one due timer at a time: a callback may add or delete others */
    while (loop->timers && loop->timers->due_ms <= now && !__atomic_load_n(&loop->stop, __ATOMIC_ACQUIRE)) {
        timer *t = loop->timers;
        loop->timers = t->next;
        cube_loop_cb cb = t->cb;
        void *arg = t->arg;
        free(t);
        cb(loop, arg);
    }
}

int cube_loop_run(cube_loop *loop, cube_err *err)
{
    struct epoll_event evs[64];
    while (!__atomic_load_n(&loop->stop, __ATOMIC_ACQUIRE)) {
        int timeout = -1;
        if (loop->timers) {
            int64_t left = loop->timers->due_ms - cube_now_mono_ms();
            timeout = left < 0 ? 0 : left > 60000 ? 60000 : (int)left;
        }
        int n = epoll_wait(loop->epfd, evs, 64, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            return cube_err_sys(err, errno, "loop: epoll_wait");
        }
        for (int i = 0; i < n && !__atomic_load_n(&loop->stop, __ATOMIC_ACQUIRE); i++) {
            if (evs[i].data.u64 == UINT64_MAX) {
                run_posted(loop);
                continue;
            }
            int fd = (int)(uint32_t)evs[i].data.u64;
            uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
            if ((size_t)fd >= loop->nfds) continue;
            fd_watch *w = &loop->fds[fd];
            if (!w->active || w->gen != gen) continue; /* removed earlier in this batch */
            int events = (evs[i].events & EPOLLIN ? CUBE_LOOP_READ : 0) |
                         (evs[i].events & EPOLLOUT ? CUBE_LOOP_WRITE : 0) |
                         (evs[i].events & (EPOLLHUP | EPOLLERR) ? CUBE_LOOP_HUP : 0);
            w->cb(loop, fd, events, w->arg);
        }
        run_timers(loop);
    }
    __atomic_store_n(&loop->stop, 0, __ATOMIC_RELEASE);
    return 0;
}
