/* TLS between proxies (see tls.h), on OpenSSL. */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <pthread.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

static int ssl_fail(cube_err *err, const char *what)
{
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e) ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return cube_err_set(err, EPROTO, "tls: %s%s%s", what, *buf ? ": " : "", buf);
}

/* One context: this machine's identity, the cluster's CA, and the peer's certificate required. */
static SSL_CTX *context(const SSL_METHOD *method, const char *dir, cube_err *err)
{
    char ca[4300], cert[4300], key[4300];
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (!ctx) return ssl_fail(err, "new context"), NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ssl_fail(err, dir);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    /* a peer that closes without close_notify ends its stream (as a plain socket's FIN would) */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    return ctx;
}

proxy_tls *proxy_tls_load(const char *dir, cube_err *err)
{
    proxy_tls *t = calloc(1, sizeof(*t));
    if (!t) return cube_err_set(err, ENOMEM, "out of memory"), NULL;
    if (!(t->client = context(TLS_client_method(), dir, err)) ||
        !(t->server = context(TLS_server_method(), dir, err))) {
        proxy_tls_free(t);
        return NULL;
    }
    return t;
}

void proxy_tls_free(proxy_tls *t)
{
    if (!t) return;
    SSL_CTX_free(t->client);
    SSL_CTX_free(t->server);
    free(t);
}

/* a blocking socket's handshake under a deadline (0: none, as the relay wants it after) */
static void io_deadline(int fd, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

SSL *proxy_tls_connect(proxy_tls *t, int fd, const char *host, int timeout_ms, cube_err *err)
{
    io_deadline(fd, timeout_ms);
    SSL *ssl = SSL_new(t->client);
    if (!ssl) return ssl_fail(err, "new session"), NULL;
    struct in_addr a4;
    struct in6_addr a6;
    int ok = SSL_set_fd(ssl, fd) == 1;
    if (ok && (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1))
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1;
    else if (ok)
        ok = SSL_set1_host(ssl, host) == 1 && SSL_set_tlsext_host_name(ssl, host) == 1;
    if (!ok || SSL_connect(ssl) != 1) {
        char what[300];
        snprintf(what, sizeof(what), "handshake with %s", host);
        ssl_fail(err, what);
        SSL_free(ssl);
        return NULL;
    }
    io_deadline(fd, 0);
    return ssl;
}

static SSL_CTX *sandbox_ctx;
static pthread_once_t sandbox_once = PTHREAD_ONCE_INIT;

static void sandbox_ctx_make(void)
{
    sandbox_ctx = SSL_CTX_new(TLS_client_method());
    if (sandbox_ctx) SSL_CTX_set_verify(sandbox_ctx, SSL_VERIFY_NONE, NULL);
}

SSL *proxy_tls_connect_sandbox(int fd, const char *sni, int timeout_ms, cube_err *err)
{
    pthread_once(&sandbox_once, sandbox_ctx_make);
    if (!sandbox_ctx) return ssl_fail(err, "client context"), NULL;
    io_deadline(fd, timeout_ms);
    SSL *ssl = SSL_new(sandbox_ctx);
    if (!ssl) return ssl_fail(err, "new session"), NULL;
    if (SSL_set_fd(ssl, fd) != 1 || (sni && *sni && SSL_set_tlsext_host_name(ssl, sni) != 1) ||
        SSL_connect(ssl) != 1) {
        ssl_fail(err, "TLS handshake with the sandbox's port");
        SSL_free(ssl);
        return NULL;
    }
    io_deadline(fd, 0);
    return ssl;
}

SSL *proxy_tls_server_session(proxy_tls *t, int fd)
{
    SSL *ssl = SSL_new(t->server);
    if (ssl && SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ssl = NULL;
    }
    return ssl;
}
