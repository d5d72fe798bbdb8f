/* What cubelet's files share (not for use outside cubelet/): cubelet.c owns the slots (a sandbox's hypervisor
 * from spawn to teardown) and the RPC methods; pool_refill.c keeps the pools at their targets; heartbeat.c
 * reports the node to the masters and picks up new and deleted templates. */
#ifndef CUBE_CUBELET_INTERNAL_H
#define CUBE_CUBELET_INTERNAL_H

#include "cubelet.h"

/* Starts a sandbox of tpl (its hypervisor, its network slot) and waits until its agent answers; *out is not
 * on the list yet. layers: the template's own (NULL) or a snapshot's. */
int cl_spawn_slot(cubelet *c, const cl_template *tpl, const char *layers, cl_slot **out, cube_err *err);
/* Stops the sandbox and removes its state; the slot is already off the list. */
void cl_destroy_slot(cubelet *c, cl_slot *s);
/* With the lock: takes s off the list. */
void cl_unlink_slot(cubelet *c, cl_slot *s);
/* Adds the templates built since the last scan. */
int cl_load_templates(cubelet *c, cube_err *err);

/* With the lock: how many ready sandboxes t's pool should hold now. */
int cl_pool_target(cubelet *c, cl_template *t);
void *cl_refill_loop(void *arg);
void *cl_heartbeat_loop(void *arg);

#endif
