/* The harness of the tests that start real sandboxes (cube-hypervisor's ns backend, exec'd or forked from
 * cube-zygote) over a small rootfs made from this host's binaries, and talk to cube-agent inside through the
 * sandbox's network namespace. Needs root. */
#ifndef CUBE_TEST_HV_SANDBOX_H
#define CUBE_TEST_HV_SANDBOX_H

#include <check.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <sys/types.h>

#include "err.h"
#include "zygote.h"

extern char rootfs[320];  /* the tests' rootfs */
extern char workdir[256]; /* where each sandbox's state directory goes */

typedef struct sandbox {
    char id[32];
    char state[512];
    pid_t hv;    /* the cube-hypervisor process */
    int pidfd;   /* forked by the zygote: not this test's child, watched through this */
    pid_t init;  /* PID 1 inside, as the host sees it */
    int keep_fd; /* the hypervisor's descriptor holding a clone of the sandbox's disk ("keep-fd="), or -1 */
} sandbox;

/* The "forked from cube-zygote" test cases run every case again with sandboxes the zygote forks (the
 * hypervisor not exec'd, the agent built in) instead of an exec'd cube-hypervisor: while zygote.sock >= 0. */
extern cube_zygote zygote;
void zygote_up(void);
void zygote_down(void);

void msleep(int ms);
/* Starts cube-hypervisor; extra flags may follow (NULL-terminated). Fails the test unless it says ready. */
void sb_start(sandbox *sb, const char *id, ...);
int hv_call(sandbox *sb, const char *method, const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, cube_err *err);
/* A method that takes and answers Empty (Pause, Resume), which must succeed. */
void hv_call_empty(sandbox *sb, const char *method);
/* Waits for the hypervisor's exit: this test's child, or the zygote's */
void hv_wait(sandbox *sb);
void sb_stop(sandbox *sb);

typedef struct run_result {
    char out[65536];
    size_t out_len;
    char err[8192];
    int exit_code;
    char status[64];
} run_result;

/* Runs `bash -c cmd` inside the sandbox through cube-agent (process.Process/Start). */
void sb_run(sandbox *sb, const char *cmd, run_result *r);
void expect_run(sandbox *sb, const char *cmd, const char *want_out);
int path_exists(const char *p);
int mounted_under(const char *dir);
/* PID 1, the state directory's mounts and the cgroups of sb are gone (waited for a moment). */
void assert_nothing_left(sandbox *sb);

/* main's set-up: 77 (skip, said) without root, 1 when the rootfs cannot be made, else 0; and its end. */
int hv_sandbox_setup(const char *suite);
void hv_sandbox_cleanup(void);

#endif
