/* A stand-in for cube-hypervisor, for cubelet's tests: the same command line and the same answers (the
 * "ready <pid> <backend>" line, the control socket's methods, an agent that answers /init), without
 * namespaces but the network one its "init" listens in. Each call it gets is appended to $FAKE_HV_LOG as
 * "<method> <id>". A --rootfs whose path contains "broken" fails at start with one line on stderr, as a real
 * start failure does. */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/ioctl.h>

#include "timeutil.h"
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.pb-c.h"
#include "hypervisor.pb-c.h"
#include "rpc.h"

static char id[128] = "?";
static pid_t init_pid;
static int stop_fd;
static uint64_t disk_bytes, disk_used = 1 << 20; /* --disk-mb: Stats reports a disk of that size with 1 MB
                                                    used (FAKE_HV_DISK_USED_MB: that many) */

static void note(const char *what)
{
    const char *log = getenv("FAKE_HV_LOG");
    if (!log) return;
    FILE *f = fopen(log, "ae");
    if (!f) return;
    fprintf(f, "%s %s\n", what, id);
    fclose(f);
}

static long stop_rank; /* how many Stops the log had with this one's */

/* Lines of the log that start with what and a space. */
static long count_notes(const char *what)
{
    const char *log = getenv("FAKE_HV_LOG");
    FILE *f = log ? fopen(log, "re") : NULL;
    char line[256];
    long n = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, what, strlen(what)) == 0 && line[strlen(what)] == ' ') n++;
    if (f) fclose(f);
    return n;
}

static int info(void *svc, cube_rpc_ctx *ctx, const void *req, void *resp, cube_err *err)
{
    (void)svc, (void)req, (void)err;
    Cube__HvInfo *out = resp;
    out->sandbox_id = cube_rpc_strdup(ctx, id);
    out->backend = cube_rpc_strdup(ctx, "fake");
    out->init_pid = init_pid;
    out->hv_pid = getpid();
    note("Info");
    return 0;
}

static int pause_(void *svc, cube_rpc_ctx *ctx, const void *req, void *resp, cube_err *err)
{
    (void)svc, (void)ctx, (void)req, (void)resp, (void)err;
    note("Pause");
    return 0;
}

static int resume_(void *svc, cube_rpc_ctx *ctx, const void *req, void *resp, cube_err *err)
{
    (void)svc, (void)ctx, (void)req, (void)resp, (void)err;
    note("Resume");
    return 0;
}

static int stats(void *svc, cube_rpc_ctx *ctx, const void *req, void *resp, cube_err *err)
{
    (void)svc, (void)ctx, (void)req, (void)err;
    Cube__HvStats *out = resp;
    out->cpu_count = 1;
    out->mem_total = 512 << 20;
    out->mem_used = 1 << 20;
    out->state = CUBE__SANDBOX_STATE__SANDBOX_STATE_RUNNING;
    /* as if it kept half a CPU busy since it started */
    static int64_t born;
    if (!born) born = cube_now_mono_ns();
    out->cpu_usage_ns = (uint64_t)(cube_now_mono_ns() - born) / 2;
    out->disk_total = disk_bytes;
    out->disk_used = disk_bytes ? disk_used : 0;
    note("Stats");
    return 0;
}

static int stop(void *svc, cube_rpc_ctx *ctx, const void *req, void *resp, cube_err *err)
{
    (void)svc, (void)ctx, (void)req, (void)resp, (void)err;
    note("Stop");
    if (getenv("FAKE_HV_TEARDOWN_STEP_MS")) stop_rank = count_notes("Stop");
    uint64_t one = 1;
    if (write(stop_fd, &one, sizeof(one)) < 0) return cube_err_sys(err, errno, "stop");
    return 0;
}

/* "DiskBound" (the node bounds what it may write) or "DiskLifted" */
static int set_disk_room(void *svc, cube_rpc_ctx *ctx, const void *reqp, void *resp, cube_err *err)
{
    (void)svc, (void)ctx, (void)resp, (void)err;
    const Cube__HvDiskRoom *req = reqp;
    note(req->limited ? "DiskBound" : "DiskLifted");
    return 0;
}

#define M(name, fn, req, resp) CUBE_RPC_METHOD("cube.Hypervisor", name, fn, req, resp)
static const cube_rpc_method methods[] = {
    M("Info", info, cube__empty, cube__hv_info),
    M("Pause", pause_, cube__empty, cube__empty),
    M("Resume", resume_, cube__empty, cube__empty),
    M("Stats", stats, cube__empty, cube__hv_stats),
    M("Stop", stop, cube__empty, cube__empty),
    M("SetDiskRoom", set_disk_room, cube__hv_disk_room, cube__empty),
    {0},
};

