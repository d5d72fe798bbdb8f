/* What a released slot's network namespace still holds once its sandbox's processes are gone (see
 * cube_net_release): sockets outlive their processes only as TCP states the kernel finishes alone (orphaned
 * connections, TIME_WAIT), or as sockets other processes hold (a connection into the sandbox). Asked over
 * sock_diag, inside the namespace. */
#ifndef CUBE_NET_SCRUB_H
#define CUBE_NET_SCRUB_H

#include "err.h"

/* Destroys every TCP socket of the namespace ns_fd but listeners (SOCK_DESTROY), then counts the sockets
 * left in it into *left: TCP (TIME_WAIT included), UDP and raw ones by its sockstat, UNIX ones by a dump. The
 * calling thread enters the namespace only to open a netlink socket there and returns to host_ns. Returns 0,
 * or -1 with err set (a kernel without sock_diag: nothing known). */
int cn_scrub_sockets(int ns_fd, int host_ns, int *left, cube_err *err);

#endif
