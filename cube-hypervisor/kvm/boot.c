/* Linux 64-bit boot protocol (see boot.h). */
#include "boot.h"

#include <elf.h>
#include <errno.h>
#include <string.h>

#define HDR_OFFSET     0x1f1
#define HDR_MAGIC      0x53726448 /* "HdrS" */
#define MIN_PROTOCOL   0x020c     /* 2.12: xloadflags, so a 64-bit entry can be asked for */
#define ENTRY64_OFFSET 0x200      /* startup_64 in a bzImage's protected-mode part */

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int load_bzimage(const gmem *m, const uint8_t *img, size_t len, kb_kernel *k, cube_err *err)
{
    if (len < 0x250 || le16(img + 0x1fe) != 0xaa55 || le32(img + 0x202) != HDR_MAGIC)
        return cube_err_set(err, EINVAL, "kernel: not a bzImage (no boot signature / HdrS header)");
    uint16_t version = le16(img + 0x206);
    if (version < MIN_PROTOCOL)
        return cube_err_set(err, EINVAL, "kernel: boot protocol %u.%02u is too old (2.12 or later needed)",
                            version >> 8, version & 0xff);
    /* the header is as long as the jump at 0x200 says; never more than the struct we copy it into */
    size_t hdr_end = 0x202 + img[0x201];
    size_t hdr_len = hdr_end - HDR_OFFSET;
    if (hdr_len > sizeof(k->hdr)) hdr_len = sizeof(k->hdr);
    memset(&k->hdr, 0, sizeof(k->hdr));
    memcpy(&k->hdr, img + HDR_OFFSET, hdr_len);
    if (!(k->hdr.xloadflags & XLF_KERNEL_64))
        return cube_err_set(err, EINVAL, "kernel: this bzImage has no 64-bit entry point");
    if (!(k->hdr.loadflags & LOADED_HIGH))
        return cube_err_set(err, EINVAL, "kernel: a zImage (loaded low) is not supported");
    size_t setup_sects = k->hdr.setup_sects ? k->hdr.setup_sects : 4;
    size_t off = (setup_sects + 1) * 512;
    if (off >= len) return cube_err_set(err, EINVAL, "kernel: truncated bzImage (no protected-mode part)");
    /* pref_address is right for a relocatable kernel (aligned) and required for one that is not */
    uint64_t at = k->hdr.pref_address ? k->hdr.pref_address : 0x1000000;
    uint64_t need = len - off;
    if (k->hdr.init_size > need) need = k->hdr.init_size; /* it decompresses in place: room for that */
    uint8_t *dst = gmem_ptr(m, at, need);
    if (!dst)
        return cube_err_set(err, ENOMEM, "kernel: needs %llu bytes at 0x%llx, more than guest memory",
                            (unsigned long long)need, (unsigned long long)at);
    memcpy(dst, img + off, len - off);
    k->load_addr = at;
    k->load_size = len - off;
    k->entry = at + ENTRY64_OFFSET;
    k->is_bzimage = true;
    return 0;
}

