/* The sandbox's seccomp filter (libseccomp). Loaded last before exec, after no_new_privs. */
#ifndef CUBE_HV_SANDBOX_SECCOMP_H
#define CUBE_HV_SANDBOX_SECCOMP_H

#include "err.h"

int sandbox_seccomp_load(cube_err *err);

#endif
