/* Child processes of the agent. One reaper thread waits for every child (the agent is PID 1 in a sandbox, so
 * orphans land here too) and hands the exit status of the registered ones to their owner's callback.
 * Register under children_lock() around fork(), so a child that dies at once is still found. */
#ifndef CUBE_AGENT_CHILDREN_H
#define CUBE_AGENT_CHILDREN_H

#include <sys/types.h>

typedef void (*child_exit_cb)(void *arg, pid_t pid, int wstatus);

int children_start(void); /* starts the reaper; once per process */
void children_lock(void);
void children_unlock(void);
/* With the lock held. */
int children_add(pid_t pid, child_exit_cb cb, void *arg);

#endif
