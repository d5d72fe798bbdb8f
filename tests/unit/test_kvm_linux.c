/* The microVM boots the guest kernel deploy/guest/build-kernel makes (CUBE_GUEST_KERNEL: deploy/cube test
 * builds it and passes it) on a real /dev/kvm, until the lines that show the VMM's boot protocol reached
 * it: its version, the command line with --kernel-args at its end, the MP table with every vCPU and the I/O
 * APIC. On a PVM host (this project's machines) KVM emulates a kernel not built for PVM instruction by
 * instruction and it stops soon after those lines (an instruction the emulator lacks); on hardware
 * virtualisation it boots on. Skips (77) without /dev/kvm or without the kernel. */
#include <check.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "testutil.h"
#include "timeutil.h"
#include "vmm.h"

static const char *kernel;
static char dir[] = "/tmp/cube-kvm-linux-XXXXXX";

static char *slurp(int fd)
{
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    char *b = malloc((size_t)st.st_size + 1);
    ck_assert_ptr_nonnull(b);
    ssize_t n = pread(fd, b, (size_t)st.st_size, 0);
    b[n > 0 ? n : 0] = '\0';
    return b;
}

START_TEST(the_guest_kernel_boots_and_sees_its_command_line_and_every_vcpu)
{
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char disk[4200], overlay[4200], console[4200];
    snprintf(disk, sizeof(disk), "%s/disk.img", dir);
    snprintf(overlay, sizeof(overlay), "%s/overlay", dir);
    snprintf(console, sizeof(console), "%s/console.log", dir);
    int fd = open(disk, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, 1 << 20), 0);
    close(fd);
    int con = open(console, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    ck_assert_int_ge(con, 0);
    vmm_config cfg = {.kernel = kernel,
                      .disk = disk,
                      .overlay = overlay,
                      .cmdline = "earlyprintk=serial,ttyS0,115200 cube.test=marker-42",
                      .mem_bytes = 128u << 20,
                      .vcpus = 2,
                      .console_fd = con,
                      .tap_fd = -1};
    vmm *v = NULL;
    cube_err err = {0};
    ck_assert_msg(vmm_create(&cfg, &v, &err) == 0, "boot: %s", err.msg);
    static const char *const want[] = {
        "Linux version 6.1",
        "cube.test=marker-42",  /* the command line, --kernel-args last */
        "found SMP MP-table",   /* the MP table where Linux scans */
        "Processor #1",         /* the second vCPU */
        "IOAPIC[0]: apic_id 2", /* the I/O APIC after the local APICs */
        "smpboot: Allowing 2 CPUs",
    };
    int64_t until = cube_now_mono_ms() + 90000;
    char *out = NULL;
    for (;;) {
        /* stopped (read first): what it printed before stopping is all there is (on hardware KVM the
         * kernel boots on to a root it cannot mount, panics and resets, which is fine once it is seen) */
        struct pollfd p = {.fd = vmm_exit_fd(v), .events = POLLIN};
        bool stopped = poll(&p, 1, 0) == 1;
        free(out);
        out = slurp(con);
        size_t seen = 0;
        while (seen < sizeof(want) / sizeof(want[0]) && strstr(out, want[seen])) seen++;
        if (seen == sizeof(want) / sizeof(want[0])) break;
        if (stopped || cube_now_mono_ms() > until) {
            const char *why = NULL;
            vmm_stop_status(v, &why);
            ck_abort_msg("the guest %s before printing '%s'; its console:\n%s",
                         stopped ? (why ? why : "stopped") : "took 90 s", want[seen], out);
        }
        usleep(20000);
    }
    free(out);
    vmm_destroy(v);
    close(con);
    cube_rm_rf(dir);
}
END_TEST

int main(void)
{
    cube_err err = {0};
    if (vmm_available(&err) < 0) {
        printf("SKIP test_kvm_linux: %s\n", err.msg);
        return 77;
    }
    kernel = getenv("CUBE_GUEST_KERNEL");
    if (!kernel || !*kernel || access(kernel, R_OK) < 0) {
        const char *why = getenv("CUBE_GUEST_KERNEL_MISSING");
        printf("SKIP test_kvm_linux: no guest kernel at CUBE_GUEST_KERNEL ('%s'): %s\n", kernel ? kernel : "",
               why ? why : "deploy/cube test builds one with deploy/guest/build-kernel");
        return 77;
    }
    Suite *s = suite_create("kvm linux");
    TCase *tc = tcase_create("guest kernel");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, the_guest_kernel_boots_and_sees_its_command_line_and_every_vcpu);
    suite_add_tcase(s, tc);
    return cube_run_suite(s);
}
