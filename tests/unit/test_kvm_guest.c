/* The microVM on a real /dev/kvm (hardware virtualisation, or a PVM host, whose KVM emulates a guest that is
 * not built for it instruction by instruction): a guest of a few instructions, loaded as the ELF kernel,
 * counts in its memory and prints each count on the serial console. What it prints shows that the VMM boots
 * it in long mode, that pause stops it, and that a snapshot's clone goes on exactly where the original was
 * (registers, memory, console). A guest that faults with no IDT triple-faults: the VMM says so, with where.
 * Skips (77) where /dev/kvm cannot be used. */
#include <check.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "boot.h"
#include "common.pb-c.h"
#include "fsutil.h"
#include "hypervisor.pb-c.h"
#include "rpc.h"
#include "testutil.h"
#include "zygote.h"
#include "timeutil.h"
#include "vmm.h"

/* for (;;) { n = ++*(u64 *)0x3000; *(u64 *)(4 MiB + (n % 64) * 4 KiB) = n; print n as 16 hex digits and a
 * newline on COM1 }, each digit written to the
 * serial port's scratch register and read back before it is printed: what a clone prints depends on its
 * registers, its memory and the port's state all coming through the snapshot (and on the IN completing) */
static const uint8_t counting_guest[] = {
    0x48, 0xff, 0x04, 0x25, 0x00, 0x30, 0x00, 0x00, /* line: inc qword [0x3000] */
    0x48, 0x8b, 0x1c, 0x25, 0x00, 0x30, 0x00, 0x00, /* mov rbx, [0x3000] */
    0x48, 0x89, 0xd8,                               /* mov rax, rbx */
    0x83, 0xe0, 0x3f,                               /* and eax, 63 */
    0x48, 0xc1, 0xe0, 0x0c,                         /* shl rax, 12 */
    0x48, 0x89, 0x98, 0x00, 0x00, 0x40, 0x00, /* mov [rax + 4 MiB], rbx: the count in a page of its own */
    0xb9, 0x10, 0x00, 0x00, 0x00,             /* mov ecx, 16 */
    0x48, 0xc1, 0xc3, 0x04,                   /* digit: rol rbx, 4 */
    0x88, 0xd8,                               /* mov al, bl */
    0x24, 0x0f,                               /* and al, 0x0f */
    0x3c, 0x0a,                               /* cmp al, 10 */
    0x72, 0x02,                               /* jb +2 */
    0x04, 0x07,                               /* add al, 7 ('A' - '9' - 1) */
    0x04, 0x30,                               /* add al, '0' */
    0x66, 0xba, 0xff, 0x03,                   /* mov dx, 0x3ff (scratch) */
    0xee,                                     /* out dx, al */
    0xb0, 0x00,                               /* mov al, 0 */
    0xec,                                     /* in al, dx */
    0x66, 0xba, 0xf8, 0x03,                   /* mov dx, 0x3f8 (transmit) */
    0xee,                                     /* out dx, al */
    0xff, 0xc9,                               /* dec ecx */
    0x75, 0xdf,                               /* jnz digit */
    0xb0, 0x0a,                               /* mov al, '\n' */
    0xee,                                     /* out dx, al */
    0xeb, 0xb4,                               /* jmp line */
};

/* prints "bye\n", then ud2: with no IDT the #UD cannot be delivered, nor the #DF after it */
static const uint8_t faulting_guest[] = {
    0x66, 0xba, 0xf8, 0x03, /* mov dx, 0x3f8 */
    0xb0, 'b',  0xee,       /* mov al, 'b'; out dx, al */
    0xb0, 'y',  0xee,       /* ... */
    0xb0, 'e',  0xee,       /* */
    0xb0, '\n', 0xee,       /* */
    0x0f, 0x0b,             /* ud2 */
};

static char dir[] = "/tmp/cube-kvm-guest-XXXXXX";
static char kernel[4200], disk[4200];

