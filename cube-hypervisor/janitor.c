/* cube-janitor FD CGROUP RW ROOT: started by cube-hypervisor for each sandbox, it waits until FD (the
 * hypervisor's lifeline) closes — at a normal stop or when the hypervisor is SIGKILLed — then removes what
 * the sandbox left on the host: its cgroups (killing anything still in them), the writable layer's mount, and
 * the mount point directories. A separate small program so that a sandbox's janitor costs little memory. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "cgroup.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: cube-janitor FD CGROUP RW ROOT (started by cube-hypervisor)\n");
        return 2;
    }
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    int fd = atoi(argv[1]);
    char c;
    while (read(fd, &c, 1) > 0 || errno == EINTR) {
    }
    cube_err err = {0};
    cgroup cg = {0};
    cg.ops = cgroup_detect(&err);
    snprintf(cg.name, sizeof(cg.name), "%s", argv[2]);
    if (cg.ops && strncmp(cg.name, "cube/", 5) == 0) cg.ops->destroy(&cg);
    umount2(argv[3], MNT_DETACH);
    rmdir(argv[4]);
    rmdir(argv[3]);
    return 0;
}
