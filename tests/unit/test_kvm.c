/* The kvm backend's parts that need no /dev/kvm: the boot protocol (kernel loading, zero page, e820, page
 * tables, long-mode registers), virtqueues (including what a hostile guest can write into them), the
 * virtio-mmio transport, virtio-blk's copy-on-write overlay, and the snapshot format with device state round
 * trips. Guest memory is a plain buffer the test writes as a driver would. */
#include <asm/bootparam.h>
#include <check.h>
#include <elf.h>
#include <fcntl.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <linux/virtio_ring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boot.h"
#include "snapshot.h"
#include "virtio_blk.h"
#include "virtio_net.h"
#include "virtio_mmio.h"
#include "virtq.h"

#define MEM (64u << 20)

static gmem mem;

static void mem_setup(void)
{
    mem.size = MEM;
    mem.base = calloc(1, MEM);
    ck_assert_ptr_nonnull(mem.base);
}

static void mem_teardown(void)
{
    free(mem.base);
}

/* ---- boot ---- */

/* A bzImage as far as a loader reads it: the setup header of protocol 2.15 and a protected-mode part. */
static uint8_t *fake_bzimage(size_t *len, uint8_t setup_sects, uint16_t version, uint16_t xloadflags)
{
    *len = (setup_sects + 1) * 512 + 8192;
    uint8_t *img = calloc(1, *len);
    struct setup_header h = {0};
    h.setup_sects = setup_sects;
    h.boot_flag = 0xaa55;
    h.jump = 0x6aeb; /* jmp over the header: 0x6a bytes after 0x202 */
    h.header = 0x53726448;
    h.version = version;
    h.loadflags = LOADED_HIGH;
    h.kernel_alignment = 0x200000;
    h.relocatable_kernel = 1;
    h.xloadflags = xloadflags;
    h.cmdline_size = 2047;
    h.pref_address = 0x1000000;
    h.init_size = 0x400000;
    memcpy(img + 0x1f1, &h, sizeof(h));
    for (size_t i = (setup_sects + 1) * 512; i < *len; i++) img[i] = (uint8_t)(i * 7);
    return img;
}

START_TEST(bzimage_loads_at_its_preferred_address)
{
    size_t len;
    uint8_t *img = fake_bzimage(&len, 27, 0x020f, XLF_KERNEL_64);
    kb_kernel k;
    cube_err err = {0};
    ck_assert_msg(kb_load_kernel(&mem, img, len, &k, &err) == 0, "%s", err.msg);
    ck_assert(k.is_bzimage);
    ck_assert_uint_eq(k.load_addr, 0x1000000);
    ck_assert_uint_eq(k.entry, 0x1000000 + 0x200); /* the 64-bit entry */
    ck_assert_uint_eq(k.load_size, len - 28 * 512);
    ck_assert_mem_eq(mem.base + 0x1000000, img + 28 * 512, k.load_size);
    ck_assert_uint_eq(k.hdr.version, 0x020f);
    free(img);
}
END_TEST

