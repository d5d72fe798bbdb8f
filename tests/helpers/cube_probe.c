/* cube-probe: runs inside a sandbox in the hypervisor tests and reports what the kernel allowed.
 * Each verb prints one line, "ok" or the errno name, and exits 0; the test reads the line. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static int report(long rc)
{
    if (rc < 0)
        printf("%s\n", strerrorname_np(errno));
    else
        printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    const char *v = argv[1];
    if (!strcmp(v, "lo_setflags")) { /* reconfigure the network (same flags again, so nothing breaks): only
                                      * in a namespace the sandbox owns */
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct ifreq ifr = {0};
        strcpy(ifr.ifr_name, "lo");
        if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) return report(-1);
        return report(ioctl(s, SIOCSIFFLAGS, &ifr));
    }
    if (!strcmp(v, "bind80")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(80)};
        return report(bind(s, (struct sockaddr *)&sa, sizeof(sa)));
    }
    if (!strcmp(v, "bpf")) {
        union bpf_attr attr;
        memset(&attr, 0, sizeof(attr));
        attr.map_type = BPF_MAP_TYPE_ARRAY;
        attr.key_size = 4;
        attr.value_size = 4;
        attr.max_entries = 1;
        return report(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr)));
    }
    if (!strcmp(v, "module")) return report(syscall(SYS_finit_module, 0, "", 0));
    if (!strcmp(v, "kexec")) return report(syscall(SYS_kexec_load, 0, 0, NULL, 0));
    if (!strcmp(v, "perf")) {
        struct perf_event_attr pe;
        memset(&pe, 0, sizeof(pe));
        pe.size = sizeof(pe);
        pe.type = PERF_TYPE_SOFTWARE;
        pe.config = PERF_COUNT_SW_CPU_CLOCK;
        return report(syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0));
    }
    if (!strcmp(v, "keyctl")) return report(syscall(SYS_keyctl, 0, 0, 0, 0, 0));
    if (!strcmp(v, "userns")) return report(unshare(CLONE_NEWUSER));
    if (!strcmp(v, "netns")) return report(unshare(CLONE_NEWNET));
    if (!strcmp(v, "mntns")) return report(unshare(CLONE_NEWNS));
    if (!strcmp(v, "reboot")) return report(reboot(RB_POWER_OFF));
    if (!strcmp(v, "swapon")) return report(swapon("/tmp/none", 0));
    if (!strcmp(v, "mknod")) return report(mknod("/tmp/sda", S_IFBLK | 0600, makedev(8, 0)));
    if (!strcmp(v, "write") && argc == 4) { /* write STRING to a file, e.g. a host kernel setting */
        int fd = open(argv[2], O_WRONLY);
        if (fd < 0) return report(-1);
        return report(write(fd, argv[3], strlen(argv[3])));
    }
    if (!strcmp(v, "fallocate") &&
        argc == 3) { /* 1 MB of /tmp/falloc: alloc, keep (KEEP_SIZE), punch, posix */
        int fd = open("/tmp/falloc", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) return report(-1);
        if (!strcmp(argv[2], "posix")) {
            int e = posix_fallocate(fd, 0, 1 << 20);
            errno = e;
            return report(e ? -1 : 0);
        }
        int mode = !strcmp(argv[2], "keep")    ? FALLOC_FL_KEEP_SIZE
                   : !strcmp(argv[2], "punch") ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                                               : 0;
        return report(fallocate(fd, mode, 0, 1 << 20));
    }
    if (!strcmp(v, "io_uring")) {
        char params[120] = {0}; /* struct io_uring_params */
        return report(syscall(SYS_io_uring_setup, 1, params));
    }
    if (!strcmp(v, "inotify")) return report(inotify_init1(IN_CLOEXEC));
    if (!strcmp(v, "inotify_fill")) { /* take inotify instances until refused, say how many, hold them */
        int n = 0;
        while (n < 100000 && inotify_init1(IN_CLOEXEC) >= 0) n++;
        printf("%d %s\n", n, strerrorname_np(errno));
        fflush(stdout);
        pause();
        return 0;
    }
    if (!strcmp(v, "fds_in_flight") && argc == 3) { /* put N descriptors in flight on a socket, hold them */
        long want = atol(argv[2]), sent = 0;
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) return report(-1);
        while (sent < want) {
            int n = want - sent < 250 ? (int)(want - sent) : 250;
            char cbuf[CMSG_SPACE(250 * sizeof(int))] = {0};
            struct iovec iov = {.iov_base = "x", .iov_len = 1};
            struct msghdr m = {.msg_iov = &iov,
                               .msg_iovlen = 1,
                               .msg_control = cbuf,
                               .msg_controllen = CMSG_SPACE(n * sizeof(int))};
            struct cmsghdr *c = CMSG_FIRSTHDR(&m);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(n * sizeof(int));
            for (int i = 0; i < n; i++) ((int *)CMSG_DATA(c))[i] = sp[0];
            if (sendmsg(sp[1], &m, 0) < 0) break;
            sent += n;
        }
        printf("%ld %s\n", sent, sent < want ? strerrorname_np(errno) : "held");
        fflush(stdout);
        pause();
        return 0;
    }
    if (!strcmp(v, "send_fd")) { /* pass one descriptor over a socket, as a program handing work off does */
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) return report(-1);
        char cbuf[CMSG_SPACE(sizeof(int))] = {0};
        struct iovec iov = {.iov_base = "x", .iov_len = 1};
        struct msghdr m = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &sp[0], sizeof(int));
        return report(sendmsg(sp[1], &m, 0));
    }
    if (!strcmp(v, "sock_fill") && argc == 4) { /* N loopback TCP or UDP sockets whose data is never read */
        int n = atoi(argv[3]), udp = !strcmp(argv[2], "udp");
        static int fds[4096];
        static char chunk[65000];
        if (n > 2048) n = 2048;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof(a);
        int srv = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
        if (srv < 0 || bind(srv, (struct sockaddr *)&a, al) < 0 || (!udp && listen(srv, 4096) < 0) ||
            getsockname(srv, (struct sockaddr *)&a, &al) < 0)
            return report(-1);
        int made = 0;
        for (; made < n; made++) {
            int c = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
            if (c < 0) break;
            if (udp) { /* each its own receiver, sent to by itself */
                struct sockaddr_in self = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
                socklen_t sl = sizeof(self);
                if (bind(c, (struct sockaddr *)&self, sl) < 0 ||
                    getsockname(c, (struct sockaddr *)&self, &sl) < 0 ||
                    connect(c, (struct sockaddr *)&self, sl) < 0)
                    break;
            } else {
                if (connect(c, (struct sockaddr *)&a, al) < 0 && errno != EINPROGRESS) break;
                if (accept(srv, NULL, NULL) < 0) break; /* held, never read */
            }
            fds[made] = c;
        }
        long long sent = 0;
        for (int round = 0; round < 64; round++) {
            long long moved = 0;
            for (int i = 0; i < made; i++) /* (a datagram to a full queue is dropped, its send succeeds) */
                for (ssize_t w, k = 0;
                     (!udp || k < 16) &&
                     (w = send(fds[i], chunk, udp ? 60000 : sizeof(chunk), MSG_DONTWAIT)) > 0;
                     k++)
                    moved += w;
            if (udp) {
                sent += moved;
                break;
            }
            sent += moved;
            if (!moved) break;
        }
        printf("%d %lld\n", made, sent >> 20);
        fflush(stdout);
        pause();
        return 0;
    }
    if (!strcmp(v, "pty_fill")) { /* open ptys until refused; say how many, hold them */
        int n = 0;
        while (n < 100000 && posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC) >= 0) n++;
        printf("%d %s\n", n, strerrorname_np(errno));
        fflush(stdout);
        pause();
        return 0;
    }
    if (!strcmp(v, "pty")) return report(posix_openpt(O_RDWR | O_NOCTTY));
    if (!strcmp(v, "forkbomb")) { /* fork until refused; print how many succeeded, then clean up */
        int n = 0;
        pid_t pids[100000];
        for (; n < 100000; n++) {
            pid_t p = fork();
            if (p == 0) {
                pause();
                _exit(0);
            }
            if (p < 0) break;
            pids[n] = p;
        }
        printf("%d %s\n", n, strerrorname_np(errno));
        for (int i = 0; i < n; i++) kill(pids[i], SIGKILL);
        while (wait(NULL) > 0) {
        }
        return 0;
    }
    if (!strcmp(v, "memhog") && argc == 3) { /* touch N MiB; the memory limit should stop it */
        long mb = atol(argv[2]);
        for (long i = 0; i < mb; i++) {
            char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) return report(-1);
            memset(p, 1, 1 << 20);
        }
        printf("survived %ld MiB\n", mb);
        return 0;
    }
    if (!strcmp(v, "grep_mem") && argc == 4) { /* grep_mem PID HEX: is the string HEX encodes anywhere in the
                                                * memory PID's owner can read? (hex: so that the request that
                                                * started this probe does not put the string there itself) */
        char needle[256];
        size_t nl = strlen(argv[3]) / 2;
        if (nl == 0 || nl >= sizeof(needle)) return 2;
        for (size_t i = 0; i < nl; i++) sscanf(argv[3] + 2 * i, "%2hhx", (unsigned char *)&needle[i]);
        char p[64], line[512];
        snprintf(p, sizeof(p), "/proc/%s/maps", argv[2]);
        FILE *maps = fopen(p, "r");
        snprintf(p, sizeof(p), "/proc/%s/mem", argv[2]);
        int mem = open(p, O_RDONLY);
        if (!maps || mem < 0) return report(-1);
        long regions = 0;
        while (fgets(line, sizeof(line), maps)) {
            unsigned long lo, hi;
            char perms[8];
            if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[0] != 'r') continue;
            if (strstr(line, "[vvar") || strstr(line, "[vsyscall]")) continue;
            if (hi - lo > (1UL << 30)) continue; /* a sanitizer's shadow (terabytes of zeros), not data */
            for (unsigned long at = lo; at < hi;) {
                static char buf[1 << 20];
                size_t want = hi - at < sizeof(buf) ? hi - at : sizeof(buf);
                ssize_t got = pread(mem, buf, want, (off_t)at);
                if (got <= 0) break;
                if (memmem(buf, (size_t)got, needle, nl)) {
                    printf("present in %s", line);
                    return 0;
                }
                at += (unsigned long)got > nl ? (unsigned long)got - nl : (unsigned long)got;
            }
            regions++;
        }
        printf(regions ? "absent\n" : "unreadable\n");
        return 0;
    }
    return 2;
}
