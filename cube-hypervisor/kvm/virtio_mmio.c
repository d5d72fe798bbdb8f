/* virtio-mmio transport (see virtio_mmio.h). */
#include "virtio_mmio.h"

#include <linux/virtio_config.h>
#include <errno.h>
#include <linux/virtio_mmio.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

#define MAGIC  0x74726976 /* "virt" */
#define VENDOR 0x65627563 /* "cube" */

void vmmio_init(vmmio_dev *d, const vmmio_ops *ops, void *priv, const gmem *mem, uint64_t base, uint32_t irq)
{
    memset(d, 0, sizeof(*d));
    d->ops = ops;
    d->priv = priv;
    d->mem = mem;
    d->base = base;
    d->irq = irq;
    d->features = ops->features;
}

static uint64_t offered(const vmmio_dev *d)
{
    return d->features | (1ull << VIRTIO_F_VERSION_1);
}

static void reset(vmmio_dev *d)
{
    d->status = d->dev_features_sel = d->drv_features_sel = d->queue_sel = d->interrupt_status = 0;
    d->driver_features = 0;
    memset(d->queues, 0, sizeof(d->queues));
    if (d->ops->reset) d->ops->reset(d);
}

static virtq *selected(vmmio_dev *d)
{
    return d->queue_sel < (uint32_t)d->ops->nqueues ? &d->queues[d->queue_sel] : NULL;
}

void vmmio_read(vmmio_dev *d, uint64_t off, void *data, uint32_t len)
{
    memset(data, 0, len);
    if (off >= VIRTIO_MMIO_CONFIG) {
        if (d->ops->config_read) d->ops->config_read(d, (uint32_t)(off - VIRTIO_MMIO_CONFIG), data, len);
        return;
    }
    if (len != 4 || (off & 3)) return; /* registers are 32-bit wide, accessed whole */
    virtq *q = selected(d);
    uint32_t v = 0;
    switch (off) {
    case VIRTIO_MMIO_MAGIC_VALUE:
        v = MAGIC;
        break;
    case VIRTIO_MMIO_VERSION:
        v = 2;
        break;
    case VIRTIO_MMIO_DEVICE_ID:
        v = d->ops->device_id;
        break;
    case VIRTIO_MMIO_VENDOR_ID:
        v = VENDOR;
        break;
    case VIRTIO_MMIO_DEVICE_FEATURES:
        v = d->dev_features_sel > 1 ? 0 : (uint32_t)(offered(d) >> (32 * d->dev_features_sel));
        break;
    case VIRTIO_MMIO_QUEUE_NUM_MAX:
        v = q ? d->ops->queue_max : 0;
        break;
    case VIRTIO_MMIO_QUEUE_READY:
        v = q ? q->ready : 0;
        break;
    case VIRTIO_MMIO_INTERRUPT_STATUS:
        v = d->interrupt_status;
        break;
    case VIRTIO_MMIO_STATUS:
        v = d->status;
        break;
    case VIRTIO_MMIO_CONFIG_GENERATION:
        v = d->config_generation;
        break;
    default:
        break;
    }
    memcpy(data, &v, 4);
}

static void set_low(uint64_t *a, uint32_t v)
{
    *a = (*a & ~0xffffffffull) | v;
}
static void set_high(uint64_t *a, uint32_t v)
{
    *a = (*a & 0xffffffffull) | (uint64_t)v << 32;
}

static void write_status(vmmio_dev *d, uint32_t v)
{
    if (v == 0) {
        reset(d);
        return;
    }
    if ((v & VIRTIO_CONFIG_S_FEATURES_OK) && !(d->status & VIRTIO_CONFIG_S_FEATURES_OK)) {
        /* the driver may accept only what was offered, and must speak virtio 1.x */
        uint64_t f = d->driver_features;
        if ((f & ~offered(d)) || !(f & (1ull << VIRTIO_F_VERSION_1)))
            v &= ~(uint32_t)VIRTIO_CONFIG_S_FEATURES_OK;
    }
    d->status = v;
}