START_TEST(bad_kernels_are_refused_with_a_reason)
{
    kb_kernel k;
    cube_err err = {0};
    size_t len;
    uint8_t *img = fake_bzimage(&len, 4, 0x020b, XLF_KERNEL_64);
    ck_assert_int_lt(kb_load_kernel(&mem, img, len, &k, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "too old"));
    free(img);
    img = fake_bzimage(&len, 4, 0x020f, 0);
    ck_assert_int_lt(kb_load_kernel(&mem, img, len, &k, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "64-bit"));
    /* a kernel too big for the guest */
    gmem small = {mem.base, 0x1000000 + 4096};
    free(img);
    img = fake_bzimage(&len, 4, 0x020f, XLF_KERNEL_64);
    ck_assert_int_lt(kb_load_kernel(&small, img, len, &k, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "guest memory"));
    /* garbage */
    memset(img, 0x5a, len);
    ck_assert_int_lt(kb_load_kernel(&mem, img, len, &k, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a bzImage"));
    free(img);
}
END_TEST

START_TEST(elf_vmlinux_loads_its_segments)
{
    uint8_t img[8192] = {0};
    Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_machine = EM_X86_64;
    eh->e_phentsize = sizeof(Elf64_Phdr);
    eh->e_phoff = sizeof(*eh);
    eh->e_phnum = 1;
    eh->e_entry = 0x1000000; /* physical, as vmlinux has it */
    Elf64_Phdr *ph = (Elf64_Phdr *)(img + sizeof(*eh));
    ph->p_type = PT_LOAD;
    ph->p_offset = 4096;
    ph->p_filesz = 100;
    ph->p_memsz = 4096; /* bss past the file part is zeroed */
    ph->p_paddr = 0x1000000;
    ph->p_vaddr = 0xffffffff81000000ull;
    memset(img + 4096, 0xab, 100);
    memset(mem.base + 0x1000000, 0xff, 4096);
    kb_kernel k;
    cube_err err = {0};
    ck_assert_msg(kb_load_kernel(&mem, img, sizeof(img), &k, &err) == 0, "%s", err.msg);
    ck_assert(!k.is_bzimage);
    ck_assert_uint_eq(k.entry, 0x1000000);
    ck_assert_uint_eq(mem.base[0x1000000 + 99], 0xab);
    ck_assert_uint_eq(mem.base[0x1000000 + 100], 0);
    /* a segment outside the file is refused */
    ph->p_filesz = 1 << 20;
    ck_assert_int_lt(kb_load_kernel(&mem, img, sizeof(img), &k, &err), 0);
}
END_TEST

START_TEST(e820_leaves_the_legacy_area_and_the_mmio_hole)
{
    struct boot_e820_entry e[8];
    int n = kb_e820(256u << 20, e, 8);
    ck_assert_int_eq(n, 3);
    ck_assert_uint_eq(e[0].addr, 0);
    ck_assert_uint_eq(e[0].size, KB_EBDA_START);
    ck_assert_uint_eq(e[0].type, KB_E820_RAM);
    ck_assert_uint_eq(e[1].type, KB_E820_RESERVED);
    ck_assert_uint_eq(e[1].addr + e[1].size, 0x100000);
    ck_assert_uint_eq(e[2].addr, 0x100000);
    ck_assert_uint_eq(e[2].addr + e[2].size, 256u << 20);
    /* a guest bigger than the space below the hole continues above 4 GiB */
    n = kb_e820(4ull << 30, e, 8);
    ck_assert_int_eq(n, 4);
    ck_assert_uint_eq(e[2].addr + e[2].size, KB_MMIO_START);
    ck_assert_uint_eq(e[3].addr, 1ull << 32);
    ck_assert_uint_eq(e[3].size, (4ull << 30) - KB_MMIO_START);
    /* never more entries than asked for */
    ck_assert_int_eq(kb_e820(4ull << 30, e, 2), 2);
}
END_TEST

START_TEST(zero_page_carries_header_cmdline_and_memory_map)
{
    size_t len;
    uint8_t *img = fake_bzimage(&len, 27, 0x020f, XLF_KERNEL_64);
    kb_kernel k;
    cube_err err = {0};
    ck_assert_int_eq(kb_load_kernel(&mem, img, len, &k, &err), 0);
    const char *cmd = "console=hvc0 root=/dev/vda ro virtio_mmio.device=4K@0xd0000000:5";
    ck_assert_msg(kb_write_zero_page(&mem, &k, cmd, &err) == 0, "%s", err.msg);
    struct boot_params *bp = (struct boot_params *)(mem.base + KB_ZERO_PAGE);
    ck_assert_uint_eq(bp->hdr.header, 0x53726448);
    ck_assert_uint_eq(bp->hdr.type_of_loader, 0xff);
    ck_assert_uint_eq(bp->hdr.cmd_line_ptr, KB_CMDLINE);
    ck_assert(bp->hdr.loadflags & CAN_USE_HEAP);
    ck_assert_str_eq((char *)mem.base + KB_CMDLINE, cmd);
    ck_assert_uint_eq(bp->e820_entries, 3);
    ck_assert_uint_eq(bp->e820_table[2].addr + bp->e820_table[2].size, MEM);
    /* longer than the kernel accepts */
    char *longcmd = malloc(3000);
    memset(longcmd, 'x', 2999);
    longcmd[2999] = 0;
    ck_assert_int_lt(kb_write_zero_page(&mem, &k, longcmd, &err), 0);
    free(longcmd);
    free(img);
}
END_TEST

/* Walks the guest page tables as the CPU would for a 2 MiB-page identity map. */
static uint64_t translate(uint64_t va)
{
    uint64_t *pml4 = (uint64_t *)(mem.base + KB_PML4);
    uint64_t e = pml4[(va >> 39) & 511];
    if (!(e & 1)) return ~0ull;
    uint64_t *pdpt = (uint64_t *)(mem.base + (e & ~0xfffull));
    e = pdpt[(va >> 30) & 511];
    if (!(e & 1)) return ~0ull;
    uint64_t *pd = (uint64_t *)(mem.base + (e & ~0xfffull));
    e = pd[(va >> 21) & 511];
    if (!(e & 1) || !(e & 0x80)) return ~0ull;
    return (e & ~0x1fffffull) + (va & 0x1fffff);
}

static uint8_t sum(const uint8_t *p, size_t n)
{
    uint8_t v = 0;
    for (size_t i = 0; i < n; i++) v = (uint8_t)(v + p[i]);
    return v;
}

/* What Linux's mpparse reads: the floating pointer where it scans (the EBDA's first KiB), both checksums,
 * one enabled processor per vCPU (the first the boot CPU), the ISA bus, the I/O APIC and its 16 ISA pins */
START_TEST(mp_table_lists_every_vcpu_and_the_io_apic)
{
    cube_err err = {0};
    ck_assert_int_eq(kb_write_mptable(&mem, 3, &err), 0);
    const uint8_t *fp = gmem_ptr(&mem, KB_EBDA_START, 16);
    ck_assert_mem_eq(fp, "_MP_", 4);
    ck_assert_uint_eq(sum(fp, 16), 0);
    ck_assert_uint_eq(fp[8], 1);
    ck_assert_uint_eq(fp[9], 4);
    uint32_t at;
    memcpy(&at, fp + 4, 4);
    ck_assert_uint_ge(at, KB_EBDA_START);
    const uint8_t *cfg = gmem_ptr(&mem, at, 44);
    ck_assert_mem_eq(cfg, "PCMP", 4);
    uint16_t len, n;
    memcpy(&len, cfg + 4, 2);
    memcpy(&n, cfg + 34, 2);
    ck_assert_uint_le(at + len, KB_EBDA_START + KB_MP_SIZE);
    ck_assert_uint_eq(sum(cfg, len), 0);
    uint32_t lapic;
    memcpy(&lapic, cfg + 36, 4);
    ck_assert_uint_eq(lapic, 0xfee00000u);
    int cpus = 0, bsp = 0, buses = 0, ioapics = 0, irqs = 0, lints = 0, ioapic_id = -1;
    const uint8_t *e = cfg + 44;
    for (int i = 0; i < n; i++) {
        ck_assert_int_lt(e - cfg, len);
        switch (e[0]) {
        case 0:
            ck_assert_uint_eq(e[1], cpus); /* APIC ids in order, as the vCPUs' CPUID says */
            ck_assert(e[3] & 1);
            bsp += (e[3] & 2) != 0;
            if (e[3] & 2) ck_assert_int_eq(cpus, 0);
            cpus++;
            e += 20;
            break;
        case 1:
            ck_assert_mem_eq(e + 2, "ISA   ", 6);
            buses++;
            e += 8;
            break;
        case 2: {
            uint32_t addr;
            memcpy(&addr, e + 4, 4);
            ck_assert_uint_eq(addr, 0xfec00000u);
            ck_assert(e[3] & 1);
            ioapic_id = e[1];
            ioapics++;
            e += 8;
            break;
        }
        case 3:
            ck_assert_int_eq(e[6], ioapic_id);
            ck_assert_uint_eq(e[5], e[7]); /* ISA IRQ n on pin n */
            irqs++;
            e += 8;
            break;
        case 4:
            lints++;
            e += 8;
            break;
        default:
            ck_abort_msg("entry %d has type %u", i, e[0]);
        }
    }
    ck_assert_int_eq(e - cfg, len);
    ck_assert_int_eq(cpus, 3);
    ck_assert_int_eq(bsp, 1);
    ck_assert_int_eq(buses, 1);
    ck_assert_int_eq(ioapics, 1);
    ck_assert_int_ge(ioapic_id, 3); /* not a local APIC's id */
    ck_assert_int_eq(irqs, 16);
    ck_assert_int_eq(lints, 2);
    /* the most vCPUs still fit where Linux looks; more are refused */
    ck_assert_int_eq(kb_write_mptable(&mem, KB_MP_MAX_CPUS, &err), 0);
    memcpy(&len, cfg + 4, 2);
    ck_assert_uint_le(at + len, KB_EBDA_START + KB_MP_SIZE);
    ck_assert_int_eq(kb_write_mptable(&mem, KB_MP_MAX_CPUS + 1, &err), -1);
    ck_assert_int_eq(kb_write_mptable(&mem, 0, &err), -1);
}
END_TEST

START_TEST(page_tables_identity_map_the_first_gib)
{
    cube_err err = {0};
    ck_assert_int_eq(kb_write_page_tables(&mem, &err), 0);
    ck_assert_uint_eq(translate(0), 0);
    ck_assert_uint_eq(translate(KB_ZERO_PAGE), KB_ZERO_PAGE);
    ck_assert_uint_eq(translate(0x1000200), 0x1000200);
    ck_assert_uint_eq(translate((1ull << 30) - 1), (1ull << 30) - 1);
    ck_assert_uint_eq(translate(1ull << 30), ~0ull); /* not mapped beyond */
    /* the GDT holds __BOOT_CS and __BOOT_DS where the selectors point */
    uint64_t *gdt = (uint64_t *)(mem.base + KB_GDT_ADDR);
    uint64_t cs = gdt[KB_BOOT_CS / 8], ds = gdt[KB_BOOT_DS / 8];
    ck_assert(cs & (1ull << 53));    /* L: 64-bit code */
    ck_assert(cs & (1ull << 47));    /* present */
    ck_assert(ds & (1ull << 54));    /* D/B: 32-bit data */
    ck_assert(!(ds & (1ull << 43))); /* data, not code */
}
END_TEST

START_TEST(long_mode_registers)
{
    struct kvm_sregs s = {0};
    kb_long_mode_sregs(&s);
    ck_assert_uint_eq(s.cr3, KB_PML4);
    ck_assert(s.cr0 & 1);
    ck_assert(s.cr0 & (1u << 31));
    ck_assert(s.cr4 & (1u << 5));
    ck_assert(s.efer & (1u << 8));
    ck_assert(s.efer & (1u << 10));
    ck_assert_uint_eq(s.cs.selector, KB_BOOT_CS);
    ck_assert_uint_eq(s.cs.l, 1);
    ck_assert_uint_eq(s.cs.db, 0);
    ck_assert_uint_eq(s.ss.selector, KB_BOOT_DS);
    ck_assert_uint_eq(s.gdt.base, KB_GDT_ADDR);
    kb_kernel k = {.entry = 0x1000200};
    struct kvm_regs r;
    kb_entry_regs(&k, &r);
    ck_assert_uint_eq(r.rip, 0x1000200);
    ck_assert_uint_eq(r.rsi, KB_ZERO_PAGE);
    ck_assert_uint_eq(r.rflags & 2, 2);
}
END_TEST

/* ---- virtqueues, as a driver fills them ---- */

#define QN    8
#define DESC  0x10000
#define AVAIL 0x11000
#define USED  0x12000
#define BUFS  0x20000

static struct vring_desc *desc(void)
{
    return (struct vring_desc *)(mem.base + DESC);
}
static struct vring_avail *avail(void)
{
    return (struct vring_avail *)(mem.base + AVAIL);
}
static struct vring_used *used(void)
{
    return (struct vring_used *)(mem.base + USED);
}

static virtq queue(void)
{
    virtq q = {.num = QN, .ready = true, .desc_gpa = DESC, .avail_gpa = AVAIL, .used_gpa = USED};
    return q;
}

/* Makes a chain of n descriptors from index first on, buffer i at BUFS + i * 4096 with lens[i]; the last
 * nw are writable; then publishes it. */
static void driver_offer(uint16_t first, int n, const uint32_t *lens, int nw)
{
    for (int i = 0; i < n; i++) {
        struct vring_desc *d = &desc()[(first + i) % QN];
        d->addr = BUFS + (uint64_t)((first + i) % QN) * 4096;
        d->len = lens[i];
        d->flags = (uint16_t)((i < n - 1 ? VRING_DESC_F_NEXT : 0) | (i >= n - nw ? VRING_DESC_F_WRITE : 0));
        d->next = (uint16_t)((first + i + 1) % QN);
    }
    avail()->ring[avail()->idx % QN] = (uint16_t)(first % QN);
    avail()->idx++;
}

START_TEST(virtq_pops_chains_and_pushes_used)
{
    virtq q = queue();
    cube_err err = {0};
    ck_assert_int_eq(vq_validate(&q, &mem, &err), 0);
    vq_chain c;
    ck_assert_int_eq(vq_pop(&q, &mem, &c, &err), 0); /* nothing yet */
    uint32_t lens[] = {16, 100, 1};
    driver_offer(0, 3, lens, 2);
    ck_assert_int_eq(vq_pop(&q, &mem, &c, &err), 1);
    ck_assert_int_eq(c.head, 0);
    ck_assert_int_eq(c.nr, 1);
    ck_assert_int_eq(c.nw, 2);
    ck_assert_uint_eq(vq_readable_len(&c), 16);
    ck_assert_uint_eq(vq_writable_len(&c), 101);
    /* copying across buffer boundaries */
    char msg[] = "0123456789abcdefXYZ";
    ck_assert_uint_eq(vq_write(&c, 98, msg, 3), 3);
    ck_assert_uint_eq(mem.base[BUFS + 1 * 4096 + 98], '0');
    ck_assert_uint_eq(mem.base[BUFS + 2 * 4096], '2');
    vq_push(&q, &mem, c.head, 101);
    ck_assert_uint_eq(used()->idx, 1);
    ck_assert_uint_eq(used()->ring[0].id, 0);
    ck_assert_uint_eq(used()->ring[0].len, 101);
    ck_assert(vq_should_notify(&q, &mem));
    avail()->flags = VRING_AVAIL_F_NO_INTERRUPT;
    ck_assert(!vq_should_notify(&q, &mem));
    /* the indices wrap at 2^16 as the spec says */
    q.last_avail = 0xffff;
    avail()->idx = 0xffff;
    driver_offer(3, 1, lens, 0);
    ck_assert_uint_eq(avail()->idx, 0);
    ck_assert_int_eq(vq_pop(&q, &mem, &c, &err), 1);
    ck_assert_int_eq(c.head, 3);
}
END_TEST

START_TEST(virtq_refuses_what_a_hostile_guest_writes)
{
    virtq q = queue();
    vq_chain c;
    cube_err err = {0};
    uint32_t lens[] = {16, 16};
    /* a loop: 0 -> 1 -> 0 */
    driver_offer(0, 2, lens, 0);
    desc()[1].flags = VRING_DESC_F_NEXT;
    desc()[1].next = 0;
    ck_assert_int_eq(vq_pop(&q, &mem, &c, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "loops"));
    /* a buffer outside guest memory */
    driver_offer(2, 1, lens, 0);
    desc()[2].addr = MEM - 8;
    ck_assert_int_eq(vq_pop(&q, &mem, &c, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "outside"));
    /* an overflowing address + length */
    driver_offer(3, 1, lens, 0);
    desc()[3].addr = ~0ull - 4;
    ck_assert_int_eq(vq_pop(&q, &mem, &c, &err), -1);
    /* a head out of range */
    avail()->ring[avail()->idx % QN] = 200;
    avail()->idx++;
    ck_assert_int_eq(vq_pop(&q, &mem, &c, &err), -1);
    /* a readable buffer after a writable one */
    uint32_t l3[] = {4, 4, 4};
    driver_offer(4, 3, l3, 2);
    desc()[6].flags &= (uint16_t)~VRING_DESC_F_WRITE;
    ck_assert_int_eq(vq_pop(&q, &mem, &c, &err), -1);
    /* an available index far ahead of the device */
    avail()->idx = (uint16_t)(q.last_avail + 1000);
    ck_assert_int_eq(vq_pop(&q, &mem, &c, &err), -1);
    ck_assert_int_eq(vq_pop(&q, &mem, &c, &err), 0); /* and the queue is usable after */
    /* rings that do not fit in guest memory, or a size that is no power of 2 */
    virtq bad = queue();
    bad.used_gpa = MEM - 8;
    ck_assert_int_lt(vq_validate(&bad, &mem, &err), 0);
    bad = queue();
    bad.num = 6;
    ck_assert_int_lt(vq_validate(&bad, &mem, &err), 0);
}
END_TEST

/* ---- virtio-mmio transport ---- */

static uint32_t rd(vmmio_dev *d, uint64_t off)
{
    uint32_t v;
    vmmio_read(d, off, &v, 4);
    return v;
}
static void wr(vmmio_dev *d, uint64_t off, uint32_t v)
{
    vmmio_write(d, off, &v, 4);
}

static int irqs;
static void count_irq(vmmio_dev *d)
{
    (void)d;
    irqs++;
}

/* queue q's rings: queue 0's at DESC/AVAIL/USED, each further queue 0x4000 up */
#define QRING(q) (DESC + (uint64_t)(q)*0x4000)

/* The Linux driver's sequence: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, nq queues, DRIVER_OK. */
static void driver_init_queues(vmmio_dev *d, uint64_t want, uint32_t nq)
{
    wr(d, VIRTIO_MMIO_STATUS, 0);
    wr(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    wr(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)want);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(want >> 32));
    wr(d, VIRTIO_MMIO_STATUS,
       VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    for (uint32_t q = 0; q < nq; q++) {
        wr(d, VIRTIO_MMIO_QUEUE_SEL, q);
        wr(d, VIRTIO_MMIO_QUEUE_NUM, QN);
        wr(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)QRING(q));
        wr(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
        wr(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)QRING(q) + (AVAIL - DESC));
        wr(d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)QRING(q) + (USED - DESC));
        wr(d, VIRTIO_MMIO_QUEUE_READY, 1);
    }
    wr(d, VIRTIO_MMIO_STATUS,
       VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK |
           VIRTIO_CONFIG_S_DRIVER_OK);
}

