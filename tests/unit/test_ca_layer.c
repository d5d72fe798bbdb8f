/* The egress CA layer over a template (cubelet/ca_layer.c): it holds the CA file and the template's system
 * bundle with the CA appended, read as overlayfs shows the template (top layer first, whiteouts and opaque
 * directories hiding what is below); its directories take the template's modes and owners; a template whose
 * trust store it cannot cover (a symlinked directory) gets none, and the answer is kept. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cubelet_internal.h"
#include "fsutil.h"
#include "testutil.h"

static const char pem[] = "-----BEGIN CERTIFICATE-----\nMIIBnode\n-----END CERTIFICATE-----\n";
static char *dir;
static cubelet c;

static void setup(void)
{
    dir = cube_test_tmpdir();
    memset(&c, 0, sizeof(c));
    pthread_mutex_init(&c.lock, NULL);
    c.cfg.data_dir = dir;
}

static void teardown(void)
{
    cube_rm_rf(dir);
    free(dir);
}

/* mkdir -p of rel under root, each new directory with mode and owner uid */
static void mkdirs(const char *root, const char *rel, mode_t mode, uid_t uid)
{
    char p[1024];
    if (mkdir(root, 0755) == 0) ck_assert_int_eq(chown(root, uid, uid), 0);
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    for (char *s = p + strlen(root) + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char was = *s;
        *s = '\0';
        if (mkdir(p, mode) == 0) {
            ck_assert_int_eq(chown(p, uid, uid), 0);
            ck_assert_int_eq(chmod(p, mode), 0);
        }
        *s = was;
        if (!was) break;
    }
}

static void put(const char *root, const char *rel, const char *text, mode_t mode, uid_t uid)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    FILE *f = fopen(p, "we");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    ck_assert_int_eq(chown(p, uid, uid), 0);
    ck_assert_int_eq(chmod(p, mode), 0);
}

static void read_text(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "re");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
}

/* a template named name over a rootfs with a bundle, and layers (top first) when given */
static cl_template *tpl(const char *name, const char *layers)
{
    cl_template *t = calloc(1, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    snprintf(t->rootfs, sizeof(t->rootfs), "%s/%s-rootfs", dir, name);
    t->uid_base = 100000;
    snprintf(t->layers, sizeof(t->layers), "%s", layers ? layers : "");
    mkdirs(t->rootfs, "etc/ssl/certs", 0755, 100000);
    ck_assert_int_eq(chmod(t->rootfs, 0755), 0);
    ck_assert_int_eq(chown(t->rootfs, 100000, 100000), 0);
    put(t->rootfs, "etc/ssl/certs/ca-certificates.crt", "ROOTFS BUNDLE\n", 0644, 100000);
    return t;
}

START_TEST(the_layer_holds_the_ca_and_the_templates_bundle_with_it)
{
    cl_template *t = tpl("plain", NULL);
    char etc[600];
    snprintf(etc, sizeof(etc), "%s/etc", t->rootfs);
    ck_assert_int_eq(chmod(etc, 0751), 0); /* a mode of its own: the layer's /etc shows the same */
    put(t->rootfs, "etc/ssl/certs/ca-certificates.crt", "ROOTFS BUNDLE\n", 0640, 100007);
    char layer[4400], p[5000], text[512];
    ck_assert_int_eq(cl_ca_layer(&c, t, pem, layer, sizeof(layer)), 0);
    ck_assert_int_eq(t->ca_layer_state, 1);
    snprintf(p, sizeof(p), "%s/etc/ssl/certs/ca-certificates.crt", layer);
    read_text(p, text, sizeof(text));
    char want[512];
    snprintf(want, sizeof(want), "ROOTFS BUNDLE\n\n# cube egress CA\n%s", pem);
    ck_assert_str_eq(text, want);
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0640); /* the bundle's own mode and owner */
    ck_assert_uint_eq(st.st_uid, 100007);
    snprintf(p, sizeof(p), "%s/usr/local/share/ca-certificates/cube-egress.crt", layer);
    read_text(p, text, sizeof(text));
    ck_assert_str_eq(text, pem);
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_uid, 100000);
    ck_assert_uint_eq(st.st_mode & 07777, 0644);
    snprintf(p, sizeof(p), "%s/etc", layer);
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0751);
    ck_assert_uint_eq(st.st_uid, 100000);
    /* what the template lacks is made as root of the sandbox makes it */
    snprintf(p, sizeof(p), "%s/usr/local/share", layer);
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0755);
    ck_assert_uint_eq(st.st_uid, 100000);
    ck_assert_int_eq(stat(layer, &st), 0); /* the layer's root is the sandbox's / */
    ck_assert_uint_eq(st.st_mode & 07777, 0755);
    ck_assert_uint_eq(st.st_uid, 100000);
    /* made once: asked again, the same; another CA, another layer */
    char again[4400];
    ck_assert_int_eq(cl_ca_layer(&c, t, pem, again, sizeof(again)), 0);
    ck_assert_str_eq(again, layer);
    t->ca_layer_state = 0;
    ck_assert_int_eq(cl_ca_layer(&c, t, "-----BEGIN CERTIFICATE-----\nother\n", again, sizeof(again)), 0);
    ck_assert_str_ne(again, layer);
    free(t);
}
END_TEST

