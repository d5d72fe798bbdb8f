/* cube-master's core on a SQLite store in a temp dir, served on a unix socket, for tests that drive it with
 * fake nodes (master_fixture.h). */
#include "master_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

char dir[256];
store *st;
master m;
cube_rpc_server *master_srv;
cube_rpc_client *mc;

void node_reports_room(fake_node *f, unsigned ready, long long memory_left_mb)
{
    Cube__NodeInfo ni = CUBE__NODE_INFO__INIT;
    ni.node_id = f->id;
    ni.address = f->addr;
    ni.backend = "ns";
    char *tpl = "base";
    ni.n_templates = 1;
    ni.templates = &tpl;
    Cube__NodeInfo__PoolReadyEntry pe = CUBE__NODE_INFO__POOL_READY_ENTRY__INIT, *pep = &pe;
    pe.key = "base";
    pe.value = ready;
    ni.n_pool_ready = 1;
    ni.pool_ready = &pep;
    Cube__Resources res = CUBE__RESOURCES__INIT;
    Cube__TemplateSize size = CUBE__TEMPLATE_SIZE__INIT, *sizep = &size;
    if (memory_left_mb >= 0) {
        res.memory_mb = 512;
        res.disk_mb = 1024;
        size.template_id = "base";
        size.resources = &res;
        ni.n_template_sizes = 1;
        ni.template_sizes = &sizep;
        ni.room_reported = true;
        ni.memory_left_mb = memory_left_mb;
        ni.disk_left_mb = 100000;
    }
    pthread_mutex_lock(&f->lock);
    ni.running = (uint32_t)f->n;
    pthread_mutex_unlock(&f->lock);
    node_sends(&ni);
}

void node_sends(const Cube__NodeInfo *ni)
{
    ProtobufCMessage *r = NULL;
    cube_err err = {0};
    ck_assert_msg(cube_rpc_call(mc, "/cube.Master/Heartbeat", &ni->base,
                                &cube__register_node_response__descriptor, &r, NULL, &err) == 0,
                  "heartbeat: %s", err.msg);
    protobuf_c_message_free_unpacked(r, NULL);
}

void node_reports(fake_node *f, unsigned ready)
{
    node_reports_room(f, ready, -1);
}

void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/cube-master-test-%d", getpid());
    mkdir(dir, 0700);
    char p[300], addr[320];
    snprintf(p, sizeof(p), "%s/store.db", dir);
    cube_err err = {0};
    st = store_sqlite_open(p, &err);
    ck_assert_msg(st != NULL, "%s", err.msg);
    ck_assert_int_eq(master_init(&m, st, &err), 0);
    m.heartbeat_ms = 100; /* a node silent 300 ms is not scheduled; lost (and removable) after node_lost_ms */
    m.node_lost_ms = 400;
    snprintf(addr, sizeof(addr), "unix:%s/master.sock", dir);
    master_srv = cube_rpc_server_start(addr, master_methods, &m, 16, &err);
    ck_assert_msg(master_srv != NULL, "%s", err.msg);
    mc = cube_rpc_client_new(addr, &err);
    ck_assert_ptr_nonnull(mc);
}

void teardown(void)
{
    cube_rpc_client_free(mc);
    cube_rpc_server_stop(master_srv);
    master_stop(&m);
    st->ops->close(st);
    char rm[300];
    snprintf(rm, sizeof(rm), "rm -rf %s", dir);
    if (system(rm) != 0) fprintf(stderr, "could not remove %s\n", dir);
}
