/* virtio-net over a tap (see virtio_net.h). */
#include "virtio_net.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_net.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

_Static_assert(sizeof(struct virtio_net_hdr_v1) == VNET_HDR_LEN, "virtio 1.x net header");

int vnet_tap_open(const char *name, char *actual, cube_err *err)
{
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return cube_err_sys(err, errno, "open /dev/net/tun");
    struct ifreq ifr = {0};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name ? name : "");
    int hdr = VNET_HDR_LEN;
    /* offloads 0: the kernel never hands the guest a segment bigger than the MTU or with a partial checksum,
     * which a driver without the matching features could not take */
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0 ||
        ioctl(fd, TUNSETOFFLOAD, 0) < 0) {
        int e = errno;
        close(fd);
        return cube_err_sys(err, e, "tap %s", name ? name : "");
    }
    if (actual) snprintf(actual, IFNAMSIZ, "%s", ifr.ifr_name);
    return fd;
}

void vnet_init(vnet *n, int tap_fd, const uint8_t mac[6])
{
    memset(n, 0, sizeof(*n));
    n->tap_fd = tap_fd;
    memcpy(n->mac, mac, 6);
}

void vnet_close(vnet *n)
{
    if (n->tap_fd >= 0) close(n->tap_fd);
    n->tap_fd = -1;
}

int vnet_rx(vnet *n)
{
    vmmio_dev *d = &n->dev;
    virtq *q = &d->queues[VNET_RXQ];
    int delivered = 0;
    if (!vmmio_queue_live(d, VNET_RXQ)) {
        n->rx_blocked = true; /* the driver is not there yet: frames wait (or the tap drops them) */
        return 0;
    }
    n->rx_blocked = false;
    for (;;) {
        vq_chain c;
        cube_err err = {0};
        int rc = vq_pop(q, d->mem, &c, &err);
        if (rc == 0) {
            n->rx_blocked = true;
            break;
        }
        if (rc < 0 || c.nr != 0 || vq_writable_len(&c) < VNET_HDR_LEN) {
            vq_push(q, d->mem, c.head, 0); /* a malformed buffer goes back unused */
            continue;
        }
        ssize_t got = readv(n->tap_fd, &c.iov[c.nr], c.nw);
        if (got < 0) {
            vq_unpop(q); /* nothing waiting (or the tap is down): the buffer stays the driver's */
            break;
        }
        size_t room = vq_writable_len(&c);
        uint32_t len = (size_t)got < room ? (uint32_t)got : (uint32_t)room; /* longer frames are cut */
        /* the tap writes the 10 bytes it knows and skips num_buffers: one buffer a frame */
        uint16_t one = 1;
        vq_write(&c, offsetof(struct virtio_net_hdr_v1, num_buffers), &one, sizeof(one));
        vq_push(q, d->mem, c.head, len);
        delivered++;
        n->rx_frames++;
    }
    if (delivered && vq_should_notify(q, d->mem)) vmmio_used(d);
    return delivered;
}

static void tx(vnet *n)
{
    vmmio_dev *d = &n->dev;
    virtq *q = &d->queues[VNET_TXQ];
    bool pushed = false;
    for (;;) {
        vq_chain c;
        cube_err err = {0};
        int rc = vq_pop(q, d->mem, &c, &err);
        if (rc == 0) break;
        /* header and frame, as the driver laid them out; the tap reads the same header */
        if (rc < 0 || c.nr == 0 || vq_readable_len(&c) <= VNET_HDR_LEN || writev(n->tap_fd, c.iov, c.nr) < 0)
            n->tx_dropped++; /* a full tap queue or a bad frame: lost, as on a wire */
        else
            n->tx_frames++;
        vq_push(q, d->mem, c.head, 0);
        pushed = true;
    }
    if (pushed && vq_should_notify(q, d->mem)) vmmio_used(d);
}

static void notify(vmmio_dev *d, int qi)
{
    vnet *n = d->priv;
    if (qi == VNET_TXQ) {
        tx(n);
    } else if (qi == VNET_RXQ && n->rx_blocked) {
        n->rx_blocked = false; /* new receive buffers: the tap is worth reading again */
        if (n->rx_wake) n->rx_wake(n);
    }
}

static void config_read(vmmio_dev *d, uint32_t off, void *data, uint32_t len)
{
    vnet *n = d->priv;
    struct virtio_net_config cfg = {0};
    memcpy(cfg.mac, n->mac, 6);
    cfg.status = VIRTIO_NET_S_LINK_UP;
    if (off < sizeof(cfg) && len <= sizeof(cfg) - off) memcpy(data, (uint8_t *)&cfg + off, len);
}

static void reset(vmmio_dev *d)
{
    vnet *n = d->priv;
    n->rx_blocked = true;
}

const vmmio_ops vnet_ops = {
    .name = "virtio-net",
    .device_id = VIRTIO_ID_NET,
    .features = (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_STATUS),
    .nqueues = 2,
    .queue_max = VQ_MAX_SIZE,
    .config_read = config_read,
    .notify = notify,
    .reset = reset,
};

void vnet_attach(vnet *n, const gmem *mem, uint64_t base, uint32_t irq)
{
    vmmio_init(&n->dev, &vnet_ops, n, mem, base, irq);
    n->rx_blocked = true;
}
