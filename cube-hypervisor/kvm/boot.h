/* Loading a Linux guest for the 64-bit boot protocol (Documentation/arch/x86/boot.rst): the kernel image
 * (bzImage, or an uncompressed ELF vmlinux) placed at 1 MiB, the zero page (struct boot_params) with the
 * command line and an e820 map, identity-mapped page tables and a flat GDT; the vCPU starts in long mode at
 * the kernel's 64-bit entry with RSI pointing at the zero page. Pure functions over guest memory and structs:
 * unit-tested without /dev/kvm. */
#ifndef CUBE_KVM_BOOT_H
#define CUBE_KVM_BOOT_H

#include <asm/bootparam.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "guest_mem.h"

/* Guest physical layout below 1 MiB (all inside the first page-table-mapped GiB). */
#define KB_GDT_ADDR    0x500
#define KB_ZERO_PAGE   0x7000
#define KB_PML4        0x9000
#define KB_PDPT        0xa000
#define KB_PD          0xb000
#define KB_CMDLINE     0x20000
#define KB_CMDLINE_MAX 4096
#define KB_KERNEL_ADDR 0x100000
#define KB_EBDA_START  0x9fc00
/* Where virtio-mmio devices sit: in the hole below 4 GiB, so RAM above it moves past 4 GiB. */
#define KB_MMIO_START 0xd0000000ull
#define KB_MMIO_SIZE  0x30000000ull /* to 4 GiB */
/* e820 entry types (the kernel's E820_TYPE_*, not in the UAPI headers) */
#define KB_E820_RAM      1
#define KB_E820_RESERVED 2
#define KB_BOOT_CS       0x10
#define KB_BOOT_DS       0x18

typedef struct kb_kernel {
    uint64_t entry;     /* guest physical address the vCPU starts at */
    uint64_t load_addr; /* where the image was placed */
    uint64_t load_size;
    bool is_bzimage;
    struct setup_header hdr; /* bzImage only: the image's own header, copied into the zero page */
} kb_kernel;

/* Places the kernel image (bytes of a bzImage or ELF64 vmlinux) in guest memory. */
int kb_load_kernel(const gmem *m, const uint8_t *img, size_t len, kb_kernel *out, cube_err *err);
/* Fills e820 with the RAM of a guest of mem_size bytes around the legacy area and the MMIO hole; returns the
 * number of entries (at most max). */
int kb_e820(uint64_t mem_size, struct boot_e820_entry *e820, int max);
/* Writes the zero page (with cmdline and e820) for a loaded kernel. */
int kb_write_zero_page(const gmem *m, const kb_kernel *k, const char *cmdline, cube_err *err);
/* Writes the MP table (floating pointer and configuration table at KB_EBDA_START, KB_MP_SIZE bytes at most)
 * that tells the guest of its ncpus vCPUs (local APIC ids 0..ncpus-1, the first the boot CPU) and its I/O
 * APIC. */
#define KB_MP_MAX_CPUS 16
#define KB_MP_SIZE     0x400
int kb_write_mptable(const gmem *m, int ncpus, cube_err *err);
/* Writes the GDT and identity page tables (first 1 GiB, 2 MiB pages) into guest memory. */
int kb_write_page_tables(const gmem *m, cube_err *err);
/* The vCPU's special registers for long mode with those tables, and its general registers at entry. */
void kb_long_mode_sregs(struct kvm_sregs *sregs);
void kb_entry_regs(const kb_kernel *k, struct kvm_regs *regs);
/* The flat 64-bit code / data descriptor the GDT holds for selector sel, as KVM wants it in sregs. */
struct kvm_segment kb_segment(uint16_t sel);

#endif
