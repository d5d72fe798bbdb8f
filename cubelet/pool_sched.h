/* CPU priority of pool work. Sandboxes made ahead of time are made by a thread at nice 10, so the processes
 * it spawns (hypervisor, agent, and every thread they start) run at it (the zygote forks them at the nice
 * value of the thread that asked): on a busy node the creates being
 * answered get the CPU first, and the refill still keeps up under a steady stream of creates (SCHED_IDLE did
 * not: a stream of cold creates starved it and the pool never refilled). A claimed sandbox is raised back to
 * normal, every thread of every process of it, before it is handed out; Linux keeps a nice value per thread.
 * A sandbox made while creates wait for one is theirs: made at normal priority.
 */
#ifndef CUBE_CUBELET_POOL_SCHED_H
#define CUBE_CUBELET_POOL_SCHED_H

#include <stdbool.h>
#include <sys/types.h>

/* The calling thread (and what it spawns from now on, forked by the zygote or not) yields to normal work;
 * urgent (creates are waiting for the sandbox it makes next): back to normal. */
void cl_sched_refill(bool urgent);
/* pid, every thread of it and every descendant process, back to nice 0. pid leads its process group;
 * strays: some descendants may have left it (a template's start command runs in sessions of its own), so
 * they are looked for too (a walk of /proc). */
void cl_sched_foreground(pid_t pid, bool strays);
/* Every thread of pid (not its children) to nice 19: a process left with only its own teardown to do. */
void cl_sched_background_process(pid_t pid);
/* One pool refill at a time on a host, however many cubelets it runs (a cluster tried on one machine, or
 * several cubelets sharing a big one): a start is tens of ms of CPU, and parallel refills of several nodes
 * would take every core from the creates being answered. The lock is a file (flock), so it is dropped with
 * a cubelet that dies holding it. -1 (no lock) when the file cannot be made. */
#define CL_POOL_LOCK "/run/cube/pool-refill.lock"
int cl_pool_lock_open(const char *path);
void cl_pool_lock(int fd, int take);

#endif
