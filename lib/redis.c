/* Redis connection (see redis.h). */
#include "redis.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "timeutil.h"

struct cube_redis {
    char addr[512];
    redisContext *ctx;
    pthread_mutex_t lock;
    int64_t next_try_ms;
    bool fresh; /* a new connection since the last take_fresh */
};

cube_redis *cube_redis_new(const char *addr)
{
    cube_redis *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    snprintf(r->addr, sizeof(r->addr), "%s", addr);
    pthread_mutex_init(&r->lock, NULL);
    return r;
}

void cube_redis_free(cube_redis *r)
{
    if (!r) return;
    if (r->ctx) redisFree(r->ctx);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static void connect_locked(cube_redis *r)
{
    int64_t now = cube_now_mono_ms();
    if (now < r->next_try_ms) return;
    r->next_try_ms = now + 500;
    struct timeval tv = {0, 200 * 1000};
    redisContext *c;
    if (strncmp(r->addr, "unix:", 5) == 0) {
        c = redisConnectUnixWithTimeout(r->addr + 5, tv);
    } else {
        char host[256];
        snprintf(host, sizeof(host), "%s", r->addr);
        char *colon = strrchr(host, ':');
        int port = 6379;
        if (colon) {
            *colon = '\0';
            port = atoi(colon + 1);
        }
        c = redisConnectWithTimeout(host, port, tv);
    }
    if (!c || c->err) {
        if (c) redisFree(c);
        return;
    }
    redisSetTimeout(c, tv);
    r->ctx = c;
    r->fresh = true;
    cube_log_info("redis connected", "addr=%s", r->addr);
}

int cube_redis_pipeline(cube_redis *r, int n, char **cmds, const int *lens, redisReply **replies)
{
    for (int i = 0; i < n; i++) replies[i] = NULL;
    pthread_mutex_lock(&r->lock);
    int rc = -1;
    /* a connection that was up may have died with a server restart: one fresh connection is tried at once */
    for (int attempt = 0; attempt < 2 && rc < 0; attempt++) {
        bool was_up = r->ctx != NULL;
        if (!r->ctx) connect_locked(r);
        if (!r->ctx) break;
        int i = 0, ok = 1;
        for (; i < n && ok; i++)
            ok = redisAppendFormattedCommand(r->ctx, cmds[i], (size_t)lens[i]) == REDIS_OK;
        for (i = 0; i < n && ok; i++)
            ok = redisGetReply(r->ctx, (void **)&replies[i]) == REDIS_OK && replies[i];
        if (ok) {
            rc = 0;
            break;
        }
        for (i = 0; i < n; i++) { /* the connection is unusable: drop it */
            if (replies[i]) freeReplyObject(replies[i]);
            replies[i] = NULL;
        }
        cube_log_warn("redis unavailable", "addr=%s err=\"%s\"", r->addr, r->ctx->errstr);
        redisFree(r->ctx);
        r->ctx = NULL;
        if (!was_up) break;
        r->next_try_ms = 0;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

redisReply *cube_redis_cmd(cube_redis *r, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    redisReply *reply = NULL;
    if (len > 0) cube_redis_pipeline(r, 1, &cmd, &len, &reply);
    redisFreeCommand(cmd);
    return reply;
}

bool cube_redis_take_fresh(cube_redis *r)
{
    pthread_mutex_lock(&r->lock);
    bool f = r->fresh;
    r->fresh = false;
    pthread_mutex_unlock(&r->lock);
    return f;
}