static int load_elf(const gmem *m, const uint8_t *img, size_t len, kb_kernel *k, cube_err *err)
{
    if (len < sizeof(Elf64_Ehdr)) return cube_err_set(err, EINVAL, "kernel: truncated ELF header");
    Elf64_Ehdr eh;
    memcpy(&eh, img, sizeof(eh));
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64 ||
        eh.e_phentsize != sizeof(Elf64_Phdr))
        return cube_err_set(err, EINVAL, "kernel: not an x86-64 ELF image");
    if (eh.e_phoff > len || (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff)
        return cube_err_set(err, EINVAL, "kernel: program headers outside the file");
    uint64_t lo = UINT64_MAX, hi = 0;
    int loads = 0;
    bool entry_phys = false;
    uint64_t entry = eh.e_entry;
    for (int i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, img + eh.e_phoff + (size_t)i * sizeof(ph), sizeof(ph));
        if (ph.p_type != PT_LOAD) continue;
        if (ph.p_filesz > ph.p_memsz || ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
            return cube_err_set(err, EINVAL, "kernel: segment %d lies outside the file", i);
        uint8_t *dst = gmem_ptr(m, ph.p_paddr, ph.p_memsz);
        if (!dst)
            return cube_err_set(err, ENOMEM, "kernel: segment %d (0x%llx + %llu) is outside guest memory", i,
                                (unsigned long long)ph.p_paddr, (unsigned long long)ph.p_memsz);
        memcpy(dst, img + ph.p_offset, ph.p_filesz);
        memset(dst + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
        if (ph.p_paddr < lo) lo = ph.p_paddr;
        if (ph.p_paddr + ph.p_memsz > hi) hi = ph.p_paddr + ph.p_memsz;
        /* vmlinux's entry is physical already (ENTRY(phys_startup_64)); a virtual one is translated */
        if (eh.e_entry >= ph.p_paddr && eh.e_entry < ph.p_paddr + ph.p_memsz) entry_phys = true;
        if (!entry_phys && eh.e_entry >= ph.p_vaddr && eh.e_entry < ph.p_vaddr + ph.p_memsz)
            entry = eh.e_entry - ph.p_vaddr + ph.p_paddr;
        loads++;
    }
    if (!loads) return cube_err_set(err, EINVAL, "kernel: ELF image has nothing to load");
    k->load_addr = lo;
    k->load_size = hi - lo;
    k->entry = entry_phys ? eh.e_entry : entry;
    k->is_bzimage = false;
    memset(&k->hdr, 0, sizeof(k->hdr));
    return 0;
}

int kb_load_kernel(const gmem *m, const uint8_t *img, size_t len, kb_kernel *out, cube_err *err)
{
    memset(out, 0, sizeof(*out));
    if (len >= 4 && memcmp(img, ELFMAG, SELFMAG) == 0) return load_elf(m, img, len, out, err);
    return load_bzimage(m, img, len, out, err);
}

static int add(struct boot_e820_entry *e, int n, int max, uint64_t addr, uint64_t size, uint32_t type)
{
    if (n >= max || size == 0) return n;
    e[n].addr = addr;
    e[n].size = size;
    e[n].type = type;
    return n + 1;
}

int kb_e820(uint64_t mem_size, struct boot_e820_entry *e, int max)
{
    int n = 0;
    n = add(e, n, max, 0, KB_EBDA_START, KB_E820_RAM);
    /* EBDA, VGA and BIOS area: nothing there, but the kernel must not use it as RAM */
    n = add(e, n, max, KB_EBDA_START, 0x100000 - KB_EBDA_START, KB_E820_RESERVED);
    uint64_t below = mem_size < KB_MMIO_START ? mem_size : KB_MMIO_START;
    if (below > 0x100000) n = add(e, n, max, 0x100000, below - 0x100000, KB_E820_RAM);
    /* what does not fit below the MMIO hole continues above 4 GiB (guest memory is mapped there too) */
    if (mem_size > KB_MMIO_START)
        n = add(e, n, max, KB_MMIO_START + KB_MMIO_SIZE, mem_size - KB_MMIO_START, KB_E820_RAM);
    return n;
}

int kb_write_zero_page(const gmem *m, const kb_kernel *k, const char *cmdline, cube_err *err)
{
    struct boot_params *bp = gmem_ptr(m, KB_ZERO_PAGE, sizeof(*bp));
    size_t cl = strlen(cmdline) + 1;
    char *cmd = gmem_ptr(m, KB_CMDLINE, KB_CMDLINE_MAX);
    if (!bp || !cmd) return cube_err_set(err, ENOMEM, "guest memory too small for the zero page");
    /* one memory slot from 0: a guest ends below the MMIO hole (3 GiB; microVMs are far smaller) */
    if (m->size > KB_MMIO_START)
        return cube_err_set(err, EINVAL, "guest memory above %llu MiB is not supported",
                            (unsigned long long)(KB_MMIO_START >> 20));
    if (cl > KB_CMDLINE_MAX || (k->is_bzimage && k->hdr.cmdline_size && cl > k->hdr.cmdline_size + 1))
        return cube_err_set(err, E2BIG, "kernel command line of %zu bytes is too long", cl - 1);
    memset(bp, 0, sizeof(*bp));
    if (k->is_bzimage) {
        bp->hdr = k->hdr;
    } else {
        bp->hdr.boot_flag = 0xaa55;
        bp->hdr.header = HDR_MAGIC;
        bp->hdr.kernel_alignment = 0x1000000;
    }
    bp->hdr.type_of_loader = 0xff; /* "undefined" boot loader */
    bp->hdr.loadflags |= CAN_USE_HEAP;
    bp->hdr.heap_end_ptr = 0xfe00;
    bp->hdr.vid_mode = 0xffff; /* normal */
    bp->hdr.cmd_line_ptr = KB_CMDLINE;
    bp->hdr.ramdisk_image = 0;
    bp->hdr.ramdisk_size = 0;
    memcpy(cmd, cmdline, cl);
    bp->e820_entries = (uint8_t)kb_e820(m->size, bp->e820_table, E820_MAX_ENTRIES_ZEROPAGE);
    return 0;
}

/* ---- the MP table (Intel MultiProcessor Specification 1.4): how the guest learns of its vCPUs without
 * ACPI. A floating pointer at the start of the EBDA (which Linux scans), then the configuration table: one
 * processor entry per vCPU, an ISA bus, the I/O APIC, ISA IRQs 0-15 to its pins 0-15 (KVM's default
 * routing), ExtINT and NMI on every local APIC's LINT0 and LINT1. */
#define MP_LAPIC_ADDR  0xfee00000u
#define MP_IOAPIC_ADDR 0xfec00000u

static uint8_t mp_checksum(const uint8_t *p, size_t n)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < n; i++) sum = (uint8_t)(sum + p[i]);
    return (uint8_t)(0 - sum);
}

