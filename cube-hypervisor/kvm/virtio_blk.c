/* virtio-blk with a copy-on-write overlay (see virtio_blk.h). */
#include "virtio_blk.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ids.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (64 * 1024) /* bounce buffer: sectors move through it in runs */

static bool present(const vblk *b, uint64_t s)
{
    return b->present[s >> 3] & (1u << (s & 7));
}

/* Reads n sectors from s: each run of sectors comes from the overlay or the base, whichever holds it. */
static int read_sectors(vblk *b, uint64_t s, uint64_t n, uint8_t *out)
{
    while (n) {
        bool ov = b->overlay_fd >= 0 && present(b, s);
        uint64_t run = 1;
        while (run < n && (b->overlay_fd >= 0 && present(b, s + run)) == ov) run++;
        ssize_t got =
            pread(ov ? b->overlay_fd : b->base_fd, out, run * VBLK_SECTOR, (off_t)(s * VBLK_SECTOR));
        if (got < 0) return -1;
        if ((uint64_t)got < run * VBLK_SECTOR) memset(out + got, 0, run * VBLK_SECTOR - (size_t)got);
        s += run;
        n -= run;
        out += run * VBLK_SECTOR;
    }
    return 0;
}

static int write_sectors(vblk *b, uint64_t s, uint64_t n, const uint8_t *in)
{
    if (pwrite(b->overlay_fd, in, n * VBLK_SECTOR, (off_t)(s * VBLK_SECTOR)) != (ssize_t)(n * VBLK_SECTOR))
        return -1;
    for (uint64_t i = s; i < s + n; i++) b->present[i >> 3] |= (uint8_t)(1u << (i & 7));
    return 0;
}

void vblk_request(vblk *b, const vq_chain *c, uint32_t *written)
{
    *written = 0;
    struct virtio_blk_outhdr h;
    size_t wlen = vq_writable_len(c);
    if (vq_read(c, 0, &h, sizeof(h)) != sizeof(h) || wlen < 1) return; /* no room even for a status */
    uint8_t status = VIRTIO_BLK_S_OK;
    size_t data_in = wlen - 1;                        /* the driver's buffers before the status byte */
    size_t data_out = vq_readable_len(c) - sizeof(h); /* what the driver sent after the header */
    uint8_t *buf = NULL;
    switch (h.type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
        bool in = h.type == VIRTIO_BLK_T_IN;
        size_t len = in ? data_in : data_out;
        if (len % VBLK_SECTOR || h.sector > b->sectors || len / VBLK_SECTOR > b->sectors - h.sector) {
            status = VIRTIO_BLK_S_IOERR;
            break;
        }
        if (!in && b->overlay_fd < 0) {
            status = VIRTIO_BLK_S_IOERR; /* read-only disk */
            break;
        }
        buf = malloc(CHUNK);
        if (!buf) {
            status = VIRTIO_BLK_S_IOERR;
            break;
        }
        for (size_t done = 0; done < len && status == VIRTIO_BLK_S_OK;) {
            size_t n = len - done < CHUNK ? len - done : CHUNK;
            uint64_t s = h.sector + done / VBLK_SECTOR;
            if (in) {
                if (read_sectors(b, s, n / VBLK_SECTOR, buf) < 0)
                    status = VIRTIO_BLK_S_IOERR;
                else
                    vq_write(c, done, buf, n);
            } else {
                vq_read(c, sizeof(h) + done, buf, n);
                if (write_sectors(b, s, n / VBLK_SECTOR, buf) < 0) status = VIRTIO_BLK_S_IOERR;
            }
            done += n;
        }
        if (in && status == VIRTIO_BLK_S_OK) *written = (uint32_t)len;
        break;
    }
    case VIRTIO_BLK_T_FLUSH:
        if (b->overlay_fd >= 0 && fdatasync(b->overlay_fd) < 0) status = VIRTIO_BLK_S_IOERR;
        break;
    case VIRTIO_BLK_T_GET_ID: {
        size_t n = data_in < sizeof(b->id) ? data_in : sizeof(b->id);
        vq_write(c, 0, b->id, n);
        *written = (uint32_t)n;
        break;
    }
    default:
        status = VIRTIO_BLK_S_UNSUPP;
    }
    free(buf);
    vq_write(c, wlen - 1, &status, 1);
    *written += 1;
}

static void notify(vmmio_dev *d, int qi)
{
    vblk *b = d->priv;
    virtq *q = &d->queues[qi];
    vq_chain c;
    bool pushed = false;
    for (;;) {
        cube_err err = {0};
        int rc = vq_pop(q, d->mem, &c, &err);
        if (rc == 0) break;
        uint32_t written = 0;
        if (rc > 0) vblk_request(b, &c, &written);
        vq_push(q, d->mem, c.head, written);
        pushed = true;
    }
    if (pushed && vq_should_notify(q, d->mem)) vmmio_used(d);
}

static void config_read(vmmio_dev *d, uint32_t off, void *data, uint32_t len)
{
    vblk *b = d->priv;
    struct virtio_blk_config cfg = {0};
    cfg.capacity = b->sectors;
    if (off < sizeof(cfg) && len <= sizeof(cfg) - off) memcpy(data, (uint8_t *)&cfg + off, len);
}

const vmmio_ops vblk_ops = {
    .name = "virtio-blk",
    .device_id = VIRTIO_ID_BLOCK,
    .features = 1ull << VIRTIO_BLK_F_FLUSH,
    .nqueues = 1,
    .queue_max = VQ_MAX_SIZE,
    .config_read = config_read,
    .notify = notify,
};

int vblk_open(vblk *b, const char *base, const char *overlay, const char *id, cube_err *err)
{
    memset(b, 0, sizeof(*b));
    b->overlay_fd = -1;
    b->base_fd = open(base, O_RDONLY | O_CLOEXEC);
    if (b->base_fd < 0) return cube_err_sys(err, errno, "open disk image %s", base);
    struct stat st;
    if (fstat(b->base_fd, &st) < 0 || st.st_size < VBLK_SECTOR) {
        close(b->base_fd);
        return cube_err_set(err, EINVAL, "disk image %s is empty", base);
    }
    b->sectors = (uint64_t)st.st_size / VBLK_SECTOR;
    if (overlay) {
        b->overlay_fd = open(overlay, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (b->overlay_fd < 0 || ftruncate(b->overlay_fd, (off_t)(b->sectors * VBLK_SECTOR)) < 0) {
            int e = errno;
            vblk_close(b);
            return cube_err_sys(err, e, "overlay %s", overlay);
        }
    }
    b->present = calloc((b->sectors + 7) / 8, 1);
    if (!b->present) {
        vblk_close(b);
        return cube_err_set(err, ENOMEM, "overlay bitmap");
    }
    snprintf(b->id, sizeof(b->id), "%s", id ? id : "cube");
    return 0;
}

void vblk_attach(vblk *b, const gmem *mem, uint64_t base, uint32_t irq)
{
    vmmio_init(&b->dev, &vblk_ops, b, mem, base, irq);
    if (b->overlay_fd < 0) b->dev.features |= 1ull << VIRTIO_BLK_F_RO;
}

void vblk_close(vblk *b)
{
    if (b->base_fd >= 0) close(b->base_fd);
    if (b->overlay_fd >= 0) close(b->overlay_fd);
    free(b->present);
    b->base_fd = b->overlay_fd = -1;
    b->present = NULL;
}