/* an ELF64 x86-64 image whose one segment (code) loads at 1 MiB, its entry */
static void write_guest(const uint8_t *code, size_t len)
{
    uint8_t img[512] = {0};
    Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_ident[EI_VERSION] = EV_CURRENT;
    eh->e_type = ET_EXEC;
    eh->e_machine = EM_X86_64;
    eh->e_version = EV_CURRENT;
    eh->e_entry = KB_KERNEL_ADDR;
    eh->e_phoff = sizeof(*eh);
    eh->e_ehsize = sizeof(*eh);
    eh->e_phentsize = sizeof(Elf64_Phdr);
    eh->e_phnum = 1;
    Elf64_Phdr *ph = (Elf64_Phdr *)(img + sizeof(*eh));
    ph->p_type = PT_LOAD;
    ph->p_flags = PF_R | PF_X;
    ph->p_offset = 0x100;
    ph->p_vaddr = ph->p_paddr = KB_KERNEL_ADDR;
    ph->p_filesz = ph->p_memsz = len;
    ck_assert_uint_le(0x100 + len, sizeof(img));
    memcpy(img + 0x100, code, len);
    int fd = open(kernel, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, img, 0x100 + len), (ssize_t)(0x100 + len));
    close(fd);
}

static void setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(kernel, sizeof(kernel), "%s/guest.elf", dir);
    snprintf(disk, sizeof(disk), "%s/disk.img", dir);
    int fd = open(disk, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, 1 << 20), 0); /* the VMM wants a root disk; these guests never read it */
    close(fd);
}

static void teardown(void)
{
    cube_rm_rf(dir);
    strcpy(dir, "/tmp/cube-kvm-guest-XXXXXX");
}

static int console_open(const char *name)
{
    char p[4300];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    return fd;
}

static off_t console_size(int fd)
{
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    return st.st_size;
}

static char *console_read(int fd, size_t *len)
{
    off_t n = console_size(fd);
    char *b = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(pread(fd, b, (size_t)n, 0), n);
    b[n] = '\0';
    *len = (size_t)n;
    return b;
}

/* until the console holds at least n bytes (at most 20 s: a PVM host emulates every instruction) */
static void wait_console(int fd, off_t n)
{
    int64_t until = cube_now_mono_ms() + 20000;
    while (console_size(fd) < n) {
        ck_assert_msg(cube_now_mono_ms() < until, "the guest printed %lld bytes of %lld in 20 s",
                      (long long)console_size(fd), (long long)n);
        usleep(2000);
    }
}

/* The counting guest's output from its start: "0000000000000001\n0000000000000002\n..." */
static void expect_counting_from(size_t base, const char *out, size_t len, const char *who)
{
    char line[18];
    for (size_t i = base; i < base + len; i++) {
        snprintf(line, sizeof(line), "%016llX\n", (unsigned long long)(i / 17 + 1));
        ck_assert_msg(out[i - base] == line[i % 17], "%s: byte %zu is '%c', the count says '%c'", who, i,
                      out[i - base], line[i % 17]);
    }
}

static void expect_counting(const char *out, size_t len, const char *who)
{
    expect_counting_from(0, out, len, who);
}

/* The original's console (con) counts from its start; the clone's (ccon) begins with the byte the original
 * printed after its first `at` bytes, where the snapshot was taken: same registers (mid-line, mid-number),
 * same memory (the count), the same serial port, the same instruction next. */
static void expect_clone_goes_on(int con, off_t at, int ccon)
{
    size_t len, clen;
    char *out = console_read(con, &len), *cout = console_read(ccon, &clen);
    expect_counting(out, len, "the original");
    char *joined = malloc((size_t)at + clen);
    ck_assert_ptr_nonnull(joined);
    memcpy(joined, out, (size_t)at);
    memcpy(joined + at, cout, clen);
    expect_counting(joined, (size_t)at + clen, "the original up to the snapshot, then the clone");
    free(joined);
    free(out);
    free(cout);
}

static vmm *boot(const char *cmdline, int console, uint64_t mem, int vcpus)
{
    char overlay[4300];
    snprintf(overlay, sizeof(overlay), "%s/overlay-%d", dir, console);
    vmm_config cfg = {.kernel = kernel,
                      .disk = disk,
                      .overlay = overlay,
                      .cmdline = cmdline,
                      .mem_bytes = mem,
                      .vcpus = vcpus,
                      .console_fd = console,
                      .tap_fd = -1};
    vmm *v = NULL;
    cube_err err = {0};
    ck_assert_msg(vmm_create(&cfg, &v, &err) == 0, "boot: %s", err.msg);
    return v;
}

/* code as the kernel, booted with 64 MiB and vcpus vCPUs (the others than the first wait for an INIT/SIPI
 * these guests never send), its console in <dir>/console (*con) */
