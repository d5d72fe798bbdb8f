/* A sandbox's writable layer on a loop-mounted ext4 (cube-hypervisor/disk.c), without a sandbox: a disk
 * stopped at a teardown (hv_disk_forget) and an ended sandbox's disk emptied for the next (hv_disk_keep,
 * hv_disk_renew). Needs root (loop devices, mounts) and mkfs.ext4. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "disk.h"
#include "janitor.h"
#include "testutil.h"

static char workdir[256];

/* Writes a small file in dir; 0 or the errno. */
static int write_in(const char *dir)
{
    char f[600];
    snprintf(f, sizeof(f), "%s/probe", dir);
    int fd = open(f, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return errno;
    int e = write(fd, "x", 1) == 1 && fsync(fd) == 0 ? 0 : errno;
    close(fd);
    return e;
}

START_TEST(forgetting_a_disk_stops_that_disk_only)
{
    /* a loop-backed ext4 of this test's own, a directory inside it, a tmpfs beside it */
    char img[400], mnt[400], sub[450], tmp[400], cmd[1600];
    snprintf(img, sizeof(img), "%s/forget.img", workdir);
    snprintf(mnt, sizeof(mnt), "%s/forget-ext4", workdir);
    snprintf(sub, sizeof(sub), "%s/sub", mnt);
    snprintf(tmp, sizeof(tmp), "%s/forget-tmpfs", workdir);
    snprintf(
        cmd, sizeof(cmd),
        "truncate -s 64M '%s' && mkfs.ext4 -q -F -O ^has_journal '%s' && mkdir -p '%s' '%s' && mount -o loop "
        "'%s' '%s' && mkdir '%s' && mount -t tmpfs none '%s'",
        img, img, mnt, tmp, img, mnt, sub, tmp);
    ck_assert_int_eq(system(cmd), 0);
    /* not a mount point (a sandbox whose disk was never mounted), a tmpfs: left alone */
    hv_disk_forget(sub);
    hv_disk_forget(tmp);
    ck_assert_int_eq(write_in(sub), 0);
    ck_assert_int_eq(write_in(tmp), 0);
    /* the disk itself, with nothing waiting to be written: left for the unmount (a shutdown would cost more
     * than the little it saves, and puts an alert on the node's console) */
    hv_disk_forget(mnt);
    ck_assert_int_eq(write_in(mnt), 0);
    /* with 8 MB written and not yet on its device: stopped, nothing more reaches it */
    char big[500];
    snprintf(big, sizeof(big), "%s/big", mnt);
    int fd = open(big, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    static char chunk[1 << 20];
    memset(chunk, 'b', sizeof(chunk));
    for (int i = 0; i < 8; i++) ck_assert_int_eq(write(fd, chunk, sizeof(chunk)), (ssize_t)sizeof(chunk));
    close(fd);
    hv_disk_forget(mnt);
    ck_assert_int_eq(write_in(mnt), EIO);
    snprintf(cmd, sizeof(cmd), "umount '%s' && umount '%s' && rm -f '%s'", tmp, mnt, img);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Whether path exists (lstat: a link counts as itself). */
static bool there(const char *dir, const char *name)
{
    char p[700];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return lstat(p, &st) == 0;
}

/* Files run out with the space, not before it: a disk holds an inode per block (a node_modules of many small
 * files filled the default 1 GiB disk's 65,536 inodes with most of its space free). */
START_TEST(a_disk_holds_as_many_files_as_blocks)
{
    char dir[400], tpl[600], scratch[700], mnt[400];
    snprintf(dir, sizeof(dir), "%s/inodes", workdir);
    snprintf(mnt, sizeof(mnt), "%s/inodes-mnt", workdir);
    cube_err err = {0};
    ck_assert_msg(hv_disk_template(dir, 1024, tpl, sizeof(tpl), &err) == 0, "%s", err.msg);
    snprintf(scratch, sizeof(scratch), "%s.scratch", tpl);
    ck_assert_int_eq(mkdir(mnt, 0755), 0);
    int mfd = hv_disk_prepare(tpl, scratch, &err);
    ck_assert_msg(mfd >= 0, "%s", err.msg);
    ck_assert_int_eq(hv_disk_place(mfd, mnt, 1000, &err), 0);
    close(mfd);
    struct statvfs vfs;
    ck_assert_int_eq(statvfs(mnt, &vfs), 0);
    ck_assert_msg(vfs.f_files >= (1024ull << 20) / 4096, "%llu inodes on a 1 GiB disk",
                  (unsigned long long)vfs.f_files);
    ck_assert_msg(vfs.f_blocks * vfs.f_frsize >= 1024ull << 20, "%llu bytes for files", /* as many as asked */
                  (unsigned long long)(vfs.f_blocks * vfs.f_frsize));
    hv_disk_forget(mnt);
    ck_assert_int_eq(umount2(mnt, MNT_DETACH), 0);
}
END_TEST

/* A process killed while it copies a disk (a cubelet restarted with SIGKILL while it made disks ahead, a
 * hypervisor killed during its start) leaves no copy on the node's disk: the copy has no name until a loop
 * device holds it, and none after. Killed 40 times at moments across the copy. */
START_TEST(a_process_killed_while_it_copies_a_disk_leaves_no_copy)
{
    char dir[400], tpl[600], scratch[700];
    snprintf(dir, sizeof(dir), "%s/killed", workdir);
    cube_err err = {0};
    ck_assert_msg(hv_disk_template(dir, 256, tpl, sizeof(tpl), &err) == 0, "%s", err.msg);
    for (int i = 0; i < 40; i++) {
        snprintf(scratch, sizeof(scratch), "%s.ahead-%d", tpl, i);
        pid_t pid = fork();
        if (pid == 0) {
            for (int k = 0;; k++) {
                char name[720];
                snprintf(name, sizeof(name), "%s-%d", scratch, k);
                cube_err e = {0};
                int mfd = hv_disk_prepare(tpl, name, &e);
                if (mfd >= 0) close(mfd);
            }
        }
        nanosleep(&(struct timespec){0, (long)(i % 8) * 250000}, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *de; (de = readdir(d));)
        ck_assert_msg(de->d_name[0] == '.' || strcmp(de->d_name, strrchr(tpl, '/') + 1) == 0, "left: %s",
                      de->d_name);
    closedir(d);
}
END_TEST

START_TEST(an_ended_sandboxs_disk_is_emptied_for_the_next)
{
    char dir[400], tpl[600], scratch[700], mnt[400], out[400], cmd[2400];
    snprintf(dir, sizeof(dir), "%s/renew", workdir);
    snprintf(mnt, sizeof(mnt), "%s/renew-mnt", workdir);
    snprintf(out, sizeof(out), "%s/renew-outside", workdir);
    cube_err err = {0};
    ck_assert_msg(hv_disk_template(dir, 64, tpl, sizeof(tpl), &err) == 0, "%s", err.msg);
    snprintf(scratch, sizeof(scratch), "%s.scratch", tpl);
    ck_assert_int_eq(mkdir(mnt, 0755), 0);
    ck_assert_int_eq(mkdir(out, 0755), 0);
    ck_assert_int_eq(write_in(out), 0);
    ck_assert_int_eq(hv_disk_keep(out), -1); /* not a sandbox disk: nothing kept */

    /* a tenant's files: nested, a link to a directory outside the disk, overlayfs's volatile marker */
    int mfd = hv_disk_prepare(tpl, scratch, &err);
    ck_assert_msg(mfd >= 0, "%s", err.msg);
    ck_assert_int_eq(hv_disk_place(mfd, mnt, 1000, &err), 0);
    close(mfd);
    snprintf(
        cmd, sizeof(cmd),
        "cd '%s' && mkdir -p upper/a/b/c work/work/incompat/volatile/dirty && echo secret > upper/a/b/c/f "
        "&& ln -s '%s' upper/out && dd if=/dev/urandom of=upper/big bs=1M count=20 status=none && sync",
        mnt, out);
    ck_assert_int_eq(system(cmd), 0);
    int kept = hv_disk_keep(mnt);
    ck_assert_int_ge(kept, 0);
    ck_assert_int_eq(umount2(mnt, MNT_DETACH), 0); /* the hypervisor's teardown */
    ck_assert_msg(hv_disk_renew(kept, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(hv_disk_place(kept, mnt, 1001, &err), 0);
    close(kept);
    /* as a new one: upper and work empty, nothing of the tenant left, nothing outside touched */
    ck_assert(there(mnt, "upper") && there(mnt, "work") && there(mnt, "lost+found"));
    ck_assert(!there(mnt, "upper/a") && !there(mnt, "upper/out") && !there(mnt, "upper/big"));
    ck_assert(!there(mnt, "work/work"));
    ck_assert(there(out, "probe"));
    struct stat st;
    ck_assert_int_eq(stat(mnt, &st), 0);
    ck_assert_int_eq(st.st_uid, 1001);

    /* a disk holding more files than emptying one by one is worth: let go */
    snprintf(cmd, sizeof(cmd), "cd '%s/upper' && mkdir many && cd many && seq 1 %d | xargs touch", mnt,
             HV_DISK_RENEW_MAX_FILES + 10);
    ck_assert_int_eq(system(cmd), 0);
    kept = hv_disk_keep(mnt);
    ck_assert_int_ge(kept, 0);
    ck_assert_int_eq(umount2(mnt, MNT_DETACH), 0);
    ck_assert_int_eq(hv_disk_renew(kept, &err), -1);
    ck_assert_int_eq(err.code, EFBIG);
    close(kept);

    /* a disk the teardown shut down (much unwritten data): cannot be emptied, let go */
    mfd = hv_disk_prepare(tpl, scratch, &err);
    ck_assert_msg(mfd >= 0, "%s", err.msg);
    ck_assert_int_eq(hv_disk_place(mfd, mnt, 1000, &err), 0);
    close(mfd);
    snprintf(cmd, sizeof(cmd), "dd if=/dev/zero of='%s/upper/big' bs=1M count=8 status=none", mnt);
    ck_assert_int_eq(system(cmd), 0);
    kept = hv_disk_keep(mnt);
    ck_assert_int_ge(kept, 0);
    hv_disk_forget(mnt);
    ck_assert_int_eq(umount2(mnt, MNT_DETACH), 0);
    ck_assert_int_eq(hv_disk_renew(kept, &err), -1);
    close(kept);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s' && rmdir '%s'", dir, out, mnt);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
    if (geteuid() != 0) {
        printf("SKIP test_disk: needs root for loop devices and mounts\n");
        return 77;
    }
    if (system("command -v mkfs.ext4 >/dev/null") != 0) {
        printf("SKIP test_disk: mkfs.ext4 (e2fsprogs) is not installed\n");
        return 77;
    }
    snprintf(workdir, sizeof(workdir), "/tmp/cube-disk-test-%d", getpid());
    mkdir(workdir, 0711);
    Suite *s = suite_create("disk");
    TCase *tc = tcase_create("loop-backed ext4");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, forgetting_a_disk_stops_that_disk_only);
    tcase_add_test(tc, an_ended_sandboxs_disk_is_emptied_for_the_next);
    tcase_add_test(tc, a_disk_holds_as_many_files_as_blocks);
    tcase_add_test(tc, a_process_killed_while_it_copies_a_disk_leaves_no_copy);
    suite_add_tcase(s, tc);
    int rc = cube_run_suite(s);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", workdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", workdir);
    return rc;
}
