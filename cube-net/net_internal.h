/* Between cube-net's core files (net.c, net_init.c, audit.c): not for the service or tests. */
#ifndef CUBE_NET_INTERNAL_H
#define CUBE_NET_INTERNAL_H

#include "net.h"
#include "nl.h"

/* Steering to the node's sockets (see net_init.c): the packet mark, the table and the rule's priority. */
#define CN_STEER_MARK     0x0c0be001u
#define CN_STEER_TABLE    3262u
#define CN_STEER_PRIORITY 90u

/* Attaches the programs to a slot's host side, replacing earlier ones. */
int cube_net_attach(cube_net *n, int ifindex, cube_err *err);
/* Writes slot idx's rules under generation gen, then its map entry. */
int cube_net_apply(cube_net *n, int idx, uint32_t gen, const cn_policy *p, cube_err *err);
/* Takes slot idx's rules out of the maps and removes its lease file (lock held; fast). */
void cube_net_detach(cube_net *n, int idx);
/* Removes everything of the k slots idx[]: detach each, then their veths and namespaces, as one batch. */
void cube_net_teardown(cube_net *n, const int *idx, int k, cn_nl *nl);
void *cube_net_refill_loop(void *arg);
/* Puts the calling thread back in the node's network namespace (host_ns) after work inside another, or
 * aborts: a thread left in a sandbox's namespace must not go on. */
void cn_return_home(int host_ns);
/* The host-side interface name of slot idx: <ifprefix><idx>. */
void cube_net_ifname(const cube_net *n, int idx, char name[16]);
/* Puts fd at index which (enum cn_sock_index) of the programs' socket map, or takes it out (fd -1): where
 * they steer to. */
int cube_net_steer_to(cube_net *n, unsigned which, int fd, cube_err *err);
/* The leased slot a sandbox address (network order) belongs to, or 0 (lock held). */
int cube_net_slot_of_addr(const cube_net *n, uint32_t addr);
/* Makes slot idx findable by its lease name (lock held). */
void cube_net_index_lease(cube_net *n, int idx);

#endif
