/* Container processes (see spawn.h). */
#include "spawn.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "oci.h"
#include "sandbox_seccomp.h"

/* A stdio path from containerd (a fifo) or /dev/null; O_RDWR on a fifo opens without waiting for a peer. */
static int open_stdio(const char *path, bool in)
{
    if (!path || !*path) return open("/dev/null", O_RDWR | O_CLOEXEC);
    return open(path, (in ? O_RDONLY | O_NONBLOCK : O_RDWR) | O_CLOEXEC);
}

static int open_all(const shim_proc *p, int fds[3], cube_err *err)
{
    fds[0] = open_stdio(p->stdin_path, true);
    fds[1] = open_stdio(p->stdout_path, false);
    fds[2] = open_stdio(p->stderr_path, false);
    for (int i = 0; i < 3; i++)
        if (fds[i] < 0) {
            int e = errno;
            for (int k = 0; k < 3; k++)
                if (fds[k] >= 0) close(fds[k]);
            return cube_err_sys(err, e, "open stdio %d", i);
        }
    int fl = fcntl(fds[0], F_GETFL); /* the process reads stdin blocking */
    if (fl >= 0) fcntl(fds[0], F_SETFL, fl & ~O_NONBLOCK);
    return 0;
}

int spawn_init(shim *s, cube_err *err)
{
    int io[3], gate[2] = {-1, -1}, ready[2] = {-1, -1};
    if (open_all(&s->init, io, err) < 0) return -1;
    if (pipe2(gate, O_CLOEXEC) < 0 || pipe2(ready, O_CLOEXEC) < 0) {
        cube_err_sys(err, errno, "pipes");
        goto fail;
    }
    char rootfs[4200], config[4200];
    snprintf(rootfs, sizeof(rootfs), "%s/rootfs", s->bundle);
    snprintf(config, sizeof(config), "%s/config.json", s->bundle);
    pthread_mutex_lock(&s->lock); /* the reaper must find the pid recorded when it reaps it */
    pid_t pid = fork();
    if (pid == 0) {
        /* fds 3,4,5: stdio; 6: the gate; stdout: the ready line; stderr: the shim's log */
        int src[4] = {io[0], io[1], io[2], gate[0]}, tmp[4];
        for (int i = 0; i < 4; i++) tmp[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 10);
        for (int i = 0; i < 4; i++)
            if (tmp[i] < 0 || dup2(tmp[i], 3 + i) < 0) _exit(126);
        if (dup2(ready[1], 1) < 0) _exit(126);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        execl(s->hv_bin, "cube-hypervisor", "--id", s->sandbox_id, "--rootfs", rootfs, "--state",
              s->state_dir, "--uid-base", "0", "--oci-config", config, "--stdio-fds", "3,4,5", "--start-fd",
              "6", (char *)NULL);
        _exit(127);
    }
    if (pid > 0) {
        s->init.waited = pid;
        s->children++;
        pthread_cond_broadcast(&s->changed);
    }
    pthread_mutex_unlock(&s->lock);
    close(ready[1]);
    ready[1] = -1;
    close(gate[0]);
    gate[0] = -1;
    for (int i = 0; i < 3; i++) close(io[i]);
    io[0] = io[1] = io[2] = -1;
    if (pid < 0) {
        cube_err_sys(err, errno, "fork");
        goto fail;
    }
    char line[128] = {0};
    ssize_t n = read(ready[0], line, sizeof(line) - 1);
    close(ready[0]);
    ready[0] = -1;
    int init = 0;
    if (n <= 0 || sscanf(line, "ready %d", &init) != 1) {
        kill(pid, SIGKILL);
        cube_err_set(err, EIO, "cube-hypervisor did not start the container (see the shim log)");
        goto fail;
    }
    pthread_mutex_lock(&s->lock);
    s->init.pid = init;
    s->start_w = gate[1];
    pthread_mutex_unlock(&s->lock);
    char pidf[700]; /* for `delete` when this shim is gone */
    snprintf(pidf, sizeof(pidf), "%s/hypervisor.pid", s->state_dir);
    FILE *f = fopen(pidf, "we");
    if (f) {
        fprintf(f, "%d\n", pid);
        fclose(f);
    }
    return 0;
fail:
    for (int i = 0; i < 3; i++)
        if (io[i] >= 0) close(io[i]);
    for (int i = 0; i < 2; i++) {
        if (gate[i] >= 0) close(gate[i]);
        if (ready[i] >= 0) close(ready[i]);
    }
    return -1;
}

/* The helper between the shim and an exec'd process: it joins the sandbox (cgroups, then namespaces, then
 * its root) and forks the process there (a pid namespace applies to children), reports the process's host
 * pid, and exits with its status. */
/* What the helper reports instead of a pid when it cannot enter the container (spawn_exec says which). */
enum { ENTER_CGROUP = -1, ENTER_NAMESPACES = -2 };

static void helper_fail(int report, int why)
{
    if (write(report, &why, sizeof(why)) < 0) {
    }
    _exit(125);
}