/* The "init": a network namespace of its own with an agent that answers every request 204 (POST /init). */
static void agent_main(int ready)
{
    if (unshare(CLONE_NEWNET) < 0) _exit(1);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    ioctl(s, SIOCGIFFLAGS, &ifr);
    ifr.ifr_flags |= IFF_UP;
    ioctl(s, SIOCSIFFLAGS, &ifr);
    close(s);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(49983)};
    if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 16) < 0) _exit(1);
    if (write(ready, "r", 1) != 1) _exit(1);
    close(ready);
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) continue;
        char buf[8192];
        size_t got = 0;
        ssize_t n;
        /* the head, then as many body bytes as Content-Length says */
        while (got < sizeof(buf) - 1 && (n = read(c, buf + got, sizeof(buf) - 1 - got)) > 0) {
            got += (size_t)n;
            buf[got] = '\0';
            char *end = strstr(buf, "\r\n\r\n");
            const char *cl = strcasestr(buf, "Content-Length:");
            if (end && (size_t)(end + 4 - buf) + (size_t)(cl ? atoi(cl + 15) : 0) <= got) break;
        }
        const char *resp = "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";
        if (write(c, resp, strlen(resp)) < 0) {
        }
        close(c);
    }
}

int main(int argc, char **argv)
{
    const char *state = NULL, *rootfs = "", *cpus = "-", *memory_mb = "-", *disk_mb = "-", *disk_tpl = "-";
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--cpus") == 0) cpus = argv[i + 1];
        if (strcmp(argv[i], "--memory-mb") == 0) memory_mb = argv[i + 1];
        if (strcmp(argv[i], "--disk-mb") == 0) disk_mb = argv[i + 1];
        if (strcmp(argv[i], "--disk-template") == 0) disk_tpl = argv[i + 1];
        if (strcmp(argv[i], "--id") == 0) snprintf(id, sizeof(id), "%s", argv[i + 1]);
        if (strcmp(argv[i], "--state") == 0) state = argv[i + 1];
        if (strcmp(argv[i], "--rootfs") == 0) rootfs = argv[i + 1];
    }
    if (!state) return 2;
    if (strcmp(disk_mb, "-") != 0) disk_bytes = strtoull(disk_mb, NULL, 10) << 20;
    if (getenv("FAKE_HV_DISK_USED_MB")) disk_used = strtoull(getenv("FAKE_HV_DISK_USED_MB"), NULL, 10) << 20;
    char size[64]; /* "Size:<cpus>:<memory-mb> <id>" in the log: the limits it was started with */
    snprintf(size, sizeof(size), "Size:%s:%s", cpus, memory_mb);
    note(size);
    char disk[128]; /* "Disk:<disk-mb>:<the disk template's file name>" */
    const char *slash = strrchr(disk_tpl, '/');
    snprintf(disk, sizeof(disk), "Disk:%s:%s", disk_mb, slash ? slash + 1 : disk_tpl);
    note(disk);
    char nice[32]; /* "Nice:<n>": the priority it was started at (a pool's refill yields to creates) */
    snprintf(nice, sizeof(nice), "Nice:%d", getpriority(PRIO_PROCESS, 0));
    note(nice);
    if (strstr(rootfs, "broken")) {
        fprintf(stderr, "fake-hypervisor: the template's rootfs is broken\n");
        return 1;
    }
    int p[2];
    if (pipe(p) < 0) return 1;
    init_pid = fork();
    if (init_pid == 0) {
        close(p[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with the fake, as a real init goes with its hypervisor */
        agent_main(p[1]);
    }
    close(p[1]);
    char c;
    if (read(p[0], &c, 1) != 1) return 1;
    stop_fd = eventfd(0, EFD_CLOEXEC);
    /* blocked before the control threads start, which inherit the mask: a SIGTERM is read from sfd, never
     * the default action on some thread */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    char sock[4200];
    snprintf(sock, sizeof(sock), "%s/control.sock", state);
    cube_err err = {0};
    cube_rpc_local *srv = cube_rpc_local_start(sock, methods, NULL, 1, &err);
    if (!srv) {
        fprintf(stderr, "fake-hypervisor: %s\n", err.msg);
        kill(init_pid, SIGKILL);
        return 1;
    }
    note("Start");
    /* a slow start, where a test asks for one (a node whose CPUs are full) */
    const char *slow = getenv("FAKE_HV_START_MS");
    if (slow) nanosleep(&(struct timespec){atoi(slow) / 1000, (atoi(slow) % 1000) * 1000000L}, NULL);
    printf("ready %d fake\n", init_pid);
    fflush(stdout);
    /* until Stop or SIGTERM */
    struct pollfd fds[2] = {{stop_fd, POLLIN, 0}, {sfd, POLLIN, 0}};
    while (poll(fds, 2, -1) < 0 && errno == EINTR) {
    }
    cube_rpc_local_stop(srv);
    kill(init_pid, SIGKILL);
    waitpid(init_pid, NULL, 0);
    /* teardowns that finish one after another, where a test asks for it (a node tearing down a mass kill):
     * the nth stopped (of this log) takes n steps */
    const char *step = getenv("FAKE_HV_TEARDOWN_STEP_MS");
    if (step) {
        long ms = atol(step) * stop_rank;
        nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
    }
    note("Exit");
    return 0;
}
