/* The janitor's cleanup (see janitor.h), shared by cube-janitor and the hypervisor's fallback. */
#include <fcntl.h>
#include <linux/magic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cgroup.h"
#include "janitor.h"

/* ext4's "going down" ioctl (linux/fs/ext4/ext4.h; not in the uapi headers): with NOLOGFLUSH the filesystem
 * stops at once and nothing more is written to its device */
#define CUBE_EXT4_IOC_SHUTDOWN           _IOR('X', 125, uint32_t)
#define CUBE_EXT4_GOING_FLAGS_NOLOGFLUSH 0x2
#define CUBE_LOOP_MAJOR                  7

void hv_disk_forget(const char *mountpoint)
{
    /* only a loop-backed ext4 mounted right there: never the filesystem under it (the node's own) */
    struct stat st, parent;
    struct statfs fs;
    char up[4200];
    snprintf(up, sizeof(up), "%s/..", mountpoint);
    if (stat(mountpoint, &st) < 0 || stat(up, &parent) < 0 || st.st_dev == parent.st_dev ||
        major(st.st_dev) != CUBE_LOOP_MAJOR || statfs(mountpoint, &fs) < 0 || fs.f_type != EXT4_SUPER_MAGIC)
        return;
    int fd = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    uint32_t how = CUBE_EXT4_GOING_FLAGS_NOLOGFLUSH;
    if (ioctl(fd, CUBE_EXT4_IOC_SHUTDOWN, &how) < 0) { /* an older kernel: the unmount writes it back */
    }
    close(fd);
}

void hv_janitor_clean(const char *cgroup_name, const char *rw, const char *root)
{
    cube_err err = {0};
    cgroup cg = {0};
    cg.ops = cgroup_detect(&err);
    snprintf(cg.name, sizeof(cg.name), "%s", cgroup_name);
    if (cg.ops && strncmp(cg.name, "cube/", 5) == 0) cg.ops->destroy(&cg);
    if (*rw) hv_disk_forget(rw);
    if (*rw) umount2(rw, MNT_DETACH);
    if (*root) rmdir(root);
    if (*rw) rmdir(rw);
}
