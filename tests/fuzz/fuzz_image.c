/* Image input as cube-template reads it: after a first byte that picks the reader, the bytes are a layer
 * tarball (any compression and tar dialect libarchive reads) or a `docker save` tarball (manifest.json, a
 * config, layer tarballs). Whatever they hold, nothing may land outside the scratch rootfs: a canary
 * directory beside it stays empty and no new entry appears next to it (else abort, which the fuzzer reports).
 * Needs root (the extraction chroots into the rootfs). */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "template_import.h"

static char base[64];

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", base, name);
}

/* Only what the harness made: the input, the rootfs, the docker-save scratch, the canary (empty). */
static void check_nothing_escaped(void)
{
    static const char *const ours[] = {".", "..", "in", "root", "x", "canary"};
    DIR *d = opendir(base);
    if (!d) abort();
    for (struct dirent *de; (de = readdir(d));) {
        int known = 0;
        for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++) known |= strcmp(de->d_name, ours[i]) == 0;
        if (!known) {
            fprintf(stderr, "fuzz_image: '%s' appeared beside the rootfs\n", de->d_name);
            abort();
        }
    }
    closedir(d);
    char canary[128];
    path_of(canary, sizeof(canary), "canary");
    d = opendir(canary);
    if (!d) abort();
    for (struct dirent *de; (de = readdir(d));)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            fprintf(stderr, "fuzz_image: '%s' written into the canary\n", de->d_name);
            abort();
        }
    closedir(d);
}

static void remove_base(void)
{
    cube_rm_rf(base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!*base) {
        snprintf(base, sizeof(base), "/tmp/cube-fuzz-image-XXXXXX");
        if (!mkdtemp(base)) abort();
        atexit(remove_base);
        char canary[128];
        path_of(canary, sizeof(canary), "canary");
        mkdir(canary, 0755);
    }
    if (size < 1) return 0;
    char in[128], root[128], scratch[128];
    path_of(in, sizeof(in), "in");
    path_of(root, sizeof(root), "root");
    path_of(scratch, sizeof(scratch), "x");
    int fd = open(in, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) abort();
    if (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1)) abort();
    close(fd);
    mkdir(root, 0755);
    cube_err err = {0};
    if (data[0] & 1) {
        cJSON *config = NULL;
        char digest[80];
        tpl_import_docker_save(in, scratch, root, &config, digest, &err);
        cJSON_Delete(config);
    } else {
        tpl_apply_layer(root, in, &err);
    }
    check_nothing_escaped();
    cube_rm_rf(root);
    cube_rm_rf(scratch);
    return 0;
}
