/* The microVM itself, against linux/kvm.h: guest memory (a memfd, or a snapshot's memory file mapped
 * MAP_PRIVATE so clones share its pages copy-on-write), an in-kernel irqchip and PIT, one thread per vCPU
 * running KVM_RUN, a 16550 serial port for the guest's console, and virtio-mmio devices (the root disk, the
 * network over a tap) with interrupts through irqfd; an I/O thread moves frames from the tap into the guest.
 * Pause stops every vCPU outside KVM_RUN; a snapshot is taken while paused. */
#ifndef CUBE_KVM_VMM_H
#define CUBE_KVM_VMM_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define VMM_MAX_VCPUS 8

typedef struct vmm_config {
    const char *kernel;  /* bzImage or vmlinux: a cold boot */
    const char *restore; /* or a snapshot directory (snapshot, memory, disk-overlay): a clone */
    const char *disk;    /* root disk image (ext4), only ever read */
    const char
        *overlay; /* this VM's writable layer over it (created; for a clone, copied from the snapshot's) */
    const char *cmdline; /* appended to the built-in command line */
    uint64_t mem_bytes;
    int vcpus;
    int console_fd; /* the serial port's output */
    /* the guest's eth0: a tap (vnet_tap_open; the VMM works on a duplicate, the caller closes this one), -1
     * for none; its MAC. A clone keeps the
     * addresses its snapshot's guest had: every clone sits behind its own tap, in its own network namespace
     */
    int tap_fd;
    uint8_t mac[6];
} vmm_config;

typedef struct vmm vmm;

/* 0 when /dev/kvm is usable (API 12, in-kernel irqchip, user memory, irqfd), else why not. */
int vmm_available(cube_err *err);
int vmm_create(const vmm_config *cfg, vmm **out, cube_err *err);
/* An eventfd that becomes readable when the guest stops by itself (shutdown, reset, triple fault, error). */
int vmm_exit_fd(const vmm *v);
/* Once it has: 1 when the guest failed (a triple fault, an instruction KVM could not run, an entry failure),
 * 0 when it powered off or reset itself; -1 while it has not stopped by itself. *why (may be NULL) says how.
 */
int vmm_stop_status(vmm *v, const char **why);
int vmm_pause(vmm *v, cube_err *err);
int vmm_resume(vmm *v, cube_err *err);
/* Writes dir/snapshot, dir/memory and dir/disk-overlay (dir is made if it does not exist); the VM is paused
 * meanwhile and left as it was. */
int vmm_snapshot(vmm *v, const char *dir, cube_err *err);
/* Stops the vCPUs for good (the guest is gone), then frees everything. */
void vmm_destroy(vmm *v);

#endif
