/* The event loop every service shares: epoll for fds, one-shot timers, and a thread-safe post queue that
 * other threads (grpc completion queues, libmicrohttpd) use to hand work to the loop thread. Watchers and
 * timers may be removed from inside any callback, including their own. Everything but
 * cube_loop_post/cube_loop_stop is loop-thread only. */
#ifndef CUBE_LOOP_H
#define CUBE_LOOP_H

#include <stdint.h>

#include "err.h"

typedef struct cube_loop cube_loop;

enum { CUBE_LOOP_READ = 1, CUBE_LOOP_WRITE = 2, CUBE_LOOP_HUP = 4 };

typedef void (*cube_loop_fd_cb)(cube_loop *loop, int fd, int events, void *arg);
typedef void (*cube_loop_cb)(cube_loop *loop, void *arg);

cube_loop *cube_loop_new(cube_err *err);
/* Frees the loop; posted callbacks not yet run are dropped (their args are the poster's to own). */
void cube_loop_free(cube_loop *loop);

int cube_loop_add_fd(cube_loop *loop, int fd, int events, cube_loop_fd_cb cb, void *arg, cube_err *err);
int cube_loop_mod_fd(cube_loop *loop, int fd, int events, cube_err *err);
void cube_loop_del_fd(cube_loop *loop, int fd);

/* Runs cb once after delay_ms; returns a non-zero id for cube_loop_del_timer. 0 on allocation failure. */
uint64_t cube_loop_add_timer(cube_loop *loop, int64_t delay_ms, cube_loop_cb cb, void *arg);
void cube_loop_del_timer(cube_loop *loop, uint64_t id);

/* Any thread: runs cb(arg) on the loop thread soon, in posting order. */
int cube_loop_post(cube_loop *loop, cube_loop_cb cb, void *arg, cube_err *err);

/* Dispatches until cube_loop_stop. Returns 0, or -1 if epoll itself fails. */
int cube_loop_run(cube_loop *loop, cube_err *err);
/* Any thread (and async-signal-safe): makes cube_loop_run return after the current dispatch. */
void cube_loop_stop(cube_loop *loop);

#endif