static uint8_t *mp_put(uint8_t *at, const void *bytes, size_t n)
{
    memcpy(at, bytes, n);
    return at + n;
}

int kb_write_mptable(const gmem *m, int ncpus, cube_err *err)
{
    if (ncpus < 1 || ncpus > KB_MP_MAX_CPUS)
        return cube_err_set(err, EINVAL, "an MP table for %d vCPUs (1 to %d)", ncpus, KB_MP_MAX_CPUS);
    uint8_t *base = gmem_ptr(m, KB_EBDA_START, KB_MP_SIZE);
    if (!base) return cube_err_set(err, ENOMEM, "guest memory too small for the MP table");
    memset(base, 0, KB_MP_SIZE);
    uint8_t *cfg = base + 16, *e = cfg + 44;
    uint16_t entries = 0;
    const uint8_t ioapic_id = (uint8_t)ncpus; /* after the local APICs' ids */
    for (int i = 0; i < ncpus; i++, entries++) {
        uint8_t cpu[20] = {0, (uint8_t)i, 0x14, (uint8_t)(0x01 | (i == 0 ? 0x02 : 0))}; /* enabled, BSP */
        const uint32_t signature = 0x600, features = 0x201; /* family 6; FPU, APIC */
        memcpy(cpu + 4, &signature, 4);
        memcpy(cpu + 8, &features, 4);
        e = mp_put(e, cpu, sizeof(cpu));
    }
    const uint8_t bus[8] = {1, 0, 'I', 'S', 'A', ' ', ' ', ' '};
    e = mp_put(e, bus, sizeof(bus));
    entries++;
    uint8_t ioapic[8] = {2, ioapic_id, 0x11, 0x01};
    const uint32_t ioapic_addr = MP_IOAPIC_ADDR;
    memcpy(ioapic + 4, &ioapic_addr, 4);
    e = mp_put(e, ioapic, sizeof(ioapic));
    entries++;
    for (uint8_t irq = 0; irq < 16; irq++, entries++) {
        const uint8_t intr[8] = {3, 0 /* INT */, 0, 0, 0 /* bus */, irq, ioapic_id, irq};
        e = mp_put(e, intr, sizeof(intr));
    }
    const uint8_t extint[8] = {4, 3 /* ExtINT */, 0, 0, 0, 0, 0xff /* every local APIC */, 0 /* LINT0 */};
    const uint8_t nmi[8] = {4, 1 /* NMI */, 0, 0, 0, 0, 0xff, 1 /* LINT1 */};
    e = mp_put(e, extint, sizeof(extint));
    e = mp_put(e, nmi, sizeof(nmi));
    entries += 2;
    /* the configuration table's header, its checksum over the whole base table */
    const uint16_t length = (uint16_t)(e - cfg);
    const uint32_t lapic = MP_LAPIC_ADDR;
    memcpy(cfg, "PCMP", 4);
    memcpy(cfg + 4, &length, 2);
    cfg[6] = 4; /* spec 1.4 */
    memcpy(cfg + 8, "CUBE    ", 8);
    memcpy(cfg + 16, "MICROVM     ", 12);
    memcpy(cfg + 34, &entries, 2);
    memcpy(cfg + 36, &lapic, 4);
    cfg[7] = mp_checksum(cfg, length);
    /* the floating pointer: where the table is */
    const uint32_t cfg_addr = KB_EBDA_START + 16;
    memcpy(base, "_MP_", 4);
    memcpy(base + 4, &cfg_addr, 4);
    base[8] = 1; /* length in 16-byte units */
    base[9] = 4; /* spec 1.4 */
    base[10] = mp_checksum(base, 16);
    return 0;
}

