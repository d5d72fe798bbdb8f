/* The microVM (see vmm.h). */
#include "vmm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boot.h"
#include "log.h"
#include "snapshot.h"
#include "virtio_blk.h"
#include "virtio_net.h"

#define TSS_ADDR          0xfffbd000
#define IDENTITY_MAP_ADDR 0xfffbc000
#define BLK_IRQ           5
#define NET_IRQ           6
#define COM1              0x3f8
#define KICK_SIGNAL       SIGUSR1
/* what every guest gets: the serial console, no PCI or legacy probing, the disk as root, the agent as init */
#define BASE_CMDLINE                                                                                         \
    "console=ttyS0 8250.nr_uarts=1 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux i8042.nopnp "   \
    "i8042.dumbkbd root=/dev/vda rw rootfstype=ext4 init=/.cube/cube-agent"

typedef struct vcpu {
    struct vmm *v;
    int id, fd;
    struct kvm_run *run;
    pthread_t thread;
    bool started;
} vcpu;

struct vmm {
    int kvm, vm;
    size_t run_size;
    gmem mem;
    int mem_fd;   /* the memfd of a cold-booted VM (-1 for a clone: its memory is the snapshot's file) */
    int clone_fd; /* a clone's snapshot memory file, mapped MAP_PRIVATE (its holes are zero pages); -1 */
    vcpu cpus[VMM_MAX_VCPUS];
    int ncpus;
    vblk disk;
    int disk_irqfd;
    bool disk_open;
    vnet net; /* net.tap_fd < 0: no network */
    int net_irqfd;
    int io_wake; /* eventfd: the I/O thread looks again (receive buffers, pause, stop) */
    pthread_t io_thread;
    bool io_started;
    pthread_mutex_t dev_lock; /* the device model: one MMIO access at a time */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pause_req, paused, stopping;
    const char *stop_reason; /* why the guest stopped by itself (with lock); NULL: it did not */
    bool stop_failed; /* and whether that was a failure (a crash) rather than its own poweroff or reset */
    bool pvm; /* this host's KVM is PVM (kvm_pvm): kernels not built for it are emulated, and stop early */
    int exit_fd;
    int console_fd;
    uint8_t uart_lcr, uart_ier, uart_scr;
};

static int kvm_ioctl_err(cube_err *err, const char *what)
{
    return cube_err_sys(err, errno, "kvm: %s", what);
}

int vmm_available(cube_err *err)
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) return cube_err_sys(err, errno, "kvm backend: no usable /dev/kvm on this host");
    int rc = 0;
    int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION)
        rc = cube_err_set(err, ENOTSUP, "kvm backend: /dev/kvm speaks API %d, not %d", api, KVM_API_VERSION);
    else if (ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_IRQCHIP) <= 0 ||
             ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) <= 0 ||
             ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD) <= 0 ||
             ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT) <= 0)
        rc = cube_err_set(err, ENOTSUP,
                          "kvm backend: this KVM lacks irqchip, user memory, irqfd or immediate exit");
    close(kvm);
    return rc;
}

static void kick_handler(int sig)
{
    (void)sig; /* only interrupts KVM_RUN */
}

/* ---- the serial port: enough of a 16550 for the kernel's console output ---- */

static void uart_io(vmm *v, uint16_t port, uint8_t *data, bool out)
{
    int reg = port - COM1;
    bool dlab = v->uart_lcr & 0x80;
    if (out) {
        if (reg == 0 && !dlab && v->console_fd >= 0) {
            ssize_t w = write(v->console_fd, data, 1);
            (void)w; /* a console that cannot keep up loses output, never stalls the guest */
        } else if (reg == 1 && !dlab) {
            v->uart_ier = data[0];
        } else if (reg == 3) {
            v->uart_lcr = data[0];
        } else if (reg == 7) {
            v->uart_scr = data[0];
        }
        return;
    }
    switch (reg) {
    case 1:
        data[0] = dlab ? 0 : v->uart_ier;
        break;
    case 2:
        data[0] = 0x01;
        break; /* IIR: no interrupt pending */
    case 3:
        data[0] = v->uart_lcr;
        break;
    case 5:
        data[0] = 0x60;
        break; /* LSR: transmitter empty, never any input */
    case 6:
        data[0] = 0xb0;
        break; /* MSR: DCD, DSR, CTS */
    case 7:
        data[0] = v->uart_scr;
        break;
    default:
        data[0] = 0;
    }
}

/* With the lock: every started vCPU but self leaves KVM_RUN (or does not enter it) and looks at pause_req
 * and stopping. A vCPU clears immediate_exit under the lock where it looks at them, so a kick between its
 * look and its KVM_RUN is not lost: KVM_RUN returns at once. */
static void kick_vcpus(vmm *v, pthread_t self)
{
    for (int i = 0; i < v->ncpus; i++)
        if (v->cpus[i].started && !pthread_equal(v->cpus[i].thread, self)) {
            v->cpus[i].run->immediate_exit = 1;
            pthread_kill(v->cpus[i].thread, KICK_SIGNAL);
        }
}

/* The guest ended by itself: failed, it crashed (or KVM could not run it), else it powered off or reset. */
static void guest_stopped(vmm *v, const char *why, bool failed)
{
    pthread_mutex_lock(&v->lock);
    int first = !v->stopping;
    v->stopping = 1;
    if (first) {
        v->stop_reason = why;
        v->stop_failed = failed;
        kick_vcpus(v, pthread_self()); /* the others leave KVM_RUN too */
    }
    pthread_cond_broadcast(&v->cond);
    pthread_mutex_unlock(&v->lock);
    if (!first) return;
    if (failed)
        cube_log_error("guest stopped", "reason=\"%s\"", why);
    else
        cube_log_info("guest stopped", "reason=\"%s\"", why);
    eventfd_write(v->exit_fd, 1);
}

/* Where a vCPU was when its guest failed, for the operator: registers and the instruction bytes at RIP (read
 * through the guest's own page tables), in one line. */
