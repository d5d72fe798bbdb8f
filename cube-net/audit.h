/* The audit trail and counters: refused packets and (optionally) allowed new connections from the BPF ring
 * buffer become log lines; per-sandbox counters become Prometheus gauges. */
#ifndef CUBE_NET_AUDIT_H
#define CUBE_NET_AUDIT_H

#include "net.h"

int cn_audit_open(cube_net *n, cube_err *err);
void cn_audit_close(cube_net *n);
/* Thread body: drains the ring buffer until n->stopping, refreshing the metrics about once a second. */
void *cn_audit_loop(void *arg);

#endif