int kb_write_page_tables(const gmem *m, cube_err *err)
{
    uint64_t *gdt = gmem_ptr(m, KB_GDT_ADDR, 4 * sizeof(uint64_t));
    uint64_t *pml4 = gmem_ptr(m, KB_PML4, 4096), *pdpt = gmem_ptr(m, KB_PDPT, 4096),
             *pd = gmem_ptr(m, KB_PD, 4096);
    if (!gdt || !pml4 || !pdpt || !pd)
        return cube_err_set(err, ENOMEM, "guest memory too small for page tables");
    /* null, unused, __BOOT_CS (0x10): 64-bit code, __BOOT_DS (0x18): flat data */
    gdt[0] = 0;
    gdt[1] = 0;
    gdt[2] = 0x00af9b000000ffffull;
    gdt[3] = 0x00cf93000000ffffull;
    memset(pml4, 0, 4096);
    memset(pdpt, 0, 4096);
    pml4[0] = KB_PDPT | 0x3; /* present, writable */
    pdpt[0] = KB_PD | 0x3;
    for (uint64_t i = 0; i < 512; i++) pd[i] = (i << 21) | 0x83; /* 2 MiB pages: present, writable, PS */
    return 0;
}

struct kvm_segment kb_segment(uint16_t sel)
{
    bool code = sel == KB_BOOT_CS;
    struct kvm_segment s = {
        .base = 0,
        .limit = 0xffffffff,
        .selector = sel,
        .type = code ? 0xb : 0x3, /* execute/read accessed : read/write accessed */
        .present = 1,
        .dpl = 0,
        .db = code ? 0 : 1, /* a 64-bit code segment has D clear */
        .s = 1,
        .l = code ? 1 : 0,
        .g = 1,
    };
    return s;
}

void kb_long_mode_sregs(struct kvm_sregs *s)
{
    s->cs = kb_segment(KB_BOOT_CS);
    s->ds = s->es = s->fs = s->gs = s->ss = kb_segment(KB_BOOT_DS);
    s->gdt.base = KB_GDT_ADDR;
    s->gdt.limit = 4 * 8 - 1;
    s->idt.base = 0;
    s->idt.limit = 0;
    s->cr3 = KB_PML4;
    s->cr4 = 1u << 5;                 /* PAE */
    s->cr0 = (1u << 0) | (1u << 31);  /* PE, PG */
    s->efer = (1u << 8) | (1u << 10); /* LME, LMA */
}

void kb_entry_regs(const kb_kernel *k, struct kvm_regs *r)
{
    memset(r, 0, sizeof(*r));
    r->rip = k->entry;
    r->rsi = KB_ZERO_PAGE; /* the boot protocol: RSI holds the zero page */
    r->rflags = 0x2;       /* bit 1 is always set */
}
