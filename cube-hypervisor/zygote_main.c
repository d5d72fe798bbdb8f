/* cube-zygote: the node's warm parent for sandboxes (zygote.h). cubelet starts it with one end of a socket
 * pair at --socket-fd; it exits when that closes. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "agent_main.h"
#include "hv.h"
#include "hv_main.h"
#include "log.h"
#include "proc_title.h"
#include "sandbox_seccomp.h"
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