static void log_vcpu_state(vcpu *c, const char *what, const uint8_t *insn_bytes, size_t insn_len)
{
    struct kvm_regs r;
    struct kvm_sregs sr;
    if (ioctl(c->fd, KVM_GET_REGS, &r) < 0 || ioctl(c->fd, KVM_GET_SREGS, &sr) < 0) {
        cube_log_error(what, "vcpu=%d registers=unreadable errno=%d", c->id, errno);
        return;
    }
    /* the bytes KVM fetched itself, else read at RIP through the guest's page tables */
    uint8_t at_rip[15];
    const uint8_t *b = insn_bytes;
    size_t n = insn_len < sizeof(at_rip) ? insn_len : sizeof(at_rip);
    struct kvm_translation t = {.linear_address = r.rip};
    if (!n && ioctl(c->fd, KVM_TRANSLATE, &t) == 0 && t.valid) {
        for (; n < sizeof(at_rip); n++) {
            if (n && ((t.physical_address + n) & 0xfff) == 0) break; /* the next page may be elsewhere */
            const uint8_t *p = gmem_ptr(&c->v->mem, t.physical_address + n, 1);
            if (!p) break;
            at_rip[n] = *p;
        }
        b = at_rip;
    }
    char insn[sizeof(at_rip) * 3 + 1] = "unmapped";
    for (size_t i = 0; i < n; i++) snprintf(insn + 3 * i, 4, "%02x ", b[i]);
    if (n) insn[3 * n - 1] = '\0';
    cube_log_error(what,
                   "vcpu=%d rip=0x%llx rsp=0x%llx rflags=0x%llx cr0=0x%llx cr3=0x%llx cr4=0x%llx efer=0x%llx "
                   "cs=0x%x insn=\"%s\"",
                   c->id, (unsigned long long)r.rip, (unsigned long long)r.rsp, (unsigned long long)r.rflags,
                   (unsigned long long)sr.cr0, (unsigned long long)sr.cr3, (unsigned long long)sr.cr4,
                   (unsigned long long)sr.efer, sr.cs.selector, insn);
}

/* Returns false when the vCPU must stop. */
static bool handle_exit(vcpu *c)
{
    vmm *v = c->v;
    struct kvm_run *run = c->run;
    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
        uint8_t *data = (uint8_t *)run + run->io.data_offset;
        bool out = run->io.direction == KVM_EXIT_IO_OUT;
        for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
            uint16_t port = run->io.port;
            if (port >= COM1 && port < COM1 + 8 && run->io.size == 1) {
                uart_io(v, port, data, out);
            } else if (port == 0x64 && out && data[0] == 0xfe) {
                guest_stopped(v, "reset", false); /* reboot=k: the keyboard controller's reset line */
                return false;
            } else if (!out) {
                memset(data, 0xff, run->io.size); /* nothing at that port */
            }
        }
        return true;
    }
    case KVM_EXIT_MMIO: {
        uint64_t a = run->mmio.phys_addr;
        vmmio_dev *d = NULL;
        if (a >= v->disk.dev.base && a < v->disk.dev.base + VMMIO_PAGE)
            d = &v->disk.dev;
        else if (v->net.tap_fd >= 0 && a >= v->net.dev.base && a < v->net.dev.base + VMMIO_PAGE)
            d = &v->net.dev;
        if (d && run->mmio.len <= 8) {
            pthread_mutex_lock(&v->dev_lock);
            if (run->mmio.is_write)
                vmmio_write(d, a - d->base, run->mmio.data, run->mmio.len);
            else
                vmmio_read(d, a - d->base, run->mmio.data, run->mmio.len);
            pthread_mutex_unlock(&v->dev_lock);
        } else if (!run->mmio.is_write) {
            memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
        }
        return true;
    }
    case KVM_EXIT_INTR:
        return true;
    case KVM_EXIT_SHUTDOWN: /* a fault while delivering a double fault: the machine would reset */
        log_vcpu_state(c, "guest triple fault", NULL, 0);
        guest_stopped(v, "triple fault", true);
        return false;
    case KVM_EXIT_SYSTEM_EVENT:
        guest_stopped(v, "system event", run->system_event.type == KVM_SYSTEM_EVENT_CRASH);
        return false;
    case KVM_EXIT_HLT:
        guest_stopped(v, "halt", false);
        return false;
    case KVM_EXIT_FAIL_ENTRY:
        cube_log_error("vcpu entry failed", "vcpu=%d reason=0x%llx", c->id,
                       (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        log_vcpu_state(c, "vcpu entry failed", NULL, 0);
        guest_stopped(v, "entry failure", true);
        return false;
    case KVM_EXIT_INTERNAL_ERROR: {
        /* suberror 1 is an instruction KVM's emulator cannot run (on a PVM host, a kernel not built for
         * PVM meets one early); data[] is KVM's own detail */
        char data[4 * 19 + 1] = "";
        for (uint32_t i = 0; i < run->internal.ndata && i < 4; i++)
            snprintf(data + strlen(data), sizeof(data) - strlen(data), "%s0x%llx", i ? "," : "",
                     (unsigned long long)run->internal.data[i]);
        cube_log_error("kvm internal error", "vcpu=%d suberror=%u%s data=%s", c->id, run->internal.suberror,
                       run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? " (emulation failed)" : "",
                       *data ? data : "-");
        bool bytes = run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION &&
                     run->emulation_failure.ndata >= 3 &&
                     (run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES);
        log_vcpu_state(c, "kvm internal error", bytes ? run->emulation_failure.insn_bytes : NULL,
                       bytes ? run->emulation_failure.insn_size : 0);
        guest_stopped(v,
                      run->internal.suberror != KVM_INTERNAL_ERROR_EMULATION ? "internal error"
                      : v->pvm ? "internal error: an instruction KVM cannot emulate (this host's KVM is PVM: "
                                 "it runs kernels built for PVM, and emulates others until they stop)"
                               : "internal error: an instruction KVM cannot emulate",
                      true);
        return false;
    }
    default:
        cube_log_error("unhandled vcpu exit", "vcpu=%d exit_reason=%u", c->id, run->exit_reason);
        log_vcpu_state(c, "unhandled vcpu exit", NULL, 0);
        guest_stopped(v, "unhandled exit", true);
        return false;
    }
}

