#include "pool_sched.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define POOL_NICE     10
#define TEARDOWN_NICE 19

void cl_sched_refill(bool urgent)
{
    setpriority(PRIO_PROCESS, (id_t)gettid(), urgent ? 0 : POOL_NICE);
}

/* Sets the nice value of each thread of pid; with recurse, of each child process of each thread too
 * (/proc/PID/task/TID/children: a process forked by any thread is found). Returns how many threads. */
static int each_thread(pid_t pid, int depth, int nice, int recurse)
{
    if (depth > 16) return 0;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        int tid = atoi(e->d_name);
        if (setpriority(PRIO_PROCESS, (id_t)tid, nice) == 0) n++;
        if (!recurse) continue;
        char cpath[96];
        snprintf(cpath, sizeof(cpath), "/proc/%d/task/%d/children", (int)pid, tid);
        FILE *f = fopen(cpath, "re");
        if (!f) continue;
        int child;
        while (fscanf(f, "%d", &child) == 1) n += each_thread((pid_t)child, depth + 1, nice, recurse);
        fclose(f);
    }
    closedir(d);
    return n;
}

void cl_sched_foreground(pid_t pid, bool strays)
{
    if (pid <= 0) return;
    /* the hypervisor leads a process group of its own (zygote.c, cubelet's spawn), and its sandbox's init
     * stays in it: one call raises every thread of both, where walking /proc cost a create ~45 syscalls */
    if (setpriority(PRIO_PGRP, (id_t)pid, 0) == 0 && !strays) return;
    each_thread(pid, 0, 0, 1);
}

void cl_sched_background_process(pid_t pid)
{
    if (pid > 0) each_thread(pid, 0, TEARDOWN_NICE, 0);
}

int cl_pool_lock_open(const char *path)
{
    char dir[256];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) return -1;
    }
    return open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
}

void cl_pool_lock(int fd, int take)
{
    if (fd < 0) return;
    while (flock(fd, take ? LOCK_EX : LOCK_UN) < 0 && errno == EINTR) {
    }
}
