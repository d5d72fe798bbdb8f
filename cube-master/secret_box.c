#include "secret_box.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "id.h"

#define MAGIC     "c1"
#define MAGIC_LEN 2
#define NONCE_LEN 12
#define TAG_LEN   16

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int make_key(const char *path, cube_err *err)
{
    uint8_t raw[SECRET_KEY_LEN];
    char hex[2 * SECRET_KEY_LEN + 2];
    if (cube_random_bytes(raw, sizeof(raw), err) < 0) return -1;
    for (size_t i = 0; i < sizeof(raw); i++) {
        hex[2 * i] = "0123456789abcdef"[raw[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[raw[i] & 15];
    }
    hex[2 * SECRET_KEY_LEN] = '\n';
    OPENSSL_cleanse(raw, sizeof(raw));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        OPENSSL_cleanse(hex, sizeof(hex));
        return errno == EEXIST ? 0
                               : cube_err_sys(err, errno, "secrets key %s", path); /* another master won */
    }
    ssize_t n = write(fd, hex, 2 * SECRET_KEY_LEN + 1);
    OPENSSL_cleanse(hex, sizeof(hex));
    if (n != 2 * SECRET_KEY_LEN + 1 || fsync(fd) < 0) {
        int e = n < 0 ? errno : EIO;
        close(fd);
        unlink(path);
        return cube_err_sys(err, e, "secrets key %s", path);
    }
    close(fd);
    return 0;
}

int secret_key_load(const char *path, uint8_t key[SECRET_KEY_LEN], cube_err *err)
{
    if (access(path, F_OK) < 0 && errno == ENOENT && make_key(path, err) < 0) return -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return cube_err_sys(err, errno, "secrets key %s", path);
    struct stat st;
    char hex[2 * SECRET_KEY_LEN + 8];
    ssize_t n = fstat(fd, &st) == 0 ? read(fd, hex, sizeof(hex)) : -1;
    close(fd);
    int rc = 0;
    if (n < 0)
        rc = cube_err_sys(err, errno, "secrets key %s", path);
    else if (!S_ISREG(st.st_mode) || (st.st_mode & 077))
        rc = cube_err_set(err, EPERM,
                          "secrets key %s: others may read it (chmod 600 it, owned by the master's user)",
                          path);
    else if (n < 2 * SECRET_KEY_LEN || (n > 2 * SECRET_KEY_LEN && hex[2 * SECRET_KEY_LEN] != '\n'))
        rc = cube_err_set(err, EINVAL, "secrets key %s: 64 hex digits expected", path);
    for (int i = 0; rc == 0 && i < SECRET_KEY_LEN; i++) {
        int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            rc = cube_err_set(err, EINVAL, "secrets key %s: 64 hex digits expected", path);
        else
            key[i] = (uint8_t)(hi << 4 | lo);
    }
    OPENSSL_cleanse(hex, sizeof(hex));
    if (rc < 0) OPENSSL_cleanse(key, SECRET_KEY_LEN);
    return rc;
}

int secret_seal(const uint8_t key[SECRET_KEY_LEN], const char *aad, const void *plain, size_t len,
                uint8_t **out, size_t *out_len, cube_err *err)
{
    *out = NULL;
    if (len > INT32_MAX - 64) return cube_err_set(err, EMSGSIZE, "secret too large");
    size_t total = MAGIC_LEN + NONCE_LEN + len + TAG_LEN;
    uint8_t *buf = malloc(total);
    if (!buf) return cube_err_set(err, ENOMEM, "out of memory");
    memcpy(buf, MAGIC, MAGIC_LEN);
    uint8_t *nonce = buf + MAGIC_LEN, *ct = nonce + NONCE_LEN, *tag = ct + len;
    if (cube_random_bytes(nonce, NONCE_LEN, err) < 0) {
        free(buf);
        return -1;
    }
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, ok = c && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
                    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
                    EVP_EncryptInit_ex(c, NULL, NULL, key, nonce) == 1 &&
                    EVP_EncryptUpdate(c, NULL, &n, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
                    EVP_EncryptUpdate(c, ct, &n, plain, (int)len) == 1 &&
                    EVP_EncryptFinal_ex(c, ct + n, &n) == 1 &&
                    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok) {
        free(buf);
        return cube_err_set(err, EIO, "cannot seal the secret (OpenSSL)");
    }
    *out = buf;
    *out_len = total;
    return 0;
}

int secret_open(const uint8_t key[SECRET_KEY_LEN], const char *aad, const uint8_t *sealed, size_t len,
                char **plain, size_t *plain_len, cube_err *err)
{
    *plain = NULL;
    if (len < MAGIC_LEN + NONCE_LEN + TAG_LEN || memcmp(sealed, MAGIC, MAGIC_LEN) != 0 || len > INT32_MAX)
        return cube_err_set(err, EIO, "the stored secret is damaged");
    size_t ct_len = len - MAGIC_LEN - NONCE_LEN - TAG_LEN;
    const uint8_t *nonce = sealed + MAGIC_LEN, *ct = nonce + NONCE_LEN, *tag = ct + ct_len;
    char *out = malloc(ct_len + 1);
    if (!out) return cube_err_set(err, ENOMEM, "out of memory");
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n = 0, ok = c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
                    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
                    EVP_DecryptInit_ex(c, NULL, NULL, key, nonce) == 1 &&
                    EVP_DecryptUpdate(c, NULL, &n, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
                    EVP_DecryptUpdate(c, (uint8_t *)out, &n, ct, (int)ct_len) == 1 &&
                    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)tag) == 1 &&
                    EVP_DecryptFinal_ex(c, (uint8_t *)out + n, &n) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok) {
        OPENSSL_cleanse(out, ct_len + 1);
        free(out);
        return cube_err_set(
            err, EIO,
            "the stored secret does not open with this master's key (--secrets-key must be the "
            "same file on every master)");
    }
    out[ct_len] = '\0';
    *plain = out;
    *plain_len = ct_len;
    return 0;
}

void secret_free(char *plain)
{
    if (!plain) return;
    OPENSSL_cleanse(plain, strlen(plain));
    free(plain);
}