static void *vcpu_loop(void *arg)
{
    vcpu *c = arg;
    vmm *v = c->v;
    sigset_t set;
    sigfillset(&set);
    sigdelset(&set, KICK_SIGNAL);
    pthread_sigmask(SIG_SETMASK, &set, NULL);
    for (;;) {
        pthread_mutex_lock(&v->lock);
        if (v->pause_req && !v->stopping) {
            /* the exit just handled (a port or MMIO access) completes only when KVM_RUN is entered again:
             * enter it once, returning at once, so that a snapshot sees the instruction done (else a clone
             * would run an OUT again, or lose an IN's data) */
            c->run->immediate_exit = 1;
            pthread_mutex_unlock(&v->lock);
            ioctl(c->fd, KVM_RUN, 0); /* EINTR, having completed what was pending */
            pthread_mutex_lock(&v->lock);
        }
        while (v->pause_req && !v->stopping) {
            v->paused++;
            pthread_cond_broadcast(&v->cond);
            pthread_cond_wait(&v->cond, &v->lock);
            v->paused--;
        }
        int stop = v->stopping;
        c->run->immediate_exit = 0; /* under the lock: a pause or stop from now on sets it again */
        pthread_mutex_unlock(&v->lock);
        if (stop) break;
        if (ioctl(c->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) continue; /* kicked: pause or stop */
            cube_log_error("KVM_RUN failed", "vcpu=%d errno=%d", c->id, errno);
            guest_stopped(v, "KVM_RUN failed", true);
            break;
        }
        if (!handle_exit(c)) break;
    }
    return NULL;
}

/* A device's interrupt line: the irqfd KVM injects it from (eventfd writes cannot fail short of overflow). */
static void raise_irq(vmmio_dev *d)
{
    vmm *v = d->vmm;
    eventfd_write(d == &v->disk.dev ? v->disk_irqfd : v->net_irqfd, 1);
}

static void wake_io(vmm *v)
{
    eventfd_write(v->io_wake, 1);
}

static void net_rx_wake(vnet *n)
{
    wake_io(n->dev.vmm);
}

/* The I/O thread: frames from the tap into the guest's receive buffers. It reads the tap only while the
 * guest has buffers for it (else the frames wait in the tap's queue) and never while the VM is paused, so a
 * snapshot sees guest memory still. */
static void *io_loop(void *arg)
{
    vmm *v = arg;
    sigset_t set;
    sigfillset(&set);
    pthread_sigmask(SIG_SETMASK, &set, NULL);
    for (;;) {
        pthread_mutex_lock(&v->lock);
        while (v->pause_req && !v->stopping) pthread_cond_wait(&v->cond, &v->lock);
        int stop = v->stopping;
        pthread_mutex_unlock(&v->lock);
        if (stop) break;
        pthread_mutex_lock(&v->dev_lock);
        bool want_tap = !v->net.rx_blocked;
        pthread_mutex_unlock(&v->dev_lock);
        struct pollfd p[2] = {{.fd = v->io_wake, .events = POLLIN},
                              {.fd = want_tap ? v->net.tap_fd : -1, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) continue;
        if (p[0].revents & POLLIN) {
            eventfd_t n;
            eventfd_read(v->io_wake, &n);
            continue; /* pause, stop or new buffers: look again from the top */
        }
        if (p[1].revents) {
            pthread_mutex_lock(&v->dev_lock);
            /* a pause that came meanwhile has passed through dev_lock already: seen here, nothing is written
             * into the guest after vmm_pause returned */
            if (!__atomic_load_n(&v->pause_req, __ATOMIC_ACQUIRE)) vnet_rx(&v->net);
            pthread_mutex_unlock(&v->dev_lock);
        }
    }
    return NULL;
}

/* ---- setup ---- */

static int setup_cpuid(vmm *v, vcpu *c, cube_err *err)
{
    size_t n = 256;
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + n * sizeof(struct kvm_cpuid_entry2));
    if (!cpuid) return cube_err_set(err, ENOMEM, "cpuid");
    cpuid->nent = (uint32_t)n;
    if (ioctl(v->kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) {
        free(cpuid);
        return kvm_ioctl_err(err, "KVM_GET_SUPPORTED_CPUID");
    }
    for (uint32_t i = 0; i < cpuid->nent; i++) {
        struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
        if (e->function == 1) e->ebx = (e->ebx & 0x00ffffff) | ((uint32_t)c->id << 24); /* initial APIC id */
        if (e->function == 0xb) e->edx = (uint32_t)c->id;                               /* x2APIC id */
    }
    int rc = ioctl(c->fd, KVM_SET_CPUID2, cpuid);
    free(cpuid);
    return rc < 0 ? kvm_ioctl_err(err, "KVM_SET_CPUID2") : 0;
}

/* The local APIC's LINT0 takes the PIC's interrupts (ExtINT), LINT1 NMIs: what firmware would have set. */
static int setup_lapic(vcpu *c, cube_err *err)
{
    struct kvm_lapic_state l;
    if (ioctl(c->fd, KVM_GET_LAPIC, &l) < 0) return kvm_ioctl_err(err, "KVM_GET_LAPIC");
    uint32_t lint0, lint1;
    memcpy(&lint0, l.regs + 0x350, 4);
    memcpy(&lint1, l.regs + 0x360, 4);
    lint0 = (lint0 & ~0x700u) | 0x700; /* ExtINT */
    lint1 = (lint1 & ~0x700u) | 0x400; /* NMI */
    memcpy(l.regs + 0x350, &lint0, 4);
    memcpy(l.regs + 0x360, &lint1, 4);
    return ioctl(c->fd, KVM_SET_LAPIC, &l) < 0 ? kvm_ioctl_err(err, "KVM_SET_LAPIC") : 0;
}

static int boot_vcpu0(vmm *v, const kb_kernel *k, cube_err *err)
{
    vcpu *c = &v->cpus[0];
    struct kvm_sregs s;
    if (ioctl(c->fd, KVM_GET_SREGS, &s) < 0) return kvm_ioctl_err(err, "KVM_GET_SREGS");
    kb_long_mode_sregs(&s);
    if (ioctl(c->fd, KVM_SET_SREGS, &s) < 0) return kvm_ioctl_err(err, "KVM_SET_SREGS");
    struct kvm_regs r;
    kb_entry_regs(k, &r);
    if (ioctl(c->fd, KVM_SET_REGS, &r) < 0) return kvm_ioctl_err(err, "KVM_SET_REGS");
    struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};
    if (ioctl(c->fd, KVM_SET_FPU, &fpu) < 0) return kvm_ioctl_err(err, "KVM_SET_FPU");
    return 0;
}

