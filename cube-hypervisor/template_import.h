/* Template rootfs from image files (no registry is reachable): an OCI image layout directory, a `docker save`
 * tarball, or a rootfs tarball, with layers applied in order and OCI whiteouts honoured. */
#ifndef CUBE_HV_TEMPLATE_IMPORT_H
#define CUBE_HV_TEMPLATE_IMPORT_H

#include <cjson/cJSON.h>

#include "err.h"

/* Extracts one layer (tar, any compression libarchive knows) into rootfs: ".wh.NAME" removes NAME from the
 * layers below, ".wh..wh..opq" empties its directory; entries that would land outside rootfs are refused. */
int tpl_apply_layer(const char *rootfs, const char *layer, cube_err *err);

/* Applies an image's layers into rootfs. *config gets the image config's "config" object (Env, WorkingDir,
 * User, Cmd) or NULL; digest gets "sha256:..." naming the image. */
int tpl_import_oci(const char *layout, const char *rootfs, cJSON **config, char digest[80], cube_err *err);
int tpl_import_docker_save(const char *tarball, const char *scratch, const char *rootfs, cJSON **config,
                           char digest[80], cube_err *err);

/* A directory as a rootfs: copied whole (cp -a); its digest covers every entry's path, type, mode, owner,
 * size and mtime, so a changed tree is a new template. */
int tpl_dir_digest(const char *dir, char digest[80], cube_err *err);
int tpl_copy_dir(const char *dir, const char *rootfs, cube_err *err);

/* sha256 of a file as "sha256:<hex>". */
int tpl_file_digest(const char *path, char digest[80], cube_err *err);

#endif
