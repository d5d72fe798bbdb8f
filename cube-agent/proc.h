/* The processes the SDK starts (process.Process): spawn with pipes or a PTY, fan their output out to every
 * stream attached (Start, Connect), take input and signals, and report the end once. A process outlives the
 * streams watching it; it leaves the table when it exits. */
#ifndef CUBE_AGENT_PROC_H
#define CUBE_AGENT_PROC_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

typedef struct proc_table proc_table;
typedef struct proc_sub proc_sub;

typedef struct proc_spec {
    const char *cmd;
    char *const *argv; /* argv[0] is cmd */
    char *const *envp;
    const char *cwd;
    uid_t uid;
    gid_t gid;
    const char *user;
    bool pty;
    uint16_t cols, rows;
    bool stdin_open;
    const char *tag;
    const cJSON *config; /* the request's ProcessConfig, echoed by List */
    int script_fd;       /* >= 0: a descriptor the command reads its script from, kept open across exec */
    int64_t timeout_ms;  /* > 0: its whole process group is killed this long after it starts (the caller's
                          * Connect-Timeout-Ms, as envd ends a command whose timeout passes) */
} proc_spec;

typedef struct proc_selector {
    uint32_t pid; /* 0: by tag */
    const char *tag;
} proc_selector;

proc_table *proc_table_new(void);

/* Starts a process with a stream attached whose first event is start{pid}. */
int proc_start(proc_table *t, const proc_spec *spec, proc_sub **sub, uint32_t *pid, cube_err *err);
/* Attaches a stream to a running process; its first event is start{pid}. ENOENT when none matches. */
int proc_connect(proc_table *t, const proc_selector *sel, proc_sub **sub, cube_err *err);
/* Waits up to timeout_ms for the next event (a ProcessEvent JSON object, caller frees the string).
 * Returns 1 with *json, 0 on timeout, -1 after the end event was delivered. */
int proc_sub_next(proc_sub *sub, int timeout_ms, char **json);
void proc_sub_free(proc_sub *sub);

int proc_send_input(proc_table *t, const proc_selector *sel, const void *data, size_t len, bool pty,
                    cube_err *err);
int proc_signal(proc_table *t, const proc_selector *sel, int sig, cube_err *err);
int proc_close_stdin(proc_table *t, const proc_selector *sel, cube_err *err);
int proc_resize(proc_table *t, const proc_selector *sel, uint16_t cols, uint16_t rows, cube_err *err);
/* SIGKILL to every process group in the table (the agent is stopping: nothing may outlive it). */
void proc_kill_all(proc_table *t);
/* [{config, pid, tag?}] for List. */
cJSON *proc_list(proc_table *t);

#endif
