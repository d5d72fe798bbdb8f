/* cube-janitor FD CGROUP RW ROOT: started by cube-hypervisor for each sandbox, it waits until FD (the
 * hypervisor's lifeline) closes — at a normal stop or when the hypervisor is SIGKILLed — then removes what
 * the sandbox left on the host: its cgroups (killing anything still in them), the writable layer's mount, and
 * the mount point directories. A separate small program so that a sandbox's janitor costs little memory. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "janitor.h"

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
    hv_janitor_clean(argv[2], argv[3], argv[4]);
    return 0;
}
