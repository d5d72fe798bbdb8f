/* The sandbox's seccomp filter (libseccomp). Loaded last before exec, after no_new_privs. */
#ifndef CUBE_HV_SANDBOX_SECCOMP_H
#define CUBE_HV_SANDBOX_SECCOMP_H

#include "err.h"

/* Compiles the filter once for this process and the processes it forks (the zygote does, before it forks
 * sandboxes); sandbox_seccomp_load compiles it first if nothing did. */
int sandbox_seccomp_prepare(cube_err *err);
/* Installs it on the calling thread. */
int sandbox_seccomp_load(cube_err *err);

#endif