static int read_file(const char *path, uint8_t **buf, size_t *len, cube_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return cube_err_sys(err, e, "open %s", path);
    }
    *len = (size_t)st.st_size;
    *buf = malloc(*len ? *len : 1);
    size_t got = 0;
    while (*buf && got < *len) {
        ssize_t n = read(fd, *buf + got, *len - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    if (!*buf || got != *len) {
        free(*buf);
        return cube_err_set(err, EIO, "read %s", path);
    }
    return 0;
}

/* The snapshot's MSRs: what the guest kernel set up for system calls, its per-CPU base, the TSC and kvmclock.
 */
static const uint32_t saved_msrs[] = {0x174,      0x175,      0x176,      0xc0000081, 0xc0000082, 0xc0000083,
                                      0xc0000084, 0xc0000102, 0x10,       0x1a0,      0x277,      0x6e0,
                                      0x4b564d00, 0x4b564d01, 0x4b564d02, 0x4b564d03, 0x4b564d04};
#define NSAVED_MSRS (sizeof(saved_msrs) / sizeof(saved_msrs[0]))

static int get_vcpu_state(vcpu *c, snap_vcpu *s, cube_err *err)
{
    memset(s, 0, sizeof(*s));
    if (ioctl(c->fd, KVM_GET_MP_STATE, &s->mp) < 0) return kvm_ioctl_err(err, "KVM_GET_MP_STATE");
    if (ioctl(c->fd, KVM_GET_REGS, &s->regs) < 0) return kvm_ioctl_err(err, "KVM_GET_REGS");
    if (ioctl(c->fd, KVM_GET_SREGS, &s->sregs) < 0) return kvm_ioctl_err(err, "KVM_GET_SREGS");
    if (ioctl(c->fd, KVM_GET_FPU, &s->fpu) < 0) return kvm_ioctl_err(err, "KVM_GET_FPU");
    if (ioctl(c->fd, KVM_GET_XCRS, &s->xcrs) < 0) return kvm_ioctl_err(err, "KVM_GET_XCRS");
    if (ioctl(c->fd, KVM_GET_LAPIC, &s->lapic) < 0) return kvm_ioctl_err(err, "KVM_GET_LAPIC");
    if (ioctl(c->fd, KVM_GET_VCPU_EVENTS, &s->events) < 0) return kvm_ioctl_err(err, "KVM_GET_VCPU_EVENTS");
    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e[SNAP_MAX_MSRS];
    } m = {0};
    m.h.nmsrs = NSAVED_MSRS;
    for (size_t i = 0; i < NSAVED_MSRS; i++) m.e[i].index = saved_msrs[i];
    int got = ioctl(c->fd, KVM_GET_MSRS, &m);
    if (got < 0) return kvm_ioctl_err(err, "KVM_GET_MSRS");
    s->nmsrs = (uint32_t)got; /* the first got of them: an MSR this CPU lacks ends the list */
    memcpy(s->msrs, m.e, sizeof(m.e[0]) * (size_t)got);
    return 0;
}

static int set_vcpu_state(vcpu *c, const snap_vcpu *s, cube_err *err)
{
    /* the order KVM needs: modes before registers, the APIC before the events it delivers */
    if (ioctl(c->fd, KVM_SET_SREGS, &s->sregs) < 0) return kvm_ioctl_err(err, "KVM_SET_SREGS");
    if (ioctl(c->fd, KVM_SET_REGS, &s->regs) < 0) return kvm_ioctl_err(err, "KVM_SET_REGS");
    if (ioctl(c->fd, KVM_SET_FPU, &s->fpu) < 0) return kvm_ioctl_err(err, "KVM_SET_FPU");
    if (ioctl(c->fd, KVM_SET_XCRS, &s->xcrs) < 0) return kvm_ioctl_err(err, "KVM_SET_XCRS");
    struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e[SNAP_MAX_MSRS];
    } m = {0};
    uint32_t n = s->nmsrs <= SNAP_MAX_MSRS ? s->nmsrs : SNAP_MAX_MSRS;
    m.h.nmsrs = n;
    memcpy(m.e, s->msrs, sizeof(m.e[0]) * n);
    if (ioctl(c->fd, KVM_SET_MSRS, &m) != (int)n) return kvm_ioctl_err(err, "KVM_SET_MSRS");
    if (ioctl(c->fd, KVM_SET_LAPIC, &s->lapic) < 0) return kvm_ioctl_err(err, "KVM_SET_LAPIC");
    if (ioctl(c->fd, KVM_SET_MP_STATE, &s->mp) < 0) return kvm_ioctl_err(err, "KVM_SET_MP_STATE");
    if (ioctl(c->fd, KVM_SET_VCPU_EVENTS, &s->events) < 0) return kvm_ioctl_err(err, "KVM_SET_VCPU_EVENTS");
    return 0;
}