static void driver_init(vmmio_dev *d, uint64_t want)
{
    driver_init_queues(d, want, 1);
}

static char disk_dir[] = "/tmp/cube-kvm-test-XXXXXX";

static void make_base(const char *path, size_t sectors)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    uint8_t s[VBLK_SECTOR];
    for (size_t i = 0; i < sectors; i++) {
        memset(s, (int)(i & 0xff), sizeof(s));
        ck_assert_int_eq(write(fd, s, sizeof(s)), sizeof(s));
    }
    close(fd);
}

static void blk_setup(vblk *b, bool writable)
{
    ck_assert_ptr_nonnull(mkdtemp(disk_dir));
    char base[64], ov[64];
    snprintf(base, sizeof(base), "%s/base.img", disk_dir);
    snprintf(ov, sizeof(ov), "%s/overlay", disk_dir);
    make_base(base, 64);
    cube_err err = {0};
    ck_assert_msg(vblk_open(b, base, writable ? ov : NULL, "sandbox-disk", &err) == 0, "%s", err.msg);
    vblk_attach(b, &mem, KB_MMIO_START, 5);
    b->dev.raise_irq = count_irq;
    irqs = 0;
}

static void blk_teardown(vblk *b)
{
    vblk_close(b);
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", disk_dir);
    ck_assert_int_eq(system(cmd), 0);
    memcpy(disk_dir + strlen(disk_dir) - 6, "XXXXXX", 6);
}

