/* A node's room for sandboxes (cubelet/node_room.c, the disk guard in metrics_sampler.c, volumes with disks
 * of their own): what is left of its memory and disk beyond its reserves, the creates, forks and copies it
 * refuses for want of it, the bounds it sets on what running sandboxes and volumes may still write. Against
 * a fake cube-hypervisor (cubelet_node.h); needs root. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cubelet_node.h"
#include "disk.h"
#include "fsutil.h"
#include "testutil.h"

/* A volume is a filesystem of its own (cubelet --volume-mb): writes past its size are ENOSPC to the writer,
 * whoever writes (a sandbox that mounts it, or the volume API, as here), instead of filling the node's disk;
 * destroyed, its disk goes with it. */
START_TEST(a_volume_is_a_disk_of_its_own_size)
{
    teardown();
    volume_mb = 64;
    setup();
    Cube__VolumeFileResponse *r;
    vf_ok(
        &(vf_args){.op = "write", .path = "/small.txt", .upload_id = "up000001", .data = "hi", .last = true},
        &r);
    cube__volume_file_response__free_unpacked(r, NULL);
    char mnt[700], image[700];
    snprintf(mnt, sizeof(mnt), "%s/volumes/vol1", dir);
    snprintf(image, sizeof(image), "%s/volumes/vol1.img", dir);
    struct stat st;
    ck_assert_msg(hv_disk_mounted_at(mnt, &st), "the volume is not a disk of its own");
    ck_assert_int_eq(st.st_uid, 101000); /* its root: the sandboxes' user's */
    vf_ok(&(vf_args){.op = "list", .path = "/"}, &r);
    ck_assert_int_eq(r->n_entries, 1); /* small.txt: mkfs's lost+found is nothing of the volume's */
    cube__volume_file_response__free_unpacked(r, NULL);
    static char chunk[1 << 20];
    memset(chunk, 'x', sizeof(chunk) - 1);
    cube_err err = {0};
    uint64_t off = 0;
    int rc = 0;
    while (off < (100ull << 20) && rc == 0) {
        rc = vf(
            &(vf_args){.op = "write", .path = "/big", .upload_id = "up000002", .offset = off, .data = chunk},
            &r, &err);
        if (rc == 0) {
            cube__volume_file_response__free_unpacked(r, NULL);
            off += sizeof(chunk) - 1;
        }
    }
    ck_assert_msg(rc < 0 && strstr(err.msg, "No space left on device"), "wrote %llu: %s",
                  (unsigned long long)off, err.msg);
    ck_assert_uint_lt(off, 64ull << 20);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "destroy"}), 0);
    ck_assert(!hv_disk_mounted_at(mnt, &st));
    ck_assert_int_eq(access(image, F_OK), -1);
    ck_assert_int_eq(access(mnt, F_OK), -1);
}
END_TEST

/* A volume's disk is a sparse image too: while the node's disk is short of what it could take, the node
 * bounds it like a sandbox's (here: ~60 MB it could take, 32 MB the node has beyond its reserve). */
START_TEST(a_volume_is_bounded_while_the_nodes_disk_is_short)
{
    long long free_mb = node_free_mb();
    teardown();
    volume_mb = 64;
    disk_reserve_mb = free_mb - 32;
    setup();
    Cube__VolumeFileResponse *r;
    vf_ok(
        &(vf_args){.op = "write", .path = "/small.txt", .upload_id = "up000001", .data = "hi", .last = true},
        &r);
    cube__volume_file_response__free_unpacked(r, NULL);
    char mnt[700];
    snprintf(mnt, sizeof(mnt), "%s/volumes/vol1", dir);
    struct statfs fs;
    long long avail_mb = 64;
    for (int i = 0; i < 100 && avail_mb > 32; i++) {
        nanosleep(&(struct timespec){0, 50 * 1000000}, NULL);
        ck_assert_int_eq(statfs(mnt, &fs), 0);
        avail_mb = (long long)((unsigned long long)fs.f_bavail * (unsigned long long)fs.f_bsize >> 20);
    }
    ck_assert_msg(avail_mb <= 32, "the volume shows %lld MB free", avail_mb);
    ck_assert_int_eq(vf_errno(&(vf_args){.op = "destroy"}), 0);
}
END_TEST

/* A snapshot or a fork copies the sandbox's files onto the node's disk: refused in words where they would
 * not fit beyond what the node keeps for itself (here its files take 1 GB more than the node has free). */
