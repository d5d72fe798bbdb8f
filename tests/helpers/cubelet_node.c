/* The harness of cubelet's tests (see cubelet_node.h). */
#include "cubelet_node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cubelet.pb-c.h"
#include "fsutil.h"
#include "testutil.h"

char *dir;
char log_path[300], sock[300];
cubelet c;
cube_rpc_server *srv;
cube_rpc_client *client;
long long reserve_mb, disk_reserve_mb;
int volume_mb;

void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "we");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

void template(const char *name, const char *config)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/templates/%s/current/rootfs", dir, name);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", p);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(p, sizeof(p), "%s/templates/%s/current/config.json", dir, name);
    write_text(p, config);
}

/* Lines of the fake's log that start with what. */
int count(const char *what)
{
    FILE *f = fopen(log_path, "re");
    char line[256];
    int n = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, what, strlen(what)) == 0 && line[strlen(what)] == ' ') n++;
    if (f) fclose(f);
    return n;
}

void wait_count(const char *what, int at_least)
{
    for (int i = 0; i < 200 && count(what) < at_least; i++) nanosleep(&(struct timespec){0, 50000000}, NULL);
    ck_assert_msg(count(what) >= at_least, "%d '%s' calls, expected %d", count(what), what, at_least);
}

/* A cubelet on the data directory dir, serving RPC; sandboxes_tmpfs as cubelet's main sets it, or not. */
void start_node_in_dir(bool sandboxes_tmpfs)
{
    snprintf(log_path, sizeof(log_path), "%s/hv.log", dir);
    setenv("FAKE_HV_LOG", log_path, 1);
    template("pooled", "{\"pool\":2,\"id\":\"p1\"}");
    template("cold", "{\"pool\":0}");
    template("broken", "{\"pool\":0,\"rootfs\":\"/nonexistent/broken\"}");
    template("sized", "{\"pool\":0,\"cpu\":4,\"memoryMB\":2048,\"diskMB\":32}");
    template("missized", "{\"pool\":0,\"cpu\":0,\"memoryMB\":1,\"diskMB\":1e12}");
    template("big-disk", "{\"pool\":0,\"diskMB\":2048}");
    static char hv[600], master[400]; /* the cubelet keeps these */
    snprintf(hv, sizeof(hv), "%s/fake_hypervisor", getenv("CUBE_TEST_BIN_DIR"));
    snprintf(master, sizeof(master), "unix:%s/no-master.sock", dir);
    cubelet_config cfg = {.data_dir = dir,
                          .node_id = "n1",
                          .master = master,
                          .hypervisor_bin = hv,
                          .agent_bin = "/bin/true",
                          .pool_size = 2,
                          .pool_max = 2,
                          .disk_mb = 16,
                          .metrics_sample_ms = 100,
                          .memory_reserve_mb = reserve_mb,
                          .disk_reserve_mb = disk_reserve_mb,
                          .volume_mb = volume_mb,
                          .sandboxes_tmpfs = sandboxes_tmpfs};
    cube_err err = {0};
    ck_assert_msg(cubelet_init(&c, &cfg, &err) == 0, "%s", err.msg);
    cubelet_start(&c);
    snprintf(sock, sizeof(sock), "unix:%s/cubelet.sock", dir);
    srv = cube_rpc_server_start(sock, cubelet_methods, &c, 16, &err);
    ck_assert_msg(srv != NULL, "%s", err.msg);
    client = cube_rpc_client_new(sock, &err);
    ck_assert_ptr_nonnull(client);
}

/* The same on a fresh data directory. */
void start_node(bool sandboxes_tmpfs)
{
    dir = cube_test_tmpdir();
    start_node_in_dir(sandboxes_tmpfs);
}

void stop_node(void)
{
    cube_rpc_client_free(client);
    cube_rpc_server_stop(srv);
    cubelet_stop(&c);
}

void setup(void)
{
    start_node(false);
}

void teardown(void)
{
    stop_node();
    char
        vol[700]; /* a volume with a disk of its own stays mounted on the node past cubelet (a failed case) */
    snprintf(vol, sizeof(vol), "%s/volumes/vol1", dir);
    umount2(vol, MNT_DETACH);
    cube_rm_rf(dir);
    free(dir);
}

