/* SPDX-License-Identifier: MIT */
/* Worker mailboxes: shared rings and bounded spinning (see mbox.h). */
#include "mbox.h"

#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define REC_ALIGN 8u

static size_t rec_size(size_t len) {
    return (sizeof(mproc__rec) + len + REC_ALIGN - 1) &
           ~(size_t)(REC_ALIGN - 1);
}

mproc__mbox *mproc__mbox_map(int fd) {
    void *p = mmap(NULL, MPROC__MBOX_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED,
                   fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

void mproc__mbox_unmap(mproc__mbox *mb) {
    if (mb)
        munmap(mb, MPROC__MBOX_BYTES);
}

void mproc__mbox_reset(mproc__mbox *mb) {
    atomic_store(&mb->chunk_id, 0);
    atomic_store(&mb->item, 0);
    atomic_store(&mb->item_start_ns, 0);
    atomic_store(&mb->mem_exhausted, 0);
    atomic_store(&mb->w_sleep, 0);
    atomic_store(&mb->p_sleep, 0);
    atomic_store(&mb->task.head, 0);
    atomic_store(&mb->task.tail, 0);
    atomic_store(&mb->result.head, 0);
    atomic_store(&mb->result.tail, 0);
}

void mproc__mbox_rings(mproc__mbox *mb, mproc__ring *task,
                       mproc__ring *result) {
    unsigned char *base = (unsigned char *)mb;
    *task = (mproc__ring){.c = &mb->task, .data = base + MPROC__MBOX_HDR};
    *result = (mproc__ring){.c = &mb->result,
                            .data = base + MPROC__MBOX_HDR + MPROC__RING_BYTES};
}

mproc__rec *mproc__ring_reserve(mproc__ring *r, size_t len) {
    const uint64_t cap = MPROC__RING_BYTES;
    if (len > MPROC__REC_MAX)
        return NULL;
    uint64_t head = r->pos;
    uint64_t tail = atomic_load_explicit(&r->c->tail, memory_order_acquire);
    if (tail > head || head - tail > cap)
        return NULL; /* the consumer wrote nonsense; the caller copes */
    size_t need = rec_size(len);
    uint64_t off = head & (cap - 1), to_end = cap - off, skip = 0;
    if (to_end < need)
        skip = to_end;
    if (head + skip + need - tail > cap)
        return NULL;
    if (skip >= sizeof(mproc__rec)) {
        mproc__rec pad = {.len = (uint32_t)(skip - sizeof pad),
                          .type = MPROC__REC_PAD};
        memcpy(r->data + off, &pad, sizeof pad);
    }
    r->rec_at = head + skip;
    mproc__rec *rec = (mproc__rec *)(r->data + (r->rec_at & (cap - 1)));
    memset(rec, 0, sizeof *rec);
    rec->len = (uint32_t)len;
    return rec;
}

int mproc__ring_broken(const mproc__ring *r) {
    uint64_t tail = atomic_load_explicit(&r->c->tail, memory_order_acquire);
    return tail > r->pos || r->pos - tail > MPROC__RING_BYTES;
}

void mproc__ring_commit(mproc__ring *r, const mproc__rec *rec) {
    r->pos = r->rec_at + rec_size(rec->len);
    atomic_store(&r->c->head, r->pos);
}

const mproc__rec *mproc__ring_peek(mproc__ring *r, mproc__rec *hdr, int *bad) {
    const uint64_t cap = MPROC__RING_BYTES;
    uint64_t head = atomic_load_explicit(&r->c->head, memory_order_acquire);
    uint64_t tail = r->pos;
    for (;;) {
        if (head == tail)
            return NULL;
        if (head < tail || head - tail > cap)
            goto broken;
        uint64_t off = tail & (cap - 1), to_end = cap - off;
        if (to_end < sizeof *hdr) {
            tail += to_end; /* too short for a header: implicit padding */
            r->pos = tail;
            continue;
        }
        memcpy(hdr, r->data + off, sizeof *hdr);
        if (hdr->type == MPROC__REC_PAD) {
            if (head - tail < to_end)
                goto broken;
            tail += to_end;
            r->pos = tail;
            continue;
        }
        size_t size = rec_size(hdr->len);
        if (hdr->len > MPROC__REC_MAX || size > to_end || size > head - tail)
            goto broken;
        r->next = tail + size;
        return (const mproc__rec *)(r->data + off);
    }
broken:
    *bad = 1;
    return NULL;
}

void mproc__ring_release(mproc__ring *r) {
    r->pos = r->next;
    atomic_store_explicit(&r->c->tail, r->pos, memory_order_release);
}
