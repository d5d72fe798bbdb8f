/* The kvm backend's jail, in the spirit of Firecracker's jailer. Once the microVM is built (KVM and vCPU
 * descriptors, guest memory, disk and tap, the control socket), the VMM process keeps only what running it
 * takes:
 *  - its own cgroup (kvm_create puts it there: the guest's memory plus the VMM's own, its vCPUs, a few
 *    dozen tasks), removed by a janitor process when the VMM is gone;
 *  - no capabilities at all (effective, permitted, inheritable, ambient and the bounding set) and
 *    no_new_privs, so none can come back through an exec;
 *  - a seccomp filter that allows the system calls its threads make (vCPUs, the I/O thread, the control
 *    socket's server, snapshots to files) and, of ioctl, only KVM's run-time requests and a terminal query;
 *    threads may be started, processes not (clone without CLONE_THREAD; clone3 answers ENOSYS so libc falls
 *    back to clone, whose flags the filter can see). Everything else fails with EPERM: what a compromised
 *    VMM would reach for (exec, new sockets, mount, ptrace, bpf, modules, namespaces, keyrings) is not there.
 */
#ifndef CUBE_HV_VMM_JAIL_H
#define CUBE_HV_VMM_JAIL_H

#include "err.h"

int vmm_drop_caps(cube_err *err);
/* For every thread of the process (TSYNC). */
int vmm_seccomp_load(cube_err *err);
/* Both, capabilities first. */
int vmm_jail(cube_err *err);

#endif