static int copy_file(const char *from, const char *to, cube_err *err)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = in < 0 ? -1 : open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    struct stat st;
    int rc = 0;
    if (in < 0 || out < 0 || fstat(in, &st) < 0 || ftruncate(out, st.st_size) < 0) {
        rc = cube_err_sys(err, errno, "copy %s to %s", from, to);
    } else {
        /* extent by extent, so a sparse overlay stays sparse */
        off_t off = 0;
        while (rc == 0 && (off = lseek(in, off, SEEK_DATA)) >= 0) {
            off_t end = lseek(in, off, SEEK_HOLE);
            loff_t a = off, b = off;
            while (a < end) {
                ssize_t n = copy_file_range(in, &a, out, &b, (size_t)(end - a), 0);
                if (n <= 0) {
                    rc = cube_err_sys(err, n < 0 ? errno : EIO, "copy %s", from);
                    break;
                }
            }
            off = end;
        }
    }
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    return rc;
}

static int create_vm(vmm *v, const vmm_config *cfg, cube_err *err)
{
    v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (v->kvm < 0) return cube_err_sys(err, errno, "kvm backend: no usable /dev/kvm on this host");
    v->vm = ioctl(v->kvm, KVM_CREATE_VM, 0);
    if (v->vm < 0) return kvm_ioctl_err(err, "KVM_CREATE_VM");
    if (ioctl(v->vm, KVM_SET_TSS_ADDR, TSS_ADDR) < 0) return kvm_ioctl_err(err, "KVM_SET_TSS_ADDR");
    uint64_t idmap = IDENTITY_MAP_ADDR;
    if (ioctl(v->vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
        return kvm_ioctl_err(err, "KVM_SET_IDENTITY_MAP_ADDR");
    if (ioctl(v->vm, KVM_CREATE_IRQCHIP, 0) < 0) return kvm_ioctl_err(err, "KVM_CREATE_IRQCHIP");
    struct kvm_pit_config pit = {0};
    if (ioctl(v->vm, KVM_CREATE_PIT2, &pit) < 0) return kvm_ioctl_err(err, "KVM_CREATE_PIT2");
    int rs = ioctl(v->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (rs <= 0) return kvm_ioctl_err(err, "KVM_GET_VCPU_MMAP_SIZE");
    v->run_size = (size_t)rs;
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = v->mem.size, .userspace_addr = (uint64_t)v->mem.base};
    if (ioctl(v->vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        return kvm_ioctl_err(err, "KVM_SET_USER_MEMORY_REGION");
    for (int i = 0; i < cfg->vcpus; i++) {
        vcpu *c = &v->cpus[i];
        c->v = v;
        c->id = i;
        c->fd = ioctl(v->vm, KVM_CREATE_VCPU, i);
        if (c->fd < 0) return kvm_ioctl_err(err, "KVM_CREATE_VCPU");
        v->ncpus++;
        c->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
        if (c->run == MAP_FAILED) {
            c->run = NULL;
            return cube_err_sys(err, errno, "kvm: map vcpu %d", i);
        }
        if (setup_cpuid(v, c, err) < 0) return -1;
    }
    /* the root disk on the MMIO bus, its interrupt through an irqfd */
    if (vblk_open(&v->disk, cfg->disk, cfg->overlay, "cube-root", err) < 0) return -1;
    v->disk_open = true;
    vblk_attach(&v->disk, &v->mem, KB_MMIO_START, BLK_IRQ);
    v->disk.dev.vmm = v;
    v->disk.dev.raise_irq = raise_irq;
    v->disk_irqfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct kvm_irqfd irqfd = {.fd = (uint32_t)v->disk_irqfd, .gsi = BLK_IRQ};
    if (v->disk_irqfd < 0 || ioctl(v->vm, KVM_IRQFD, &irqfd) < 0) return kvm_ioctl_err(err, "KVM_IRQFD");
    if (cfg->tap_fd >= 0) { /* the network, next page up, on a tap descriptor of the VM's own */
        int tap = fcntl(cfg->tap_fd, F_DUPFD_CLOEXEC, 3);
        if (tap < 0) return cube_err_sys(err, errno, "tap");
        vnet_init(&v->net, tap, cfg->mac);
        vnet_attach(&v->net, &v->mem, KB_MMIO_START + VMMIO_PAGE, NET_IRQ);
        v->net.dev.vmm = v;
        v->net.dev.raise_irq = raise_irq;
        v->net.rx_wake = net_rx_wake;
        v->net_irqfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        struct kvm_irqfd nirq = {.fd = (uint32_t)v->net_irqfd, .gsi = NET_IRQ};
        if (v->net_irqfd < 0 || ioctl(v->vm, KVM_IRQFD, &nirq) < 0)
            return kvm_ioctl_err(err, "KVM_IRQFD (net)");
    }
    return 0;
}

static int cold_boot(vmm *v, const vmm_config *cfg, cube_err *err)
{
    v->mem_fd = memfd_create("cube-guest", MFD_CLOEXEC);
    if (v->mem_fd < 0 || ftruncate(v->mem_fd, (off_t)cfg->mem_bytes) < 0)
        return cube_err_sys(err, errno, "guest memory");
    v->mem.size = cfg->mem_bytes;
    v->mem.base = mmap(NULL, v->mem.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, v->mem_fd, 0);
    if (v->mem.base == MAP_FAILED) {
        v->mem.base = NULL;
        return cube_err_sys(err, errno, "map guest memory");
    }
    if (create_vm(v, cfg, err) < 0) return -1;
    uint8_t *img = NULL;
    size_t len = 0;
    if (read_file(cfg->kernel, &img, &len, err) < 0) return cube_err_prefix(err, "kernel");
    kb_kernel k;
    int rc = kb_load_kernel(&v->mem, img, len, &k, err);
    free(img);
    if (rc < 0) return -1;
    char dev[96], net[96] = "", cmdline[KB_CMDLINE_MAX];
    vmmio_cmdline(&v->disk.dev, dev, sizeof(dev));
    if (v->net.tap_fd >= 0) vmmio_cmdline(&v->net.dev, net, sizeof(net));
    int n = snprintf(cmdline, sizeof(cmdline), "%s %s %s %s", BASE_CMDLINE, dev, net,
                     cfg->cmdline ? cfg->cmdline : "");
    if (n < 0 || (size_t)n >= sizeof(cmdline))
        return cube_err_set(err, E2BIG, "kvm: the kernel command line is over %d bytes (--kernel-args)",
                            KB_CMDLINE_MAX - 1);
    if (kb_write_zero_page(&v->mem, &k, cmdline, err) < 0 || kb_write_page_tables(&v->mem, err) < 0 ||
        kb_write_mptable(&v->mem, v->ncpus, err) < 0)
        return -1;
    for (int i = 0; i < v->ncpus; i++)
        if (setup_lapic(&v->cpus[i], err) < 0) return -1;
    return boot_vcpu0(v, &k, err); /* the others wait for the guest's INIT/SIPI */
}

static int restore(vmm *v, const vmm_config *cfg, cube_err *err)
{
    char p[4200];
    snap_file s;
    snprintf(p, sizeof(p), "%s/snapshot", cfg->restore);
    if (snap_open(&s, p, err) < 0) return -1;
    int rc = -1;
    const snap_vm *vm = snap_get(&s, SNAP_VM, 0, sizeof(snap_vm));
    if (!vm || vm->vcpus == 0 || vm->vcpus > VMM_MAX_VCPUS ||
        memchr(vm->mem_file, 0, sizeof(vm->mem_file)) == NULL || strchr(vm->mem_file, '/')) {
        cube_err_set(err, EINVAL, "snapshot %s: no usable VM section", p);
        goto out;
    }
    /* the memory file, copy-on-write: every clone of this snapshot shares its pages until it writes them */
    snprintf(p, sizeof(p), "%s/%s", cfg->restore, vm->mem_file);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || (uint64_t)st.st_size < vm->mem_size) {
        cube_err_sys(err, fd < 0 ? errno : EINVAL, "snapshot memory %s", p);
        if (fd >= 0) close(fd);
        goto out;
    }
    v->mem.size = vm->mem_size;
    v->mem.base = mmap(NULL, v->mem.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    v->clone_fd = fd; /* kept: a snapshot of this clone looks for the file's holes */
    if (v->mem.base == MAP_FAILED) {
        v->mem.base = NULL;
        cube_err_sys(err, errno, "map snapshot memory");
        goto out;
    }
    snprintf(p, sizeof(p), "%s/disk-overlay", cfg->restore);
    if (cfg->overlay && copy_file(p, cfg->overlay, err) < 0) goto out;
    vmm_config c2 = *cfg;
    c2.vcpus = (int)vm->vcpus;
    if (create_vm(v, &c2, err) < 0) goto out;
    const uint8_t *bitmap = snap_get(&s, SNAP_DISK, 0, (v->disk.sectors + 7) / 8);
    const vmmio_saved *dev = snap_get(&s, SNAP_DEVICE, 0, sizeof(vmmio_saved));
    if (!bitmap || !dev) {
        cube_err_set(err, EINVAL, "snapshot has no state for the root disk (another disk image?)");
        goto out;
    }
    memcpy(v->disk.present, bitmap, (v->disk.sectors + 7) / 8);
    if (vmmio_restore(&v->disk.dev, dev, err) < 0) goto out;
    /* the network as the guest left it: a snapshot with a network needs a tap to restore into */
    const vmmio_saved *ndev = vm->devices > 1 ? snap_get(&s, SNAP_DEVICE, 1, sizeof(vmmio_saved)) : NULL;
    if ((ndev != NULL) != (v->net.tap_fd >= 0)) {
        cube_err_set(err, EINVAL,
                     ndev ? "snapshot's guest has a network: a tap is needed to restore it"
                          : "snapshot's guest had no network device");
        goto out;
    }
    if (ndev && vmmio_restore(&v->net.dev, ndev, err) < 0) goto out;
    v->net.rx_blocked = false; /* its receive buffers are in the restored memory: look at the tap */
    for (uint32_t i = 0; i < 3; i++) {
        const struct kvm_irqchip *chip = snap_get(&s, SNAP_IRQCHIP, i, sizeof(struct kvm_irqchip));
        if (!chip || ioctl(v->vm, KVM_SET_IRQCHIP, chip) < 0) {
            kvm_ioctl_err(err, "KVM_SET_IRQCHIP");
            goto out;
        }
    }
    const struct kvm_pit_state2 *pit = snap_get(&s, SNAP_PIT, 0, sizeof(*pit));
    if (!pit || ioctl(v->vm, KVM_SET_PIT2, pit) < 0) {
        kvm_ioctl_err(err, "KVM_SET_PIT2");
        goto out;
    }
    for (int i = 0; i < v->ncpus; i++) {
        const snap_vcpu *sc = snap_get(&s, SNAP_VCPU, (uint32_t)i, sizeof(snap_vcpu));
        if (!sc) {
            cube_err_set(err, EINVAL, "snapshot lacks vCPU %d", i);
            goto out;
        }
        if (set_vcpu_state(&v->cpus[i], sc, err) < 0) goto out;
    }
    const snap_uart *uart = snap_get(&s, SNAP_UART, 0, sizeof(snap_uart));
    if (uart) { /* the console as the guest programmed it (a divisor latch open, its scratch byte) */
        v->uart_lcr = uart->lcr;
        v->uart_ier = uart->ier;
        v->uart_scr = uart->scr;
    }
    const struct kvm_clock_data *clock = snap_get(&s, SNAP_CLOCK, 0, sizeof(struct kvm_clock_data));
    if (clock) {
        struct kvm_clock_data cd = *clock;
        cd.flags = 0; /* the guest's clock goes on from where it was saved */
        if (ioctl(v->vm, KVM_SET_CLOCK, &cd) < 0) {
            kvm_ioctl_err(err, "KVM_SET_CLOCK");
            goto out;
        }
    }
    rc = 0;
out:
    snap_close(&s);
    return rc;
}

int vmm_create(const vmm_config *cfg, vmm **out, cube_err *err)
{
    if (cfg->vcpus < 1 || cfg->vcpus > VMM_MAX_VCPUS)
        return cube_err_set(err, EINVAL, "a microVM has 1 to %d vCPUs", VMM_MAX_VCPUS);
    if (!cfg->restore && (!cfg->kernel || cfg->mem_bytes < (64u << 20)))
        return cube_err_set(err, EINVAL, "a cold boot needs a kernel and at least 64 MiB");
    if (!cfg->disk) return cube_err_set(err, EINVAL, "a microVM needs a root disk image");
    vmm *v = calloc(1, sizeof(*v));
    if (!v) return cube_err_set(err, ENOMEM, "vmm");
    v->kvm = v->vm = v->mem_fd = v->clone_fd = v->disk_irqfd = v->net_irqfd = v->io_wake = -1;
    v->net.tap_fd = -1;
    v->console_fd = cfg->console_fd;
    v->pvm = access("/sys/module/kvm_pvm", F_OK) == 0; /* before the jail, which has no access() */
    pthread_mutex_init(&v->lock, NULL);
    pthread_mutex_init(&v->dev_lock, NULL);
    pthread_cond_init(&v->cond, NULL);
    v->exit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    v->io_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct sigaction sa = {.sa_handler = kick_handler}; /* no SA_RESTART: KVM_RUN returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(KICK_SIGNAL, &sa, NULL);
    if (v->exit_fd < 0 || v->io_wake < 0 ||
        (cfg->restore ? restore(v, cfg, err) : cold_boot(v, cfg, err)) < 0) {
        vmm_destroy(v);
        return -1;
    }
    if (v->net.tap_fd >= 0) {
        if (pthread_create(&v->io_thread, NULL, io_loop, v) != 0) {
            vmm_destroy(v);
            return cube_err_set(err, EAGAIN, "cannot start the I/O thread");
        }
        v->io_started = true;
    }
    for (int i = 0; i < v->ncpus; i++) {
        pthread_mutex_lock(&v->lock); /* a vCPU already running may look at started (kick_vcpus) */
        v->cpus[i].started = pthread_create(&v->cpus[i].thread, NULL, vcpu_loop, &v->cpus[i]) == 0;
        bool started = v->cpus[i].started;
        pthread_mutex_unlock(&v->lock);
        if (!started) {
            vmm_destroy(v);
            return cube_err_set(err, EAGAIN, "cannot start vCPU thread %d", i);
        }
    }
    *out = v;
    return 0;
}

int vmm_exit_fd(const vmm *v)
{
    return v->exit_fd;
}

int vmm_stop_status(vmm *v, const char **why)
{
    pthread_mutex_lock(&v->lock);
    const char *r = v->stop_reason;
    int failed = v->stop_failed;
    pthread_mutex_unlock(&v->lock);
    if (why) *why = r;
    return r ? failed : -1;
}

int vmm_pause(vmm *v, cube_err *err)
{
    pthread_mutex_lock(&v->lock);
    if (v->stopping) {
        pthread_mutex_unlock(&v->lock);
        return cube_err_set(err, ESRCH, "the guest has stopped");
    }
    /* atomic: the I/O thread reads it holding dev_lock, not this lock */
    if (__atomic_add_fetch(&v->pause_req, 1, __ATOMIC_RELEASE) == 1) kick_vcpus(v, (pthread_t)0);
    while (v->paused < v->ncpus && !v->stopping) pthread_cond_wait(&v->cond, &v->lock);
    pthread_mutex_unlock(&v->lock);
    /* the I/O thread stops between frames: after dev_lock is taken once, none is being delivered */
    if (v->io_started) {
        wake_io(v);
        pthread_mutex_lock(&v->dev_lock);
        pthread_mutex_unlock(&v->dev_lock);
    }
    return 0;
}

int vmm_resume(vmm *v, cube_err *err)
{
    (void)err;
    pthread_mutex_lock(&v->lock);
    if (v->pause_req > 0) __atomic_sub_fetch(&v->pause_req, 1, __ATOMIC_RELEASE);
    if (v->pause_req == 0) pthread_cond_broadcast(&v->cond);
    pthread_mutex_unlock(&v->lock);
    return 0;
}

/* One page of guest memory at off to fd unless it is all zero (left a hole). */
static int save_page(vmm *v, int fd, uint64_t off, const char *path, cube_err *err)
{
    static const uint8_t zero[4096];
    if (memcmp(v->mem.base + off, zero, 4096) == 0) return 0;
    if (pwrite(fd, v->mem.base + off, 4096, (off_t)off) != 4096)
        return cube_err_sys(err, errno, "write %s", path);
    return 0;
}

/* Guest memory to a file, leaving the zero pages as holes: a booted guest has touched a fraction of its RAM.
 * Only pages that can hold data are read: reading the rest would fault them in (a memfd allocates a page for
 * each read of a hole: a snapshot made all of a 512 MiB guest's memory resident). A cold-booted VM's data is
 * where its memfd has any (SEEK_DATA); a clone's is where its snapshot file has data, plus the pages it has
 * itself (written or read since: mincore), the file's holes being zero pages. */
static int save_memory(vmm *v, const char *path, cube_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)v->mem.size) < 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return cube_err_sys(err, e, "snapshot memory %s", path);
    }
    int backing = v->mem_fd >= 0 ? v->mem_fd : v->clone_fd;
    int rc = 0;
    for (uint64_t off = 0; off < v->mem.size && rc == 0;) {
        off_t data = backing >= 0 ? lseek(backing, (off_t)off, SEEK_DATA) : (off_t)off;
        if (data < 0) data = errno == ENXIO ? (off_t)v->mem.size : (off_t)off; /* none left, or scan it all */
        if ((uint64_t)data > v->mem.size) data = (off_t)v->mem.size;
        /* a hole of the backing file: a clone's own pages there, if any */
        for (uint64_t p = off; v->mem_fd < 0 && p < (uint64_t)data && rc == 0; p += 4096) {
            unsigned char in = 0;
            if (mincore(v->mem.base + p, 4096, &in) < 0 || (in & 1)) rc = save_page(v, fd, p, path, err);
        }
        off_t hole = backing >= 0 ? lseek(backing, data, SEEK_HOLE) : (off_t)v->mem.size;
        if (hole < 0 || (uint64_t)hole > v->mem.size) hole = (off_t)v->mem.size;
        for (uint64_t p = (uint64_t)data; p < (uint64_t)hole && rc == 0; p += 4096)
            rc = save_page(v, fd, p, path, err);
        off = (uint64_t)hole > off ? (uint64_t)hole : off + 4096;
    }
    if (rc == 0 && fsync(fd) < 0) rc = cube_err_sys(err, errno, "sync %s", path);
    close(fd);
    return rc;
}