START_TEST(a_copy_the_nodes_disk_cannot_hold_is_refused_in_words)
{
    char used[32];
    snprintf(used, sizeof(used), "%lld", node_free_mb() + 1024);
    setenv("FAKE_HV_DISK_USED_MB", used, 1);
    cube_err err = {0};
    ck_assert_msg(create("full-1", "cold", NULL, &err) == 0, "%s", err.msg);
    unsetenv("FAKE_HV_DISK_USED_MB");
    Cube__NodeSnapshotRequest req = CUBE__NODE_SNAPSHOT_REQUEST__INIT;
    req.sandbox_id = "full-1";
    req.snapshot_id = "snap-full";
    ProtobufCMessage *resp = NULL;
    cube_rpc_call_opts o = {.timeout_ms = 20000};
    ck_assert_int_eq(cube_rpc_call(client, "/cube.Cubelet/SnapshotSandbox", &req.base,
                                   &cube__empty__descriptor, &resp, &o, &err),
                     -1);
    ck_assert_int_eq(err.code, EAGAIN);
    char want[96];
    snprintf(want, sizeof(want), "out of disk for a copy of sandbox full-1: its files take %s MB", used);
    ck_assert_msg(strstr(err.msg, want), "%s", err.msg);
    cube_err_clear(&err);
    ck_assert_int_eq(fork_children("full-1", 1, &err), -1);
    ck_assert_int_eq(err.code, EAGAIN);
    snprintf(want, sizeof(want), "out of disk for a copy of the sandbox to fork: its files take %s MB", used);
    ck_assert_msg(strstr(err.msg, want), "%s", err.msg);
}
END_TEST

/* A node without the room for one more sandbox of a template keeps no pool of it (the creates it would serve
 * are refused): none is started for it, and when the room comes back, the pool fills again. */
START_TEST(no_pool_is_kept_where_the_node_has_no_room)
{
    long long avail_mb = cube_meminfo_kb("MemAvailable") / 1024;
    restart_node(avail_mb + 1024, 0);
    nanosleep(&(struct timespec){1, 500 * 1000000}, NULL);
    ck_assert_int_eq(count("Start"), 0); /* the new node's log: none started */
    restart_node(0, 0);
    wait_count("Start", 2); /* the pooled template's two */
}
END_TEST

/* Sandboxes' memory limits are promises (idle ones hold a few MB), but a node whose memory is nearly all in
 * use refuses a sandbox that could not use its limit without squeezing the running ones: in words, with
 * the figures, as "busy" (EAGAIN, which masters take to another node). The node's reserve here leaves
 * about 1 GB for sandboxes: a 512 MB sandbox starts, a 2 GB one and a fork into three 512 MB ones do not. */
