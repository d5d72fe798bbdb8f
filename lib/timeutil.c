#include "timeutil.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t cube_now_mono_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

int64_t cube_now_mono_ms(void)
{
    return clock_ns(CLOCK_MONOTONIC) / 1000000;
}

int64_t cube_now_unix_ms(void)
{
    return clock_ns(CLOCK_REALTIME) / 1000000;
}

struct timespec cube_timespec_after_ms(clockid_t clock, int64_t ms)
{
    int64_t ns = clock_ns(clock) + (ms > 0 ? ms : 0) * 1000000;
    return (struct timespec){.tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000)};
}

void cube_rfc3339_format(int64_t unix_ms, char out[CUBE_RFC3339_MAX])
{
    time_t secs = (time_t)(unix_ms >= 0 ? unix_ms / 1000 : (unix_ms - 999) / 1000);
    int ms = (int)(unix_ms - (int64_t)secs * 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, CUBE_RFC3339_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (!isdigit((unsigned char)**p)) return -1;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return 0;
}

int cube_rfc3339_parse(const char *s, int64_t *unix_ms, cube_err *err)
{
    const char *p = s;
    int Y, M, D, h, m, sec;
    if (digits(&p, 4, &Y) || *p++ != '-' || digits(&p, 2, &M) || *p++ != '-' || digits(&p, 2, &D) ||
        (*p != 'T' && *p != 't' && *p != ' ') || (p++, digits(&p, 2, &h)) || *p++ != ':' ||
        digits(&p, 2, &m) || *p++ != ':' || digits(&p, 2, &sec))
        return cube_err_set(err, EINVAL, "'%s' is not an RFC 3339 timestamp", s);
    int ms = 0;
    if (*p == '.') {
        p++;
        int scale = 100, n = 0;
        while (isdigit((unsigned char)*p)) {
            ms += (*p - '0') * scale;
            scale /= 10;
            p++;
            n++;
        }
        if (n == 0) return cube_err_set(err, EINVAL, "'%s': empty fraction", s);
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om))
            return cube_err_set(err, EINVAL, "'%s': bad zone offset", s);
        offset_min = sign * (oh * 60 + om);
    } else {
        return cube_err_set(err, EINVAL, "'%s': missing zone", s);
    }
    if (*p != '\0' || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return cube_err_set(err, EINVAL, "'%s' is not an RFC 3339 timestamp", s);
    struct tm tm = {
        .tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m, .tm_sec = sec};
    time_t t = timegm(&tm);
    *unix_ms = ((int64_t)t - offset_min * 60) * 1000 + ms;
    return 0;
}
