/* The cluster's state cost per create: one sandbox record written (what cube-master does per create), on
 * single-node SQLite, on MySQL, and on MySQL with the Redis routes and events. Prints tab-separated rows:
 * name, p50 us, p90 us. Usage: store_bench DIR MYSQL_URL REDIS_ADDR (servers already running). */
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
    store *st[3] = {store_sqlite_open(db, &err), store_mysql_open(argv[2], &err), NULL};
    store *inner = store_mysql_open(argv[2], &err);
    st[2] = inner ? store_with_routes(inner, argv[3], &err) : NULL;
    const char *names[3] = {"store_put_sqlite", "store_put_mysql", "store_put_mysql_redis"};
    enum { N = 500 };
    static double t[N];
    for (int k = 0; k < 3; k++) {
        if (!st[k]) {
            fprintf(stderr, "store_bench: %s: %s\n", names[k], err.msg);
            return 1;
        }
        Cube__Sandbox sb = CUBE__SANDBOX__INIT;
        sb.template_id = "base";
        sb.state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
        sb.agent_address = "netns:/proc/1/ns/net:49983";
        sb.node_id = "node-1";
        char id[32];
        for (int i = 0; i < N; i++) {
            snprintf(id, sizeof(id), "ibench%d-%d", k, i);
            sb.sandbox_id = id;
            int64_t a = cube_now_mono_ns();
            if (st[k]->ops->sandbox_put(st[k], &sb, &err) < 0) {
                fprintf(stderr, "store_bench: %s\n", err.msg);
                return 1;
            }
            t[i] = (double)(cube_now_mono_ns() - a) / 1e3;
        }
        for (int i = 0; i < N; i++) {
            snprintf(id, sizeof(id), "ibench%d-%d", k, i);
            st[k]->ops->sandbox_delete(st[k], id, &err);
        }
        qsort(t, N, sizeof(t[0]), cmp);
        printf("%s\t%.0f\t%.0f\n", names[k], t[N / 2], t[N * 9 / 10]);
        st[k]->ops->close(st[k]);
    }
    return 0;
}
