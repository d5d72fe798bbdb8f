/* containerd-shim-cube-v2: the runtime v2 shim contract.
 *   start:  containerd runs us in the bundle directory with -namespace, -address, -id (and -publish-binary);
 *           we start the long-lived shim (a daemon serving ttrpc on a unix socket), print its address and
 *           exit. The daemon serves one container.
 *   delete: containerd runs us when a shim is gone, to clean a bundle up; we print a DeleteResponse.
 * Everything the daemon says goes to the bundle's `log` fifo when containerd made one. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "cgroup_tune.h"
#include "log.h"
#include "shim.h"
#include "shim.pb-c.h"

typedef struct opts {
    const char *ns, *address, *id, *bundle, *action;
    bool debug;
} opts;

static int usage(void)
{
    fprintf(stderr, "usage: containerd-shim-cube-v2 -namespace NS -address ADDR -id ID [-bundle DIR] "
                    "[-publish-binary BIN] [-debug] start|delete\n");
    return 2;
}

static int parse(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof(*o));
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] != '-') {
            if (o->action) return -1;
            o->action = argv[i];
            continue;
        }
        const char *a = argv[i] + (argv[i][1] == '-' ? 2 : 1);
        if (strcmp(a, "debug") == 0) {
            o->debug = true;
            continue;
        }
        if (i + 1 >= argc) return -1;
        const char *v = argv[++i];
        if (strcmp(a, "namespace") == 0)
            o->ns = v;
        else if (strcmp(a, "address") == 0)
            o->address = v;
        else if (strcmp(a, "id") == 0)
            o->id = v;
        else if (strcmp(a, "bundle") == 0)
            o->bundle = v;
        else if (strcmp(a, "publish-binary") != 0 && strcmp(a, "socket") != 0)
            return -1; /* publish-binary: events go over ttrpc instead */
    }
    return o->action && o->id && o->ns ? 0 : -1;
}

static void socket_path(const opts *o, char *buf, size_t len)
{
    char sid[32];
    shim_sandbox_id(o->ns, o->id, sid);
    snprintf(buf, len, "/run/cube-shim/%s.sock", sid);
}

static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) return -1;
    strcpy(sa.sun_path, path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    chmod(path, 0600);
    return fd;
}

static void hypervisor_path(char *buf, size_t len)
{
    cube_sibling_path("cube-hypervisor", "../cube-hypervisor/cube-hypervisor", buf, len);
}

static int do_start(const opts *o)
{
    char sock[256], cwd[PATH_MAX];
    mkdir("/run/cube-shim", 0711);
    socket_path(o, sock, sizeof(sock));
    int lfd = listen_unix(sock);
    if (lfd < 0) {
        fprintf(stderr, "containerd-shim-cube-v2: listen on %s: %s\n", sock, strerror(errno));
        return 1;
    }
    if (!getcwd(cwd, sizeof(cwd))) return 1;
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
        setsid();
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        /* containerd reads the shim's log from the bundle's "log" fifo */
        int log = open("log", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (log >= 0) {
            int fl = fcntl(log, F_GETFL);
            fcntl(log, F_SETFL, fl & ~O_NONBLOCK);
            dup2(log, 2);
        } else {
            dup2(null, 2);
        }
        signal(SIGPIPE, SIG_IGN);
        const char *tuning = getenv("CUBE_CGROUP_TUNING");
        cube_err terr = {0};
        if ((!tuning || strcmp(tuning, "off") != 0) && cube_cgroup_favor_dynmods(&terr) < 0)
            cube_log_warn("cgroups not tuned: each sandbox start waits ~10 ms more", "err=\"%s\"", terr.msg);
        const char *ttrpc = getenv("TTRPC_ADDRESS");
        char ttrpc_buf[PATH_MAX + 16];
        if (!ttrpc && o->address) {
            snprintf(ttrpc_buf, sizeof(ttrpc_buf), "%s.ttrpc", o->address);
            ttrpc = ttrpc_buf;
        }
        static char hv[PATH_MAX];
        hypervisor_path(hv, sizeof(hv));
        static shim s;
        shim_init(&s, o->ns, ttrpc ? strdup(ttrpc) : NULL, hv);
        pthread_t reaper;
        pthread_create(&reaper, NULL, shim_reaper, &s);
        cube_log_info("shim serving", "namespace=%s id=%s socket=%s bundle=%s", o->ns, o->id, sock, cwd);
        ttrpc_serve(lfd, shim_methods, &s, &s.stop);
        unlink(sock);
        _exit(0);
    }
    close(lfd);
    /* containerd keeps the address beside the bundle to reconnect after its own restart */
    FILE *f = fopen("address", "we");
    if (f) {
        fprintf(f, "unix://%s", sock);
        fclose(f);
    }
    printf("unix://%s", sock);
    fflush(stdout);
    return 0;
}

/* The shim is gone (or never answered): make sure nothing of the container runs or stays mounted. */
static int do_delete(const opts *o)
{
    char sid[32], state[256], sock[256], cwd[PATH_MAX], rootfs[PATH_MAX + 16];
    shim_sandbox_id(o->ns, o->id, sid);
    snprintf(state, sizeof(state), "/run/cube-shim/%s", sid);
    socket_path(o, sock, sizeof(sock));
    const char *bundle = o->bundle ? o->bundle : getcwd(cwd, sizeof(cwd));
    /* a hypervisor left running: its janitor cleans up after SIGKILL */
    char cmdline[256];
    snprintf(cmdline, sizeof(cmdline), "%s/control.sock", state);
    if (access(cmdline, F_OK) == 0) {
        char pidf[300];
        snprintf(pidf, sizeof(pidf), "%s/hypervisor.pid", state);
        FILE *f = fopen(pidf, "re");
        int pid = 0;
        if (f && fscanf(f, "%d", &pid) == 1 && pid > 0) kill(pid, SIGKILL);
        if (f) fclose(f);
    }
    if (bundle) {
        snprintf(rootfs, sizeof(rootfs), "%s/rootfs", bundle);
        umount2(rootfs, MNT_DETACH);
    }
    cube_rm_rf(state);
    unlink(sock);
    Cubeshim__DeleteResponse r = CUBESHIM__DELETE_RESPONSE__INIT;
    Cubeshim__Timestamp ts = CUBESHIM__TIMESTAMP__INIT;
    ts.seconds = time(NULL);
    r.exit_status = 128 + SIGKILL;
    r.exited_at = &ts;
    uint8_t buf[128];
    size_t len = cubeshim__delete_response__pack(&r, buf);
    return fwrite(buf, 1, len, stdout) == len ? 0 : 1;
}

int main(int argc, char **argv)
{
    cube_log_init("cube-shim", -1);
    opts o;
    if (parse(argc, argv, &o) < 0) return usage();
    if (strcmp(o.action, "start") == 0) return do_start(&o);
    if (strcmp(o.action, "delete") == 0) return do_delete(&o);
    fprintf(stderr, "containerd-shim-cube-v2: unknown action '%s'\n", o.action);
    return usage();
}
