/* cubelet's side of cube-net: each sandbox slot leases a network slot (its namespace) when it is spawned,
 * with E2B's default egress policy, gets the create's policy when claimed with another, and gives the slot
 * back when destroyed. Without a cube-net (cubelet.net unset) sandboxes get a namespace of their own with
 * loopback only, and these do nothing. */
#ifndef CUBE_CUBELET_NETCLIENT_H
#define CUBE_CUBELET_NETCLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "common.pb-c.h"
#include "cubelet.h"

/* Leases a network slot named lease; its namespace path goes to netns ("" without cube-net). */
int cl_net_lease(cubelet *c, const char *lease, char *netns, size_t len, cube_err *err);
/* Leases carry E2B's default policy (internet allowed) from the start: whether np is that one. */
bool cl_net_policy_is_default(const Cube__NetworkPolicy *np);
/* Sets the lease's egress policy (NULL: E2B's default, internet allowed). */
int cl_net_policy(cubelet *c, const char *lease, const Cube__NetworkPolicy *np, cube_err *err);
void cl_net_release(cubelet *c, const char *lease, bool vacated);
/* At start: gives back every lease no sandbox of this node holds (left by a cubelet that died). */
void cl_net_reconcile(cubelet *c);

#endif
