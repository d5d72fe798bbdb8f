/* Secrets at rest: AES-256-GCM under a key file the masters share. A sealed value is
 * "c1" | 12-byte nonce | ciphertext | 16-byte tag, bound (as additional data) to the secret's id and version,
 * so a sealed value copied onto another record, or an older version, does not open. */
#ifndef CUBE_MASTER_SECRET_BOX_H
#define CUBE_MASTER_SECRET_BOX_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define SECRET_KEY_LEN 32

/* Reads the key (64 hex digits) from path, or makes one there (mode 0600) when the file does not exist.
 * A key file others may read, or of the wrong length, is refused with the reason. */
int secret_key_load(const char *path, uint8_t key[SECRET_KEY_LEN], cube_err *err);
/* *out (malloc'd, *out_len bytes) seals len bytes of plain. */
int secret_seal(const uint8_t key[SECRET_KEY_LEN], const char *aad, const void *plain, size_t len,
                uint8_t **out, size_t *out_len, cube_err *err);
/* *plain (malloc'd, NUL-terminated, *plain_len bytes) from a sealed value; EIO when it does not open
 * (another key, another record, damaged). Free it with secret_free. */
int secret_open(const uint8_t key[SECRET_KEY_LEN], const char *aad, const uint8_t *sealed, size_t len,
                char **plain, size_t *plain_len, cube_err *err);
/* Zeroes then frees a value secret_open returned. */
void secret_free(char *plain);

#endif
