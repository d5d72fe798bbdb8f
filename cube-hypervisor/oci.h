/* The part of an OCI runtime config.json (runtime-spec) that the ns backend honours for a container's PID 1:
 * process.args, process.env, process.cwd, process.user.uid/gid, and hostname. The rest of the spec (mounts,
 * namespaces, capabilities, seccomp) is cube's own: every sandbox gets the same jail. */
#ifndef CUBE_HV_OCI_H
#define CUBE_HV_OCI_H

#include <sys/types.h>

#include "err.h"

typedef struct oci_process {
    char **argv, **envp; /* NULL-terminated */
    char *cwd, *hostname;
    uid_t uid;
    gid_t gid;
} oci_process;

int oci_process_load(const char *config_json, oci_process *out, cube_err *err);
void oci_process_free(oci_process *p);
/* args[0] as runc runs it: a bare name is looked up in the process's own PATH (from envp); the result is prog
 * itself or a path written to buf. */
const char *oci_find_program(const char *prog, char *const *envp, char *buf, size_t len);

#endif
