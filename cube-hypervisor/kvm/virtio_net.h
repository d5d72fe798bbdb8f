/* virtio-net over a tap device: the guest's eth0. The tap carries virtio's own packet header (IFF_VNET_HDR,
 * 12 bytes as VIRTIO 1.x defines it), so frames move between the tap and guest buffers without a copy through
 * the VMM: transmit is one writev of the driver's chain, receive one readv into it. No offloads are offered:
 * every frame is a plain Ethernet frame of at most the MTU. The VMM calls vnet_rx when the tap is readable
 * and the transport calls the transmit side on the driver's notify, both under the device-model lock. */
#ifndef CUBE_KVM_VIRTIO_NET_H
#define CUBE_KVM_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "virtio_mmio.h"

#define VNET_HDR_LEN 12 /* struct virtio_net_hdr_v1 */
#define VNET_RXQ     0
#define VNET_TXQ     1

typedef struct vnet {
    vmmio_dev dev;
    int tap_fd; /* non-blocking */
    uint8_t mac[6];
    /* a frame waits in the tap for receive buffers: the VMM stops polling the tap until the driver adds some
     * (wake, if set, is called then) */
    bool rx_blocked;
    void (*rx_wake)(struct vnet *n);
    uint64_t rx_frames, tx_frames, tx_dropped;
} vnet;

extern const vmmio_ops vnet_ops;

/* Creates (or attaches to) tap device name in this thread's network namespace, with virtio headers, no
 * offloads, non-blocking. The interface's name as the kernel made it goes to actual (IFNAMSIZ). */
int vnet_tap_open(const char *name, char *actual, cube_err *err);
/* Takes ownership of tap_fd; mac is the guest's address. */
void vnet_init(vnet *n, int tap_fd, const uint8_t mac[6]);
void vnet_attach(vnet *n, const gmem *mem, uint64_t base, uint32_t irq);
void vnet_close(vnet *n);
/* Moves frames waiting on the tap into the driver's receive buffers until the tap is empty or the buffers run
 * out (then rx_blocked is set). Returns the frames delivered. */
int vnet_rx(vnet *n);

#endif
