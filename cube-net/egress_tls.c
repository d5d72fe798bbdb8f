/* The node's egress CA and the certificates made with it (see egress_tls.h). */
#include "egress_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define CACHE 128

struct cn_tls {
    EVP_PKEY *ca_key, *leaf_key; /* one key for every name's certificate */
    X509 *ca;
    SSL_CTX *client;
    char ca_path[4096];
    pthread_mutex_t lock; /* the cache: the proxy's threads share it */
    struct {
        char name[CN_NAME_MAX];
        SSL_CTX *ctx;
    } cache[CACHE];
    int next;
};

static int ssl_err(cube_err *err, const char *what)
{
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
    ERR_clear_error();
    return cube_err_set(err, EIO, "%s: %s", what, buf);
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext) return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* a certificate for subject cn with key, valid from an hour ago for days, signed by issuer (NULL: itself) */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, long days, bool ca)
{
    X509 *c = X509_new();
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    if (!c || RAND_bytes(serial, sizeof(serial)) != 1) goto fail;
    serial[0] &= 0x7f; /* positive */
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c))) goto fail;
    X509_set_version(c, 2);
    X509_gmtime_adj(X509_getm_notBefore(c), -3600);
    X509_gmtime_adj(X509_getm_notAfter(c), days * 86400);
    X509_NAME *name = X509_get_subject_name(c);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"cube", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : name);
    X509_set_pubkey(c, key);
    X509 *iss = issuer ? issuer : c;
    if (ca) {
        if (add_ext(c, iss, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
            add_ext(c, iss, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
            add_ext(c, iss, NID_subject_key_identifier, "hash") < 0)
            goto fail;
    } else {
        char san[CN_NAME_MAX + 8];
        snprintf(san, sizeof(san), "DNS:%s", cn);
        if (add_ext(c, iss, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
            add_ext(c, iss, NID_key_usage, "critical,digitalSignature") < 0 ||
            add_ext(c, iss, NID_ext_key_usage, "serverAuth") < 0 ||
            add_ext(c, iss, NID_subject_alt_name, san) < 0 ||
            add_ext(c, iss, NID_authority_key_identifier, "keyid") < 0)
            goto fail;
    }
    if (!X509_sign(c, issuer_key ? issuer_key : key, EVP_sha256())) goto fail;
    BN_free(bn);
    return c;
fail:
    BN_free(bn);
    X509_free(c);
    return NULL;
}

static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert, cube_err *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0) close(fd);
        return cube_err_sys(err, errno, "write %s", tmp);
    }
    int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, cert);
    if (fclose(f) != 0 || !ok || rename(tmp, path) < 0) {
        unlink(tmp);
        return cube_err_set(err, EIO, "write %s", path);
    }
    return 0;
}

static int load_or_make_ca(cn_tls *t, const char *dir, cube_err *err)
{
    char key_path[4200];
    snprintf(t->ca_path, sizeof(t->ca_path), "%s/ca.pem", dir);
    snprintf(key_path, sizeof(key_path), "%s/ca-key.pem", dir);
    FILE *kf = fopen(key_path, "re"), *cf = fopen(t->ca_path, "re");
    if (kf && cf) {
        t->ca_key = PEM_read_PrivateKey(kf, NULL, NULL, NULL);
        t->ca = PEM_read_X509(cf, NULL, NULL, NULL);
    }
    if (kf) fclose(kf);
    if (cf) fclose(cf);
    if (t->ca_key && t->ca) return 0;
    if (t->ca_key || t->ca)
        return cube_err_set(err, EINVAL, "%s: the egress CA's key or certificate is unreadable", dir);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) return cube_err_sys(err, errno, "mkdir %s", dir);
    t->ca_key = EVP_EC_gen("P-256");
    if (!t->ca_key) return ssl_err(err, "the egress CA's key");
    char host[64] = "node";
    gethostname(host, sizeof(host) - 1);
    char cn[128];
    snprintf(cn, sizeof(cn), "cube egress CA (%s)", host);
    t->ca = make_cert(cn, t->ca_key, NULL, NULL, 3650, true);
    if (!t->ca) return ssl_err(err, "the egress CA's certificate");
    if (write_pem(key_path, 0600, t->ca_key, NULL, err) < 0 ||
        write_pem(t->ca_path, 0644, NULL, t->ca, err) < 0)
        return -1;
    cube_log_info("egress CA made", "path=%s", t->ca_path);
    return 0;
}