/* CreateSandbox; 0 with *from_pool, or -1 with err. */
int create(const char *sandbox, const char *tpl, bool *from_pool, cube_err *err)
{
    Cube__NodeCreateRequest req = CUBE__NODE_CREATE_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox;
    req.template_id = (char *)tpl;
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 20000};
    if (cube_rpc_call(client, "/cube.Cubelet/CreateSandbox", &req.base, &cube__node_sandbox__descriptor,
                      &resp, &o, err) < 0)
        return -1;
    Cube__NodeSandbox *sb = (Cube__NodeSandbox *)resp;
    if (from_pool) *from_pool = sb->from_pool;
    ck_assert_ptr_nonnull(strstr(sb->agent_address, "netns:/proc/"));
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

int by_ref(const char *method, const char *sandbox, const ProtobufCMessageDescriptor *rd, cube_err *err)
{
    Cube__NodeSandboxRef ref = CUBE__NODE_SANDBOX_REF__INIT;
    ref.sandbox_id = (char *)sandbox;
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 20000};
    int rc = cube_rpc_call(client, method, &ref.base, rd, &resp, &o, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* VolumeFiles on volume vol1; 0 with *out (free_unpacked), or -1 with err */
int vf(const vf_args *a, Cube__VolumeFileResponse **out, cube_err *err)
{
    Cube__VolumeFileRequest r = CUBE__VOLUME_FILE_REQUEST__INIT;
    r.volume_id = "vol1";
    r.op = (char *)a->op;
    r.path = (char *)(a->path ? a->path : "");
    r.uid = a->uid == -2 ? 0 : a->uid ? a->uid : -1;
    r.gid = a->gid ? a->gid : -1;
    r.mode = a->mode ? a->mode : -1;
    r.force = a->force;
    r.last = a->last;
    r.offset = a->offset;
    r.upload_id = (char *)(a->upload_id ? a->upload_id : "");
    r.depth = a->depth;
    if (a->data) {
        r.data.data = (uint8_t *)a->data;
        r.data.len = strlen(a->data);
    }
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 5000};
    *out = NULL;
    if (cube_rpc_call(client, "/cube.Cubelet/VolumeFiles", &r.base, &cube__volume_file_response__descriptor,
                      &resp, &o, err) < 0)
        return -1;
    *out = (Cube__VolumeFileResponse *)resp;
    return 0;
}

void vf_ok(const vf_args *a, Cube__VolumeFileResponse **out)
{
    cube_err err = {0};
    ck_assert_msg(vf(a, out, &err) == 0, "%s %s: %s", a->op, a->path, err.msg);
}

int vf_errno(const vf_args *a)
{
    cube_err err = {0};
    Cube__VolumeFileResponse *r = NULL;
    int rc = vf(a, &r, &err);
    if (r) cube__volume_file_response__free_unpacked(r, NULL);
    return rc == 0 ? 0 : err.code;
}

/* What the test node's disk (its data directory's) has free, MB. */
long long node_free_mb(void)
{
    struct statvfs vfs;
    ck_assert_int_eq(statvfs(dir, &vfs), 0);
    return (long long)((unsigned long long)vfs.f_bavail * vfs.f_frsize >> 20);
}

/* The node again, keeping these for itself (its memory_reserve_mb, disk_reserve_mb). */
void restart_node(long long memory_mb, long long disk_mb)
{
    teardown();
    reserve_mb = memory_mb;
    disk_reserve_mb = disk_mb;
    setup();
}

int fork_children(const char *parent, unsigned n, cube_err *err)
{
    Cube__NodeCreateRequest kids[4], *kp[4];
    char ids[4][32];
    Cube__NodeForkRequest req = CUBE__NODE_FORK_REQUEST__INIT;
    req.parent_id = (char *)parent;
    for (unsigned i = 0; i < n && i < 4; i++) {
        kids[i] = (Cube__NodeCreateRequest)CUBE__NODE_CREATE_REQUEST__INIT;
        snprintf(ids[i], sizeof(ids[i]), "%s-kid-%u", parent, i);
        kids[i].sandbox_id = ids[i];
        kp[i] = &kids[i];
    }
    req.n_children = n;
    req.children = kp;
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 20000};
    int rc = cube_rpc_call(client, "/cube.Cubelet/ForkSandbox", &req.base,
                           &cube__node_fork_response__descriptor, &resp, &o, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}
