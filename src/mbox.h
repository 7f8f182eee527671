/* SPDX-License-Identifier: MIT */
/*
 * A worker's mailbox: one shared mapping per pool slot, made once when the
 * pool is created and handed to every worker that fills the slot.
 *
 *   [ header: status words, wake-up flags, two ring controls ]  4 KiB
 *   [ task ring: pool -> worker ]                                1 MiB
 *   [ result ring: worker -> pool ]                              1 MiB
 *
 * Tasks and results of up to MPROC__REC_MAX bytes travel through the rings:
 * a write into shared memory and one store, no system call. The side that
 * has nothing to do spins for a while (mproc__spin), then announces that it
 * sleeps and blocks in the kernel; the other side pays for a wake-up
 * message on the channel only when it sees that announcement. Larger
 * payloads, and everything else (INIT, READY, fd requests, EOF), use the
 * worker's channel as before (wire.h).
 *
 * Each ring has one producer and one consumer. Positions are byte counts
 * that only grow; a record never wraps (a PAD record fills the end). Each
 * side keeps its own position privately and publishes it; the pool never
 * trusts what a worker wrote: every record header is copied and checked,
 * and a result's bytes are copied out before they are parsed.
 */
#ifndef MPROC_MBOX_H
#define MPROC_MBOX_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "spin.h"

#define MPROC__MBOX_HDR   4096u
#define MPROC__RING_BYTES (1u << 20)
#define MPROC__MBOX_BYTES (MPROC__MBOX_HDR + 2u * MPROC__RING_BYTES)
/* The largest record either side puts in a ring. */
#define MPROC__REC_MAX (MPROC__RING_BYTES / 4u)
/* Work is cut into chunks whose arguments stay under this, so that a big
 * map streams through the rings. */
#define MPROC__CHUNK_BYTES (128u * 1024u)

typedef struct mproc__ringctl {
    _Atomic uint64_t head; /* written by the producer */
    char pad0_[56];
    _Atomic uint64_t tail; /* written by the consumer */
    char pad1_[56];
} mproc__ringctl;

typedef struct mproc__mbox {
    /* Status, written by the worker: which item of which chunk it runs.
     * After a death the pool reads here which item to blame. */
    _Atomic uint64_t chunk_id; /* 0 when between chunks */
    _Atomic uint64_t item;
    _Atomic uint64_t item_start_ns; /* only for chunks with a timeout */
    _Atomic uint32_t mem_exhausted; /* set by the fault handler */
    uint32_t pad0_;
    char pad1_[32];
    /* The worker sleeps in poll() on its channel: it wants a WAKE. */
    _Atomic uint32_t w_sleep;
    char pad2_[60];
    /* The pool's result thread sleeps in epoll: it wants a WAKE. */
    _Atomic uint32_t p_sleep;
    /* Threads of the pool spin on the result ring: no WAKE needed. */
    _Atomic uint32_t spinners;
    char pad3_[56];
    mproc__ringctl task, result;
} mproc__mbox;

_Static_assert(sizeof(mproc__mbox) <= MPROC__MBOX_HDR, "mailbox header");

enum { MPROC__CLAIM_FREE = 0, MPROC__CLAIM_RUN, MPROC__CLAIM_STOLEN };

enum {
    MPROC__REC_PAD = 1, /* filler up to the end of the ring */
    MPROC__REC_TASK,    /* a TASK payload (wire.h layout) */
    MPROC__REC_CHAN,    /* the next TASK comes on the channel */
    MPROC__REC_RESULT,  /* a RESULT payload (wire.h layout) */
    MPROC__REC_TYPED_OK /* typed chunk, every item succeeded: the outputs
                           only, nitems * out_size bytes */
};

typedef struct mproc__rec {
    uint32_t len; /* payload bytes after this header */
    uint16_t type;
    uint16_t flags;
    uint32_t nitems;
    /* Task records: 0 until taken; the worker sets 1 before it runs the
     * chunk, the pool sets 2 when it takes the chunk back to give it to an
     * idle worker. Whoever swaps the 0 wins. */
    _Atomic uint32_t claim;
    uint64_t id;  /* chunk id */
    uint64_t aux; /* result: the chunk's run time in ns */
} mproc__rec;

/* One side's view of a ring. */
typedef struct mproc__ring {
    mproc__ringctl *c;
    unsigned char *data;
    uint64_t pos;    /* producer: head; consumer: tail (private copy) */
    uint64_t next;   /* consumer: tail after the peeked record */
    uint64_t rec_at; /* producer: where the reserved record starts */
} mproc__ring;

/* Map a mailbox from its memfd (MAP_SHARED); NULL on failure. */
mproc__mbox *mproc__mbox_map(int fd);
void mproc__mbox_unmap(mproc__mbox *mb);
/* Reset a mailbox for a new worker (the old one is dead and reaped). The
 * spinners count is the pool's and survives. */
void mproc__mbox_reset(mproc__mbox *mb);
/* Views of the two rings. */
void mproc__mbox_rings(mproc__mbox *mb, mproc__ring *task, mproc__ring *result);

/* Producer: a record of len payload bytes, or NULL when it does not fit
 * now (or ever: len > MPROC__REC_MAX). Fill rec's payload (rec + 1), set
 * its type and fields, then commit. */
mproc__rec *mproc__ring_reserve(mproc__ring *r, size_t len);
/* Producer: has the consumer published a position that cannot be (past
 * our head, or more than a ring behind)? */
int mproc__ring_broken(const mproc__ring *r);
/* Publish the reserved record (seq_cst, so that a check of the peer's
 * sleep flag after it is ordered). */
void mproc__ring_commit(mproc__ring *r, const mproc__rec *rec);

/* Consumer: the next record, or NULL when the ring is empty. On a ring
 * that breaks the rules, NULL with *bad set. hdr receives a copy of the
 * header (the trustworthy one); the return value points at the record in
 * the ring. */
const mproc__rec *mproc__ring_peek(mproc__ring *r, mproc__rec *hdr, int *bad);
/* Consumer: done with the peeked record; the producer may reuse it. */
void mproc__ring_release(mproc__ring *r);
/* Anything to read? (A cheap check for spinning.) */
static inline int mproc__ring_nonempty(const mproc__ring *r) {
    return atomic_load_explicit(&r->c->head, memory_order_acquire) != r->pos;
}

#endif
