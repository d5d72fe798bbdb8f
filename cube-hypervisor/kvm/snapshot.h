/* The snapshot file: everything of a paused microVM but its memory, which is a file of its own (the guest's
 * RAM, mapped MAP_PRIVATE by every clone so they share its pages copy-on-write).
 *
 *   header   "CUBESNP1"  u32 version  u32 sections
 *   section  u32 type  u32 id  u64 length  u32 crc32(payload)  payload
 *
 * little-endian, sections in any order (a reader skips types it does not know). Every length is checked
 * against the file and every payload against its CRC before anything is restored. */
#ifndef CUBE_KVM_SNAPSHOT_H
#define CUBE_KVM_SNAPSHOT_H

#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

#define SNAP_VERSION 1

enum snap_type {
    SNAP_VM = 1,      /* snap_vm */
    SNAP_VCPU = 2,    /* snap_vcpu, id = vCPU index */
    SNAP_IRQCHIP = 3, /* struct kvm_irqchip, id = chip (PIC master, slave, IOAPIC) */
    SNAP_PIT = 4,     /* struct kvm_pit_state2 */
    SNAP_CLOCK = 5,   /* struct kvm_clock_data */
    SNAP_DEVICE = 6,  /* vmmio_saved, id = device index */
    SNAP_DISK = 7,    /* a disk's overlay bitmap, id = device index */
    SNAP_UART = 8,    /* snap_uart: the serial port's registers (older snapshots lack it: reset values) */
};

typedef struct __attribute__((packed)) snap_uart {
    uint8_t lcr, ier, scr;
    uint8_t reserved[5];
} snap_uart;

typedef struct __attribute__((packed)) snap_vm {
    uint64_t mem_size;
    uint32_t vcpus;
    uint32_t devices;
    char mem_file[256]; /* the memory file's name, beside the snapshot */
} snap_vm;

#define SNAP_MAX_MSRS 64
typedef struct snap_vcpu {
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_fpu fpu;
    struct kvm_lapic_state lapic;
    struct kvm_xcrs xcrs;
    struct kvm_mp_state mp;
    struct kvm_vcpu_events events;
    uint32_t nmsrs;
    struct kvm_msr_entry msrs[SNAP_MAX_MSRS];
} snap_vcpu;

typedef struct snap_writer {
    FILE *f;
    uint32_t n;
    int failed;
} snap_writer;

int snap_create(snap_writer *w, const char *path, cube_err *err);
void snap_put(snap_writer *w, uint32_t type, uint32_t id, const void *data, uint64_t len);
/* Writes the section count, syncs and closes: 0 when every section made it to disk. */
int snap_finish(snap_writer *w, cube_err *err);

typedef struct snap_section {
    uint32_t type, id;
    uint64_t len;
    const uint8_t *data;
} snap_section;

typedef struct snap_file {
    uint8_t *buf;
    uint8_t *aligned; /* the sections' data, each 16-byte aligned (where secs[].data point) */
    size_t size;
    snap_section *secs;
    uint32_t n;
} snap_file;

int snap_open(snap_file *s, const char *path, cube_err *err);
/* The same checks on bytes in memory (what snap_open reads). Takes ownership of buf (malloc'd). */
int snap_parse(snap_file *s, uint8_t *buf, size_t size, cube_err *err);
void snap_close(snap_file *s);
/* The section of that type and id, its length checked to be exactly len; NULL if absent or another size.
 * Aligned for any struct. */
const void *snap_get(const snap_file *s, uint32_t type, uint32_t id, uint64_t len);

#endif
