/* cube-template: template rootfs chores that need no daemon.
 *   cube-template shift DIR UID_BASE   own every file of DIR by UID_BASE + its current uid/gid, keeping modes
 *                                      (setuid bits included), so root inside a sandbox owns what root owned.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/sha.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "template_import.h"
#include "template_config.h"

static unsigned long base;

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

static void rm_tree(const char *p)
{
    nftw(p, rm_one, 32, FTW_DEPTH | FTW_PHYS);
}

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

/* Image config (Env ["K=V"], WorkingDir, User, Cmd) into the template's config. */
static void template_config(cube_tpl_config *c, const char *name, const char *id, const char *source,
                            const cJSON *img, unsigned long uid, unsigned long cpus, unsigned long memory_mb)
{
    cube_tpl_config_init(c);
    snprintf(c->name, sizeof(c->name), "%s", name);
    snprintf(c->id, sizeof(c->id), "%s", id);
    snprintf(c->source, sizeof(c->source), "%s", source);
    const char *user = cJSON_GetStringValue(cJSON_GetObjectItem(img, "User"));
    const char *wd = cJSON_GetStringValue(cJSON_GetObjectItem(img, "WorkingDir"));
    snprintf(c->user, sizeof(c->user), "%s", user && *user ? user : "root");
    snprintf(c->workdir, sizeof(c->workdir), "%s", wd && *wd ? wd : "/");
    cJSON *env = cJSON_CreateObject();
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(img, "Env"))
    {
        const char *kv = cJSON_GetStringValue(e);
        const char *eq = kv ? strchr(kv, '=') : NULL;
        if (!eq || eq == kv) continue;
        char k[256];
        snprintf(k, sizeof(k), "%.*s", (int)(eq - kv), kv);
        cJSON_AddStringToObject(env, k, eq + 1);
    }
    c->env_json = cJSON_PrintUnformatted(env);
    cJSON_Delete(env);
    const cJSON *cmd = cJSON_GetObjectItem(img, "Cmd");
    c->cmd_json = cJSON_IsArray(cmd) ? cJSON_PrintUnformatted(cmd) : NULL;
    c->cpu = (int64_t)cpus;
    c->memory_mb = (int64_t)memory_mb;
    c->disk_mb = 1024;
    c->uid_base = (unsigned)uid;
}

/* config PATH --name N --id ID [--recipe R] [--user U] [--workdir W] [--uid-base N]: a template's config
 * written by a script (deploy/templates/build), in the one format every reader takes. */
static int config_cmd(int argc, char **argv)
{
    cube_tpl_config c;
    cube_tpl_config_init(&c);
    c.cpu = 2;
    c.memory_mb = 512;
    c.disk_mb = 1024;
    snprintf(c.user, sizeof(c.user), "root");
    snprintf(c.workdir, sizeof(c.workdir), "/");
    int bad = argc < 1 || argc % 2 == 0;
    for (int i = 1; !bad && i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--name"))
            snprintf(c.name, sizeof(c.name), "%s", v);
        else if (!strcmp(k, "--id"))
            snprintf(c.id, sizeof(c.id), "%s", v);
        else if (!strcmp(k, "--recipe"))
            snprintf(c.recipe, sizeof(c.recipe), "%s", v);
        else if (!strcmp(k, "--user"))
            snprintf(c.user, sizeof(c.user), "%s", v);
        else if (!strcmp(k, "--workdir"))
            snprintf(c.workdir, sizeof(c.workdir), "%s", v);
        else if (!strcmp(k, "--uid-base"))
            c.uid_base = (unsigned)strtoul(v, NULL, 10);
        else
            bad = 1;
    }
    if (bad || !*c.name || !*c.id) {
        fprintf(stderr, "usage: cube-template config PATH --name NAME --id ID [--recipe R] [--user U] "
                        "[--workdir DIR] [--uid-base N]\n");
        return 2;
    }
    cube_err err = {0};
    int rc = cube_tpl_config_write(argv[0], &c, &err);
    cube_tpl_config_free(&c);
    if (rc < 0) fprintf(stderr, "cube-template: %s\n", err.msg);
    return rc < 0 ? 1 : 0;
}

