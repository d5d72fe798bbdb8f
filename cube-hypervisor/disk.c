/* The writable layer on a loop-mounted ext4 image (see disk.h). */
#include "disk.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <linux/magic.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fsutil.h"

extern char **environ;

/* how hv_disk_template makes an image: an inode a block, sized for its tables (change it with the recipe) */
#define DISK_FORMAT "i4k2"

int hv_disk_template(const char *dir, uint64_t size_mb, char *out, size_t cap, cube_err *err)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", dir);
    /* named by how it is made too (its version, DISK_FORMAT): a node's images made otherwise before (fewer
     * inodes, or less room left by them) are not taken for these */
    snprintf(out, cap, "%s/ext4-%llum-%s.img", dir, (unsigned long long)size_mb, DISK_FORMAT);
    if (access(out, R_OK) == 0) return 0;
    /* made under a temporary name and renamed: a half-made image is never taken for a template */
    char tmp[4400];
    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", out, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return cube_err_sys(err, errno, "create %s", tmp);
    /* the inode tables (below) take 1/16 of the image: it is made that much larger, so that a disk of
     * size_mb holds size_mb of files, as it did (and as a template's minFreeDiskMb asks) */
    int rc = ftruncate(fd, (off_t)((size_mb + size_mb / 12) << 20));
    int e = errno;
    close(fd);
    if (rc < 0) {
        unlink(tmp);
        return cube_err_sys(err, e, "size %s", tmp);
    }
    /* no journal (the layer lives and dies with its sandbox), inode tables initialised lazily by the kernel,
     * no blocks reserved for root: the sandbox gets the size it was given. An inode per 4 KiB block: files
     * run out with the space, not before it (mke2fs gives a disk of 1 GiB and more one per 16 KiB: on the
     * default 1 GiB disk, 200,000 empty files stopped at 65,517 with "No space left on device", the disk
     * nearly empty; a node_modules holds tens of thousands). Their tables take 1/16 of the image. */
    char *argv[] = {"mkfs.ext4", "-q", "-F", "-O",   "^has_journal", "-E",   "lazy_itable_init=1,nodiscard",
                    "-m",        "0",  "-b", "4096", "-i",           "4096", tmp,
                    NULL};
    pid_t pid;
    int status = 0;
    int sp = posix_spawnp(&pid, "mkfs.ext4", NULL, NULL, argv, environ);
    if (sp != 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        unlink(tmp);
        return cube_err_set(err, sp ? sp : EIO, "mkfs.ext4 %s failed%s", tmp,
                            sp == ENOENT ? " (e2fsprogs is not installed)" : "");
    }
    if (rename(tmp, out) < 0) {
        e = errno;
        unlink(tmp);
        return cube_err_sys(err, e, "rename %s", tmp);
    }
    return 0;
}

/* A sparse copy: only the template's data extents are read and written. */
static int sparse_copy(int in, int out, cube_err *err)
{
    struct stat st;
    if (fstat(in, &st) < 0) return cube_err_sys(err, errno, "stat the disk template");
    if (ftruncate(out, st.st_size) < 0) return cube_err_sys(err, errno, "size the sandbox disk");
    off_t pos = 0;
    while (pos < st.st_size) {
        off_t data = lseek(in, pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) break; /* only a hole is left */
            return cube_err_sys(err, errno, "seek the disk template");
        }
        off_t hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0) return cube_err_sys(err, errno, "seek the disk template");
        off_t ioff = data, ooff = data;
        while (ioff < hole) {
            ssize_t n = copy_file_range(in, &ioff, out, &ooff, (size_t)(hole - ioff), 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return cube_err_sys(err, n < 0 ? errno : EIO, "copy the disk template");
        }
        pos = hole;
    }
    return 0;
}

/* A free loop device bound to fd, reading and writing it directly (no second copy in the page cache) and
 * clearing itself when its last user goes. Returns the device open: AUTOCLEAR would clear it at this close
 * if nothing else held it, so the caller mounts it first. Another process may take the device offered between
 * asking and binding: then the next one. */
static int loop_bind(int fd, char *dev, size_t cap, cube_err *err)
{
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) return cube_err_sys(err, errno, "open /dev/loop-control");
    int rc = -1;
    for (int attempt = 0; attempt < 64; attempt++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) {
            cube_err_sys(err, errno, "find a free loop device");
            break;
        }
        snprintf(dev, cap, "/dev/loop%d", n);
        int lfd = open(dev, O_RDWR | O_CLOEXEC);
        if (lfd < 0) {
            cube_err_sys(err, errno, "open %s", dev);
            break;
        }
        struct loop_config lc = {.fd = (uint32_t)fd, .block_size = 4096};
        lc.info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
        if (ioctl(lfd, LOOP_CONFIGURE, &lc) == 0) {
            rc = lfd;
            break;
        }
        int e = errno;
        close(lfd);
        if (e != EBUSY) {
            cube_err_sys(err, e, "bind %s", dev);
            break;
        }
    }
    close(ctl);
    return rc;
}

