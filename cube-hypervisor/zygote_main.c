/* cube-zygote: the node's warm parent for sandboxes (zygote.h). cubelet starts it with one end of a socket
 * pair at --socket-fd; it exits when that closes. */
#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent_main.h"
#include "disk.h"
#include "hv.h"
#include "hv_main.h"
#include "log.h"
#include "proc_title.h"
#include "sandbox_seccomp.h"
#include "zygote.h"

/* A mount point as /proc/self/mountinfo writes it, its octal escapes (a space is \040) undone in place. */
static void unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
            p[3] <= '7') {
            *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

/* Each sandbox's hypervisor is forked from here and makes a mount namespace of its own, a copy of this
 * process's, and the sandbox's is a copy of that: the kernel copies (and at the sandbox's pivot_root drops)
 * every mount, each time. In a namespace of the zygote's own, without what belongs to single sandboxes
 * (the network namespaces cube-net holds at a mount each, sandbox disks of an older cubelet), that stays at
 * the node's own few mounts however many sandboxes the node holds. A slave of the node's: what is mounted
 * there later (lxcfs started again) still appears. Network namespaces reach a hypervisor as descriptors
 * (--netns-fd). Where it cannot be done, the zygote goes on in the node's namespace, as before. */
static void own_mount_namespace(void)
{
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) {
        cube_log_warn("zygote keeps the node's mount namespace", "errno=%d", errno);
        return;
    }
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[8192];
    int dropped = 0;
    while (f && fgets(line, sizeof(line), f)) {
        /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS */
        char point[4096], fstype[64];
        const char *dash = strstr(line, " - ");
        if (!dash || sscanf(line, "%*d %*d %*s %*s %4095s", point) != 1 ||
            sscanf(dash + 3, "%63s", fstype) != 1)
            continue;
        unescape(point);
        size_t n = strlen(point);
        struct stat st;
        bool sandbox_disk = n > 3 && strcmp(point + n - 3, "/rw") == 0 && hv_disk_mounted_at(point, &st);
        if ((strcmp(fstype, "nsfs") == 0 || sandbox_disk) && umount2(point, MNT_DETACH) == 0) dropped++;
    }
    if (f) fclose(f);
    cube_log_info("zygote has a mount namespace of its own", "dropped=%d", dropped);
}

int main(int argc, char **argv)
{
    cube_log_init("cube-zygote", -1);
    if (argc != 3 || strcmp(argv[1], "--socket-fd") != 0) {
        fprintf(stderr, "usage: cube-zygote --socket-fd FD (started by cubelet)\n");
        return 2;
    }
    char *end;
    long fd = strtol(argv[2], &end, 10);
    if (*end || fd < 3 || fd > 1024) {
        fprintf(stderr, "cube-zygote: --socket-fd wants a descriptor number\n");
        return 2;
    }
    /* Every library's symbols bound once, here: bound lazily, each forked sandbox would look them up and
     * write (copy-on-write) its own bindings again, a few milliseconds of each start on hosts where page
     * faults are dear. The loader does that for every library only when LD_BIND_NOW is set at exec: set it
     * and exec again, once; then drop it, so that nothing the sandboxes start inherits it. */
    if (!getenv("LD_BIND_NOW")) {
        setenv("LD_BIND_NOW", "1", 1);
        execv("/proc/self/exe", argv);
        perror("cube-zygote: exec itself with LD_BIND_NOW (going on with lazy binding)");
    }
    unsetenv("LD_BIND_NOW");
    prctl(PR_SET_NAME, "cube-zygote"); /* not "exe" */
    hv_builtin_agent = agent_main;
    own_mount_namespace();
    /* what every sandbox would otherwise do again after the fork: the seccomp filter compiled, the time zone
     * read (log lines' timestamps) */
    cube_err err = {0};
    if (sandbox_seccomp_prepare(&err) < 0) {
        fprintf(stderr, "cube-zygote: %s\n", err.msg);
        return 1;
    }
    tzset();
    /* one malloc arena: each thread of a sandbox's hypervisor and agent would otherwise map and fault in an
     * arena of its own (they serve a few requests each; a shared arena costs them nothing) */
    mallopt(M_ARENA_MAX, 1);
    /* read once here, not by every child that points its command line at its own */
    if (proc_title_prepare() < 0) {
        perror("cube-zygote: /proc/self/stat");
        return 1;
    }
    return zygote_serve((int)fd, hv_main) < 0 ? 1 : 0;
}
