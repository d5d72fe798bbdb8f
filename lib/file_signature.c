#include "file_signature.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cube_file_signature(const char *path, const char *op, const char *user, const char *token,
                        const char *exp, char *out, size_t cap)
{
    char *raw;
    int n = exp && *exp ? asprintf(&raw, "%s:%s:%s:%s:%s", path, op, user, token, exp)
                        : asprintf(&raw, "%s:%s:%s:%s", path, op, user, token);
    if (n < 0) return -1;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((unsigned char *)raw, (size_t)n, digest);
    free(raw);
    char b64[4 * ((SHA256_DIGEST_LENGTH + 2) / 3) + 1];
    EVP_EncodeBlock((unsigned char *)b64, digest, (int)sizeof(digest));
    char *eq = strchr(b64, '=');
    if (eq) *eq = '\0';
    n = snprintf(out, cap, "v1_%s", b64);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

bool cube_file_signature_ok(const char *sig, const char *path, const char *op, const char *user,
                            const char *token, const char *exp)
{
    char want[64];
    if (!sig || !token || !*token ||
        cube_file_signature(path ? path : "", op, user ? user : "", token, exp, want, sizeof(want)) < 0)
        return false;
    size_t n = strlen(want);
    return strlen(sig) == n && CRYPTO_memcmp(sig, want, n) == 0;
}
