/* Whether a sandbox disk is mounted at a path (see disk.h): its own file, for cube-janitor (static, small) as
 * well as the hypervisor and the node. */
#include <linux/magic.h>
#include <stdio.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include "disk.h"

bool hv_disk_mounted_at(const char *mountpoint, struct stat *st)
{
    /* only a loop-backed ext4 mounted right there: never the filesystem under it (the node's own) */
    struct stat parent;
    struct statfs fs;
    char up[4200];
    snprintf(up, sizeof(up), "%s/..", mountpoint);
    return stat(mountpoint, st) == 0 && stat(up, &parent) == 0 && st->st_dev != parent.st_dev &&
           major(st->st_dev) == HV_LOOP_MAJOR && statfs(mountpoint, &fs) == 0 &&
           fs.f_type == EXT4_SUPER_MAGIC;
}