static vmm *start_guest(const uint8_t *code, size_t len, int vcpus, int *con)
{
    write_guest(code, len);
    *con = console_open("console");
    return boot(NULL, *con, 64u << 20, vcpus);
}

START_TEST(a_guest_boots_in_long_mode_and_prints_on_the_console)
{
    int con;
    vmm *v = start_guest(counting_guest, sizeof(counting_guest), 1, &con);
    wait_console(con, 17 * 50);
    cube_err err = {0};
    ck_assert_int_eq(vmm_pause(v, &err), 0);
    size_t len;
    char *out = console_read(con, &len);
    expect_counting(out, len, "the guest");
    ck_assert_int_eq(vmm_stop_status(v, NULL), -1); /* it did not stop by itself */
    free(out);
    vmm_destroy(v);
    close(con);
}
END_TEST

START_TEST(pause_stops_the_guest_and_resume_goes_on)
{
    int con;
    vmm *v = start_guest(counting_guest, sizeof(counting_guest), 1, &con);
    wait_console(con, 17 * 10);
    cube_err err = {0};
    ck_assert_int_eq(vmm_pause(v, &err), 0);
    off_t at = console_size(con);
    usleep(100 * 1000);
    ck_assert_int_eq(console_size(con), at); /* paused: not one more byte */
    ck_assert_int_eq(vmm_resume(v, &err), 0);
    wait_console(con, at + 17 * 10);
    ck_assert_int_eq(vmm_pause(v, &err), 0);
    size_t len;
    char *out = console_read(con, &len);
    expect_counting(out, len, "the guest across a pause");
    free(out);
    vmm_destroy(v);
    close(con);
}
END_TEST

/* One snapshot of v (printing on con) and a clone of it, each run until it printed 20 more lines: the
 * original up to the snapshot and then the clone print the count without a gap or a repeat. */
static void snapshot_and_clone(vmm *v, int con, int round)
{
    char snap[4300], name[64], overlay[4300];
    snprintf(snap, sizeof(snap), "%s/snap-%d", dir, round); /* not there yet: the snapshot makes it */
    snprintf(name, sizeof(name), "clone-console-%d", round);
    snprintf(overlay, sizeof(overlay), "%s/clone-overlay-%d", dir, round);
    cube_err err = {0};
    ck_assert_int_eq(vmm_pause(v, &err), 0);
    off_t at = console_size(con); /* the console at the snapshot: nothing is printed while paused */
    ck_assert_msg(vmm_snapshot(v, snap, &err) == 0, "snapshot: %s", err.msg);
    ck_assert_int_eq(console_size(con), at);

    int ccon = console_open(name); /* the clone's console is its own */
    vmm_config cfg = {
        .restore = snap, .disk = disk, .overlay = overlay, .vcpus = 1, .console_fd = ccon, .tap_fd = -1};
    vmm *clone = NULL;
    ck_assert_msg(vmm_create(&cfg, &clone, &err) == 0, "restore: %s", err.msg);
    ck_assert_int_eq(vmm_resume(v, &err), 0); /* the original goes on too */
    wait_console(ccon, 17 * 20);
    wait_console(con, at + 17 * 20);
    ck_assert_int_eq(vmm_pause(clone, &err), 0);
    ck_assert_int_eq(vmm_pause(v, &err), 0);

    expect_clone_goes_on(con, at, ccon);
    vmm_destroy(clone);
    close(ccon);
    ck_assert_int_eq(vmm_resume(v, &err), 0);
}

/* Several rounds: each pause lands on one of the guest's port accesses, and each kind must come through. Two
 * vCPUs: the second's state (waiting for its start-up IPI) comes through too. */
START_TEST(a_snapshot_clone_goes_on_where_the_original_was)
{
    int con;
    vmm *v = start_guest(counting_guest, sizeof(counting_guest), 2, &con);
    for (int round = 0; round < 16; round++) {
        wait_console(con, console_size(con) + 17 * 5);
        snapshot_and_clone(v, con, round);
    }
    vmm_destroy(v);
    close(con);
}
END_TEST

