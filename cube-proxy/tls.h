/* TLS between proxies on different machines (a request's hop to its sandbox's node): both ends hold a
 * certificate from the cluster's CA (the --tls-dir identity: ca.pem, cert.pem, key.pem) and each requires the
 * other's. SDK clients keep plain HTTP on the same port: a connection whose first byte opens a TLS handshake
 * is taken as TLS, any other as plain, and a hop that arrives plain is refused. */
#ifndef CUBE_PROXY_TLS_H
#define CUBE_PROXY_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>

#include "err.h"

typedef struct proxy_tls {
    SSL_CTX *client, *server;
} proxy_tls;

proxy_tls *proxy_tls_load(const char *dir, cube_err *err);
void proxy_tls_free(proxy_tls *t);
/* Over a connected socket (blocking): the handshake as a client within timeout_ms, the peer's certificate
 * checked against the cluster's CA and host (an IP or a DNS name). The socket is left blocking. */
SSL *proxy_tls_connect(proxy_tls *t, int fd, const char *host, int timeout_ms, cube_err *err);
/* The same to a sandbox's port that serves HTTPS (network.httpsPorts): its certificate is not checked
 * (self-signed ones work), sni names it. Needs no --tls-dir. */
SSL *proxy_tls_connect_sandbox(int fd, const char *sni, int timeout_ms, cube_err *err);
/* A server session on fd (non-blocking): the relay drives SSL_accept as the socket allows. */
SSL *proxy_tls_server_session(proxy_tls *t, int fd);
/* Whether the first byte a client sent opens a TLS handshake (a TLS record of type handshake). */
static inline bool proxy_tls_hello(unsigned char first)
{
    return first == 0x16;
}

#endif
