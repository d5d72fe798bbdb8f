/* Connect RPC (JSON codec) framing and error vocabulary, as the E2B SDK's envd client speaks it.
 * Streams carry envelopes: 1 flag byte, 4-byte big-endian length, payload. Flag 0x02 ends a stream. */
#ifndef CUBE_AGENT_CONNECT_H
#define CUBE_AGENT_CONNECT_H

#include <stddef.h>
#include <stdint.h>

#define CONNECT_FLAG_END     0x02
#define CONNECT_ENVELOPE_HDR 5
#define CONNECT_MAX_MESSAGE  (4u << 20)

typedef enum connect_code {
    CONNECT_OK = 0,
    CONNECT_CANCELED,
    CONNECT_UNKNOWN,
    CONNECT_INVALID_ARGUMENT,
    CONNECT_DEADLINE_EXCEEDED,
    CONNECT_NOT_FOUND,
    CONNECT_ALREADY_EXISTS,
    CONNECT_PERMISSION_DENIED,
    CONNECT_RESOURCE_EXHAUSTED,
    CONNECT_FAILED_PRECONDITION,
    CONNECT_ABORTED,
    CONNECT_OUT_OF_RANGE,
    CONNECT_UNIMPLEMENTED,
    CONNECT_INTERNAL,
    CONNECT_UNAVAILABLE,
    CONNECT_DATA_LOSS,
    CONNECT_UNAUTHENTICATED,
} connect_code;

const char *connect_code_name(connect_code c); /* "not_found" */
int connect_code_http_status(connect_code c);  /* 404 */
connect_code connect_code_from_errno(int e);   /* ENOENT -> not_found */

/* A malloc'd envelope: header + payload. */
unsigned char *connect_envelope(uint8_t flags, const char *payload, size_t len, size_t *out_len);

/* Decodes one whole envelope from buf[0..len): the payload must span the rest exactly (a unary-stream request
 * is one envelope). Returns 0 and points *payload into buf, or -1 with a reason in *why. */
int connect_envelope_parse(const unsigned char *buf, size_t len, uint8_t *flags,
                           const unsigned char **payload, size_t *payload_len, const char **why);

/* JSON bodies: {"code":"not_found","message":"..."} (unary errors) and the end-stream payload
 * {"error":{"code":...,"message":...}} or {} when code is CONNECT_OK. Caller frees. */
char *connect_error_json(connect_code code, const char *message);
char *connect_end_stream_json(connect_code code, const char *message);

/* Standard base64 for proto-JSON bytes fields. Caller frees. decode accepts missing padding and url-safe
 * form. */
char *b64_encode(const unsigned char *data, size_t len);
unsigned char *b64_decode(const char *s, size_t *out_len);

#endif
