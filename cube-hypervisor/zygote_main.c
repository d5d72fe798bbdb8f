/* cube-zygote: the node's warm parent for sandboxes (zygote.h). cubelet starts it with one end of a socket
 * pair at --socket-fd; it exits when that closes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_main.h"
#include "hv.h"
#include "hv_main.h"
#include "log.h"
#include "proc_title.h"
#include "zygote.h"

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
    hv_builtin_agent = agent_main;
    /* read once here, not by every child that points its command line at its own */
    if (proc_title_prepare() < 0) {
        perror("cube-zygote: /proc/self/stat");
        return 1;
    }
    return zygote_serve((int)fd, hv_main) < 0 ? 1 : 0;
}
