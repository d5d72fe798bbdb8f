/* DNS wire format for the node's resolver (see dns.h), over ldns: parsing queries and answers, and the
 * small replies the resolver makes itself. */
#include <arpa/inet.h>
#include <ldns/ldns.h>
#include <string.h>
#include <strings.h>

#include "dns.h"

/* the owner name of rr in presentation form: lowercased, without the trailing dot */
static int owner_name(const ldns_rr *rr, char out[CN_NAME_MAX])
{
    char *s = ldns_rdf2str(ldns_rr_owner(rr));
    if (!s) return -1;
    size_t n = strlen(s);
    if (n && s[n - 1] == '.') n--;
    int rc = n < CN_NAME_MAX ? 0 : -1;
    if (rc == 0) {
        for (size_t i = 0; i < n; i++)
            out[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
        out[n] = '\0';
    }
    free(s);
    return rc;
}

int cn_dns_parse_query(const uint8_t *buf, size_t len, cn_dns_question *q)
{
    ldns_pkt *pkt = NULL;
    if (len < 12 || ldns_wire2pkt(&pkt, buf, len) != LDNS_STATUS_OK) return -1;
    int rc = -1;
    if (!ldns_pkt_qr(pkt) && ldns_pkt_get_opcode(pkt) == LDNS_PACKET_QUERY && ldns_pkt_qdcount(pkt) == 1 &&
        ldns_rr_list_rr_count(ldns_pkt_question(pkt)) == 1) {
        const ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_question(pkt), 0);
        q->id = ldns_pkt_id(pkt);
        q->qtype = (uint16_t)ldns_rr_get_type(rr);
        rc = owner_name(rr, q->name);
    }
    ldns_pkt_free(pkt);
    return rc;
}

size_t cn_dns_reply_empty(const uint8_t *query, size_t len, int rcode, uint8_t *out)
{
    /* header + the question as it came (the query parsed: one question, its name's labels in bounds) */
    size_t off = 12;
    while (off < len && query[off] != 0) {
        if ((query[off] & 0xc0) == 0xc0) { /* a pointer ends the name */
            off += 1;
            break;
        }
        off += 1u + query[off];
    }
    off += 1 + 4; /* the terminating zero (or the pointer's second byte), type, class */
    if (off > len) off = 12;
    memcpy(out, query, off);
    out[2] = (uint8_t)(0x80 | (query[2] & 0x79)); /* QR, the opcode and RD as asked; not authoritative */
    out[3] = (uint8_t)(0x80 | (rcode & 0x0f));    /* RA */
    out[4] = 0;
    out[5] = off > 12 ? 1 : 0;
    memset(out + 6, 0, 6);
    return off;
}

int cn_dns_parse_answer(const uint8_t *buf, size_t len, const cn_dns_question *q, uint32_t *addrs, int max,
                        uint32_t *ttl)
{
    ldns_pkt *pkt = NULL;
    if (len < 12 || ldns_wire2pkt(&pkt, buf, len) != LDNS_STATUS_OK) return -1;
    int n = -1;
    char name[CN_NAME_MAX];
    if (ldns_pkt_qr(pkt) && ldns_pkt_qdcount(pkt) == 1 &&
        ldns_rr_list_rr_count(ldns_pkt_question(pkt)) == 1 &&
        owner_name(ldns_rr_list_rr(ldns_pkt_question(pkt), 0), name) == 0 && strcasecmp(name, q->name) == 0 &&
        (uint16_t)ldns_rr_get_type(ldns_rr_list_rr(ldns_pkt_question(pkt), 0)) == q->qtype) {
        n = 0;
        *ttl = UINT32_MAX;
        const ldns_rr_list *an = ldns_pkt_answer(pkt);
        for (size_t i = 0; i < ldns_rr_list_rr_count(an); i++) {
            const ldns_rr *rr = ldns_rr_list_rr(an, i);
            /* CNAMEs on the way count for their TTL: the chain is as good as its shortest link */
            if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_CNAME && ldns_rr_ttl(rr) < *ttl) *ttl = ldns_rr_ttl(rr);
            if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_A || ldns_rr_rd_count(rr) != 1) continue;
            const ldns_rdf *rd = ldns_rr_rdf(rr, 0);
            if (ldns_rdf_size(rd) != 4 || n >= max) continue;
            memcpy(&addrs[n++], ldns_rdf_data(rd), 4);
            if (ldns_rr_ttl(rr) < *ttl) *ttl = ldns_rr_ttl(rr);
        }
        if (*ttl == UINT32_MAX) *ttl = 0;
    }
    ldns_pkt_free(pkt);
    return n;
}
