#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int err_vset(cube_err *err, int code, const char *fmt, va_list ap)
{
    if (!err) return -1;
    err->code = code ? code : EIO;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    return -1;
}

int cube_err_set(cube_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, code, fmt, ap);
    va_end(ap);
    return -1;
}

int cube_err_sys(cube_err *err, int code, const char *fmt, ...)
{
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, code, fmt, ap);
    va_end(ap);
    size_t len = strlen(err->msg);
    snprintf(err->msg + len, sizeof(err->msg) - len, ": %s", strerror(code));
    return -1;
}

int cube_err_prefix(cube_err *err, const char *fmt, ...)
{
    if (!err) return -1;
    char prefix[CUBE_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    char old[CUBE_ERR_MSG_MAX];
    memcpy(old, err->msg, sizeof(old));
    size_t pl = strlen(prefix), ol = strnlen(old, sizeof(old) - 1);
    if (pl > sizeof(err->msg) - 3) pl = sizeof(err->msg) - 3;
    if (pl + 2 + ol > sizeof(err->msg) - 1) ol = sizeof(err->msg) - 1 - pl - 2;
    memcpy(err->msg, prefix, pl);
    memcpy(err->msg + pl, ": ", 2);
    memcpy(err->msg + pl + 2, old, ol);
    err->msg[pl + 2 + ol] = '\0';
    if (!err->code) err->code = EIO;
    return -1;
}

void cube_err_clear(cube_err *err)
{
    if (!err) return;
    err->code = 0;
    err->msg[0] = '\0';
}

const char *cube_errno_name(int code)
{
    switch (code) {
    case 0:
        return "OK";
    case EPERM:
        return "EPERM";
    case ENOENT:
        return "ENOENT";
    case EIO:
        return "EIO";
    case EBADF:
        return "EBADF";
    case EAGAIN:
        return "EAGAIN";
    case ENOMEM:
        return "ENOMEM";
    case EACCES:
        return "EACCES";
    case EBUSY:
        return "EBUSY";
    case EEXIST:
        return "EEXIST";
    case ENOTDIR:
        return "ENOTDIR";
    case EISDIR:
        return "EISDIR";
    case EINVAL:
        return "EINVAL";
    case ENOSPC:
        return "ENOSPC";
    case ERANGE:
        return "ERANGE";
    case ENOSYS:
        return "ENOSYS";
    case ENOTSUP:
        return "ENOTSUP";
    case ECONNREFUSED:
        return "ECONNREFUSED";
    case EHOSTUNREACH:
        return "EHOSTUNREACH";
    case ETIMEDOUT:
        return "ETIMEDOUT";
    case ECANCELED:
        return "ECANCELED";
    case EPROTO:
        return "EPROTO";
    case EBADMSG:
        return "EBADMSG";
    case EMSGSIZE:
        return "EMSGSIZE";
    case EKEYREJECTED:
        return "EKEYREJECTED";
    default:
        return "EUNKNOWN";
    }
}

int cube_err_http_status(const cube_err *err)
{
    switch (err ? err->code : EIO) {
    case EINVAL:
    case EBADMSG:
    case ERANGE:
        return 400;
    case EKEYREJECTED:
        return 401;
    case EPERM:
    case EACCES:
        return 403;
    case ENOENT:
        return 404;
    case EEXIST:
    case EBUSY:
        return 409;
    case EMSGSIZE:
    case EFBIG:
        return 413;
    case EAGAIN:
    case EDQUOT: /* a key's sandbox limit: E2B's concurrency limit answers 429 too (the SDK's RateLimitError)
                  */
        return 429;
    case ENOSYS:
    case ENOTSUP:
        return 501;
    case ECONNREFUSED:
    case EHOSTUNREACH:
        return 503;
    case ETIMEDOUT:
        return 504;
    case ENOSPC:
        return 507;
    default:
        return 500;
    }
}
