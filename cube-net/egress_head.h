/* The name a new outbound connection carries in its first bytes: the server name of a TLS ClientHello (SNI)
 * or the Host of an HTTP/1 request. Parsers of bytes a sandbox sends: fuzzed (tests/fuzz/fuzz_egress_head.c).
 */
#ifndef CUBE_NET_EGRESS_HEAD_H
#define CUBE_NET_EGRESS_HEAD_H

#include <stddef.h>
#include <stdint.h>

#define CN_HEAD_MAX 16389 /* one TLS record (16 KiB + its header); an HTTP request head no longer */

/* 1: the name is in out (lowercased, no port, no trailing dot); 0: not all there yet, read more;
 * -1: no name to be had (not a ClientHello, no SNI, malformed). */
int cn_tls_sni(const uint8_t *buf, size_t len, char *out, size_t cap);
int cn_http_host(const uint8_t *buf, size_t len, char *out, size_t cap);

#endif
