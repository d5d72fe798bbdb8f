/* What a registry answers, as cubelet's pull reads it: a manifest or index (the linux/amd64 entry picked, a
 * digest only when well formed) and a WWW-Authenticate challenge's parameters (realm, service, scope), plus
 * image names as users write them. The first byte picks the parser; the rest is its input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    char *text = malloc(size);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    switch (data[0] % 3) {
    case 0: {
        char digest[80];
        int picked = reg_pick_platform(text, size - 1, "amd64", digest);
        if (picked == 1 && (strncmp(digest, "sha256:", 7) != 0 || strlen(digest) != 71)) abort();
        if (picked != 1 && *digest) abort();
        break;
    }
    case 1: {
        static const char *const names[] = {"realm", "service", "scope"};
        for (int i = 0; i < 3; i++) {
            char out[64];
            reg_challenge_param(text, names[i], out, sizeof(out));
            if (strlen(out) >= sizeof(out) || strchr(out, '"')) abort();
        }
        break;
    }
    default: {
        reg_image img;
        cube_err err = {0};
        if (reg_parse(text, &img, &err) == 0 && (!*img.host || !*img.repo || !*img.ref)) abort();
        break;
    }
    }
    free(text);
    return 0;
}
