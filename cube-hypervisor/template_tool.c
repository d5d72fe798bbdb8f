/* cube-template: template rootfs chores that need no daemon.
 *   cube-template shift DIR UID_BASE   own every file of DIR by UID_BASE + its current uid/gid, keeping modes
 *                                      (setuid bits included), so root inside a sandbox owns what root owned.
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned long base;

static int shift_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)flag;
    (void)ftw;
    if (st->st_uid >= base) return 0; /* already shifted: the tool is idempotent */
    if (lchown(path, (uid_t)(base + st->st_uid), (gid_t)(base + st->st_gid)) < 0) {
        fprintf(stderr, "cube-template: chown %s: %s\n", path, strerror(errno));
        return -1;
    }
    /* chown clears setuid/setgid bits: put the mode back (symlinks have none) */
    if (!S_ISLNK(st->st_mode) && (st->st_mode & (S_ISUID | S_ISGID)) &&
        chmod(path, st->st_mode & 07777) < 0) {
        fprintf(stderr, "cube-template: chmod %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "shift") == 0) {
        char *end;
        base = strtoul(argv[3], &end, 10);
        if (*end || base == 0 || base > 4000000000UL) {
            fprintf(stderr, "cube-template: UID_BASE must be a positive integer\n");
            return 2;
        }
        return nftw(argv[2], shift_one, 64, FTW_PHYS | FTW_MOUNT) == 0 ? 0 : 1;
    }
    fprintf(stderr, "usage: cube-template shift DIR UID_BASE\n");
    return 2;
}
