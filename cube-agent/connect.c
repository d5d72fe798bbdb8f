#include "connect.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    int http;
} codes[] = {
    [CONNECT_OK] = {"ok", 200},
    [CONNECT_CANCELED] = {"canceled", 499},
    [CONNECT_UNKNOWN] = {"unknown", 500},
    [CONNECT_INVALID_ARGUMENT] = {"invalid_argument", 400},
    [CONNECT_DEADLINE_EXCEEDED] = {"deadline_exceeded", 504},
    [CONNECT_NOT_FOUND] = {"not_found", 404},
    [CONNECT_ALREADY_EXISTS] = {"already_exists", 409},
    [CONNECT_PERMISSION_DENIED] = {"permission_denied", 403},
    [CONNECT_RESOURCE_EXHAUSTED] = {"resource_exhausted", 429},
    [CONNECT_FAILED_PRECONDITION] = {"failed_precondition", 400},
    [CONNECT_ABORTED] = {"aborted", 409},
    [CONNECT_OUT_OF_RANGE] = {"out_of_range", 400},
    [CONNECT_UNIMPLEMENTED] = {"unimplemented", 501},
    [CONNECT_INTERNAL] = {"internal", 500},
    [CONNECT_UNAVAILABLE] = {"unavailable", 503},
    [CONNECT_DATA_LOSS] = {"data_loss", 500},
    [CONNECT_UNAUTHENTICATED] = {"unauthenticated", 401},
};

const char *connect_code_name(connect_code c)
{
    return codes[c].name;
}

int connect_code_http_status(connect_code c)
{
    return codes[c].http;
}

connect_code connect_code_from_errno(int e)
{
    switch (e) {
    case 0:
        return CONNECT_OK;
    case ENOENT:
        return CONNECT_NOT_FOUND;
    case EEXIST:
        return CONNECT_ALREADY_EXISTS;
    case EACCES:
    case EPERM:
        return CONNECT_PERMISSION_DENIED;
    case EINVAL:
    case ENOTDIR:
    case EISDIR:
    case ENAMETOOLONG:
    case EBADMSG:
        return CONNECT_INVALID_ARGUMENT;
    case ENOSPC:
    case EAGAIN:
        return CONNECT_RESOURCE_EXHAUSTED;
    case ETIMEDOUT:
        return CONNECT_DEADLINE_EXCEEDED;
    case ECANCELED:
        return CONNECT_CANCELED;
    case EKEYREJECTED:
        return CONNECT_UNAUTHENTICATED;
    case ENOSYS:
        return CONNECT_UNIMPLEMENTED;
    case ENOTEMPTY:
    case EBUSY:
        return CONNECT_FAILED_PRECONDITION;
    default:
        return CONNECT_INTERNAL;
    }
}

unsigned char *connect_envelope(uint8_t flags, const char *payload, size_t len, size_t *out_len)
{
    unsigned char *buf = malloc(CONNECT_ENVELOPE_HDR + len);
    if (!buf) return NULL;
    buf[0] = flags;
    buf[1] = (unsigned char)(len >> 24);
    buf[2] = (unsigned char)(len >> 16);
    buf[3] = (unsigned char)(len >> 8);
    buf[4] = (unsigned char)len;
    if (len) memcpy(buf + CONNECT_ENVELOPE_HDR, payload, len);
    *out_len = CONNECT_ENVELOPE_HDR + len;
    return buf;
}

int connect_envelope_parse(const unsigned char *buf, size_t len, uint8_t *flags,
                           const unsigned char **payload, size_t *payload_len, const char **why)
{
    if (len < CONNECT_ENVELOPE_HDR) {
        *why = "truncated envelope header";
        return -1;
    }
    uint32_t n = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4];
    if (n > CONNECT_MAX_MESSAGE) {
        *why = "envelope length exceeds the 4 MiB limit";
        return -1;
    }
    if ((size_t)n != len - CONNECT_ENVELOPE_HDR) {
        *why = n > len - CONNECT_ENVELOPE_HDR ? "truncated envelope" : "data after the envelope";
        return -1;
    }
    if (buf[0] & 0x01) {
        *why = "compressed envelopes are not supported";
        return -1;
    }
    *flags = buf[0];
    *payload = buf + CONNECT_ENVELOPE_HDR;
    *payload_len = n;
    return 0;
}

static cJSON *error_object(connect_code code, const char *message)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "code", connect_code_name(code));
    if (message && *message) cJSON_AddStringToObject(o, "message", message);
    return o;
}

char *connect_error_json(connect_code code, const char *message)
{
    cJSON *o = error_object(code, message);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *connect_end_stream_json(connect_code code, const char *message)
{
    cJSON *o = cJSON_CreateObject();
    if (code != CONNECT_OK) cJSON_AddItemToObject(o, "error", error_object(code, message));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *b64_encode(const unsigned char *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (!out) return NULL;
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

unsigned char *b64_decode(const char *s, size_t *out_len)
{
    size_t n = strlen(s);
    /* normalise: url-safe alphabet to standard, restore padding */
    char *norm = malloc(n + 4);
    if (!norm) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '-') c = '+';
        if (c == '_') c = '/';
        if (c == '\n' || c == '\r') continue;
        norm[j++] = c;
    }
    while (j % 4) norm[j++] = '=';
    norm[j] = '\0';
    unsigned char *out = malloc(j / 4 * 3 + 1);
    if (!out) {
        free(norm);
        return NULL;
    }
    int len = EVP_DecodeBlock(out, (unsigned char *)norm, (int)j);
    if (len < 0) {
        free(norm);
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts padding bytes as output: drop them */
    size_t pad = 0;
    if (j >= 1 && norm[j - 1] == '=') pad++;
    if (j >= 2 && norm[j - 2] == '=') pad++;
    free(norm);
    *out_len = (size_t)len - pad;
    return out;
}
