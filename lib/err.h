/* The one error contract: a function that can fail returns a negative value and fills a cube_err with an
 * errno-style code and a message; callers prepend context as the error travels up. */
#ifndef CUBE_ERR_H
#define CUBE_ERR_H

#include <stddef.h>

#define CUBE_ERR_MSG_MAX 1024

typedef struct cube_err {
    int code; /* errno value, 0 when no error */
    char msg[CUBE_ERR_MSG_MAX];
} cube_err;

/* Fills err (when not NULL) and returns -1, so callers can `return cube_err_set(...)`. */
int cube_err_set(cube_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Like cube_err_set, appending ": strerror(code)". */
int cube_err_sys(cube_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prepends "context: " to the message, keeps the code; returns -1. */
int cube_err_prefix(cube_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cube_err_clear(cube_err *err);

/* The short symbolic name of an errno code ("ENOENT"), for logs and tests. */
const char *cube_errno_name(int code);
/* The HTTP status an error maps to at the API edge (400, 404, 409, 500, ...). */
int cube_err_http_status(const cube_err *err);

#endif