START_TEST(the_bundle_is_read_as_overlayfs_shows_it)
{
    char top[600], mid[600], layers[1300], layer[4400], p[5000], text[512];
    /* the top layer's bundle hides the rootfs's */
    snprintf(top, sizeof(top), "%s/top", dir);
    mkdirs(top, "etc/ssl/certs", 0755, 100000);
    put(top, "etc/ssl/certs/ca-certificates.crt", "TOP BUNDLE\n", 0644, 100000);
    cl_template *t = tpl("layered", top);
    ck_assert_int_eq(cl_ca_layer(&c, t, pem, layer, sizeof(layer)), 0);
    snprintf(p, sizeof(p), "%s/etc/ssl/certs/ca-certificates.crt", layer);
    read_text(p, text, sizeof(text));
    ck_assert_msg(strncmp(text, "TOP BUNDLE\n", 11) == 0, "%s", text);
    free(t);
    /* a whiteout in the top layer: the template has no bundle, so the layer has none (the CA file still) */
    snprintf(mid, sizeof(mid), "%s/mid", dir);
    mkdirs(mid, "etc/ssl/certs", 0755, 100000);
    snprintf(p, sizeof(p), "%s/etc/ssl/certs/ca-certificates.crt", mid);
    ck_assert_int_eq(mknod(p, S_IFCHR | 0000, makedev(0, 0)), 0);
    t = tpl("whiteout", mid);
    ck_assert_int_eq(cl_ca_layer(&c, t, pem, layer, sizeof(layer)), 0);
    snprintf(p, sizeof(p), "%s/etc/ssl/certs/ca-certificates.crt", layer);
    ck_assert_int_eq(access(p, F_OK), -1);
    snprintf(p, sizeof(p), "%s/usr/local/share/ca-certificates/cube-egress.crt", layer);
    ck_assert_int_eq(access(p, F_OK), 0);
    free(t);
    /* an opaque /etc/ssl without the bundle over a rootfs with one: hidden too */
    char opq[600];
    snprintf(opq, sizeof(opq), "%s/opaque", dir);
    mkdirs(opq, "etc/ssl", 0755, 100000);
    snprintf(p, sizeof(p), "%s/etc/ssl", opq);
    ck_assert_int_eq(setxattr(p, "trusted.overlay.opaque", "y", 1, 0), 0);
    snprintf(layers, sizeof(layers), "%s:%s", opq, top); /* the top layer's bundle is below the opaque dir */
    t = tpl("opaque", layers);
    ck_assert_int_eq(cl_ca_layer(&c, t, pem, layer, sizeof(layer)), 0);
    snprintf(p, sizeof(p), "%s/etc/ssl/certs/ca-certificates.crt", layer);
    ck_assert_int_eq(access(p, F_OK), -1);
    free(t);
}
END_TEST

START_TEST(a_trust_store_it_cannot_cover_gets_no_layer)
{
    /* /etc/ssl/certs a symlink (as some distributions have it): a directory in the layer would replace it */
    cl_template *t = tpl("linked", NULL);
    char p[1024], q[1024];
    snprintf(p, sizeof(p), "%s/etc/ssl/certs", t->rootfs);
    snprintf(q, sizeof(q), "%s/etc/pki", t->rootfs);
    ck_assert_int_eq(rename(p, q), 0);
    ck_assert_int_eq(symlink("../pki", p), 0);
    char layer[4400];
    ck_assert_int_eq(cl_ca_layer(&c, t, pem, layer, sizeof(layer)), -1);
    ck_assert_int_eq(t->ca_layer_state, -1); /* kept: not tried again for every sandbox */
    ck_assert_int_eq(cl_ca_layer(&c, t, pem, layer, sizeof(layer)), -1);
    /* nothing half-made is left behind */
    snprintf(p, sizeof(p), "%s/ca-layers", dir);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A '%s')\"", p);
    ck_assert_int_eq(system(cmd), 0);
    free(t);
}
END_TEST

int main(void)
{
    if (geteuid() != 0) {
        printf(
            "SKIP test_ca_layer: needs root (the layer's files belong to the sandbox's root, uid 100000)\n");
        return 77;
    }
    Suite *s = suite_create("ca_layer");
    TCase *tc = tcase_create("layer");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, the_layer_holds_the_ca_and_the_templates_bundle_with_it);
    tcase_add_test(tc, the_bundle_is_read_as_overlayfs_shows_it);
    tcase_add_test(tc, a_trust_store_it_cannot_cover_gets_no_layer);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
