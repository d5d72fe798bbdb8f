/* The device side of a virtio split virtqueue (VIRTIO 1.x, 2.7): the driver's descriptor table and available
 * ring are read, the used ring written, all in guest memory. Everything the guest wrote is checked before it
 * is used: indices against the queue size, addresses and lengths against guest memory, chains against loops
 * and against being longer than the queue. A bad chain is the guest's fault and only fails that request. */
#ifndef CUBE_KVM_VIRTQ_H
#define CUBE_KVM_VIRTQ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "err.h"
#include "guest_mem.h"

#define VQ_MAX_SIZE 256
#define VQ_MAX_SEGS 64 /* buffers in one request, readable and writable together */

typedef struct virtq {
    uint16_t num; /* the driver's queue size (a power of 2, <= VQ_MAX_SIZE) */
    bool ready;
    uint64_t desc_gpa, avail_gpa, used_gpa;
    uint16_t last_avail; /* next available entry the device will take */
    uint16_t used_idx;   /* next used entry the device will fill */
} virtq;

/* One request: its buffers in chain order, the driver-written (readable) ones first. */
typedef struct vq_chain {
    uint16_t head;
    int nr, nw; /* readable then writable buffers */
    struct iovec iov[VQ_MAX_SEGS];
} vq_chain;

/* Checks the queue's addresses and size once the driver sets it ready. */
int vq_validate(const virtq *q, const gmem *m, cube_err *err);
/* 1 with the next request in c, 0 when the driver has made none available, -1 on a malformed chain (the
 * request is consumed and must be answered with vq_push and length 0). */
int vq_pop(virtq *q, const gmem *m, vq_chain *c, cube_err *err);
/* Gives the request vq_pop just took back to the available ring, untouched: the device cannot serve it yet
 * (a receive buffer with no frame to put in it). */
void vq_unpop(virtq *q);
/* Returns request head to the driver with len bytes written into its writable buffers. */
void vq_push(virtq *q, const gmem *m, uint16_t head, uint32_t len);
/* Whether the driver wants an interrupt for what was just pushed (VIRTQ_AVAIL_F_NO_INTERRUPT clear). */
bool vq_should_notify(const virtq *q, const gmem *m);

/* Copies between a chain's buffers and flat memory: from its readable part, or into its writable part,
 * starting skip bytes in. Return the bytes copied. */
size_t vq_read(const vq_chain *c, size_t skip, void *dst, size_t len);
size_t vq_write(const vq_chain *c, size_t skip, const void *src, size_t len);
size_t vq_readable_len(const vq_chain *c);
size_t vq_writable_len(const vq_chain *c);

#endif
