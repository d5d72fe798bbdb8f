/* A connection the egress proxy injects headers into, on a thread of its own: TLS with the sandbox under a
 * certificate of the node's CA for the name, TLS to the real server (verified for that name), and the
 * requests in between rewritten (egress_http.h). The header values live only here: never in the sandbox. */
#ifndef CUBE_NET_EGRESS_MITM_H
#define CUBE_NET_EGRESS_MITM_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "egress_tls.h"
#include "net.h"

#define CN_MITM_MAX_THREADS     256 /* cube_net.mitm_addr's size */
#define CN_MITM_MAX_PER_SANDBOX 64
#define CN_MITM_IO_MS           30000   /* a handshake, a connect, a write that makes no progress */
#define CN_MITM_IDLE_MS         1800000 /* no bytes either way */

typedef struct cn_mitm_job {
    int down;      /* the sandbox's connection (the job owns it) */
    uint8_t *head; /* what was read of it already (the ClientHello) */
    size_t head_len;
    struct sockaddr_in dst; /* the address the sandbox asked */
    uint32_t sandbox;       /* the sandbox's address (network order) */
    char name[CN_NAME_MAX]; /* its SNI: the upstream's name too */
    char lease[64];
    int nrules;
    char names[CN_MAX_HEADER_RULES][128];
    char values[CN_MAX_HEADER_RULES][CN_HEADER_VALUE_MAX];
} cn_mitm_job;

/* Starts the job's thread (it frees the job); -1 when CN_MITM_MAX_THREADS run already or no thread could be
 * made (the caller still owns the job then). */
int cn_mitm_start(cube_net *n, cn_mitm_job *job);
/* Asks every job to end, and waits until they have. */
void cn_mitm_stop_all(cube_net *n);

#endif
