/* A template's config.json (<data>/templates/<name>/<build>/config.json): what its sandboxes are. Read and
 * written here only, by every maker of templates (image imports, debootstrap, builds, snapshots) and the node
 * that loads them. Fields left unset are not written, and read back unset. */
#ifndef CUBE_TEMPLATE_CONFIG_H
#define CUBE_TEMPLATE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

typedef struct cube_tpl_config {
    char name[128];
    char id[64];             /* which build of the name this is */
    char source[512];        /* an import's: what it was made from */
    char recipe[512];        /* debootstrap's: what it was made from */
    char from_template[128]; /* a build's base */
    char from_build[64];  /* which build of that base it stands on (a copy to another node needs the same) */
    char snapshot_of[64]; /* a snapshot's sandbox */
    char parent_template[128]; /* a snapshot's template */
    int64_t created_at_ms;
    char rootfs[4096]; /* another template's rootfs its layers stack on; "": <build dir>/rootfs */
    char layers[8192]; /* read-only layers above that rootfs, "a:b" (topmost first) */
    char user[64];     /* the default user and workdir */
    char workdir[512];
    char *env_json;         /* {"K": "V"}, or NULL */
    char *cmd_json;         /* an image's Cmd (a JSON array), or NULL */
    unsigned uid_base;      /* 0: unset */
    int64_t cpu, memory_mb; /* 0: unset; kept as written, out of range too (the loader says what it uses) */
    int64_t disk_mb;        /* 0: unset (the node's) */
    int pool;               /* -1: unset (the node's) */
    char *start_cmd, *ready_cmd;
} cube_tpl_config;

void cube_tpl_config_init(cube_tpl_config *c);
void cube_tpl_config_free(cube_tpl_config *c);
/* ENOENT when there is none; EBADMSG when it is not a JSON object. Fields of the wrong type stay unset. */
int cube_tpl_config_read(const char *path, cube_tpl_config *c, cube_err *err);
/* A config file's text as it is (malloc'd), for whoever passes it on as well as reading it; NULL with why. */
char *cube_tpl_config_text(const char *path, cube_err *err);
/* The same from the text of one. */
int cube_tpl_config_parse(const char *json, cube_tpl_config *c, cube_err *err);
/* Written whole (a file beside it, renamed over it), so a reader never sees half of one. */
int cube_tpl_config_write(const char *path, const cube_tpl_config *c, cube_err *err);

#endif