static int import_cmd(int argc, char **argv)
{
    const char *name = argc > 0 ? argv[0] : NULL, *data = NULL, *oci = NULL, *dsave = NULL, *tarball = NULL;
    unsigned long uid = 100000, cpus = 2, memory_mb = 512;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--data"))
            data = argv[i + 1];
        else if (!strcmp(argv[i], "--oci"))
            oci = argv[i + 1];
        else if (!strcmp(argv[i], "--docker-save"))
            dsave = argv[i + 1];
        else if (!strcmp(argv[i], "--rootfs"))
            tarball = argv[i + 1];
        else if (!strcmp(argv[i], "--uid-base"))
            uid = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--cpus"))
            cpus = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--memory-mb"))
            memory_mb = strtoul(argv[i + 1], NULL, 10);
        else
            name = NULL;
    }
    if (!name || !data || (!!oci + !!dsave + !!tarball) != 1 || argc % 2 == 0 || !uid) {
        fprintf(stderr, "usage: cube-template import NAME --data DIR (--oci LAYOUT | --docker-save TAR | "
                        "--rootfs TAR|DIR) "
                        "[--uid-base N] [--cpus N] [--memory-mb N]\n");
        return 2;
    }
    /* each sandbox's size (cubelet reads them; the same bounds) */
    if (cpus < 1 || cpus > 64 || memory_mb < 64 || memory_mb > (1ul << 20)) {
        fprintf(stderr, "cube-template: --cpus must be 1..64 and --memory-mb 64..%lu\n", 1ul << 20);
        return 2;
    }
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.')) {
            fprintf(stderr, "cube-template: template name '%s' must be [a-z0-9._-]\n", name);
            return 2;
        }
    cube_err err = {0};
    char digest[80] = "";
    const char *source = oci ? oci : dsave ? dsave : tarball;
    if (oci) {
        char idx[4200];
        snprintf(idx, sizeof(idx), "%s/index.json", oci);
        if (tpl_file_digest(idx, digest, &err) < 0) goto fail;
    } else {
        struct stat sst;
        int is_dir = tarball && stat(tarball, &sst) == 0 && S_ISDIR(sst.st_mode);
        if ((is_dir ? tpl_dir_digest(source, digest, &err) : tpl_file_digest(source, digest, &err)) < 0)
            goto fail;
    }
    char recipe[256], id[20];
    /* the default size keeps the ids of templates made before sizes were chosen */
    if (cpus == 2 && memory_mb == 512)
        snprintf(recipe, sizeof(recipe), "v1 %s uid_base=%lu", digest, uid);
    else
        snprintf(recipe, sizeof(recipe), "v1 %s uid_base=%lu cpus=%lu memory_mb=%lu", digest, uid, cpus,
                 memory_mb);
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((unsigned char *)recipe, strlen(recipe), md);
    for (int i = 0; i < 8; i++) snprintf(id + 2 * i, 3, "%02x", md[i]);
    char dir[4200], rootfs[4300], building[4300], scratch[4300], cfgp[4300], cur[4300];
    snprintf(dir, sizeof(dir), "%s/templates/%s/%s", data, name, id);
    snprintf(rootfs, sizeof(rootfs), "%s/rootfs", dir);
    snprintf(building, sizeof(building), "%s/rootfs.building", dir);
    snprintf(scratch, sizeof(scratch), "%s/scratch", dir);
    snprintf(cfgp, sizeof(cfgp), "%s/config.json", dir);
    snprintf(cur, sizeof(cur), "%s/templates/%s/current", data, name);
    if (access(cfgp, F_OK) != 0) {
        char mk[4400];
        snprintf(mk, sizeof(mk), "%s/templates/%s", data, name);
        mkdir(data, 0755);
        snprintf(scratch, sizeof(scratch), "%s/templates", data);
        mkdir(scratch, 0755);
        mkdir(mk, 0755);
        mkdir(dir, 0755);
        snprintf(scratch, sizeof(scratch), "%s/scratch", dir);
        rm_tree(building);
        rm_tree(scratch);
        if (mkdir(building, 0755) < 0) {
            cube_err_sys(&err, errno, "mkdir %s", building);
            goto fail;
        }
        cJSON *img = NULL;
        int rc;
        fprintf(stderr, "cube-template: importing %s as %s\n", source, name);
        if (oci)
            rc = tpl_import_oci(oci, building, &img, digest, &err);
        else if (dsave)
            rc = tpl_import_docker_save(dsave, scratch, building, &img, digest, &err);
        else {
            struct stat sst;
            rc = stat(tarball, &sst) == 0 && S_ISDIR(sst.st_mode) ? tpl_copy_dir(tarball, building, &err)
                                                                  : tpl_apply_layer(building, tarball, &err);
        }
        rm_tree(scratch);
        if (rc < 0) {
            cJSON_Delete(img);
            rm_tree(building);
            goto fail;
        }
        snprintf(mk, sizeof(mk), "%s/.cube", building);
        mkdir(mk, 0755);
        base = uid;
        if (nftw(building, shift_one, 64, FTW_PHYS | FTW_MOUNT) != 0) {
            cJSON_Delete(img);
            cube_err_set(&err, EIO, "shifting ownership of %s failed", building);
            goto fail;
        }
        cube_tpl_config cfg;
        template_config(&cfg, name, id, source, img, uid, cpus, memory_mb);
        cJSON_Delete(img);
        int wrc = rename(building, rootfs) < 0 ? cube_err_sys(&err, errno, "rename %s", building)
                                               : cube_tpl_config_write(cfgp, &cfg, &err);
        cube_tpl_config_free(&cfg);
        if (wrc < 0) goto fail;
    }
    unlink(cur);
    if (symlink(id, cur) < 0) {
        cube_err_sys(&err, errno, "link %s", cur);
        goto fail;
    }
    printf("%s\n", dir);
    return 0;
fail:
    fprintf(stderr, "cube-template: %s\n", err.msg);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "import") == 0) return import_cmd(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "config") == 0) return config_cmd(argc - 2, argv + 2);
    if (argc == 4 && strcmp(argv[1], "shift") == 0) {
        char *end;
        base = strtoul(argv[3], &end, 10);
        if (*end || base == 0 || base > 4000000000UL) {
            fprintf(stderr, "cube-template: UID_BASE must be a positive integer\n");
            return 2;
        }
        return nftw(argv[2], shift_one, 64, FTW_PHYS | FTW_MOUNT) == 0 ? 0 : 1;
    }
    fprintf(stderr,
            "usage: cube-template shift DIR UID_BASE | cube-template import NAME --data DIR (--oci LAYOUT | "
            "--docker-save TAR | --rootfs TAR|DIR) [--uid-base N] | cube-template config PATH --name NAME "
            "--id ID ...\n");
    return 2;
}
