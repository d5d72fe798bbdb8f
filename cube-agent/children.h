/* Child processes of the agent. The agent's main thread reaps every child when SIGCHLD comes (the agent is
 * PID 1 in a sandbox, so orphans land here too: SIGCHLD is blocked in every thread and taken by sigwait) and
 * hands the exit status of the registered ones to their owner's callback. Register under children_lock()
 * around vfork(), so a child that dies at once is still found. No thread of its own: a sandbox starts with
 * one thread fewer. */
#ifndef CUBE_AGENT_CHILDREN_H
#define CUBE_AGENT_CHILDREN_H

#include <sys/types.h>

typedef void (*child_exit_cb)(void *arg, pid_t pid, int wstatus);

int children_start(void); /* once per process, before any child */
/* Reaps every child that has exited, without waiting; on each SIGCHLD. */
void children_reap(void);
void children_lock(void);
void children_unlock(void);
/* With the lock held. */
int children_add(pid_t pid, child_exit_cb cb, void *arg);

/* How many processes (threads included) the agent's children may have, per user: the sandbox's pids limit
 * less a reserve, so that a fork bomb leaves the agent room to serve the kill that ends it. 0: no limit. Set
 * once at start. */
void children_set_nproc(long n);

/* In a child between fork and exec (async-signal-safe): gives up what only the agent keeps. Every signal's
 * disposition is the default again (an ignored one would survive exec) and none is blocked. Its OOM score is
 * raised well above the agent's (an oom_score_adj of 500 counts as half the sandbox's memory), so a sandbox
 * out of memory loses the processes that use it, never the agent (raising one's own score needs no
 * privilege; lowering it again does); and its process count is bounded (children_set_nproc). */
void children_confine(void);
/* In a child between vfork and exec, as root: becomes uid:gid with those supplementary groups (uid 0: the
 * groups and gid only). Raw system calls, not glibc's: the child borrows the agent's memory, and glibc's
 * setuid would have every thread of the agent change its credentials. A change of credentials makes that
 * memory undumpable, and it is still the agent's (its /proc files would go to the host's root, and the next
 * child could not set its oom_score_adj): made dumpable again (exec gives the child memory of its own, with
 * exec's rule). 0, or -1 with errno. */
int children_become(uid_t uid, gid_t gid, const gid_t *groups, int ngroups);

#endif
