/* Starting a container's processes: the init as a cube-hypervisor sandbox, execs inside its namespaces. */
#ifndef CUBE_SHIM_SPAWN_H
#define CUBE_SHIM_SPAWN_H

#include "shim.h"

/* Starts cube-hypervisor for the bundle: PID 1 is set up and waits at the start gate (s->start_w). */
int spawn_init(shim *s, cube_err *err);
/* Runs exec p inside the container: joins its namespaces and cgroups, the same seccomp filter, its user. */
int spawn_exec(shim *s, shim_proc *p, cube_err *err);

#endif
