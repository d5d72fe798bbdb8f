/* Scoped cleanup helpers: a variable declared with one of these is released when it leaves scope, unless
 * ownership was handed over with cube_steal_ptr / cube_steal_fd first. */
#ifndef CUBE_CLEANUP_H
#define CUBE_CLEANUP_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline void cube_freep(void *p)
{
    free(*(void **)p);
}

static inline void cube_closep(int *fd)
{
    if (*fd >= 0) close(*fd);
}

static inline void cube_fclosep(FILE **f)
{
    if (*f) fclose(*f);
}

#define cube_autofree   __attribute__((cleanup(cube_freep)))
#define cube_autoclose  __attribute__((cleanup(cube_closep)))
#define cube_autofclose __attribute__((cleanup(cube_fclosep)))

static inline void *cube_steal_ptr_(void **p)
{
    void *v = *p;
    *p = NULL;
    return v;
}
#define cube_steal_ptr(pp) cube_steal_ptr_((void **)(pp))

static inline int cube_steal_fd(int *fd)
{
    int v = *fd;
    *fd = -1;
    return v;
}

#endif
