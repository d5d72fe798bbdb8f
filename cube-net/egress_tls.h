/* TLS for the egress proxy's header rules: the node's CA (made once, kept under the data directory, trusted
 * by the sandboxes), a certificate for each name a rule matches (made on first use, kept in memory), and the
 * upstream side's verification (the system's trust store and an operator's extra CA file). */
#ifndef CUBE_NET_EGRESS_TLS_H
#define CUBE_NET_EGRESS_TLS_H

#include <openssl/ssl.h>
#include <pthread.h>

#include "net.h"

typedef struct cn_tls cn_tls;

/* Loads the CA from dir (ca.pem, ca-key.pem), or makes one there; upstream_ca: extra PEM file of CAs the
 * upstream's certificates may chain to (NULL: the system's only). */
cn_tls *cn_tls_open(const char *dir, const char *upstream_ca, cube_err *err);
void cn_tls_close(cn_tls *t);
/* The CA certificate's path (what sandboxes trust). */
const char *cn_tls_ca_path(const cn_tls *t);
/* A server context presenting a certificate for name, signed by the CA (a reference: SSL_CTX_free it). */
SSL_CTX *cn_tls_server_ctx(cn_tls *t, const char *name, cube_err *err);
/* The upstream client context: peer verified, HTTP/1.1 only (a reference: SSL_CTX_free it). */
SSL_CTX *cn_tls_client_ctx(cn_tls *t);

#endif
