/* TLS identities for links between machines (see rpc.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rpc.h"
#include "rpc_internal.h"

struct cube_rpc_tls {
    char *ca, *cert, *key; /* PEM */
};

static char *read_pem(const char *dir, const char *name, cube_err *err)
{
    char p[4400];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "re");
    if (!f) return cube_err_sys(err, errno, "tls: open %s", p), NULL;
    struct stat st;
    char *buf = NULL;
    if (fstat(fileno(f), &st) == 0 && st.st_size > 0 && st.st_size < (1 << 20) &&
        (buf = malloc((size_t)st.st_size + 1))) {
        size_t n = fread(buf, 1, (size_t)st.st_size, f);
        buf[n] = '\0';
        if (!strstr(buf, "-----BEGIN ")) {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    if (!buf) cube_err_set(err, EINVAL, "tls: %s is not a PEM file", p);
    return buf;
}

cube_rpc_tls *cube_rpc_tls_load(const char *dir, cube_err *err)
{
    cube_rpc_tls *t = calloc(1, sizeof(*t));
    if (!t) return cube_err_set(err, ENOMEM, "tls: out of memory"), NULL;
    if (!(t->ca = read_pem(dir, "ca.pem", err)) || !(t->cert = read_pem(dir, "cert.pem", err)) ||
        !(t->key = read_pem(dir, "key.pem", err))) {
        cube_rpc_tls_free(t);
        return NULL;
    }
    return t;
}

void cube_rpc_tls_free(cube_rpc_tls *t)
{
    if (!t) return;
    free(t->ca);
    free(t->cert);
    if (t->key) memset(t->key, 0, strlen(t->key));
    free(t->key);
    free(t);
}

/* The process's identity: set once at start (before any client or server), read after. */
static const cube_rpc_tls *process_tls;

void cube_rpc_use_tls(const cube_rpc_tls *t)
{
    __atomic_store_n(&process_tls, t, __ATOMIC_RELEASE);
}

const cube_rpc_tls *cube_rpc_tls_default(void)
{
    return __atomic_load_n(&process_tls, __ATOMIC_ACQUIRE);
}

bool cube_rpc_address_is_local(const char *address)
{
    return strncmp(address, "unix:", 5) == 0 || strncmp(address, "unix-abstract:", 14) == 0;
}

grpc_channel_credentials *cube_rpc_tls_channel_creds(const cube_rpc_tls *t)
{
    grpc_ssl_pem_key_cert_pair pair = {.private_key = t->key, .cert_chain = t->cert};
    return grpc_ssl_credentials_create(t->ca, &pair, NULL, NULL);
}

grpc_server_credentials *cube_rpc_tls_server_creds(const cube_rpc_tls *t)
{
    grpc_ssl_pem_key_cert_pair pair = {.private_key = t->key, .cert_chain = t->cert};
    return grpc_ssl_server_credentials_create_ex(
        t->ca, &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
}

int cube_rpc_tls_configure(const char *dir, cube_err *err)
{
    if (!dir || !*dir) return 0;
    cube_rpc_tls *t = cube_rpc_tls_load(dir, err);
    if (!t) return -1;
    cube_rpc_use_tls(t); /* the process's for its lifetime */
    return 0;
}
