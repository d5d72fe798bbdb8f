/* Clocks and the RFC 3339 timestamps E2B's API uses. */
#ifndef CUBE_TIMEUTIL_H
#define CUBE_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "err.h"

int64_t cube_now_mono_ns(void);
int64_t cube_now_mono_ms(void);
int64_t cube_now_unix_ms(void);
/* The time ms milliseconds from now on clock: the absolute deadline pthread_cond_timedwait takes (clock: the
 * condition's, CLOCK_REALTIME unless its attributes say otherwise). */
struct timespec cube_timespec_after_ms(clockid_t clock, int64_t ms);

#define CUBE_RFC3339_MAX 64
/* "2026-11-22T20:42:43.123Z" from unix milliseconds. */
void cube_rfc3339_format(int64_t unix_ms, char out[CUBE_RFC3339_MAX]);
/* Accepts "YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)"; EINVAL otherwise. */
int cube_rfc3339_parse(const char *s, int64_t *unix_ms, cube_err *err);

#endif