/* The 8 bytes at guest physical address gpa in a snapshot's memory file */
static uint64_t guest_word(const char *snap, uint64_t gpa)
{
    char p[4400];
    snprintf(p, sizeof(p), "%s/memory", snap);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    uint64_t w = 0;
    ck_assert_int_eq(pread(fd, &w, sizeof(w), (off_t)gpa), (ssize_t)sizeof(w));
    close(fd);
    return w;
}

/* kB of shared memory (the guest's memfd) this process has resident */
static long rss_shmem_kb(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[128];
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "RssShmem: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

/* A snapshot reads only the pages the guest has (reading the rest of a memfd allocates them: it made all of
 * a 512 MiB guest resident), and a clone's own snapshot, of the pages it has and of its snapshot's file,
 * makes a clone that goes on from there: original -> clone A -> clone B count on without a gap. */
START_TEST(snapshots_leave_memory_as_it_was_and_a_clone_of_a_clone_goes_on)
{
    write_guest(counting_guest, sizeof(counting_guest));
    int con = console_open("console");
    vmm *v = boot(NULL, con, 256u << 20, 2); /* the waiting vCPU's state comes through too */
    wait_console(con, 17 * 20);
    cube_err err = {0};
    ck_assert_int_eq(vmm_pause(v, &err), 0);
    off_t at = console_size(con);
    long before = rss_shmem_kb();
    char snap_a[4300], snap_b[4300], overlay[4300];
    snprintf(snap_a, sizeof(snap_a), "%s/snap-a", dir);
    snprintf(snap_b, sizeof(snap_b), "%s/snap-b", dir);
    ck_assert_msg(vmm_snapshot(v, snap_a, &err) == 0, "snapshot: %s", err.msg);
    long after = rss_shmem_kb();
    ck_assert_msg(before >= 0 && after - before < 16 * 1024,
                  "a snapshot of a 256 MiB guest made %ld kB resident", after - before);

    int acon = console_open("clone-a");
    snprintf(overlay, sizeof(overlay), "%s/overlay-a", dir);
    vmm_config cfg = {
        .restore = snap_a, .disk = disk, .overlay = overlay, .vcpus = 1, .console_fd = acon, .tap_fd = -1};
    vmm *a = NULL;
    ck_assert_msg(vmm_create(&cfg, &a, &err) == 0, "restore: %s", err.msg);
    wait_console(acon, 17 * 20);
    ck_assert_int_eq(vmm_pause(a, &err), 0);
    off_t at_a = console_size(acon);
    ck_assert_msg(vmm_snapshot(a, snap_b, &err) == 0, "snapshot of a clone: %s", err.msg);

    int bcon = console_open("clone-b");
    snprintf(overlay, sizeof(overlay), "%s/overlay-b", dir);
    cfg.restore = snap_b;
    cfg.overlay = overlay;
    cfg.console_fd = bcon;
    vmm *b = NULL;
    ck_assert_msg(vmm_create(&cfg, &b, &err) == 0, "restore of a clone's snapshot: %s", err.msg);
    wait_console(bcon, 17 * 20);
    ck_assert_int_eq(vmm_pause(b, &err), 0);

    /* clone A wrote counts into pages that were holes in its snapshot's file: clone A's own snapshot has them
     */
    uint64_t count_a = guest_word(snap_a, 0x3000), count_b = guest_word(snap_b, 0x3000);
    ck_assert_msg(count_b > count_a + 1 && count_b - count_a < 64, "counts %llu then %llu",
                  (unsigned long long)count_a, (unsigned long long)count_b);
    uint64_t page = 0x400000 + ((count_b - 1) % 64) * 4096;
    ck_assert_uint_eq(guest_word(snap_a, page), 0);
    ck_assert_uint_eq(guest_word(snap_b, page), count_b - 1);

    size_t len, alen, blen;
    char *out = console_read(con, &len), *aout = console_read(acon, &alen), *bout = console_read(bcon, &blen);
    expect_counting(out, (size_t)at, "the original up to its snapshot");
    expect_counting_from((size_t)at, aout, (size_t)at_a, "clone A up to its snapshot");
    expect_counting_from((size_t)at + (size_t)at_a, bout, blen, "clone B, from clone A's snapshot");
    free(out);
    free(aout);
    free(bout);
    vmm_destroy(b);
    vmm_destroy(a);
    vmm_destroy(v);
    close(bcon);
    close(acon);
    close(con);
}
END_TEST

START_TEST(a_triple_fault_stops_the_guest_as_a_failure)
{
    int con;
    vmm *v = start_guest(faulting_guest, sizeof(faulting_guest), 1, &con);
    struct pollfd p = {.fd = vmm_exit_fd(v), .events = POLLIN};
    ck_assert_msg(poll(&p, 1, 20000) == 1, "the faulting guest did not stop in 20 s");
    const char *why = NULL;
    ck_assert_int_eq(vmm_stop_status(v, &why), 1);
    ck_assert_ptr_nonnull(why);
    /* KVM reports it as a shutdown; a PVM host's emulator may stop at the ud2 itself */
    ck_assert_msg(strstr(why, "triple fault") || strstr(why, "internal error"), "stopped: %s", why);
    size_t len;
    char *out = console_read(con, &len);
    ck_assert_str_eq(out, "bye\n");
    free(out);
    cube_err err = {0};
    ck_assert_int_eq(vmm_pause(v, &err), -1); /* a stopped guest cannot be paused: it says so */
    vmm_destroy(v);
    close(con);
}
END_TEST

/* A program built beside the tests: cube-hypervisor/<name> */
static void built_bin(const char *name, char *out, size_t len)
{
    const char *bin = getenv("CUBE_TEST_BIN_DIR");
    snprintf(out, len, "%s/../cube-hypervisor/%s", bin ? bin : ".", name);
}

/* cube-hypervisor's arguments for a kvm sandbox id (state in <dir>/<id>) booting the guest, or restored from
 * restore; argv holds 24 */
static void hv_argv(const char *id, const char *restore, char *state, char **argv)
{
    int n = 0;
    const char *common[] = {
        "cube-hypervisor", "--backend", "kvm",         "--id", id,       "--rootfs", dir, "--state", state,
        "--disk",          disk,        "--memory-mb", "64",   "--cpus", "1"};
    for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++) argv[n++] = (char *)common[i];
    if (restore) {
        argv[n++] = "--restore";
        argv[n++] = (char *)restore;
    } else {
        argv[n++] = "--kernel";
        argv[n++] = kernel;
        argv[n++] = "--kernel-args";
        argv[n++] = "quiet";
    }
    argv[n] = NULL;
}

