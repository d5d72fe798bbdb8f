#include "id.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

int cube_random_bytes(void *buf, size_t nbytes, cube_err *err)
{
    unsigned char *p = buf;
    while (nbytes > 0) {
        ssize_t n = getrandom(p, nbytes, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return cube_err_sys(err, errno, "getrandom");
        }
        p += n;
        nbytes -= (size_t)n;
    }
    return 0;
}

static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";

int cube_id_new(char prefix, char *out, size_t len, cube_err *err)
{
    unsigned char rnd[64];
    if (len == 0 || len > sizeof(rnd)) return cube_err_set(err, EINVAL, "id length %zu out of range", len);
    size_t i = 0;
    if (prefix) out[i++] = prefix;
    while (i < len) {
        if (cube_random_bytes(rnd, sizeof(rnd), err) < 0) return -1;
        /* rejection sampling keeps the 36 symbols uniform: 252 = 7 * 36 */
        for (size_t j = 0; j < sizeof(rnd) && i < len; j++)
            if (rnd[j] < 252) out[i++] = alphabet[rnd[j] % 36];
    }
    out[len] = '\0';
    return 0;
}

int cube_sandbox_id_new(char out[CUBE_ID_LEN + 1], cube_err *err)
{
    return cube_id_new('i', out, CUBE_ID_LEN, err);
}

bool cube_sandbox_id_valid(const char *s)
{
    if (!s || strlen(s) != CUBE_ID_LEN || s[0] != 'i') return false;
    for (const char *p = s + 1; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))) return false;
    return true;
}

int cube_token_hex(char *out, size_t nbytes, cube_err *err)
{
    unsigned char rnd[128];
    if (nbytes > sizeof(rnd)) return cube_err_set(err, EINVAL, "token of %zu bytes is too long", nbytes);
    if (cube_random_bytes(rnd, nbytes, err) < 0) return -1;
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[rnd[i] >> 4];
        out[2 * i + 1] = hex[rnd[i] & 15];
    }
    out[2 * nbytes] = '\0';
    return 0;
}

bool cube_template_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 63 || s[0] == '.' || s[0] == '-') return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}