void vmmio_write(vmmio_dev *d, uint64_t off, const void *data, uint32_t len)
{
    if (off >= VIRTIO_MMIO_CONFIG) return; /* no device has writable config fields here */
    if (len != 4 || (off & 3)) return;
    uint32_t v;
    memcpy(&v, data, 4);
    virtq *q = selected(d);
    /* a live queue's layout is fixed until reset */
    bool q_editable = q && !q->ready;
    switch (off) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        d->dev_features_sel = v;
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        d->drv_features_sel = v;
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES:
        if (d->status & VIRTIO_CONFIG_S_FEATURES_OK) break; /* negotiation is over */
        if (d->drv_features_sel == 0) set_low(&d->driver_features, v);
        if (d->drv_features_sel == 1) set_high(&d->driver_features, v);
        break;
    case VIRTIO_MMIO_QUEUE_SEL:
        d->queue_sel = v;
        break;
    case VIRTIO_MMIO_QUEUE_NUM:
        if (q_editable) q->num = (uint16_t)(v <= d->ops->queue_max ? v : 0);
        break;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
        if (q_editable) set_low(&q->desc_gpa, v);
        break;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        if (q_editable) set_high(&q->desc_gpa, v);
        break;
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
        if (q_editable) set_low(&q->avail_gpa, v);
        break;
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
        if (q_editable) set_high(&q->avail_gpa, v);
        break;
    case VIRTIO_MMIO_QUEUE_USED_LOW:
        if (q_editable) set_low(&q->used_gpa, v);
        break;
    case VIRTIO_MMIO_QUEUE_USED_HIGH:
        if (q_editable) set_high(&q->used_gpa, v);
        break;
    case VIRTIO_MMIO_QUEUE_READY:
        if (!q) break;
        if (v == 1 && !q->ready) {
            cube_err err = {0};
            if (vq_validate(q, d->mem, &err) < 0) {
                cube_log_warn("virtio queue refused", "device=%s queue=%u err=\"%s\"", d->ops->name,
                              d->queue_sel, err.msg);
                d->status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                break;
            }
            q->ready = true;
        } else if (v == 0) {
            q->ready = false;
        }
        break;
    case VIRTIO_MMIO_QUEUE_NOTIFY:
        if (v < (uint32_t)d->ops->nqueues && vmmio_queue_live(d, (int)v) && d->ops->notify)
            d->ops->notify(d, (int)v);
        break;
    case VIRTIO_MMIO_INTERRUPT_ACK:
        d->interrupt_status &= ~v;
        break;
    case VIRTIO_MMIO_STATUS:
        write_status(d, v);
        break;
    default:
        break;
    }
}

int vmmio_queue_live(const vmmio_dev *d, int q)
{
    return q >= 0 && q < d->ops->nqueues && d->queues[q].ready && (d->status & VIRTIO_CONFIG_S_DRIVER_OK) &&
           !(d->status & VIRTIO_CONFIG_S_NEEDS_RESET);
}

void vmmio_used(vmmio_dev *d)
{
    __atomic_or_fetch(&d->interrupt_status, VIRTIO_MMIO_INT_VRING, __ATOMIC_SEQ_CST);
    if (d->raise_irq) d->raise_irq(d);
}

void vmmio_cmdline(const vmmio_dev *d, char *buf, size_t len)
{
    snprintf(buf, len, "virtio_mmio.device=4K@0x%llx:%u", (unsigned long long)d->base, d->irq);
}

void vmmio_save(const vmmio_dev *d, vmmio_saved *o)
{
    memset(o, 0, sizeof(*o));
    o->status = d->status;
    o->dev_features_sel = d->dev_features_sel;
    o->drv_features_sel = d->drv_features_sel;
    o->queue_sel = d->queue_sel;
    o->interrupt_status = d->interrupt_status;
    o->config_generation = d->config_generation;
    o->driver_features = d->driver_features;
    for (int i = 0; i < VMMIO_MAX_QUEUES; i++) {
        const virtq *q = &d->queues[i];
        o->q[i].num = q->num;
        o->q[i].last_avail = q->last_avail;
        o->q[i].used_idx = q->used_idx;
        o->q[i].ready = q->ready;
        o->q[i].desc_gpa = q->desc_gpa;
        o->q[i].avail_gpa = q->avail_gpa;
        o->q[i].used_gpa = q->used_gpa;
    }
}

int vmmio_restore(vmmio_dev *d, const vmmio_saved *in, cube_err *err)
{
    if (in->driver_features & ~offered(d))
        return cube_err_set(err, EINVAL, "%s: saved features 0x%llx were never offered", d->ops->name,
                            (unsigned long long)in->driver_features);
    for (int i = 0; i < VMMIO_MAX_QUEUES; i++) {
        virtq q = {.num = in->q[i].num,
                   .ready = in->q[i].ready != 0,
                   .desc_gpa = in->q[i].desc_gpa,
                   .avail_gpa = in->q[i].avail_gpa,
                   .used_gpa = in->q[i].used_gpa,
                   .last_avail = in->q[i].last_avail,
                   .used_idx = in->q[i].used_idx};
        if (q.ready && (i >= d->ops->nqueues || q.num > d->ops->queue_max))
            return cube_err_set(err, EINVAL, "%s: saved queue %d does not fit this device", d->ops->name, i);
        if (q.ready && vq_validate(&q, d->mem, err) < 0)
            return cube_err_prefix(err, "%s: saved queue %d", d->ops->name, i);
        d->queues[i] = q;
    }
    d->status = in->status;
    d->dev_features_sel = in->dev_features_sel;
    d->drv_features_sel = in->drv_features_sel;
    d->queue_sel = in->queue_sel;
    d->interrupt_status = in->interrupt_status;
    d->config_generation = in->config_generation;
    d->driver_features = in->driver_features;
    return 0;
}
