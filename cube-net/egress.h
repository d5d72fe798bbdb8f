/* The node's egress proxy. The BPF program steers to its listener (bpf_sk_assign, no settings inside the
 * sandbox, nothing to bypass):
 *   - TCP 80/443 of a sandbox whose policy names domains, to an address its address rules do not allow: the
 *     proxy reads the name the connection carries (TLS SNI, HTTP Host) and relays it to the address the
 *     sandbox asked only when that name is allowed and one of the sandbox's allowed names resolved to that
 *     address (one address serving many names: the name decides);
 *   - every other new TCP connection the policy refuses: reset at once (the sandbox sees the refusal now,
 *     not a timeout).
 * One line of audit per decision (lease, name, address, port, verdict, rule) and Prometheus counters. */
#ifndef CUBE_NET_EGRESS_H
#define CUBE_NET_EGRESS_H

#include "net.h"

#define CN_EGRESS_MAX_CONNS             4096
#define CN_EGRESS_MAX_CONNS_PER_SANDBOX 512
#define CN_EGRESS_HEAD_MS               10000   /* to send the first bytes (ClientHello, request head) */
#define CN_EGRESS_CONNECT_MS            10000   /* the upstream's connect */
#define CN_EGRESS_IDLE_MS               1800000 /* a relayed connection with no bytes either way */

/* Opens the listener and puts it in the programs' socket map. */
int cn_egress_open(cube_net *n, cube_err *err);
/* Closes every connection and the listener. */
void cn_egress_close(cube_net *n);
/* Thread body: until n->stopping. */
void *cn_egress_loop(void *arg);

#endif