static void exec_helper(shim *s, shim_proc *p, const oci_process *op, int io[3], int report)
{
    pid_t init = s->init.pid;
    char path[256], line[512];
    snprintf(path, sizeof(path), "/proc/%d/cgroup", init);
    FILE *f = fopen(path, "re");
    if (!f) helper_fail(report, ENTER_CGROUP);
    while (fgets(line, sizeof(line), f)) { /* "N:controllers:/path", paths from the host's view */
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = '\0';
        char *ctrl = c1 + 1, *cg = c2 + 1;
        cg[strcspn(cg, "\n")] = '\0';
        char *comma = strchr(ctrl, ',');
        if (comma) *comma = '\0'; /* a joined hierarchy (cpu,cpuacct) is mounted under its first name too */
        char procs[1024];
        if (*ctrl)
            snprintf(procs, sizeof(procs), "/sys/fs/cgroup/%s%s/cgroup.procs",
                     strncmp(ctrl, "name=", 5) == 0 ? ctrl + 5 : ctrl, cg);
        else
            snprintf(procs, sizeof(procs), "/sys/fs/cgroup%s/cgroup.procs", cg);
        /* the container's own cgroups (cube/...) must be joined: an exec outside them would run beyond the
         * container's limits; other hierarchies (the host's root, a v2 mount elsewhere) are best effort */
        bool own = strstr(cg, "/cube/") != NULL;
        int fd = open(procs, O_WRONLY | O_CLOEXEC);
        bool joined = fd >= 0 && write(fd, "0", 1) == 1;
        if (fd >= 0) close(fd);
        if (own && !joined) helper_fail(report, ENTER_CGROUP);
    }
    fclose(f);
    static const struct {
        const char *name;
        int type;
    } order[] = {{"user", CLONE_NEWUSER},    {"mnt", CLONE_NEWNS},  {"pid", CLONE_NEWPID},
                 {"uts", CLONE_NEWUTS},      {"ipc", CLONE_NEWIPC}, {"net", CLONE_NEWNET},
                 {"cgroup", CLONE_NEWCGROUP}};
    snprintf(path, sizeof(path), "/proc/%d/root", init);
    int rootfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    int nsfd[7];
    for (int i = 0; i < 7; i++) {
        snprintf(path, sizeof(path), "/proc/%d/ns/%s", init, order[i].name);
        nsfd[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (nsfd[i] < 0) helper_fail(report, ENTER_NAMESPACES);
    }
    for (int i = 0; i < 7; i++)
        if (setns(nsfd[i], order[i].type) < 0) helper_fail(report, ENTER_NAMESPACES);
    if (rootfd < 0 || fchdir(rootfd) < 0 || chroot(".") < 0 || chdir(op->cwd ? op->cwd : "/") < 0)
        helper_fail(report, ENTER_NAMESPACES);
    pid_t child = fork();
    if (child == 0) {
        for (int i = 0; i < 3; i++) dup2(io[i], i);
        cube_err err = {0};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || sandbox_seccomp_load(&err) < 0) _exit(126);
        if (setgroups(0, NULL) < 0 || setresgid(op->gid, op->gid, op->gid) < 0 ||
            setresuid(op->uid, op->uid, op->uid) < 0)
            _exit(126);
        char found[4096];
        const char *prog = oci_find_program(op->argv[0], op->envp, found, sizeof(found));
        execve(prog, op->argv, op->envp);
        _exit(127);
    }
    int hostpid = child;
    if (write(report, &hostpid, sizeof(hostpid)) < 0) {
    }
    close(report);
    if (child < 0) _exit(125);
    for (int i = 0; i < 3; i++) close(io[i]);
    int st;
    while (waitpid(child, &st, 0) < 0)
        if (errno != EINTR) _exit(125);
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0));
    (void)s;
    (void)p;
}

int spawn_exec(shim *s, shim_proc *p, cube_err *err)
{
    /* the exec's process spec, read with the same code as the init's config.json */
    char spec_path[800];
    snprintf(spec_path, sizeof(spec_path), "%s/exec-%d.json", s->state_dir, getpid());
    FILE *f = fopen(spec_path, "we");
    if (!f) return cube_err_sys(err, errno, "write %s", spec_path);
    fprintf(f, "{\"process\": %s}", p->spec_json);
    fclose(f);
    oci_process op;
    int rc = oci_process_load(spec_path, &op, err);
    unlink(spec_path);
    if (rc < 0) return cube_err_prefix(err, "exec %s", p->exec_id);
    int io[3], rep[2];
    if (open_all(p, io, err) < 0) {
        oci_process_free(&op);
        return -1;
    }
    if (pipe2(rep, O_CLOEXEC) < 0) {
        for (int i = 0; i < 3; i++) close(io[i]);
        oci_process_free(&op);
        return cube_err_sys(err, errno, "pipe");
    }
    pthread_mutex_lock(&s->lock);
    pid_t helper = fork();
    if (helper == 0) {
        close(rep[0]);
        exec_helper(s, p, &op, io, rep[1]);
    }
    if (helper > 0) {
        p->waited = helper;
        p->started = true;
        s->children++;
        pthread_cond_broadcast(&s->changed);
    }
    pthread_mutex_unlock(&s->lock);
    close(rep[1]);
    for (int i = 0; i < 3; i++) close(io[i]);
    oci_process_free(&op);
    if (helper < 0) {
        close(rep[0]);
        return cube_err_sys(err, errno, "fork");
    }
    int pid = 0;
    ssize_t n = read(rep[0], &pid, sizeof(pid));
    close(rep[0]);
    if (n == sizeof(pid) && pid == ENTER_CGROUP)
        return cube_err_set(err, EIO, "exec %s could not join the container's cgroups", p->exec_id);
    if (n != sizeof(pid) || pid <= 0)
        return cube_err_set(err, EIO, "exec %s could not enter the container", p->exec_id);
    pthread_mutex_lock(&s->lock);
    p->pid = pid;
    pthread_mutex_unlock(&s->lock);
    return 0;
}
