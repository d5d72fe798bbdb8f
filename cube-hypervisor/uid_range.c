/* A host uid range per sandbox (uid_range.h). */
#include "uid_range.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int hv_uid_range_claim(uid_t *first, cube_err *err)
{
    int dir = open(HV_UID_RANGES_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir < 0 && errno == ENOENT) { /* the node's first sandbox since boot */
        if ((mkdir("/run/cube", 0755) < 0 && errno != EEXIST) ||
            (mkdir(HV_UID_RANGES_DIR, 0700) < 0 && errno != EEXIST))
            return cube_err_sys(err, errno, "mkdir %s", HV_UID_RANGES_DIR);
        dir = open(HV_UID_RANGES_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (dir < 0) return cube_err_sys(err, errno, "open %s", HV_UID_RANGES_DIR);
    /* from a place of this process's own, so that hypervisors starting at once seldom try the same file */
    unsigned start = (unsigned)getpid() % HV_UID_RANGE_COUNT;
    for (unsigned i = 0; i < HV_UID_RANGE_COUNT; i++) {
        unsigned k = (start + i) % HV_UID_RANGE_COUNT;
        char name[16];
        snprintf(name, sizeof(name), "%u", k);
        int fd = openat(dir, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            int e = errno;
            close(dir);
            return cube_err_sys(err, e, "open %s/%s", HV_UID_RANGES_DIR, name);
        }
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            close(dir);
            *first = HV_UID_RANGE_FIRST + k * HV_UID_RANGE_SIZE;
            return fd;
        }
        int e = errno;
        close(fd);
        if (e != EWOULDBLOCK) {
            close(dir);
            return cube_err_sys(err, e, "lock %s/%s", HV_UID_RANGES_DIR, name);
        }
    }
    close(dir);
    return cube_err_set(err, EUSERS, "all %u host uid ranges of sandboxes are in use", HV_UID_RANGE_COUNT);
}