int vmm_snapshot(vmm *v, const char *dir, cube_err *err)
{
    /* the directory is made here (the caller names a new one; the jail allows mkdir for it) */
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return cube_err_sys(err, errno, "snapshot directory %s", dir);
    if (vmm_pause(v, err) < 0) return -1;
    int rc = -1;
    char p[4200];
    snap_writer w = {0};
    snprintf(p, sizeof(p), "%s/snapshot", dir);
    if (snap_create(&w, p, err) < 0) goto out;
    snap_vm vm = {
        .mem_size = v->mem.size, .vcpus = (uint32_t)v->ncpus, .devices = v->net.tap_fd >= 0 ? 2 : 1};
    snprintf(vm.mem_file, sizeof(vm.mem_file), "memory");
    snap_put(&w, SNAP_VM, 0, &vm, sizeof(vm));
    for (int i = 0; i < v->ncpus; i++) {
        snap_vcpu s;
        if (get_vcpu_state(&v->cpus[i], &s, err) < 0) goto fail;
        snap_put(&w, SNAP_VCPU, (uint32_t)i, &s, sizeof(s));
    }
    for (uint32_t i = 0; i < 3; i++) {
        struct kvm_irqchip chip = {.chip_id = i};
        if (ioctl(v->vm, KVM_GET_IRQCHIP, &chip) < 0) {
            kvm_ioctl_err(err, "KVM_GET_IRQCHIP");
            goto fail;
        }
        snap_put(&w, SNAP_IRQCHIP, i, &chip, sizeof(chip));
    }
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock = {0};
    if (ioctl(v->vm, KVM_GET_PIT2, &pit) < 0 || ioctl(v->vm, KVM_GET_CLOCK, &clock) < 0) {
        kvm_ioctl_err(err, "KVM_GET_PIT2 / KVM_GET_CLOCK");
        goto fail;
    }
    snap_put(&w, SNAP_PIT, 0, &pit, sizeof(pit));
    snap_put(&w, SNAP_CLOCK, 0, &clock, sizeof(clock));
    /* the vCPUs are out of KVM_RUN: nothing writes the serial port's registers now */
    snap_uart uart = {.lcr = v->uart_lcr, .ier = v->uart_ier, .scr = v->uart_scr};
    snap_put(&w, SNAP_UART, 0, &uart, sizeof(uart));
    vmmio_saved dev;
    pthread_mutex_lock(&v->dev_lock);
    vmmio_save(&v->disk.dev, &dev);
    snap_put(&w, SNAP_DEVICE, 0, &dev, sizeof(dev));
    snap_put(&w, SNAP_DISK, 0, v->disk.present, (v->disk.sectors + 7) / 8);
    if (v->net.tap_fd >= 0) {
        vmmio_save(&v->net.dev, &dev);
        snap_put(&w, SNAP_DEVICE, 1, &dev, sizeof(dev));
    }
    pthread_mutex_unlock(&v->dev_lock);
    if (snap_finish(&w, err) < 0) goto out;
    snprintf(p, sizeof(p), "%s/memory", dir);
    if (save_memory(v, p, err) < 0) goto out;
    if (v->disk.overlay_fd >= 0) {
        snprintf(p, sizeof(p), "%s/disk-overlay", dir);
        char src[64];
        snprintf(src, sizeof(src), "/proc/self/fd/%d", v->disk.overlay_fd);
        if (fdatasync(v->disk.overlay_fd) < 0 || copy_file(src, p, err) < 0) goto out;
    }
    rc = 0;
    goto out;
fail:
    if (w.f) fclose(w.f);
out:
    vmm_resume(v, NULL);
    return rc;
}

