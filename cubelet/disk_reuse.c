/* Ended sandboxes' disks serve the next sandboxes (see disk.h: hv_disk_keep, hv_disk_renew). */
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cubelet_internal.h"
#include "disk.h"
#include "metrics.h"

/* Before a stop: the sandbox's disk held (a clone of its mount), so that it can serve another sandbox once
 * this one is gone (see hv_disk_renew). Only a disk of the node's own size, which any start can take. */
void cl_disk_keep(cubelet *c, cl_slot *s)
{
    if (s->disk_kept >= 0 || s->stopped || s->hv <= 0 || !*c->disk_template || !s->tpl ||
        *s->tpl->disk_template)
        return;
    if (s->hv_keep_fd > 2) {
        /* the disk is mounted in the hypervisor's own mount namespace: its clone is taken from it */
        int pidfd = s->hv_pidfd >= 0 ? s->hv_pidfd : (int)syscall(SYS_pidfd_open, s->hv, 0);
        if (pidfd >= 0) s->disk_kept = (int)syscall(SYS_pidfd_getfd, pidfd, s->hv_keep_fd, 0);
        if (pidfd >= 0 && pidfd != s->hv_pidfd) close(pidfd);
        return;
    }
    char rw[4300]; /* a hypervisor that mounted it where this process sees it */
    snprintf(rw, sizeof(rw), "%s/rw", s->state_dir);
    s->disk_kept = hv_disk_keep(rw);
}

/* After the sandbox is gone (its hypervisor exited: no process of it is left): its disk emptied into the
 * ready ones, or let go (the kernel then frees its device and space, as for a disk never kept). */
void cl_disk_reuse(cubelet *c, cl_slot *s)
{
    int fd = s->disk_kept;
    s->disk_kept = -1;
    if (fd < 0) return;
    cube_err err = {0};
    if (hv_disk_renew(fd, &err) == 0) {
        pthread_mutex_lock(&c->lock);
        if (!c->stopping && c->nready_disks < (int)(sizeof(c->ready_disks) / sizeof(c->ready_disks[0]))) {
            c->ready_disks[c->nready_disks++] = fd;
            fd = -1;
        }
        pthread_mutex_unlock(&c->lock);
    }
    cube_metric_add(
        fd < 0 ? "cube_node_disks_reused_total" : "cube_node_disks_dropped_total",
        fd < 0 ? "Ended sandboxes' disks emptied for another sandbox"
               : "Ended sandboxes' disks let go (too full to empty, or no room among the ready ones)",
        1);
    if (fd >= 0) close(fd);
}
