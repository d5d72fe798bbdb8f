/* Images from an OCI/Docker registry (distribution API v2) into an OCI image layout directory, for a build's
 * fromImage: the manifest (an index or list is resolved to this machine's linux platform), the config and
 * the layers, each checked against its digest. Token auth (WWW-Authenticate: Bearer, with the user's
 * credentials if given) and basic auth; https, except to loopback registries (http). */
#ifndef CUBE_CUBELET_REGISTRY_H
#define CUBE_CUBELET_REGISTRY_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

typedef struct reg_image {
    char host[256]; /* registry-1.docker.io for Docker Hub names */
    char repo[512]; /* library/python */
    char ref[256];  /* a tag, or a digest "sha256:..." */
    bool plain;     /* http: a loopback registry */
} reg_image;

/* "python:3", "ghcr.io/o/r:tag", "localhost:5000/x@sha256:..." (tag "latest" when none). EINVAL when bad. */
int reg_parse(const char *name, reg_image *out, cube_err *err);

typedef void (*reg_log_fn)(void *arg, const char *line);
typedef bool (*reg_cancel_fn)(void *arg);

typedef struct reg_pull {
    const char *username, *password; /* NULL: anonymous */
    reg_log_fn log;
    reg_cancel_fn cancelled;
    void *arg;
} reg_pull;

/* Resolves the image's manifest; its digest ("sha256:<hex>") into digest. */
int reg_resolve(const reg_image *img, const reg_pull *p, char digest[80], cube_err *err);
/* Fetches the image (as resolved to digest) into layout_dir (made here): oci-layout, index.json, blobs/. */
int reg_fetch(const reg_image *img, const reg_pull *p, const char *digest, const char *layout_dir,
              cube_err *err);

/* Parsers of what registries answer (exposed for the fuzzer): one name="value" parameter of a
 * WWW-Authenticate challenge ("" when absent); and, of a manifest, whether it is an index (or list) and the
 * digest of its linux/<arch> entry: 1 picked, 0 not an index, -1 an index without one. */
void reg_challenge_param(const char *challenge, const char *name, char *out, size_t cap);
int reg_pick_platform(const char *json, size_t len, const char *arch, char digest[80]);
/* Whether dir's filesystem holds the image of manifest (its layers' declared sizes, unpacked) with room to
 * spare; ENOSPC saying how much it needs and has, EPROTO when a layer's size is missing. */
int reg_check_space(const cJSON *manifest, const char *dir, cube_err *err);

#endif