/* until the hypervisor that logs to log is ready (its first line: its control socket serves), at most 20 s */
static void wait_ready(const char *id, const char *log)
{
    int64_t until = cube_now_mono_ms() + 20000;
    for (;;) {
        char head[8] = "";
        int fd = open(log, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n = read(fd, head, 6);
            (void)n;
            close(fd);
        }
        if (strncmp(head, "ready ", 6) == 0) return;
        ck_assert_msg(cube_now_mono_ms() < until, "cube-hypervisor %s was not ready in 20 s", id);
        usleep(2000);
    }
}

/* cube-hypervisor itself, jailed as in production: started on the guest (or --restore SNAP), its log in
 * <dir>/<id>.log and its console in <dir>/<id>/console.log; returns its pid, with ready once it is
 * ready */
static pid_t hv_start(const char *id, const char *restore, bool ready)
{
    char hv[4200], state[4300], log[4300], *argv[24];
    built_bin("cube-hypervisor", hv, sizeof(hv));
    snprintf(state, sizeof(state), "%s/%s", dir, id);
    snprintf(log, sizeof(log), "%s/%s.log", dir, id);
    ck_assert_int_eq(mkdir(state, 0700), 0);
    hv_argv(id, restore, state, argv);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        /* under ASan: LeakSanitizer cannot stop the world in a process under the VMM's seccomp filter (no
         * ptrace, threads only), and would fail its exit */
        char asan[512];
        const char *was = getenv("ASAN_OPTIONS");
        snprintf(asan, sizeof(asan), "%s%sdetect_leaks=0", was ? was : "", was && *was ? ":" : "");
        setenv("ASAN_OPTIONS", asan, 1);
        execv(hv, argv);
        _exit(127);
    }
    if (ready) wait_ready(id, log);
    return pid;
}

