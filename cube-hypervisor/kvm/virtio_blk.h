/* virtio-blk over a template's disk image: the base image is only ever read; a sandbox's writes go to its own
 * sparse overlay file, sector by sector, with a bitmap saying which sectors the overlay holds. Many sandboxes
 * share one base; a snapshot keeps the overlay and the bitmap. */
#ifndef CUBE_KVM_VIRTIO_BLK_H
#define CUBE_KVM_VIRTIO_BLK_H

#include "virtio_mmio.h"

#define VBLK_SECTOR 512

typedef struct vblk {
    vmmio_dev dev;
    int base_fd;
    int overlay_fd; /* -1: a read-only disk (offered as such) */
    uint64_t sectors;
    uint8_t *present; /* bit per sector: its data is in the overlay */
    char id[20];      /* VIRTIO_BLK_T_GET_ID's answer */
} vblk;

extern const vmmio_ops vblk_ops;

/* Opens base (read-only) and, unless NULL, overlay (created, sized like base). */
int vblk_open(vblk *b, const char *base, const char *overlay, const char *id, cube_err *err);
void vblk_close(vblk *b);
/* Puts the disk on the guest's bus: its register page at base, interrupt irq. */
void vblk_attach(vblk *b, const gmem *mem, uint64_t base, uint32_t irq);
/* Serves one request; *written is what went into the driver's writable buffers (data and status). */
void vblk_request(vblk *b, const vq_chain *c, uint32_t *written);

#endif
