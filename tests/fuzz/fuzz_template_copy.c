/* A template copy's archive as the importing node unpacks it (cl_unpack_layers): whatever the bytes, nothing
 * may land outside the scratch directory it unpacks into (a canary beside it stays empty and no new entry
 * appears next to it), and no device but a whiteout is made (else abort, which the fuzzer reports). */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cubelet_internal.h"
#include "fsutil.h"

static char base[PATH_MAX];

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", base, name);
}

static void check_dir_only(const char *dir, const char *const *ours, size_t n)
{
    DIR *d = opendir(dir);
    if (!d) abort();
    for (struct dirent *de; (de = readdir(d));) {
        int known = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
        for (size_t i = 0; i < n; i++) known |= strcmp(de->d_name, ours[i]) == 0;
        if (!known) {
            fprintf(stderr, "fuzz_template_copy: '%s' appeared in %s\n", de->d_name, dir);
            abort();
        }
    }
    closedir(d);
}

static int no_devices(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)flag;
    (void)ftw;
    if (S_ISBLK(st->st_mode) || (S_ISCHR(st->st_mode) && st->st_rdev != 0)) {
        fprintf(stderr, "fuzz_template_copy: device %s made\n", path);
        abort();
    }
    return 0;
}

static void remove_base(void)
{
    cube_rm_rf(base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!*base) {
        char tmpl[] = "/tmp/cube-fuzz-copy-XXXXXX";
        if (!mkdtemp(tmpl) || !realpath(tmpl, base)) abort();
        atexit(remove_base);
        char canary[PATH_MAX];
        path_of(canary, sizeof(canary), "canary");
        mkdir(canary, 0755);
    }
    char in[PATH_MAX], into[PATH_MAX], layers[PATH_MAX + 16];
    path_of(in, sizeof(in), "in");
    path_of(into, sizeof(into), "into");
    int fd = open(in, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) abort();
    if (size && write(fd, data, size) != (ssize_t)size) abort();
    close(fd);
    mkdir(into, 0755);
    snprintf(layers, sizeof(layers), "%s/layers", into);
    mkdir(layers, 0755);
    cube_err err = {0};
    cl_unpack_layers(in, into, 4, &err);
    static const char *const top[] = {"in", "into", "canary"}, *inside[] = {"layers"},
                             *numbered[] = {"0", "1", "2", "3"};
    check_dir_only(base, top, 3);
    check_dir_only(into, inside, 1);
    check_dir_only(layers, numbered, 4);
    char canary[PATH_MAX];
    path_of(canary, sizeof(canary), "canary");
    check_dir_only(canary, NULL, 0);
    nftw(into, no_devices, 16, FTW_PHYS);
    cube_rm_rf(into);
    return 0;
}
