/* Split virtqueue, device side (see virtq.h). */
#include "virtq.h"

#include <errno.h>
#include <linux/virtio_ring.h>
#include <string.h>

static size_t ring_bytes_avail(uint16_t num)
{
    return 4 + 2 * (size_t)num + 2; /* flags, idx, ring[num], used_event */
}
static size_t ring_bytes_used(uint16_t num)
{
    return 4 + 8 * (size_t)num + 2; /* flags, idx, ring[num] {id, len}, avail_event */
}

int vq_validate(const virtq *q, const gmem *m, cube_err *err)
{
    if (q->num == 0 || q->num > VQ_MAX_SIZE || (q->num & (q->num - 1)))
        return cube_err_set(err, EINVAL, "virtqueue size %u is not a power of 2 up to %d", q->num,
                            VQ_MAX_SIZE);
    /* alignment the spec requires of the driver: 16 (table), 2 (available), 4 (used) */
    if ((q->desc_gpa & 15) || (q->avail_gpa & 1) || (q->used_gpa & 3))
        return cube_err_set(err, EINVAL, "virtqueue rings are misaligned");
    if (!gmem_ptr(m, q->desc_gpa, 16 * (uint64_t)q->num) ||
        !gmem_ptr(m, q->avail_gpa, ring_bytes_avail(q->num)) ||
        !gmem_ptr(m, q->used_gpa, ring_bytes_used(q->num)))
        return cube_err_set(err, EFAULT, "virtqueue rings lie outside guest memory");
    return 0;
}

int vq_pop(virtq *q, const gmem *m, vq_chain *c, cube_err *err)
{
    struct vring_avail *avail = gmem_ptr(m, q->avail_gpa, ring_bytes_avail(q->num));
    struct vring_desc *desc = gmem_ptr(m, q->desc_gpa, 16 * (uint64_t)q->num);
    if (!q->ready || !avail || !desc) return 0;
    /* acquire: the ring entry and its descriptors were written before the driver published idx */
    uint16_t idx = __atomic_load_n(&avail->idx, __ATOMIC_ACQUIRE);
    if (idx == q->last_avail) return 0;
    if ((uint16_t)(idx - q->last_avail) > q->num) {
        q->last_avail = idx; /* the driver claims more than the queue holds: skip it all */
        return cube_err_set(err, EPROTO, "available index moved by more than the queue size");
    }
    uint16_t head = avail->ring[q->last_avail % q->num];
    q->last_avail++;
    c->head = head;
    c->nr = c->nw = 0;
    if (head >= q->num) return cube_err_set(err, EPROTO, "descriptor %u out of range", head);
    uint16_t i = head;
    for (int steps = 0;; steps++) {
        if (steps >= q->num) return cube_err_set(err, EPROTO, "descriptor chain loops");
        struct vring_desc d = desc[i];
        if (d.flags & VRING_DESC_F_INDIRECT)
            return cube_err_set(err, EPROTO, "indirect descriptors were not offered");
        bool w = d.flags & VRING_DESC_F_WRITE;
        if (!w && c->nw) return cube_err_set(err, EPROTO, "a readable buffer follows a writable one");
        if (c->nr + c->nw >= VQ_MAX_SEGS) return cube_err_set(err, E2BIG, "request has too many buffers");
        void *p = gmem_ptr(m, d.addr, d.len);
        if (!p)
            return cube_err_set(err, EFAULT, "buffer 0x%llx+%u is outside guest memory",
                                (unsigned long long)d.addr, d.len);
        c->iov[c->nr + c->nw] = (struct iovec){p, d.len};
        if (w)
            c->nw++;
        else
            c->nr++;
        if (!(d.flags & VRING_DESC_F_NEXT)) break;
        if (d.next >= q->num) return cube_err_set(err, EPROTO, "descriptor %u out of range", d.next);
        i = d.next;
    }
    return 1;
}

void vq_unpop(virtq *q)
{
    q->last_avail--;
}

void vq_push(virtq *q, const gmem *m, uint16_t head, uint32_t len)
{
    struct vring_used *used = gmem_ptr(m, q->used_gpa, ring_bytes_used(q->num));
    if (!used) return;
    struct vring_used_elem *e = &used->ring[q->used_idx % q->num];
    e->id = head;
    e->len = len;
    q->used_idx++;
    /* release: the element is visible before the index that hands it over */
    __atomic_store_n(&used->idx, q->used_idx, __ATOMIC_RELEASE);
}

bool vq_should_notify(const virtq *q, const gmem *m)
{
    struct vring_avail *avail = gmem_ptr(m, q->avail_gpa, ring_bytes_avail(q->num));
    if (!avail) return false;
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the used index is out before the driver's flag is read */
    return !(__atomic_load_n(&avail->flags, __ATOMIC_ACQUIRE) & VRING_AVAIL_F_NO_INTERRUPT);
}

static size_t copy_iov(const struct iovec *iov, int n, size_t skip, uint8_t *flat, size_t len, bool to_iov)
{
    size_t done = 0;
    for (int i = 0; i < n && done < len; i++) {
        size_t l = iov[i].iov_len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        size_t take = l - skip;
        if (take > len - done) take = len - done;
        uint8_t *b = (uint8_t *)iov[i].iov_base + skip;
        if (to_iov)
            memcpy(b, flat + done, take);
        else
            memcpy(flat + done, b, take);
        done += take;
        skip = 0;
    }
    return done;
}

size_t vq_read(const vq_chain *c, size_t skip, void *dst, size_t len)
{
    return copy_iov(c->iov, c->nr, skip, dst, len, false);
}

size_t vq_write(const vq_chain *c, size_t skip, const void *src, size_t len)
{
    return copy_iov(c->iov + c->nr, c->nw, skip, (uint8_t *)src, len, true);
}

static size_t total(const struct iovec *iov, int n)
{
    size_t t = 0;
    for (int i = 0; i < n; i++) t += iov[i].iov_len;
    return t;
}

size_t vq_readable_len(const vq_chain *c)
{
    return total(c->iov, c->nr);
}

size_t vq_writable_len(const vq_chain *c)
{
    return total(c->iov + c->nr, c->nw);
}
