/* Redis for the cluster's fast path (hiredis): one synchronous connection under a lock, short timeouts, and
 * reconnection that never blocks a caller for long: while Redis is down, calls fail fast (the callers have
 * a slower source of truth) and a reconnect is tried at most every half second. */
#ifndef CUBE_REDIS_H
#define CUBE_REDIS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>

typedef struct cube_redis cube_redis;

/* addr: "unix:/path/redis.sock" or "host:port". Connects lazily. */
cube_redis *cube_redis_new(const char *addr);
void cube_redis_free(cube_redis *r);
/* One command (hiredis format); the reply (freeReplyObject) or NULL when Redis did not answer. */
redisReply *cube_redis_cmd(cube_redis *r, const char *fmt, ...);
/* Several commands, each formatted with redisFormatCommand, sent together and answered in one round trip.
 * replies[i] (freeReplyObject each) or all NULL when Redis did not answer; returns 0 or -1. */
int cube_redis_pipeline(cube_redis *r, int n, char **cmds, const int *lens, redisReply **replies);
/* True once after a connection was made following a failure (or the first one): what was written to Redis
 * before may be lost or stale, and a writer that keeps a view there rebuilds it. */
bool cube_redis_take_fresh(cube_redis *r);

#endif