void vmm_destroy(vmm *v)
{
    if (!v) return;
    pthread_mutex_lock(&v->lock);
    v->stopping = 1;
    kick_vcpus(v, (pthread_t)0);
    pthread_cond_broadcast(&v->cond);
    pthread_mutex_unlock(&v->lock);
    if (v->io_started) {
        wake_io(v);
        pthread_join(v->io_thread, NULL);
    }
    for (int i = 0; i < v->ncpus; i++) {
        if (v->cpus[i].started) pthread_join(v->cpus[i].thread, NULL);
        if (v->cpus[i].run) munmap(v->cpus[i].run, v->run_size);
        if (v->cpus[i].fd >= 0) close(v->cpus[i].fd);
    }
    if (v->disk_open) vblk_close(&v->disk);
    if (v->disk_irqfd >= 0) close(v->disk_irqfd);
    vnet_close(&v->net);
    if (v->net_irqfd >= 0) close(v->net_irqfd);
    if (v->io_wake >= 0) close(v->io_wake);
    if (v->vm >= 0) close(v->vm);
    if (v->kvm >= 0) close(v->kvm);
    if (v->mem.base) munmap(v->mem.base, v->mem.size);
    if (v->mem_fd >= 0) close(v->mem_fd);
    if (v->clone_fd >= 0) close(v->clone_fd);
    if (v->exit_fd >= 0) close(v->exit_fd);
    pthread_mutex_destroy(&v->lock);
    pthread_mutex_destroy(&v->dev_lock);
    pthread_cond_destroy(&v->cond);
    free(v);
}
