/* The node's cgroup setting for sandbox starts (see cgroup_tune.h). */
#include "cgroup_tune.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"

/* Options in /proc/self/mounts that belong to the mount, not to the cgroup2 superblock. */
static bool vfs_option(const char *o)
{
    static const char *const vfs[] = {"rw",       "ro",          "nosuid",   "suid",    "nodev", "dev",
                                      "noexec",   "exec",        "relatime", "noatime", "atime", "nodiratime",
                                      "lazytime", "strictatime", "sync",     "dirsync", "mand",  "nomand"};
    for (size_t i = 0; i < sizeof(vfs) / sizeof(vfs[0]); i++)
        if (strcmp(o, vfs[i]) == 0) return true;
    return false;
}

static int fsconfig_flag(int fd, const char *key)
{
    return (int)syscall(SYS_fsconfig, fd, FSCONFIG_SET_FLAG, key, NULL, 0);
}

int cube_cgroup_favor_dynmods(cube_err *err)
{
    FILE *f = fopen("/proc/self/mounts", "re");
    if (!f) return cube_err_sys(err, errno, "read /proc/self/mounts");
    char line[4096], dir[4096] = "", opts[2048] = "";
    bool found = false;
    while (fgets(line, sizeof(line), f)) {
        char d[4096], type[64], o[2048];
        if (sscanf(line, "%*s %4095s %63s %2047s", d, type, o) == 3 && strcmp(type, "cgroup2") == 0) {
            snprintf(dir, sizeof(dir), "%s", d);
            snprintf(opts, sizeof(opts), "%s", o);
            found = true;
            break;
        }
    }
    fclose(f);
    if (!found) return cube_err_set(err, ENOENT, "no cgroup2 mount to set favordynmods on");
    if (strstr(opts, "favordynmods")) return 0;
    /* fspick + reconfigure: only the superblock's options change, the mount's own (nosuid, ...) stay; every
     * option it has is given again with the new one, so that nothing it had (nsdelegate, ...) is dropped */
    int fd = (int)syscall(SYS_fspick, AT_FDCWD, dir, FSPICK_CLOEXEC);
    if (fd < 0) return cube_err_sys(err, errno, "fspick %s", dir);
    int rc = 0;
    char *save = NULL;
    for (char *o = strtok_r(opts, ",", &save); o && rc == 0; o = strtok_r(NULL, ",", &save))
        if (!vfs_option(o) && fsconfig_flag(fd, o) < 0) rc = cube_err_sys(err, errno, "keep option %s", o);
    if (rc == 0 && fsconfig_flag(fd, "favordynmods") < 0)
        rc = cube_err_sys(err, errno, "option favordynmods");
    if (rc == 0 && syscall(SYS_fsconfig, fd, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0) < 0)
        rc = cube_err_sys(err, errno, "reconfigure %s", dir);
    close(fd);
    if (rc == 0) cube_log_info("cgroups set to favour task moves", "mount=%s option=favordynmods", dir);
    return rc;
}
