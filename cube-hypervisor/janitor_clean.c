/* The janitor's cleanup (see janitor.h), shared by cube-janitor and the hypervisor's fallback. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cgroup.h"
#include "disk.h"
#include "janitor.h"

/* ext4's "going down" ioctl (linux/fs/ext4/ext4.h; not in the uapi headers): with NOLOGFLUSH the filesystem
 * stops at once and nothing more is written to its device */
#define CUBE_EXT4_IOC_SHUTDOWN           _IOR('X', 125, uint32_t)
#define CUBE_EXT4_GOING_FLAGS_NOLOGFLUSH 0x2

/* Below this much data not yet written (4 KiB blocks), the unmount writes it in less than the shutdown
 * costs: ext4 reports a shutdown at KERN_ALERT, a line on the node's console for every sandbox (about a
 * millisecond of CPU each on a serial console, and a console no operator can read). */
#define CUBE_DISK_FORGET_MIN_BLOCKS 256

/* Whether the ext4 on device dev has data waiting to be written (delayed allocation: written by the sandbox,
 * not yet allocated on the disk), as far as it can be told; unknown counts as yes. */
static bool disk_holds_unwritten_data(dev_t dev)
{
    char link[64], target[256], path[320];
    snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", major(dev), minor(dev));
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0) return true;
    target[n] = '\0';
    const char *name = strrchr(target, '/');
    snprintf(path, sizeof(path), "/sys/fs/ext4/%s/delayed_allocation_blocks", name ? name + 1 : target);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return true;
    char buf[32];
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) return true;
    buf[n] = '\0';
    char *end;
    unsigned long long blocks = strtoull(buf, &end, 10);
    return end == buf || blocks >= CUBE_DISK_FORGET_MIN_BLOCKS;
}

void hv_disk_forget(const char *mountpoint)
{
    struct stat st;
    if (!hv_disk_mounted_at(mountpoint, &st)) return;
    if (!disk_holds_unwritten_data(st.st_dev)) return;
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

void hv_janitor_clean_record(const char *rec, size_t len)
{
    const char *f[3];
    size_t at = 0;
    for (int i = 0; i < 3; i++) {
        const char *nul = at < len ? memchr(rec + at, '\0', len - at) : NULL;
        if (!nul) return;
        f[i] = rec + at;
        at = (size_t)(nul - rec) + 1;
    }
    hv_janitor_clean(f[0], f[1], f[2]);
}
