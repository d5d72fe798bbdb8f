/* The E2B SDK's signed file URLs (Sandbox.uploadUrl / downloadUrl): ?path=&username=&signature=
 * [&signature_expiration=], where signature is "v1_" +
 * base64(sha256("path:operation:user:token[:expiration]")) without padding, operation "read" or "write",
 * token the sandbox's envd access token. The agent checks them; a master finds which sandbox a URL was signed
 * for when the URL names none (E2B_SANDBOX_URL). */
#ifndef CUBE_FILE_SIGNATURE_H
#define CUBE_FILE_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>

/* The signature into out (cap >= 48); 0, or -1 (no memory, out too small). exp may be NULL or "". */
int cube_file_signature(const char *path, const char *op, const char *user, const char *token,
                        const char *exp, char *out, size_t cap);
/* Whether sig is the signature of these fields with token; compared in constant time. */
bool cube_file_signature_ok(const char *sig, const char *path, const char *op, const char *user,
                            const char *token, const char *exp);

#endif