/* its exit status, waiting at most 20 s */
static int hv_wait_exit(pid_t pid)
{
    int st = 0;
    int64_t until = cube_now_mono_ms() + 20000;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (cube_now_mono_ms() > until) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            ck_abort_msg("cube-hypervisor did not exit within 20 s");
        }
        usleep(10000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *read_text(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
    size_t len;
    char *b = console_read(fd, &len);
    close(fd);
    return b;
}

/* A call on the control socket of hypervisor id; its answer in *resp */
static int hv_call_try(const char *id, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, cube_err *err)
{
    char addr[4400];
    snprintf(addr, sizeof(addr), "unix:%s/%s/control.sock", dir, id);
    return cube_rpc_call_once(addr, method, req, rd, resp, 10000, err);
}

/* A call that must succeed; its answer in *out (the caller frees it) or freed */
static void hv_call_answer(const char *id, const char *method, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out)
{
    ProtobufCMessage *resp = NULL;
    cube_err err = {0};
    ck_assert_msg(hv_call_try(id, method, req, rd, &resp, &err) == 0, "%s: %s", method, err.msg);
    if (out)
        *out = resp;
    else
        protobuf_c_message_free_unpacked(resp, NULL);
}

static void hv_call(const char *id, const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *rd)
{
    hv_call_answer(id, method, req, rd, NULL);
}

static bool cgroup_there(const char *id)
{
    char v1[256], v2[256];
    snprintf(v1, sizeof(v1), "/sys/fs/cgroup/memory/cube/%s", id);
    snprintf(v2, sizeof(v2), "/sys/fs/cgroup/cube/%s", id);
    return access(v1, F_OK) == 0 || access(v2, F_OK) == 0;
}

/* the VMM's cgroup (v1's memory hierarchy, or v2's) removed by its janitor once it exited: within 5 s */
static void expect_cgroups_gone(const char *id)
{
    int64_t until = cube_now_mono_ms() + 5000;
    while (cgroup_there(id)) {
        ck_assert_msg(cube_now_mono_ms() < until, "the cgroup of %s is still there 5 s after its exit", id);
        usleep(10000);
    }
}

/* the guest's failure is the hypervisor's exit status, and the log says where the guest was */
START_TEST(the_hypervisor_exits_non_zero_when_its_guest_fails)
{
    write_guest(faulting_guest, sizeof(faulting_guest));
    pid_t pid = hv_start("kvm-failing", NULL, false);
    int status = hv_wait_exit(pid);
    char path[4400];
    snprintf(path, sizeof(path), "%s/kvm-failing.log", dir);
    char *log = read_text(path);
    ck_assert_msg(status == 1, "exit status %d; log:\n%s", status, log);
    /* where it stopped: RIP at the ud2 (past the four OUTs) and its bytes */
    ck_assert_msg(strstr(log, "guest stopped") && strstr(log, "rip=0x100010") && strstr(log, "insn=\"0f 0b"),
                  "log:\n%s", log);
    free(log);
    snprintf(path, sizeof(path), "%s/kvm-failing/console.log", dir);
    char *console = read_text(path);
    ck_assert_str_eq(console, "bye\n");
    free(console);
    expect_cgroups_gone("kvm-failing");
}
END_TEST

/* Pause, Snapshot (into a directory not made yet) and Resume through the control socket of a jailed
 * hypervisor, then a second one restored from that snapshot: both go on counting from where it was taken. */
START_TEST(the_hypervisor_snapshots_through_its_control_socket_and_a_restore_goes_on)
{
    write_guest(counting_guest, sizeof(counting_guest));
    pid_t orig = hv_start("kvm-orig", NULL, true);
    ck_assert(cgroup_there("kvm-orig")); /* the VMM runs in a cgroup of its own */
    char path[4400], snap[4400];
    snprintf(path, sizeof(path), "%s/kvm-orig/console.log", dir);
    int con = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(con, 0);
    wait_console(con, 17 * 20);
    Cube__Empty e = CUBE__EMPTY__INIT;
    hv_call("kvm-orig", "/cube.Hypervisor/Pause", &e.base, &cube__empty__descriptor);
    off_t at = console_size(con);
    snprintf(snap, sizeof(snap), "%s/snaps/one", dir);
    snprintf(path, sizeof(path), "%s/snaps", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    Cube__HvSnapshotRequest req = CUBE__HV_SNAPSHOT_REQUEST__INIT;
    req.dir = snap;
    hv_call("kvm-orig", "/cube.Hypervisor/Snapshot", &req.base, &cube__hv_snapshot_response__descriptor);
    ck_assert_int_eq(console_size(con), at); /* still paused: Snapshot leaves it as it found it */
    pid_t clone = hv_start("kvm-clone", snap, true);
    hv_call("kvm-orig", "/cube.Hypervisor/Resume", &e.base, &cube__empty__descriptor);
    snprintf(path, sizeof(path), "%s/kvm-clone/console.log", dir);
    int ccon = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(ccon, 0);
    wait_console(ccon, 17 * 20);
    wait_console(con, at + 17 * 20);
    /* what the node asks of a running sandbox: its figures (the VMM's cgroup holds the guest's memory),
     * then Stop; the original ends by SIGTERM, the node's fallback */
    ProtobufCMessage *info = NULL; /* what a restarted cubelet asks to adopt it */
    hv_call_answer("kvm-clone", "/cube.Hypervisor/Info", &e.base, &cube__hv_info__descriptor, &info);
    ck_assert_str_eq(((Cube__HvInfo *)info)->sandbox_id, "kvm-clone");
    ck_assert_str_eq(((Cube__HvInfo *)info)->backend, "kvm");
    ck_assert_int_eq(((Cube__HvInfo *)info)->hv_pid, clone);
    protobuf_c_message_free_unpacked(info, NULL);
    /* a rollback (the ns backend's files-only return to a snapshot) is refused by name, and the VM runs on */
    Cube__HvRollbackRequest rb = CUBE__HV_ROLLBACK_REQUEST__INIT;
    rb.layers = snap;
    ProtobufCMessage *none = NULL;
    cube_err rerr = {0};
    ck_assert_int_eq(hv_call_try("kvm-clone", "/cube.Hypervisor/Rollback", &rb.base,
                                 &cube__hv_info__descriptor, &none, &rerr),
                     -1);
    ck_assert_msg(strstr(rerr.msg, "kvm backend cannot roll"), "%s", rerr.msg);
    off_t was = console_size(ccon);
    wait_console(ccon, was + 17);
    ProtobufCMessage *st = NULL;
    hv_call_answer("kvm-clone", "/cube.Hypervisor/Stats", &e.base, &cube__hv_stats__descriptor, &st);
    ck_assert_uint_gt(((Cube__HvStats *)st)->mem_used, 0);
    protobuf_c_message_free_unpacked(st, NULL);
    hv_call("kvm-clone", "/cube.Hypervisor/Stop", &e.base, &cube__empty__descriptor);
    kill(orig, SIGTERM);
    ck_assert_int_eq(hv_wait_exit(orig), 0); /* stopped, not failed */
    ck_assert_int_eq(hv_wait_exit(clone), 0);
    expect_cgroups_gone("kvm-orig");
    expect_cgroups_gone("kvm-clone");
    expect_clone_goes_on(con, at, ccon);
    close(con);
    close(ccon);
}
END_TEST

/* cubelet's way: cube-zygote forks the hypervisor (no exec, no janitor process: the zygote holds the
 * lifeline). The forked VMM boots, snapshots through its control socket, stops, and leaves no cgroup. */
START_TEST(a_kvm_hypervisor_forked_by_the_zygote_runs_snapshots_and_leaves_nothing)
{
    write_guest(counting_guest, sizeof(counting_guest));
    char zbin[4200], state[4300], log[4300], snap[4300], console[4400], *argv[24];
    built_bin("cube-zygote", zbin, sizeof(zbin));
    snprintf(state, sizeof(state), "%s/kvm-forked", dir);
    snprintf(log, sizeof(log), "%s/kvm-forked.log", dir);
    snprintf(snap, sizeof(snap), "%s/kvm-forked-snap", dir);
    snprintf(console, sizeof(console), "%s/console.log", state);
    ck_assert_int_eq(mkdir(state, 0700), 0);
    hv_argv("kvm-forked", NULL, state, argv);
    cube_zygote z = {.sock = -1};
    pthread_mutex_init(&z.lock, NULL);
    cube_err err = {0};
    ck_assert_msg(cube_zygote_start(&z, zbin, &err) == 0, "zygote: %s", err.msg);
    int out = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(out, 0);
    int fds[1] = {out}, targets[1] = {1};
    pid_t pid = 0;
    int pidfd = -1;
    ck_assert_msg(cube_zygote_spawn(&z, argv, fds, targets, 1, &pid, &pidfd, &err) == 0, "spawn: %s",
                  err.msg);
    close(out);
    wait_ready("kvm-forked", log);
    ck_assert(cgroup_there("kvm-forked"));
    int con = open(console, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(con, 0);
    wait_console(con, 17 * 10);
    Cube__HvSnapshotRequest req = CUBE__HV_SNAPSHOT_REQUEST__INIT;
    req.dir = snap;
    hv_call("kvm-forked", "/cube.Hypervisor/Snapshot", &req.base, &cube__hv_snapshot_response__descriptor);
    ck_assert_uint_gt(guest_word(snap, 0x3000), 0); /* the count, in the snapshot's memory */
    Cube__Empty e = CUBE__EMPTY__INIT;
    hv_call("kvm-forked", "/cube.Hypervisor/Stop", &e.base, &cube__empty__descriptor);
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    ck_assert_msg(poll(&p, 1, 20000) == 1, "the zygote's kvm hypervisor did not exit after Stop");
    close(pidfd);
    expect_cgroups_gone("kvm-forked"); /* the zygote's janitor work */
    size_t len;
    char *text = console_read(con, &len);
    expect_counting(text, len, "the zygote's guest");
    free(text);
    close(con);
    cube_zygote_stop(&z);
}
END_TEST

/* A guest that never leaves the CPU by itself (jmp $) is paused all the same, again and again */
START_TEST(a_guest_that_never_exits_is_paused)
{
    static const uint8_t spinning_guest[] = {0xeb, 0xfe}; /* jmp $ */
    int con;
    vmm *v = start_guest(spinning_guest, sizeof(spinning_guest), 1, &con);
    cube_err err = {0};
    for (int i = 0; i < 50; i++) {
        int64_t t0 = cube_now_mono_ms();
        ck_assert_int_eq(vmm_pause(v, &err), 0);
        ck_assert_int_lt(cube_now_mono_ms() - t0, 5000);
        ck_assert_int_eq(vmm_resume(v, &err), 0);
        usleep(1000);
    }
    vmm_destroy(v);
    close(con);
}
END_TEST

/* What the command line carries: the built-in one, then the operator's --kernel-args (read back from the
 * zero page the guest would get) */
START_TEST(kernel_args_reach_the_command_line_and_too_long_is_refused)
{
    write_guest(counting_guest, sizeof(counting_guest));
    int con = console_open("console");
    char *huge = malloc(KB_CMDLINE_MAX + 16);
    memset(huge, 'x', KB_CMDLINE_MAX + 15);
    huge[KB_CMDLINE_MAX + 15] = '\0';
    vmm_config cfg = {.kernel = kernel,
                      .disk = disk,
                      .cmdline = huge,
                      .mem_bytes = 64u << 20,
                      .vcpus = 1,
                      .console_fd = con,
                      .tap_fd = -1};
    vmm *v = NULL;
    cube_err err = {0};
    ck_assert_int_eq(vmm_create(&cfg, &v, &err), -1);
    ck_assert_int_eq(err.code, E2BIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "command line"));
    free(huge);
    close(con);
}
END_TEST

int main(void)
{
    cube_err err = {0};
    if (vmm_available(&err) < 0) {
        printf("SKIP test_kvm_guest: %s\n", err.msg);
        return 77;
    }
    Suite *s = suite_create("kvm guest");
    TCase *tc = tcase_create("on /dev/kvm");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_guest_boots_in_long_mode_and_prints_on_the_console);
    tcase_add_test(tc, pause_stops_the_guest_and_resume_goes_on);
    tcase_add_test(tc, a_snapshot_clone_goes_on_where_the_original_was);
    tcase_add_test(tc, snapshots_leave_memory_as_it_was_and_a_clone_of_a_clone_goes_on);
    tcase_add_test(tc, a_triple_fault_stops_the_guest_as_a_failure);
    tcase_add_test(tc, a_guest_that_never_exits_is_paused);
    tcase_add_test(tc, the_hypervisor_exits_non_zero_when_its_guest_fails);
    tcase_add_test(tc, a_kvm_hypervisor_forked_by_the_zygote_runs_snapshots_and_leaves_nothing);
    tcase_add_test(tc, the_hypervisor_snapshots_through_its_control_socket_and_a_restore_goes_on);
    tcase_add_test(tc, kernel_args_reach_the_command_line_and_too_long_is_refused);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