START_TEST(a_node_out_of_memory_for_sandboxes_refuses_creates_in_words)
{
    long long avail_mb = cube_meminfo_kb("MemAvailable") / 1024;
    ck_assert_int_gt(avail_mb, 2560);
    restart_node(avail_mb - 1024, 0);
    cube_err err = {0};
    ck_assert_msg(create("mem-small", "pooled", NULL, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(create("mem-big", "sized", NULL, &err), -1);
    ck_assert_int_eq(err.code, EAGAIN);
    ck_assert_msg(strstr(err.msg, "out of memory for sandboxes") &&
                      strstr(err.msg, "template 'sized' may use "
                                      "2048 MB"),
                  "%s", err.msg);
    char kept[64];
    snprintf(kept, sizeof(kept), "%lld MB kept for the node", reserve_mb);
    ck_assert_msg(strstr(err.msg, kept), "%s", err.msg);
    cube_err_clear(&err);
    ck_assert_int_eq(fork_children("mem-small", 3, &err), -1);
    ck_assert_int_eq(err.code, EAGAIN);
    ck_assert_msg(strstr(err.msg, "the sandboxes of template 'pooled' may use 1536 MB"), "%s", err.msg);
    /* with the node's memory to spare, the same create starts */
    restart_node(0, 0);
    cube_err_clear(&err);
    ck_assert_msg(create("mem-big", "sized", NULL, &err) == 0, "%s", err.msg);
}
END_TEST

/* Sandboxes' disks are sparse images on the node's disk: one more is not started where the node's free space,
 * beyond what it keeps for itself, is less than that sandbox may write (past it, a sandbox's writes would be
 * lost behind its own filesystem). Here the node keeps 1 GB more than it has free. */
START_TEST(a_node_out_of_disk_for_sandboxes_refuses_creates_in_words)
{
    long long free_mb = node_free_mb();
    restart_node(0, free_mb + 1024);
    cube_err err = {0};
    ck_assert_int_eq(create("disk-1", "cold", NULL, &err), -1);
    ck_assert_int_eq(err.code, EAGAIN);
    ck_assert_msg(strstr(err.msg, "out of disk for sandboxes: 0 MB left for them") &&
                      strstr(err.msg, "a sandbox of template 'cold' may write 16 MB"),
                  "%s", err.msg);
    restart_node(0, 0);
    cube_err_clear(&err);
    ck_assert_msg(create("disk-1", "cold", NULL, &err) == 0, "%s", err.msg);
}
END_TEST

/* While what the handed-out sandboxes' disks could still take is more than the node's disk has free beyond
 * its reserve, each sandbox's writes are bounded (SetDiskRoom: ENOSPC at its share, see test_hypervisor);
 * once the node has the room again, the bounds go. Here the node has ~3 GB to spare: one sandbox with a 2 GB
 * disk and one with 16 MB fit it; a second 2 GB one is admitted (2 GB free for it) but all three could write
 * more than the node has, so all are bounded; with it killed, the others are let go. */
START_TEST(the_node_bounds_sandboxes_writes_while_its_disk_is_short)
{
    long long free_mb = node_free_mb();
    ck_assert_int_gt(free_mb, 8192);
    restart_node(0, free_mb - 3072);
    cube_err err = {0};
    ck_assert_msg(create("small", "cold", NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(create("big-1", "big-disk", NULL, &err) == 0, "%s", err.msg);
    wait_count("Stats", 4);
    ck_assert_int_eq(count("DiskBound"), 0); /* 2 GB and 16 MB: the node has the room */
    ck_assert_msg(create("big-2", "big-disk", NULL, &err) == 0, "%s", err.msg);
    wait_count("DiskBound", 3); /* all three, each to an equal share */
    ck_assert_int_eq(count("DiskLifted"), 0);
    ck_assert_msg(by_ref("/cube.Cubelet/KillSandbox", "big-2", &cube__empty__descriptor, &err) == 0, "%s",
                  err.msg);
    wait_count("DiskLifted", 2);
}
END_TEST

/* Older cubelets named the disks they made ahead (<template>.ahead-<pid>-<n>) until a loop device held them,
 * and one killed meanwhile left its copy on the node's disk for good: a cubelet starting removes those whose
 * maker is gone, not those of a process alive. */
START_TEST(a_cubelet_starting_removes_disk_copies_an_older_one_left)
{
    stop_node();
    pid_t gone = fork();
    if (gone == 0) _exit(0);
    waitpid(gone, NULL, 0);
    char stale[700], alive[700];
    snprintf(stale, sizeof(stale), "%s/disks/ext4-16m-i4k2.img.ahead-%d-3", dir, (int)gone);
    snprintf(alive, sizeof(alive), "%s/disks/ext4-16m-i4k2.img.ahead-%d-0", dir, (int)getppid());
    write_text(stale, "x");
    write_text(alive, "x");
    start_node_in_dir(false);
    ck_assert_int_eq(access(stale, F_OK), -1);
    ck_assert_int_eq(access(alive, F_OK), 0);
}
END_TEST

int main(void)
{
    if (geteuid() != 0) {
        printf("SKIP test_node_room: the fake hypervisor's agent needs a network namespace (root)\n");
        return 77;
    }
    Suite *s = suite_create("node room");
    TCase *tc = tcase_create("with a fake hypervisor");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_volume_is_a_disk_of_its_own_size);
    tcase_add_test(tc, a_volume_is_bounded_while_the_nodes_disk_is_short);
    tcase_add_test(tc, a_copy_the_nodes_disk_cannot_hold_is_refused_in_words);
    tcase_add_test(tc, no_pool_is_kept_where_the_node_has_no_room);
    tcase_add_test(tc, a_node_out_of_memory_for_sandboxes_refuses_creates_in_words);
    tcase_add_test(tc, a_node_out_of_disk_for_sandboxes_refuses_creates_in_words);
    tcase_add_test(tc, the_node_bounds_sandboxes_writes_while_its_disk_is_short);
    tcase_add_test(tc, a_cubelet_starting_removes_disk_copies_an_older_one_left);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
