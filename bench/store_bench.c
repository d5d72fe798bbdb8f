/* The cluster's state cost per create: one new sandbox's record written (sandbox_add, what cube-master does
 * per create), on single-node SQLite, on MySQL, and on MySQL with the Redis routes and events (whose write a
 * create does not wait for); and a change to a sandbox with Redis (sandbox_update, which waits for its
 * route). Prints tab-separated rows: name, p50 us, p90 us. Usage: store_bench DIR MYSQL_URL REDIS_ADDR
 * (servers already running). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "store.h"
#include "timeutil.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: store_bench DIR MYSQL_URL REDIS_ADDR\n");
        return 2;
    }
    cube_err err = {0};
    char db[512];
    snprintf(db, sizeof(db), "%s/bench.db", argv[1]);
    store *sqlite = store_sqlite_open(db, &err);
    store *mysql = sqlite ? store_mysql_open(argv[2], &err) : NULL;
    store *inner = mysql ? store_mysql_open(argv[2], &err) : NULL;
    store *routes = inner ? store_with_routes(inner, argv[3], &err) : NULL;
    if (!routes) {
        fprintf(stderr, "store_bench: %s\n", err.msg);
        return 1;
    }
    struct {
        store *st;
        const char *name;
        bool add;
    } runs[] = {{sqlite, "store_put_sqlite", true},
                {mysql, "store_put_mysql", true},
                {routes, "store_put_mysql_redis", true},
                {routes, "store_change_mysql_redis", false}};
    enum { N = 500 };
    static double t[N];
    for (size_t k = 0; k < sizeof(runs) / sizeof(runs[0]); k++) {
        store *st = runs[k].st;
        Cube__Sandbox sb = CUBE__SANDBOX__INIT;
        sb.template_id = "base";
        sb.state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
        sb.agent_address = "netns:/proc/1/ns/net:49983";
        sb.node_id = "node-1";
        char id[32];
        for (int i = 0; i < N && !runs[k].add; i++) { /* a change needs its record first (not timed) */
            snprintf(id, sizeof(id), "ibench%zu-%d", k, i);
            sb.sandbox_id = id;
            if (st->ops->sandbox_add(st, &sb, &err) < 0) {
                fprintf(stderr, "store_bench: %s\n", err.msg);
                return 1;
            }
        }
        for (int i = 0; i < N; i++) {
            snprintf(id, sizeof(id), "ibench%zu-%d", k, i);
            sb.sandbox_id = id;
            int64_t a = cube_now_mono_ns();
            if ((runs[k].add ? st->ops->sandbox_add(st, &sb, &err)
                             : st->ops->sandbox_update(st, &sb, CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING,
                                                       &err)) < 0) {
                fprintf(stderr, "store_bench: %s\n", err.msg);
                return 1;
            }
            t[i] = (double)(cube_now_mono_ns() - a) / 1e3;
        }
        for (int i = 0; i < N; i++) {
            snprintf(id, sizeof(id), "ibench%zu-%d", k, i);
            st->ops->sandbox_delete(st, id, &err);
        }
        qsort(t, N, sizeof(t[0]), cmp);
        printf("%s\t%.0f\t%.0f\n", runs[k].name, t[N / 2], t[N * 9 / 10]);
    }
    sqlite->ops->close(sqlite);
    mysql->ops->close(mysql);
    routes->ops->close(routes);
    return 0;
}
