/* The node's resolver for sandboxes. The BPF program steers every UDP DNS query a sandbox sends (to whatever
 * server) to one socket here; the query is answered as if from the server it was sent to. Names go to the
 * node's upstream resolver when the sandbox's policy lets it reach the server it asked, or when one of its
 * allowed names matches; anything else is answered REFUSED at once (no name leaves the node for a sandbox
 * that may reach nothing: DNS is no way out). The A records of an allowed name's answer are recorded
 * (names.h) before the answer goes back, so the connection that follows finds its address allowed. */
#ifndef CUBE_NET_DNS_H
#define CUBE_NET_DNS_H

#include <stddef.h>
#include <stdint.h>

#include "net.h"

#define CN_DNS_PORT                    53
#define CN_DNS_MAX_PENDING             1024 /* queries waiting for the upstream; beyond: SERVFAIL */
#define CN_DNS_MAX_PENDING_PER_SANDBOX 64
#define CN_DNS_TIMEOUT_MS              5000

/* Opens the resolver's sockets and puts the steered one in the programs' socket map. No upstream (none
 * given, none in /etc/resolv.conf): returns 0 and leaves n->dns NULL (leases with names are then refused). */
int cn_dns_open(cube_net *n, cube_err *err);
void cn_dns_close(cube_net *n);
/* Thread body: answers until n->stopping. */
void *cn_dns_loop(void *arg);

/* The wire-format work, apart from sockets (fuzzed): the question of a query, and a refusal of it. */
typedef struct cn_dns_question {
    uint16_t id;
    uint16_t qtype;
    char name[CN_NAME_MAX]; /* lowercased, no trailing dot ("" for the root) */
} cn_dns_question;

/* A well-formed standard query with one question: 0, else -1. */
int cn_dns_parse_query(const uint8_t *buf, size_t len, cn_dns_question *q);
/* The reply to query (len bytes, parsed by cn_dns_parse_query) with rcode and no records, into out (at least
 * len bytes): its length. */
size_t cn_dns_reply_empty(const uint8_t *query, size_t len, int rcode, uint8_t *out);
/* From a response to q: whether it answers q (same question); the IPv4 addresses of its A records (up to
 * max) and their smallest TTL. Returns the number of addresses, or -1 for a malformed or foreign response. */
int cn_dns_parse_answer(const uint8_t *buf, size_t len, const cn_dns_question *q, uint32_t *addrs, int max,
                        uint32_t *ttl);

#endif