/* ALPN: HTTP/1.1 only (the proxy reads and rewrites HTTP/1 requests) */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char http11[] = "\x08http/1.1";
    unsigned char *o;
    if (SSL_select_next_proto(&o, outlen, http11, sizeof(http11) - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

cn_tls *cn_tls_open(const char *dir, const char *upstream_ca, cube_err *err)
{
    cn_tls *t = calloc(1, sizeof(*t));
    if (!t) {
        cube_err_set(err, ENOMEM, "egress TLS");
        return NULL;
    }
    pthread_mutex_init(&t->lock, NULL);
    if (load_or_make_ca(t, dir, err) < 0) goto fail;
    t->leaf_key = EVP_EC_gen("P-256");
    t->client = SSL_CTX_new(TLS_client_method());
    if (!t->leaf_key || !t->client) {
        ssl_err(err, "egress TLS contexts");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(t->client, TLS1_2_VERSION);
    SSL_CTX_set_verify(t->client, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_default_verify_paths(t->client);
    if (upstream_ca && *upstream_ca && SSL_CTX_load_verify_locations(t->client, upstream_ca, NULL) != 1) {
        ssl_err(err, upstream_ca);
        goto fail;
    }
    static const unsigned char http11[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(t->client, http11, sizeof(http11) - 1);
    return t;
fail:
    cn_tls_close(t);
    return NULL;
}

void cn_tls_close(cn_tls *t)
{
    if (!t) return;
    for (int i = 0; i < CACHE; i++) SSL_CTX_free(t->cache[i].ctx);
    SSL_CTX_free(t->client);
    EVP_PKEY_free(t->leaf_key);
    EVP_PKEY_free(t->ca_key);
    X509_free(t->ca);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

const char *cn_tls_ca_path(const cn_tls *t)
{
    return t->ca_path;
}

SSL_CTX *cn_tls_client_ctx(cn_tls *t)
{
    SSL_CTX_up_ref(t->client);
    return t->client;
}

SSL_CTX *cn_tls_server_ctx(cn_tls *t, const char *name, cube_err *err)
{
    pthread_mutex_lock(&t->lock);
    for (int i = 0; i < CACHE; i++)
        if (t->cache[i].ctx && strcmp(t->cache[i].name, name) == 0) {
            SSL_CTX_up_ref(t->cache[i].ctx);
            pthread_mutex_unlock(&t->lock);
            return t->cache[i].ctx;
        }
    X509 *leaf = make_cert(name, t->leaf_key, t->ca, t->ca_key, 30, false);
    SSL_CTX *ctx = leaf ? SSL_CTX_new(TLS_server_method()) : NULL;
    if (!ctx || SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, t->leaf_key) != 1 ||
        SSL_CTX_add1_chain_cert(ctx, t->ca) != 1) {
        pthread_mutex_unlock(&t->lock);
        ssl_err(err, "a certificate for the egress proxy");
        SSL_CTX_free(ctx);
        X509_free(leaf);
        return NULL;
    }
    X509_free(leaf);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    /* the oldest entry makes room */
    SSL_CTX_free(t->cache[t->next].ctx);
    snprintf(t->cache[t->next].name, sizeof(t->cache[t->next].name), "%s", name);
    t->cache[t->next].ctx = ctx;
    t->next = (t->next + 1) % CACHE;
    SSL_CTX_up_ref(ctx);
    pthread_mutex_unlock(&t->lock);
    return ctx;
}