START_TEST(mmio_registers_and_feature_negotiation)
{
    vblk b;
    blk_setup(&b, true);
    vmmio_dev *d = &b.dev;
    ck_assert_uint_eq(rd(d, VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
    ck_assert_uint_eq(rd(d, VIRTIO_MMIO_VERSION), 2);
    ck_assert_uint_eq(rd(d, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
    wr(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    ck_assert(rd(d, VIRTIO_MMIO_DEVICE_FEATURES) & (1u << (VIRTIO_F_VERSION_1 - 32)));
    wr(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    ck_assert(rd(d, VIRTIO_MMIO_DEVICE_FEATURES) & (1u << VIRTIO_BLK_F_FLUSH));
    ck_assert(!(rd(d, VIRTIO_MMIO_DEVICE_FEATURES) & (1u << VIRTIO_BLK_F_RO)));
    /* a legacy driver (no VERSION_1) does not get FEATURES_OK */
    driver_init(d, 1ull << VIRTIO_BLK_F_FLUSH);
    ck_assert(!(rd(d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK));
    /* nor one asking for what was not offered */
    driver_init(d, (1ull << VIRTIO_F_VERSION_1) | (1ull << 20));
    ck_assert(!(rd(d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK));
    driver_init(d, (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_BLK_F_FLUSH));
    ck_assert(rd(d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK);
    ck_assert_uint_eq(rd(d, VIRTIO_MMIO_QUEUE_READY), 1);
    ck_assert(vmmio_queue_live(d, 0));
    /* config space: capacity in sectors, readable in pieces */
    uint64_t cap = 0;
    vmmio_read(d, VIRTIO_MMIO_CONFIG, &cap, 8);
    ck_assert_uint_eq(cap, 64);
    uint32_t lo = 0;
    vmmio_read(d, VIRTIO_MMIO_CONFIG, &lo, 4);
    ck_assert_uint_eq(lo, 64);
    /* a live queue's layout cannot be changed under the device */
    wr(d, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x5000);
    ck_assert_uint_eq(d->queues[0].desc_gpa, DESC);
    /* a queue outside guest memory is refused: the device needs a reset */
    wr(d, VIRTIO_MMIO_STATUS, 0);
    ck_assert_uint_eq(rd(d, VIRTIO_MMIO_STATUS), 0);
    ck_assert_uint_eq(d->queues[0].ready, 0);
    wr(d, VIRTIO_MMIO_QUEUE_SEL, 0);
    wr(d, VIRTIO_MMIO_QUEUE_NUM, QN);
    wr(d, VIRTIO_MMIO_QUEUE_DESC_LOW, MEM - 16);
    wr(d, VIRTIO_MMIO_QUEUE_READY, 1);
    ck_assert_uint_eq(rd(d, VIRTIO_MMIO_QUEUE_READY), 0);
    ck_assert(rd(d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
    /* odd-sized register accesses read as zero and write nothing */
    uint16_t half = 0xffff;
    vmmio_read(d, VIRTIO_MMIO_MAGIC_VALUE, &half, 2);
    ck_assert_uint_eq(half, 0);
    char cl[64];
    vmmio_cmdline(d, cl, sizeof(cl));
    ck_assert_str_eq(cl, "virtio_mmio.device=4K@0xd0000000:5");
    blk_teardown(&b);
}
END_TEST

/* One block request: header, optional data, status; returns the status byte. */
static uint8_t blk_request(vblk *b, uint32_t type, uint64_t sector, uint32_t data_len, bool data_writable)
{
    static uint16_t next;
    uint16_t first = next % QN;
    struct virtio_blk_outhdr *h =
        (struct virtio_blk_outhdr *)(mem.base + BUFS + (uint64_t)(first % QN) * 4096);
    h->type = type;
    h->sector = sector;
    int n = data_len ? 3 : 2;
    uint32_t lens[3] = {sizeof(*h), data_len, 1};
    if (!data_len) lens[1] = 1;
    driver_offer(first, n, lens, data_len ? (data_writable ? 2 : 1) : 1);
    next = (uint16_t)(next + n);
    uint16_t before = used()->idx;
    wr(&b->dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    ck_assert_uint_eq(used()->idx, (uint16_t)(before + 1));
    uint16_t st = (uint16_t)((first + n - 1) % QN);
    return mem.base[BUFS + (uint64_t)st * 4096];
}

START_TEST(blk_reads_base_and_writes_only_the_overlay)
{
    vblk b;
    blk_setup(&b, true);
    driver_init(&b.dev, (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_BLK_F_FLUSH));
    /* read sectors 3..4 (1024 bytes): base pattern */
    uint8_t s = blk_request(&b, VIRTIO_BLK_T_IN, 3, 1024, true);
    ck_assert_uint_eq(s, VIRTIO_BLK_S_OK);
    ck_assert_uint_eq(used()->ring[(used()->idx - 1) % QN].len, 1024 + 1);
    uint16_t data_desc = (uint16_t)((used()->ring[(used()->idx - 1) % QN].id + 1) % QN);
    uint8_t *data = mem.base + BUFS + (uint64_t)data_desc * 4096;
    ck_assert_uint_eq(data[0], 3);
    ck_assert_uint_eq(data[1023], 4);
    ck_assert_int_ge(irqs, 1);
    /* write sector 4: the data goes in the next chain's second descriptor, filled before it is offered */
    uint16_t next_head = (uint16_t)((used()->ring[(used()->idx - 1) % QN].id + 3) % QN);
    memset(mem.base + BUFS + (uint64_t)((next_head + 1) % QN) * 4096, 0xee, 512);
    ck_assert_uint_eq(blk_request(&b, VIRTIO_BLK_T_OUT, 4, 512, false), VIRTIO_BLK_S_OK);
    /* read 3..5 again: 3 from base, 4 from the overlay, 5 from base */
    ck_assert_uint_eq(blk_request(&b, VIRTIO_BLK_T_IN, 3, 1536, true), VIRTIO_BLK_S_OK);
    data_desc = (uint16_t)((used()->ring[(used()->idx - 1) % QN].id + 1) % QN);
    data = mem.base + BUFS + (uint64_t)data_desc * 4096;
    ck_assert_uint_eq(data[0], 3);
    ck_assert_uint_eq(data[512], 0xee);
    ck_assert_uint_eq(data[1535], 5);
    /* the base image is untouched */
    char base[64];
    snprintf(base, sizeof(base), "%s/base.img", disk_dir);
    int fd = open(base, O_RDONLY);
    uint8_t sec[512];
    ck_assert_int_eq(pread(fd, sec, 512, 4 * 512), 512);
    close(fd);
    ck_assert_uint_eq(sec[0], 4);
    /* beyond the end, a partial sector, an unknown type: errors, the device goes on */
    ck_assert_uint_eq(blk_request(&b, VIRTIO_BLK_T_IN, 63, 1024, true), VIRTIO_BLK_S_IOERR);
    ck_assert_uint_eq(blk_request(&b, VIRTIO_BLK_T_IN, 0, 100, true), VIRTIO_BLK_S_IOERR);
    ck_assert_uint_eq(blk_request(&b, 77, 0, 0, true), VIRTIO_BLK_S_UNSUPP);
    ck_assert_uint_eq(blk_request(&b, VIRTIO_BLK_T_FLUSH, 0, 0, true), VIRTIO_BLK_S_OK);
    ck_assert_uint_eq(blk_request(&b, VIRTIO_BLK_T_GET_ID, 0, 20, true), VIRTIO_BLK_S_OK);
    data_desc = (uint16_t)((used()->ring[(used()->idx - 1) % QN].id + 1) % QN);
    ck_assert_str_eq((char *)mem.base + BUFS + (uint64_t)data_desc * 4096, "sandbox-disk");
    blk_teardown(&b);
}
END_TEST

START_TEST(blk_without_overlay_is_read_only)
{
    vblk b;
    blk_setup(&b, false);
    wr(&b.dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    ck_assert(rd(&b.dev, VIRTIO_MMIO_DEVICE_FEATURES) & (1u << VIRTIO_BLK_F_RO));
    driver_init(&b.dev, (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_BLK_F_RO));
    ck_assert_uint_eq(blk_request(&b, VIRTIO_BLK_T_OUT, 0, 512, false), VIRTIO_BLK_S_IOERR);
    ck_assert_uint_eq(blk_request(&b, VIRTIO_BLK_T_IN, 0, 512, true), VIRTIO_BLK_S_OK);
    blk_teardown(&b);
}
END_TEST

/* ---- virtio-net over a real tap, in a network namespace of the test's own ---- */

/* receive and transmit buffers, apart from the other tests' */
#define QBUF(q, i) (BUFS + 0x40000 + (uint64_t)(q)*0x10000 + (uint64_t)(i)*4096)
#define ETH_TEST   0x88b5 /* IEEE "local experimental": nothing else on the link speaks it */

static void net_offer(int q, uint16_t idx, uint32_t len, bool writable)
{
    struct vring_desc *d = (struct vring_desc *)(mem.base + QRING(q)) + idx % QN;
    struct vring_avail *a = (struct vring_avail *)(mem.base + QRING(q) + 0x1000);
    d->addr = QBUF(q, idx % QN);
    d->len = len;
    d->flags = writable ? VRING_DESC_F_WRITE : 0;
    a->ring[a->idx % QN] = (uint16_t)(idx % QN);
    a->idx++;
}

static struct vring_used *net_used(int q)
{
    return (struct vring_used *)(mem.base + QRING(q) + 0x2000);
}

static void frame(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], const char *text)
{
    memset(f, 0, 60);
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = ETH_TEST >> 8;
    f[13] = ETH_TEST & 0xff;
    memcpy(f + 14, text, strlen(text));
}

static int woken;
static void count_wake(vnet *n)
{
    (void)n;
    woken++;
}

START_TEST(net_moves_frames_between_tap_and_guest)
{
    ck_assert_msg(unshare(CLONE_NEWNET) == 0, "a network namespace of the test's own (needs root)");
    /* no IPv6 on the new link: the host side would send router solicitations into the tap */
    int s6 = open("/proc/sys/net/ipv6/conf/default/disable_ipv6", O_WRONLY);
    if (s6 >= 0) {
        ck_assert_int_eq(write(s6, "1", 1), 1);
        close(s6);
    }
    cube_err err = {0};
    char name[IFNAMSIZ];
    int tap = vnet_tap_open("cubetest%d", name, &err);
    ck_assert_msg(tap >= 0, "%s", err.msg);
    ck_assert_str_eq(name, "cubetest0");
    int ctl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    ck_assert_int_eq(ioctl(ctl, SIOCGIFFLAGS, &ifr), 0);
    ifr.ifr_flags |= IFF_UP;
    ck_assert_int_eq(ioctl(ctl, SIOCSIFFLAGS, &ifr), 0);
    ck_assert_int_eq(ioctl(ctl, SIOCGIFINDEX, &ifr), 0);
    close(ctl);
    /* the host's side of the link: a packet socket on the tap interface */
    int pk = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_TEST));
    ck_assert_int_ge(pk, 0);
    struct sockaddr_ll ll = {
        .sll_family = AF_PACKET, .sll_protocol = htons(ETH_TEST), .sll_ifindex = ifr.ifr_ifindex};
    ck_assert_int_eq(bind(pk, (struct sockaddr *)&ll, sizeof(ll)), 0);
    struct timeval tv = {2, 0};
    setsockopt(pk, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

    const uint8_t guest_mac[6] = {0x02, 0xcb, 0, 0, 0, 1}, host_mac[6] = {0x02, 0xcb, 0, 0, 0, 2};
    vnet n;
    vnet_init(&n, tap, guest_mac);
    vnet_attach(&n, &mem, KB_MMIO_START, 6);
    n.dev.raise_irq = count_irq;
    n.rx_wake = count_wake;
    irqs = woken = 0;
    vmmio_dev *d = &n.dev;
    ck_assert_uint_eq(rd(d, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_NET);
    ck_assert(rd(d, VIRTIO_MMIO_DEVICE_FEATURES) & (1u << VIRTIO_NET_F_MAC));
    ck_assert(!(rd(d, VIRTIO_MMIO_DEVICE_FEATURES) & (1u << VIRTIO_NET_F_CSUM))); /* no offloads */
    /* before the driver: frames are not taken */
    ck_assert_int_eq(vnet_rx(&n), 0);
    driver_init_queues(d, (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_NET_F_MAC), 2);
    ck_assert(rd(d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_DRIVER_OK);
    uint8_t mac[6];
    vmmio_read(d, VIRTIO_MMIO_CONFIG, mac, 4);
    vmmio_read(d, VIRTIO_MMIO_CONFIG + 4, mac + 4, 2);
    ck_assert_mem_eq(mac, guest_mac, 6);

    /* transmit: header + frame in one readable buffer comes out of the tap as the frame */
    uint8_t f[60], got[128];
    frame(f, host_mac, guest_mac, "from the guest");
    memset(mem.base + QBUF(1, 0), 0, VNET_HDR_LEN);
    memcpy(mem.base + QBUF(1, 0) + VNET_HDR_LEN, f, sizeof(f));
    net_offer(1, 0, VNET_HDR_LEN + sizeof(f), false);
    wr(d, VIRTIO_MMIO_QUEUE_NOTIFY, VNET_TXQ);
    ck_assert_uint_eq(net_used(1)->idx, 1);
    ck_assert_uint_eq(n.tx_frames, 1);
    ck_assert_int_eq(irqs, 1);
    ssize_t r = recv(pk, got, sizeof(got), 0);
    ck_assert_int_eq(r, sizeof(f));
    ck_assert_mem_eq(got, f, sizeof(f));
    /* a buffer with no frame after the header is dropped, and still returned */
    net_offer(1, 1, VNET_HDR_LEN, false);
    wr(d, VIRTIO_MMIO_QUEUE_NOTIFY, VNET_TXQ);
    ck_assert_uint_eq(net_used(1)->idx, 2);
    ck_assert_uint_eq(n.tx_dropped, 1);

    /* receive: a frame sent to the guest waits in the tap until there is a buffer for it */
    frame(f, guest_mac, host_mac, "to the guest");
    ck_assert_int_eq(sendto(pk, f, sizeof(f), 0, (struct sockaddr *)&ll, sizeof(ll)), sizeof(f));
    ck_assert_int_eq(vnet_rx(&n), 0);
    ck_assert(n.rx_blocked);
    memset(mem.base + QBUF(0, 0), 0xee, 2048);
    net_offer(0, 0, 2048, true);
    wr(d, VIRTIO_MMIO_QUEUE_NOTIFY, VNET_RXQ);
    ck_assert_int_eq(woken, 1); /* the VMM is told to read the tap again */
    ck_assert_int_eq(vnet_rx(&n), 1);
    ck_assert_uint_eq(net_used(0)->idx, 1);
    ck_assert_uint_eq(net_used(0)->ring[0].len, VNET_HDR_LEN + sizeof(f));
    struct virtio_net_hdr_v1 h;
    memcpy(&h, mem.base + QBUF(0, 0), sizeof(h));
    ck_assert_uint_eq(h.flags, 0);
    ck_assert_uint_eq(h.gso_type, VIRTIO_NET_HDR_GSO_NONE);
    ck_assert_uint_eq(h.num_buffers, 1);
    ck_assert_mem_eq(mem.base + QBUF(0, 0) + VNET_HDR_LEN, f, sizeof(f));
    /* the tap is empty now: a posted buffer stays the driver's */
    net_offer(0, 1, 2048, true);
    ck_assert_int_eq(vnet_rx(&n), 0);
    ck_assert_uint_eq(net_used(0)->idx, 1);
    /* a buffer too small for the header is handed back unused; a frame longer than its buffer is cut */
    ck_assert_int_eq(sendto(pk, f, sizeof(f), 0, (struct sockaddr *)&ll, sizeof(ll)), sizeof(f));
    ck_assert_int_eq(vnet_rx(&n), 1); /* into the buffer posted above */
    net_offer(0, 2, 4, true);
    net_offer(0, 3, VNET_HDR_LEN + 20, true);
    ck_assert_int_eq(sendto(pk, f, sizeof(f), 0, (struct sockaddr *)&ll, sizeof(ll)), sizeof(f));
    ck_assert_int_eq(vnet_rx(&n), 1);
    ck_assert_uint_eq(net_used(0)->idx, 4);
    ck_assert_uint_eq(net_used(0)->ring[2].len, 0);
    ck_assert_uint_eq(net_used(0)->ring[3].len, VNET_HDR_LEN + 20);
    ck_assert_mem_eq(mem.base + QBUF(0, 3) + VNET_HDR_LEN, f, 20);
    ck_assert_uint_eq(n.rx_frames, 3);
    close(pk);
    vnet_close(&n);
}
END_TEST

/* ---- snapshots ---- */

START_TEST(snapshot_round_trips_vcpu_and_device_state)
{
    vblk b;
    blk_setup(&b, true);
    driver_init(&b.dev, (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_BLK_F_FLUSH));
    ck_assert_uint_eq(blk_request(&b, VIRTIO_BLK_T_IN, 0, 512, true), VIRTIO_BLK_S_OK);
    snap_vcpu cpu;
    memset(&cpu, 0, sizeof(cpu));
    kb_long_mode_sregs(&cpu.sregs);
    cpu.regs.rip = 0xffffffff81234567ull;
    cpu.regs.rsp = 0x7ff0;
    cpu.nmsrs = 2;
    cpu.msrs[0].index = 0xc0000080;
    cpu.msrs[0].data = 0x500;
    cpu.msrs[1].index = 0x10;
    cpu.msrs[1].data = 123456789;
    cpu.mp.mp_state = KVM_MP_STATE_RUNNABLE;
    snap_vm vm = {.mem_size = MEM, .vcpus = 1, .devices = 1};
    snprintf(vm.mem_file, sizeof(vm.mem_file), "memory");
    vmmio_saved dev;
    vmmio_save(&b.dev, &dev);
    char path[96];
    snprintf(path, sizeof(path), "%s/snapshot", disk_dir);
    snap_writer w;
    cube_err err = {0};
    ck_assert_int_eq(snap_create(&w, path, &err), 0);
    snap_put(&w, SNAP_VM, 0, &vm, sizeof(vm));
    snap_put(&w, SNAP_VCPU, 0, &cpu, sizeof(cpu));
    snap_put(&w, SNAP_DEVICE, 0, &dev, sizeof(dev));
    snap_put(&w, SNAP_DISK, 0, b.present, (b.sectors + 7) / 8);
    snap_put(&w, 999, 0, "future", 6); /* a section a newer writer added: skipped by readers */
    ck_assert_msg(snap_finish(&w, &err) == 0, "%s", err.msg);

    snap_file s;
    ck_assert_msg(snap_open(&s, path, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(s.n, 5);
    const snap_vm *v = snap_get(&s, SNAP_VM, 0, sizeof(snap_vm));
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(v->mem_size, MEM);
    ck_assert_str_eq(v->mem_file, "memory");
    const snap_vcpu *c = snap_get(&s, SNAP_VCPU, 0, sizeof(snap_vcpu));
    ck_assert_ptr_nonnull(c);
    ck_assert_mem_eq(c, &cpu, sizeof(cpu));
    /* every section aligned for its struct, whatever its offset in the file (UBSan stopped a restore on a
     * vCPU's clock read from an odd offset) */
    for (uint32_t i = 0; i < s.n; i++) ck_assert_uint_eq((uintptr_t)s.secs[i].data % 16, 0);
    ck_assert_uint_eq(c->regs.rsp, 0x7ff0);
    ck_assert_ptr_null(snap_get(&s, SNAP_VCPU, 1, sizeof(snap_vcpu))); /* no second vCPU */
    ck_assert_ptr_null(snap_get(&s, SNAP_VM, 0, sizeof(snap_vm) - 1)); /* wrong size: refused */
    /* the device comes back into a fresh instance and carries on where it was */
    vblk b2;
    ck_assert_int_eq(vblk_open(&b2, "/proc/self/exe", NULL, "x", &err), 0);
    vblk_attach(&b2, &mem, KB_MMIO_START, 5);
    const vmmio_saved *ds = snap_get(&s, SNAP_DEVICE, 0, sizeof(vmmio_saved));
    ck_assert_ptr_nonnull(ds);
    ck_assert_msg(vmmio_restore(&b2.dev, ds, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(b2.dev.status, b.dev.status);
    ck_assert_uint_eq(b2.dev.queues[0].last_avail, b.dev.queues[0].last_avail);
    ck_assert_uint_eq(b2.dev.queues[0].used_idx, b.dev.queues[0].used_idx);
    ck_assert(vmmio_queue_live(&b2.dev, 0));
    vblk_close(&b2);
    snap_close(&s);
    /* a saved queue that points outside this guest's memory is refused */
    vmmio_saved bad = dev;
    bad.q[0].used_gpa = MEM;
    vblk_open(&b2, "/proc/self/exe", NULL, "x", &err);
    vblk_attach(&b2, &mem, KB_MMIO_START, 5);
    ck_assert_int_lt(vmmio_restore(&b2.dev, &bad, &err), 0);
    vblk_close(&b2);
    blk_teardown(&b);
}
END_TEST

START_TEST(snapshot_corruption_is_caught)
{
    uint8_t payload[100];
    memset(payload, 0x42, sizeof(payload));
    char path[] = "/tmp/cube-snap-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    snap_writer w;
    cube_err err = {0};
    ck_assert_int_eq(snap_create(&w, path, &err), 0);
    snap_put(&w, SNAP_PIT, 0, payload, sizeof(payload));
    ck_assert_int_eq(snap_finish(&w, &err), 0);
    snap_file s;
    ck_assert_int_eq(snap_open(&s, path, &err), 0);
    size_t size = s.size;
    uint8_t *copy = malloc(size);
    memcpy(copy, s.buf, size);
    snap_close(&s);
    /* one flipped payload bit */
    uint8_t *b = malloc(size);
    memcpy(b, copy, size);
    b[size - 10] ^= 1;
    ck_assert_int_lt(snap_parse(&s, b, size, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "CRC"));
    /* truncated */
    b = malloc(size);
    memcpy(b, copy, size);
    ck_assert_int_lt(snap_parse(&s, b, size - 1, &err), 0);
    /* a length that points past the end */
    b = malloc(size);
    memcpy(b, copy, size);
    b[16 + 8] = 0xff;
    ck_assert_int_lt(snap_parse(&s, b, size, &err), 0);
    /* a section count the file cannot hold */
    b = malloc(size);
    memcpy(b, copy, size);
    b[12] = 0xff;
    b[13] = 0xff;
    ck_assert_int_lt(snap_parse(&s, b, size, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "sections"));
    /* another format or version */
    b = malloc(size);
    memcpy(b, copy, size);
    b[8] = 9;
    ck_assert_int_lt(snap_parse(&s, b, size, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "version"));
    b = malloc(size);
    memcpy(b, copy, size);
    b[0] = 'X';
    ck_assert_int_lt(snap_parse(&s, b, size, &err), 0);
    free(copy);
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kvm");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, mem_setup, mem_teardown);
    tcase_add_test(tc, bzimage_loads_at_its_preferred_address);
    tcase_add_test(tc, bad_kernels_are_refused_with_a_reason);
    tcase_add_test(tc, elf_vmlinux_loads_its_segments);
    tcase_add_test(tc, e820_leaves_the_legacy_area_and_the_mmio_hole);
    tcase_add_test(tc, zero_page_carries_header_cmdline_and_memory_map);
    tcase_add_test(tc, page_tables_identity_map_the_first_gib);
    tcase_add_test(tc, mp_table_lists_every_vcpu_and_the_io_apic);
    tcase_add_test(tc, long_mode_registers);
    tcase_add_test(tc, virtq_pops_chains_and_pushes_used);
    tcase_add_test(tc, virtq_refuses_what_a_hostile_guest_writes);
    tcase_add_test(tc, mmio_registers_and_feature_negotiation);
    tcase_add_test(tc, blk_reads_base_and_writes_only_the_overlay);
    tcase_add_test(tc, blk_without_overlay_is_read_only);
    tcase_add_test(tc, net_moves_frames_between_tap_and_guest);
    tcase_add_test(tc, snapshot_round_trips_vcpu_and_device_state);
    tcase_add_test(tc, snapshot_corruption_is_caught);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