/* A detached mount of the ext4 image open at img (bound to a loop device here); -1 with err. It belongs to no
 * namespace until placed, and goes (with the device) if never placed. */
static int mount_image(int img, const char *what, cube_err *err)
{
    char dev[64];
    int lfd = loop_bind(img, dev, sizeof(dev), err);
    if (lfd < 0) return -1;
    int mfd = -1, fs = (int)syscall(SYS_fsopen, "ext4", FSOPEN_CLOEXEC);
    if (fs < 0 || syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", dev, 0) < 0 ||
        /* the kernel would otherwise zero every inode table in the background after the mount: 16 MB of
         * writes through the loop device for each 1 GB of disk (inodes not yet in use are known as such from
         * the group descriptors either way) */
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "noinit_itable", NULL, 0) < 0 ||
        syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0 ||
        (mfd = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)) < 0)
        cube_err_sys(err, errno, "mount %s (%s)", dev, what);
    if (fs >= 0) close(fs);
    close(lfd); /* the mount holds the device now (or, failed, nothing does: it clears) */
    return mfd;
}

/* A new file with no name in the directory path names a file of (O_TMPFILE): nothing is left of it if the
 * process dies before it is given a name, or before it goes. -1 with errno. */
static int open_unnamed_beside(const char *path)
{
    char dir[4300];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = '\0';
    return open(slash ? dir : ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

int hv_disk_prepare(const char *template_img, const char *scratch, cube_err *err)
{
    int in = open(template_img, O_RDONLY | O_CLOEXEC);
    if (in < 0) return cube_err_sys(err, errno, "open disk template %s", template_img);
    /* a file with no name in scratch's directory: a process killed while it copies (a cubelet restarted, a
     * hypervisor SIGKILLed) leaves nothing behind, where a named copy stayed on the node's disk for good.
     * Named only where the filesystem cannot make one (no O_TMPFILE) */
    int out = open_unnamed_beside(scratch);
    bool named = out < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL);
    if (named) out = open(scratch, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        int e = errno;
        close(in);
        return cube_err_sys(err, e, "create %s", scratch);
    }
    int rc = sparse_copy(in, out, err);
    close(in);
    char what[4200];
    snprintf(what, sizeof(what), "a copy of %s", template_img);
    int mfd = rc == 0 ? mount_image(out, what, err) : -1;
    /* the device holds the file from here: its name is not needed any more, and the space goes with it */
    if (named) unlink(scratch);
    close(out);
    /* the overlay's upper and work directories, made now: a fresh filesystem's first allocations read its
     * bitmaps through the loop device, which is what the sandbox's start would otherwise wait for (~0.5 ms,
     * and the overlay's own probes of the upper layer then find them cached) */
    if (mfd >= 0 && (mkdirat(mfd, "upper", 0755) < 0 || mkdirat(mfd, "work", 0755) < 0)) {
        cube_err_sys(err, errno, "prepare %s", what);
        close(mfd);
        mfd = -1;
    }
    return mfd;
}

int hv_disk_open_kept(const char *template_img, const char *image, cube_err *err)
{
    int img = open(image, O_RDWR | O_CLOEXEC);
    if (img < 0 && errno != ENOENT) return cube_err_sys(err, errno, "open %s", image);
    /* new: a copy of the template, given its name once whole (nothing is left of one cut short) */
    if (img < 0) {
        int in = open(template_img, O_RDONLY | O_CLOEXEC);
        if (in < 0) return cube_err_sys(err, errno, "open disk template %s", template_img);
        int out = open_unnamed_beside(image);
        if (out < 0) {
            int e = errno;
            close(in);
            return cube_err_sys(err, e, "create %s", image);
        }
        int rc = sparse_copy(in, out, err);
        close(in);
        char fdpath[64];
        snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", out);
        if (rc == 0 && (fsync(out) < 0 || linkat(AT_FDCWD, fdpath, AT_FDCWD, image, AT_SYMLINK_FOLLOW) < 0))
            rc = cube_err_sys(err, errno, "keep %s", image);
        if (rc < 0) {
            close(out);
            return -1;
        }
        img = out;
    }
    int mfd = mount_image(img, image, err);
    close(img);
    return mfd;
}

int hv_disk_place(int mount_fd, const char *mountpoint, uid_t uid, cube_err *err)
{
    if (syscall(SYS_move_mount, mount_fd, "", AT_FDCWD, mountpoint, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return cube_err_sys(err, errno, "place the sandbox disk at %s", mountpoint);
    if (chown(mountpoint, uid, uid) < 0 || chmod(mountpoint, 0755) < 0) {
        int e = errno;
        umount2(mountpoint, MNT_DETACH);
        return cube_err_sys(err, e, "own %s", mountpoint);
    }
    return 0;
}

int hv_disk_attach(const char *template_img, const char *scratch, const char *mountpoint, uid_t uid,
                   cube_err *err)
{
    int mfd = hv_disk_prepare(template_img, scratch, err);
    if (mfd < 0) return -1;
    int rc = hv_disk_place(mfd, mountpoint, uid, err);
    close(mfd);
    return rc;
}

int hv_disk_keep(const char *mountpoint)
{
    struct stat st;
    if (!hv_disk_mounted_at(mountpoint, &st)) return -1;
    return (int)syscall(SYS_open_tree, AT_FDCWD, mountpoint, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
}

/* The clusters ext4 holds back on a filesystem of this many (ext4_calculate_resv_clusters: a fiftieth, at
 * most 4096; a cluster is a block on these disks) */
static uint64_t ext4_own_reserve(uint64_t blocks)
{
    return blocks / 50 < 4096 ? blocks / 50 : 4096;
}

/* ext4's reserved clusters of the disk on loop device dev */
static int set_reserved(dev_t dev, uint64_t clusters, cube_err *err)
{
    char p[96], v[32];
    snprintf(p, sizeof(p), "/sys/fs/ext4/loop%u/reserved_clusters", minor(dev));
    snprintf(v, sizeof(v), "%llu", (unsigned long long)clusters);
    return cube_write_string(p, v, err);
}

uint64_t hv_disk_pending(const char *mountpoint)
{
    struct stat st;
    struct statfs fs;
    if (!hv_disk_mounted_at(mountpoint, &st) || statfs(mountpoint, &fs) < 0) return 0;
    char p[96];
    snprintf(p, sizeof(p), "/sys/fs/ext4/loop%u/delayed_allocation_blocks", minor(st.st_dev));
    FILE *f = fopen(p, "re");
    unsigned long long blocks = 0;
    if (f) {
        if (fscanf(f, "%llu", &blocks) != 1) blocks = 0;
        fclose(f);
    }
    return (uint64_t)blocks * (uint64_t)fs.f_bsize;
}

int hv_disk_set_room(const char *mountpoint, bool limited, uint64_t writable_bytes, cube_err *err)
{
    struct stat st;
    struct statfs fs;
    if (!hv_disk_mounted_at(mountpoint, &st))
        return cube_err_set(err, ENOTSUP, "no sandbox disk at %s", mountpoint);
    if (statfs(mountpoint, &fs) < 0 || fs.f_bsize <= 0)
        return cube_err_sys(err, errno, "statfs %s", mountpoint);
    uint64_t blocks = (uint64_t)fs.f_blocks, own = ext4_own_reserve(blocks), target = own;
    if (limited) {
        /* free blocks less those that may still be written: these disks have no root reserve (mkfs -m 0), so
         * the rest is what no writer gets */
        uint64_t room = writable_bytes / (uint64_t)fs.f_bsize, bfree = (uint64_t)fs.f_bfree;
        target = bfree > room ? bfree - room : 0;
        if (target < own) target = own;
        if (target >= blocks) target = blocks - 1; /* ext4 refuses all of them */
    }
    return set_reserved(st.st_dev, target, err);
}

int hv_disk_renew(int mount_fd, cube_err *err)
{
    struct statfs fs;
    if (fstatfs(mount_fd, &fs) < 0) return cube_err_sys(err, errno, "statfs the disk");
    if (fs.f_type != EXT4_SUPER_MAGIC) return cube_err_set(err, EINVAL, "not a sandbox disk");
    struct stat st;
    /* a bound its last sandbox was given (hv_disk_set_room) is not the next one's */
    if (fstat(mount_fd, &st) == 0 && major(st.st_dev) == HV_LOOP_MAJOR)
        set_reserved(st.st_dev, ext4_own_reserve((uint64_t)fs.f_blocks), NULL);
    unsigned long long files = (unsigned long long)(fs.f_files - fs.f_ffree);
    if (files > HV_DISK_RENEW_MAX_FILES)
        return cube_err_set(err, EFBIG, "the disk holds %llu files: let go, not emptied", files);
    /* the sandbox only ever saw upper (its files) and work (overlayfs's); a shut-down filesystem (the
     * hypervisor's teardown stops one holding much unwritten data) fails here with EIO */
    if (cube_rm_rf_at(mount_fd, "upper") < 0 || cube_rm_rf_at(mount_fd, "work") < 0)
        return cube_err_sys(err, errno, "empty the disk");
    if (mkdirat(mount_fd, "upper", 0755) < 0 || mkdirat(mount_fd, "work", 0755) < 0)
        return cube_err_sys(err, errno, "prepare the disk");
    /* the space of what the sandbox wrote, and deleted, back to the node's disk: ext4 trims only the block
     * groups that freed blocks since their last trim (a fraction of a ms for a few files; ~4 ms the first
     * time, for the whole image) */
    int fd = openat(mount_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct fstrim_range all = {.start = 0, .len = UINT64_MAX, .minlen = 0};
    if (fd >= 0) {
        if (ioctl(fd, FITRIM, &all) < 0) { /* the space stays with the image until the disk goes */
        }
        close(fd);
    }
    return 0;
}
