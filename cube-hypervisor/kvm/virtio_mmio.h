/* The virtio-mmio transport, version 2 (VIRTIO 1.x, 4.2): one page of registers per device, found by the
 * guest from the kernel command line (virtio_mmio.device=4K@ADDR:IRQ). The VMM hands every MMIO exit inside
 * the page to vmmio_read / vmmio_write; devices supply their id, features, config space and queue handlers.
 */
#ifndef CUBE_KVM_VIRTIO_MMIO_H
#define CUBE_KVM_VIRTIO_MMIO_H

#include <stddef.h>
#include <stdint.h>

#include "guest_mem.h"
#include "virtq.h"

#define VMMIO_MAX_QUEUES 4
#define VMMIO_PAGE       0x1000

typedef struct vmmio_dev vmmio_dev;

typedef struct vmmio_ops {
    const char *name;
    uint32_t device_id; /* VIRTIO_ID_* */
    uint64_t features;  /* the device's own; the transport adds VIRTIO_F_VERSION_1 */
    int nqueues;
    uint16_t queue_max;
    /* config space, off from its start; out-of-range reads give zeros */
    void (*config_read)(vmmio_dev *d, uint32_t off, void *data, uint32_t len);
    void (*notify)(vmmio_dev *d, int queue); /* the driver made buffers available on queue */
    void (*reset)(vmmio_dev *d);             /* the driver wrote 0 to status */
} vmmio_ops;

struct vmmio_dev {
    const vmmio_ops *ops;
    void *priv;
    const gmem *mem;
    uint64_t base; /* guest physical address of the register page */
    uint32_t irq;
    uint64_t features;               /* offered: ops->features, plus what this instance adds (read-only...) */
    void (*raise_irq)(vmmio_dev *d); /* the VMM's: assert the device's interrupt line */
    void *vmm;
    /* transport state: what a snapshot saves */
    uint32_t status, dev_features_sel, drv_features_sel, queue_sel, interrupt_status, config_generation;
    uint64_t driver_features;
    virtq queues[VMMIO_MAX_QUEUES];
};

void vmmio_init(vmmio_dev *d, const vmmio_ops *ops, void *priv, const gmem *mem, uint64_t base, uint32_t irq);
/* A guest access at off within the register page; len is 1, 2, 4 or 8. */
void vmmio_read(vmmio_dev *d, uint64_t off, void *data, uint32_t len);
void vmmio_write(vmmio_dev *d, uint64_t off, const void *data, uint32_t len);
/* Used buffers were returned: interrupt status bit 0, and the line is raised. */
void vmmio_used(vmmio_dev *d);
/* Whether the driver finished setting up the device (DRIVER_OK) and the queue is live. */
int vmmio_queue_live(const vmmio_dev *d, int q);
/* The transport state a snapshot keeps, in a fixed little-endian layout. */
typedef struct __attribute__((packed)) vmmio_saved {
    uint32_t status, dev_features_sel, drv_features_sel, queue_sel, interrupt_status, config_generation;
    uint64_t driver_features;
    struct __attribute__((packed)) {
        uint16_t num, last_avail, used_idx;
        uint8_t ready;
        uint64_t desc_gpa, avail_gpa, used_gpa;
    } q[VMMIO_MAX_QUEUES];
} vmmio_saved;
void vmmio_save(const vmmio_dev *d, vmmio_saved *out);
/* Restores into a device initialised for the same guest memory; a live queue that no longer fits it is
 * refused. */
int vmmio_restore(vmmio_dev *d, const vmmio_saved *in, cube_err *err);
/* "virtio_mmio.device=4K@0x...:IRQ" for the kernel command line. */
void vmmio_cmdline(const vmmio_dev *d, char *buf, size_t len);

#endif
