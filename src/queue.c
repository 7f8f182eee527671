/* SPDX-License-Identifier: MIT */
/*
 * Queue: a multi-producer, multi-consumer FIFO of byte messages in one
 * shared segment (Python's Queue, JoinableQueue and SimpleQueue, without the
 * feeder thread). shm.c makes, maps and hands out the segment; futex.h gives
 * the robust mutex and the futex words.
 *
 * Layout: the segment header (64 bytes), the state below, then a ring of
 * ring_size bytes (a multiple of 8). head and tail are byte offsets that only
 * grow; a byte at offset x lives at ring[x % ring_size]. Each message is a
 * record: an 8-byte header {len, check} and then the payload, padded to 8.
 * Offsets and the ring size are multiples of 8, so a header never wraps; a
 * payload may (two copies). check mixes len with the record's offset, so a
 * stray write into the ring is caught (MPROC_EPROTO) and a corrupt len is
 * never used to copy.
 *
 * Protocol: one robust mutex guards head, tail, count, unfinished and
 * closed. A put copies its message into the free space after tail while
 * holding the mutex, and only then publishes it by moving tail (and count);
 * a get copies the message at head out, then moves head. Waiting is done
 * without the mutex, on futex words: put_seq changes on every put (consumers
 * sleep on it while the queue is empty), get_seq on every get (producers
 * sleep on it while it is full), done_seq when the unfinished count of a
 * joinable queue reaches 0. A sleeper registers in a waiter count and reads
 * the word under the mutex, so a change made after that (also under the
 * mutex) makes its FUTEX_WAIT return at once: no wake-up is lost. The waker
 * makes the syscall only when the count says someone sleeps.
 *
 * Spinning. Handing a wake-up to another CPU through the kernel costs tens
 * of microseconds (35-40 us on the 2-vCPU KVM guests the benchmarks run
 * on), while a put or a get takes a fraction of one. So a waiter spins a
 * little before it sleeps: one that finds the queue empty or full, or a
 * join that finds tasks unfinished, watches the futex word without the
 * mutex (q_wait, q_spin), and one that finds the mutex held tries it again
 * (q_lock). mproc__spin_pause (spin.c) paces both: pause instructions,
 * then sched_yield, so that a peer on the same CPU can run. A spinner does
 * not count as a waiter, so the put or get it waits for costs no wake
 * syscall. The budgets are short, per call and read off the clock, so a
 * waiter that finds nothing goes to sleep as before, whatever the CPU.
 *
 * A put wakes one consumer; a consumer that leaves while messages remain and
 * others sleep wakes the next one. A get wakes every producer, because the
 * space it freed may fit one producer's message and not another's.
 *
 * Owner death. A process killed while holding the mutex (for instance in
 * the middle of copying a message in) has published nothing: the bytes it
 * wrote past tail are ignored and later overwritten, and a message it was
 * copying out is still at head for the next consumer. The one multi-word
 * update, publishing new head/tail/count/unfinished, goes through a redo
 * record (commit()): the new values are written down and flagged before they
 * are applied, and the next holder, which gets MPROC_EOWNERDEAD from the
 * mutex, applies them again if the flag is still up. So the queue's state is
 * always whole, and the queue carries on without reporting anything. That
 * holder also wakes every sleeper, in case the dead process owed a wake-up.
 * A process killed while asleep only leaves a waiter count one too high,
 * which costs an extra wake syscall and nothing else. A consumer killed just
 * after a put woke it, before it took the message, would leave that wake-up
 * unused; for that, sleeps are cut into slices of at most RECHECK_NS, after
 * which a sleeper looks again by itself.
 *
 * Threads: any thread may use a handle, several at once; free must be the
 * last call on it. The handle's own fields never change after create or
 * attach.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "futex.h"
#include "internal.h"
#include "shm.h"
#include "spin.h"

#define QUEUE_MAGIC  0x51554555u /* "QUEU" */
#define DEFAULT_RING ((uint64_t)1 << 20)
#define MAX_RING     ((uint64_t)1 << 40) /* 1 TiB; larger is a mistake */
#define RECHECK_NS   1000000000ull       /* longest uninterrupted sleep */
#define REC_HDR      8u

/* Spin budgets (see "Spinning" above), in ns of the monotonic clock. A
 * waiter for a put or a get spins for at most WAIT_SPIN_NS per call; one
 * for the mutex, which is held only while one message is copied, for at
 * most LOCK_SPIN_NS each time it finds it held. Both pause for the first
 * MPROC__SPIN_PURE_NS and yield the CPU after that (spin.h). The clock is read
 * every MPROC__SPIN_CHECK pauses (a pause takes 3-40 ns, depending on the CPU).
 * Between two tries of the mutex a waiter lets 1, 2, 4, ... up to LOCK_BACKOFF
 * pauses go by. */
#define WAIT_SPIN_NS 25000u
#define LOCK_SPIN_NS 10000u
#define LOCK_BACKOFF 64u

typedef struct qstate {
    /* Set at creation, read-only afterwards. Each handle keeps a checked
     * copy and never trusts these again. */
    uint32_t magic;
    uint32_t joinable;
    uint64_t ring_size;
    uint64_t maxsize;
    uint64_t reserved_;

    pthread_mutex_t mu;
    /* Guarded by mu and changed only by commit(); read without it by
     * qsize, empty and full (hence atomic). */
    _Atomic uint64_t head;
    _Atomic uint64_t tail;
    _Atomic uint64_t count;
    _Atomic uint64_t unfinished; /* joinable: put minus task_done */
    _Atomic uint32_t closed;     /* guarded by mu */

    /* commit()'s redo record. */
    _Atomic uint32_t redo_pending;
    uint64_t redo_head, redo_tail, redo_count, redo_unfinished;

    /* Futex words (changed under mu) and how many sleep on each. */
    _Atomic uint32_t put_seq; /* consumers wait for a put */
    _Atomic uint32_t put_waiters;
    _Atomic uint32_t get_seq; /* producers wait for a get */
    _Atomic uint32_t get_waiters;
    _Atomic uint32_t done_seq; /* join waits for unfinished == 0 */
    _Atomic uint32_t join_waiters;
} qstate;

#define STATE_OFF sizeof(mproc__seghdr)
#define RING_OFF  (STATE_OFF + ((sizeof(qstate) + 63) & ~(size_t)63))

struct mproc_queue {
    mproc__obj obj; /* first: mproc_ref_of() reads it */
    qstate *st;
    unsigned char *ring;
    uint64_t ring_size; /* checked copies of the shared settings */
    uint64_t maxsize;
    int joinable;
};

/* Wake-ups owed once the mutex is released. */
enum {
    W_CONSUMER = 1u,  /* one sleeper on put_seq */
    W_CONSUMERS = 2u, /* all of them */
    W_PRODUCERS = 4u, /* all sleepers on get_seq */
    W_JOINERS = 8u    /* all sleepers on done_seq */
};

/* Record size of a message of len bytes (len <= UINT32_MAX). */
static uint64_t rec_bytes(uint64_t len) {
    return ((len + 7) & ~(uint64_t)7) + REC_HDR;
}

static uint32_t rec_check(uint32_t len, uint64_t pos) {
    uint64_t h = (pos >> 3) * 0x9e3779b97f4a7c15ull;
    return (uint32_t)(h >> 32) ^ len ^ QUEUE_MAGIC;
}

/* ---- bounded spinning ---------------------------------------------------- */

/* ---- the mutex, wake-ups and the commit --------------------------------- */

/* Whether the mutex is held by a live process, as far as a plain read can
 * tell: trying it only when it looks free keeps a spinning waiter from
 * taking its cache line away from the holder on every try. glibc keeps the
 * holder's thread id in the lock word (the kernel's robust futex protocol);
 * a dead holder's word has no id and reads as free, so the next try takes
 * the mutex and repairs. Elsewhere the answer is always "try". */
static int mutex_looks_held(pthread_mutex_t *mu) {
#if defined(__GLIBC__)
    return (__atomic_load_n(&mu->__data.__lock, __ATOMIC_RELAXED) &
            0x3fffffff) != 0; /* FUTEX_TID_MASK */
#else
    (void)mu;
    return 0;
#endif
}

static void bump(_Atomic uint32_t *seq) {
    atomic_fetch_add_explicit(seq, 1, memory_order_relaxed);
}

/* Publish new positions and counts. Under the mutex. */
static void commit(qstate *st, uint64_t head, uint64_t tail, uint64_t count,
                   uint64_t unfinished) {
    st->redo_head = head;
    st->redo_tail = tail;
    st->redo_count = count;
    st->redo_unfinished = unfinished;
    /* The record is whole before the flag goes up, and the flag is up
     * before any field changes: a holder killed anywhere in here leaves
     * either the old state or a redo to finish. */
    atomic_store_explicit(&st->redo_pending, 1, memory_order_release);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&st->head, head, memory_order_relaxed);
    atomic_store_explicit(&st->tail, tail, memory_order_relaxed);
    atomic_store_explicit(&st->count, count, memory_order_relaxed);
    atomic_store_explicit(&st->unfinished, unfinished, memory_order_relaxed);
    atomic_store_explicit(&st->redo_pending, 0, memory_order_release);
}

/* The previous holder died with the mutex: finish its commit if it was in
 * one, and wake everyone (it may have owed a wake-up). */
static unsigned repair(qstate *st) {
    if (atomic_load_explicit(&st->redo_pending, memory_order_acquire)) {
        atomic_store_explicit(&st->head, st->redo_head, memory_order_relaxed);
        atomic_store_explicit(&st->tail, st->redo_tail, memory_order_relaxed);
        atomic_store_explicit(&st->count, st->redo_count, memory_order_relaxed);
        atomic_store_explicit(&st->unfinished, st->redo_unfinished,
                              memory_order_relaxed);
        atomic_store_explicit(&st->redo_pending, 0, memory_order_release);
    }
    bump(&st->put_seq);
    bump(&st->get_seq);
    bump(&st->done_seq);
    return W_CONSUMERS | W_PRODUCERS | W_JOINERS;
}

/* Take the mutex by deadline. Owner death is repaired and then treated as
 * success: the queue's state never depends on what the dead holder did.
 * The holder copies one message and lets go, so a busy mutex is tried
 * again for up to LOCK_SPIN_NS before this process sleeps in the kernel
 * for it (glibc's robust mutexes sleep at once). The tries back off: a
 * waiter that tried at every pause would keep taking the mutex's cache line
 * from the holder, and one that waits a little longer each time lets the
 * holder put or get a few messages in a row (with one producer and one
 * consumer, that more than doubles the rate). */
static int q_lock(mproc_queue *q, uint64_t deadline, unsigned *wake) {
    pthread_mutex_t *mu = &q->st->mu;
    int err = mproc__rmutex_lock(mu, 0);
    if (err == MPROC_ETIMEDOUT) {
        mproc__spin s;
        mproc__spin_start(&s, LOCK_SPIN_NS, deadline);
        unsigned gap = 1;
        while (err == MPROC_ETIMEDOUT && mproc__spin_pause(&s, gap)) {
            if (!mutex_looks_held(mu))
                err = mproc__rmutex_lock(mu, 0);
            gap = MPROC_MIN(2 * gap, LOCK_BACKOFF);
        }
        if (err == MPROC_ETIMEDOUT)
            err = mproc__rmutex_lock(mu, deadline);
    }
    if (err == MPROC_EOWNERDEAD) {
        *wake |= repair(q->st);
        err = 0;
    }
    return err;
}

static void q_wake(qstate *st, unsigned wake) {
    if (wake & W_CONSUMERS)
        mproc__futex_wake(&st->put_seq, INT32_MAX);
    else if (wake & W_CONSUMER)
        mproc__futex_wake(&st->put_seq, 1);
    if (wake & W_PRODUCERS)
        mproc__futex_wake(&st->get_seq, INT32_MAX);
    if (wake & W_JOINERS)
        mproc__futex_wake(&st->done_seq, INT32_MAX);
}

static void q_unlock(mproc_queue *q, unsigned wake) {
    mproc__rmutex_unlock(&q->st->mu);
    q_wake(q->st, wake);
}

/* Change seq and say which wake-up that needs, if anyone sleeps on it.
 * Under the mutex. */
static unsigned note(_Atomic uint32_t *seq, _Atomic uint32_t *waiters,
                     unsigned w) {
    bump(seq);
    return atomic_load_explicit(waiters, memory_order_relaxed) ? w : 0;
}

/* With the mutex held: sleep on seq until it changes, the deadline passes,
 * or RECHECK_NS has gone by, then take the mutex back (by lock_dl). 0 with
 * the mutex held: the caller looks again. An error: the mutex is not held. */
static int q_sleep(mproc_queue *q, _Atomic uint32_t *seq,
                   _Atomic uint32_t *waiters, uint64_t deadline,
                   uint64_t lock_dl, unsigned *wake) {
    uint32_t old = atomic_load_explicit(seq, memory_order_relaxed);
    atomic_fetch_add_explicit(waiters, 1, memory_order_relaxed);
    q_unlock(q, *wake);
    *wake = 0;
    uint64_t until = mproc__now_ns() + RECHECK_NS;
    (void)mproc__futex_wait(seq, old, MPROC_MIN(deadline, until));
    atomic_fetch_sub_explicit(waiters, 1, memory_order_relaxed);
    int err = q_lock(q, lock_dl, wake);
    if (err) {
        /* We may have taken a wake-up meant for the next in line: pass it
         * on. A spurious wake-up costs nothing. */
        bump(seq);
        mproc__futex_wake(seq, 1);
        q_wake(q->st, *wake);
    }
    return err;
}

/* With the mutex held: let it go and watch seq without it, until seq
 * changes or the spin budget s (started on first use) is spent, then take
 * the mutex back (by lock_dl). The caller looks again, and sleeps once
 * s.spent. Same results as q_sleep. */
static int q_spin(mproc_queue *q, _Atomic uint32_t *seq, mproc__spin *s,
                  uint64_t deadline, uint64_t lock_dl, unsigned *wake) {
    uint32_t old = atomic_load_explicit(seq, memory_order_relaxed);
    q_unlock(q, *wake);
    *wake = 0;
    if (!s->started)
        mproc__spin_start(s, WAIT_SPIN_NS, deadline);
    while (atomic_load_explicit(seq, memory_order_relaxed) == old &&
           mproc__spin_pause(s, 1))
        ;
    return q_lock(q, lock_dl, wake);
}

/* With the mutex held and nothing to do yet: wait for seq to change,
 * spinning while the budget s lasts, then sleeping. 0: the mutex is held
 * again, look again. 1: the deadline has passed (the mutex is still held).
 * An error: the mutex is not held. */
static int q_wait(mproc_queue *q, _Atomic uint32_t *seq,
                  _Atomic uint32_t *waiters, mproc__spin *s, uint64_t deadline,
                  uint64_t lock_dl, unsigned *wake) {
    if (mproc__now_ns() >= deadline)
        return 1;
    if (!s->spent)
        return q_spin(q, seq, s, deadline, lock_dl, wake);
    return q_sleep(q, seq, waiters, deadline, lock_dl, wake);
}

/* The mutex is held only while one message is copied, so waiting for it is
 * not waiting for the queue: a poll (timeout 0) takes it without a limit.
 * Timed calls bound it by their deadline, so that a holder that is stopped
 * (SIGSTOP) cannot keep them past it. */
static uint64_t lock_deadline(long timeout_ms, uint64_t deadline) {
    return timeout_ms == 0 ? UINT64_MAX : deadline;
}

/* ---- the ring ------------------------------------------------------------ */

typedef struct qpos {
    uint64_t head, tail, count, unfinished;
} qpos;

/* Read the positions once, under the mutex, and check them: shared memory
 * may have been scribbled on. */
static int load_pos(const mproc_queue *q, qpos *p) {
    const qstate *st = q->st;
    p->head = atomic_load_explicit(&st->head, memory_order_relaxed);
    p->tail = atomic_load_explicit(&st->tail, memory_order_relaxed);
    p->count = atomic_load_explicit(&st->count, memory_order_relaxed);
    p->unfinished = atomic_load_explicit(&st->unfinished, memory_order_relaxed);
    uint64_t used = p->tail - p->head;
    if ((p->head | p->tail) % 8 || p->tail < p->head || used > q->ring_size ||
        p->count > used / REC_HDR || (p->count == 0) != (used == 0))
        return MPROC_EPROTO;
    return 0;
}

static void ring_write(mproc_queue *q, uint64_t pos, const void *src,
                       size_t n) {
    if (n == 0)
        return; /* src may be NULL, which memcpy does not allow */
    size_t off = (size_t)(pos % q->ring_size);
    size_t first = MPROC_MIN(n, (size_t)q->ring_size - off);
    memcpy(q->ring + off, src, first);
    if (n > first)
        memcpy(q->ring, (const unsigned char *)src + first, n - first);
}

static void ring_read(const mproc_queue *q, uint64_t pos, void *dst, size_t n) {
    if (n == 0)
        return;
    size_t off = (size_t)(pos % q->ring_size);
    size_t first = MPROC_MIN(n, (size_t)q->ring_size - off);
    memcpy(dst, q->ring + off, first);
    if (n > first)
        memcpy((unsigned char *)dst + first, q->ring, n - first);
}

/* The header of the record at head, checked against the used bytes. */
static int peek(const mproc_queue *q, const qpos *p, uint32_t *len) {
    uint32_t hdr[2];
    ring_read(q, p->head, hdr, sizeof hdr);
    uint64_t need = rec_bytes(hdr[0]);
    uint64_t used = p->tail - p->head;
    if (hdr[1] != rec_check(hdr[0], p->head) || need > used ||
        (p->count == 1 && need != used))
        return MPROC_EPROTO;
    *len = hdr[0];
    return 0;
}

/* ---- create, attach, free -------------------------------------------------
 */

/* Point the handle at its state and check what it can: the magic and the
 * ring size against the segment's size. */
static int bind(mproc_queue *q) {
    if (q->obj.size < RING_OFF + 8)
        return MPROC_EPROTO;
    qstate *st = (qstate *)((char *)q->obj.base + STATE_OFF);
    uint64_t ring = q->obj.size - RING_OFF;
    if (st->magic != QUEUE_MAGIC || st->ring_size != ring || ring % 8 ||
        st->joinable > 1)
        return MPROC_EPROTO;
    q->st = st;
    q->ring = (unsigned char *)q->obj.base + RING_OFF;
    q->ring_size = ring;
    q->maxsize = st->maxsize;
    q->joinable = (int)st->joinable;
    return 0;
}

int mproc_queue_create(mproc_queue **out, const mproc_queue_opts *opts) {
    if (!out)
        return MPROC_EINVAL;
    *out = NULL;
    mproc_queue_opts o = {0};
    if (opts)
        o = *opts;
    uint64_t ring = o.buffer_bytes ? (uint64_t)o.buffer_bytes : DEFAULT_RING;
    size_t total;
    if (__builtin_add_overflow(ring, 7, &ring))
        return MPROC_EOVERFLOW;
    ring &= ~(uint64_t)7;
    if (ring > MAX_RING)
        return MPROC_EINVAL;
    if (__builtin_add_overflow(ring, RING_OFF, &total))
        return MPROC_EOVERFLOW;

    mproc_queue *q = calloc(1, sizeof *q);
    if (!q)
        return MPROC_ENOMEM;
    int err = mproc__obj_create(&q->obj, MPROC__K_QUEUE, total);
    if (err)
        goto out_free;
    qstate *st = (qstate *)((char *)q->obj.base + STATE_OFF);
    err = mproc__rmutex_init(&st->mu);
    if (err)
        goto out_release;
    st->ring_size = ring;
    st->maxsize = o.maxsize;
    st->joinable = o.joinable != 0;
    st->magic = QUEUE_MAGIC;
    err = bind(q);
    if (err)
        goto out_release;
    *out = q;
    return 0;

out_release:
    mproc__obj_release(&q->obj);
out_free:
    free(q);
    return err;
}

int mproc_queue_attach(mproc_queue **out, const mproc_ref *ref) {
    if (!out)
        return MPROC_EINVAL;
    *out = NULL;
    mproc_queue *q = calloc(1, sizeof *q);
    if (!q)
        return MPROC_ENOMEM;
    int err = mproc__obj_attach(&q->obj, ref, MPROC__K_QUEUE, RING_OFF + 8);
    if (err)
        goto out_free;
    err = bind(q);
    if (err)
        goto out_release;
    /* Only what holds at every instant can be checked without the mutex
     * (which a stopped process could hold for ever); every operation checks
     * the rest under it. */
    uint64_t head = atomic_load_explicit(&q->st->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&q->st->tail, memory_order_relaxed);
    if ((head | tail) % 8) {
        err = MPROC_EPROTO;
        goto out_release;
    }
    *out = q;
    return 0;

out_release:
    mproc__obj_release(&q->obj);
out_free:
    free(q);
    return err;
}

void mproc_queue_free(mproc_queue *q) {
    if (!mproc__obj_ok(q, MPROC__K_QUEUE))
        return;
    mproc__obj_release(&q->obj);
    free(q);
}

/* ---- put and get ----------------------------------------------------------
 */

int mproc_queue_put(mproc_queue *q, const void *data, size_t len,
                    long timeout_ms) {
    if (!mproc__obj_ok(q, MPROC__K_QUEUE) || (!data && len > 0))
        return MPROC_EINVAL;
    if (len > UINT32_MAX || rec_bytes(len) > q->ring_size)
        return MPROC_ETOOBIG;
    qstate *st = q->st;
    uint64_t need = rec_bytes(len);
    uint64_t deadline = mproc__deadline(timeout_ms);
    uint64_t lock_dl = lock_deadline(timeout_ms, deadline);
    unsigned wake = 0;
    mproc__spin wait = {0};
    int err = q_lock(q, lock_dl, &wake);
    if (err)
        return err;
    for (;;) {
        qpos p;
        err = load_pos(q, &p);
        if (err)
            break;
        if (atomic_load_explicit(&st->closed, memory_order_relaxed)) {
            err = MPROC_ECLOSED;
            break;
        }
        if (q->ring_size - (p.tail - p.head) >= need &&
            (q->maxsize == 0 || p.count < q->maxsize)) {
            uint32_t hdr[2] = {(uint32_t)len, rec_check((uint32_t)len, p.tail)};
            ring_write(q, p.tail, hdr, sizeof hdr);
            ring_write(q, p.tail + REC_HDR, data, len);
            commit(st, p.head, p.tail + need, p.count + 1,
                   p.unfinished + (q->joinable ? 1 : 0));
            wake |= note(&st->put_seq, &st->put_waiters, W_CONSUMER);
            break;
        }
        err = q_wait(q, &st->get_seq, &st->get_waiters, &wait, deadline,
                     lock_dl, &wake);
        if (err == 1) {
            err = MPROC_ETIMEDOUT;
            break;
        }
        if (err)
            return err;
    }
    q_unlock(q, wake);
    return err;
}

/* The body of get and get_into: into a new buffer (*data) when data is not
 * NULL, else into buf, of cap bytes (buf may be NULL when cap is 0). */
static int take(mproc_queue *q, void **data, void *buf, size_t cap, size_t *len,
                long timeout_ms) {
    qstate *st = q->st;
    uint64_t deadline = mproc__deadline(timeout_ms);
    uint64_t lock_dl = lock_deadline(timeout_ms, deadline);
    unsigned wake = 0;
    mproc__spin wait = {0};
    int err = q_lock(q, lock_dl, &wake);
    if (err)
        return err;
    for (;;) {
        qpos p;
        uint32_t n;
        err = load_pos(q, &p);
        if (err)
            break;
        if (p.count > 0) {
            err = peek(q, &p, &n);
            if (err)
                break;
            if (data) {
                /* Allocate under the mutex: the length is only known here,
                 * and the message must not move in between. */
                buf = malloc(n ? n : 1);
                if (!buf) {
                    err = MPROC_ENOMEM;
                    break;
                }
            } else if (n > cap) {
                *len = n;
                err = MPROC_EMSGSIZE;
                break;
            }
            ring_read(q, p.head + REC_HDR, buf, n);
            commit(st, p.head + rec_bytes(n), p.tail, p.count - 1,
                   p.unfinished);
            wake |= note(&st->get_seq, &st->get_waiters, W_PRODUCERS);
            if (data)
                *data = buf;
            *len = n;
            break;
        }
        if (atomic_load_explicit(&st->closed, memory_order_relaxed)) {
            err = MPROC_EOF;
            break;
        }
        err = q_wait(q, &st->put_seq, &st->put_waiters, &wait, deadline,
                     lock_dl, &wake);
        if (err == 1) {
            err = MPROC_ETIMEDOUT;
            break;
        }
        if (err)
            return err;
    }
    /* A put wakes one consumer. If messages are left (several puts, or we
     * did not take one) and others sleep, wake the next. */
    if (atomic_load_explicit(&st->count, memory_order_relaxed) > 0)
        wake |= note(&st->put_seq, &st->put_waiters, W_CONSUMER);
    q_unlock(q, wake);
    return err;
}

int mproc_queue_get(mproc_queue *q, void **data, size_t *len, long timeout_ms) {
    if (data)
        *data = NULL;
    if (len)
        *len = 0;
    if (!mproc__obj_ok(q, MPROC__K_QUEUE) || !data || !len)
        return MPROC_EINVAL;
    return take(q, data, NULL, 0, len, timeout_ms);
}

int mproc_queue_get_into(mproc_queue *q, void *buf, size_t cap, size_t *len,
                         long timeout_ms) {
    size_t ignored;
    if (!len)
        len = &ignored; /* a reader of fixed-size messages may not care */
    *len = 0;
    if (!mproc__obj_ok(q, MPROC__K_QUEUE) || (!buf && cap > 0))
        return MPROC_EINVAL;
    return take(q, NULL, buf, cap, len, timeout_ms);
}

/* ---- close, sizes, JoinableQueue ------------------------------------------
 */

int mproc_queue_close(mproc_queue *q) {
    if (!mproc__obj_ok(q, MPROC__K_QUEUE))
        return MPROC_EINVAL;
    qstate *st = q->st;
    unsigned wake = 0;
    int err = q_lock(q, UINT64_MAX, &wake);
    if (err)
        return err;
    atomic_store_explicit(&st->closed, 1, memory_order_relaxed);
    wake |= note(&st->put_seq, &st->put_waiters, W_CONSUMERS);
    wake |= note(&st->get_seq, &st->get_waiters, W_PRODUCERS);
    q_unlock(q, wake);
    return 0;
}

size_t mproc_queue_qsize(mproc_queue *q) {
    if (!mproc__obj_ok(q, MPROC__K_QUEUE))
        return 0;
    uint64_t n = atomic_load_explicit(&q->st->count, memory_order_relaxed);
    /* At most one message per 8 bytes; a larger count is a stray write. */
    return (size_t)MPROC_MIN(n, q->ring_size / REC_HDR);
}

int mproc_queue_empty(mproc_queue *q) {
    if (!mproc__obj_ok(q, MPROC__K_QUEUE))
        return MPROC_EINVAL;
    return atomic_load_explicit(&q->st->count, memory_order_relaxed) == 0;
}

int mproc_queue_full(mproc_queue *q) {
    if (!mproc__obj_ok(q, MPROC__K_QUEUE))
        return MPROC_EINVAL;
    const qstate *st = q->st;
    /* head first: tail only grows, so the difference is never negative. */
    uint64_t head = atomic_load_explicit(&st->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&st->tail, memory_order_acquire);
    uint64_t count = atomic_load_explicit(&st->count, memory_order_relaxed);
    uint64_t used = tail >= head ? tail - head : 0;
    if (q->maxsize && count >= q->maxsize)
        return 1;
    /* Full when not even an empty message fits. */
    return used >= q->ring_size || q->ring_size - used < REC_HDR;
}

int mproc_queue_task_done(mproc_queue *q) {
    if (!mproc__obj_ok(q, MPROC__K_QUEUE) || !q->joinable)
        return MPROC_EINVAL;
    qstate *st = q->st;
    unsigned wake = 0;
    qpos p;
    int err = q_lock(q, UINT64_MAX, &wake);
    if (err)
        return err;
    err = load_pos(q, &p);
    if (!err && p.unfinished == 0)
        err = MPROC_ESTATE;
    if (!err) {
        commit(st, p.head, p.tail, p.count, p.unfinished - 1);
        if (p.unfinished == 1)
            wake |= note(&st->done_seq, &st->join_waiters, W_JOINERS);
    }
    q_unlock(q, wake);
    return err;
}

int mproc_queue_join(mproc_queue *q, long timeout_ms) {
    if (!mproc__obj_ok(q, MPROC__K_QUEUE) || !q->joinable)
        return MPROC_EINVAL;
    qstate *st = q->st;
    uint64_t deadline = mproc__deadline(timeout_ms);
    uint64_t lock_dl = lock_deadline(timeout_ms, deadline);
    unsigned wake = 0;
    mproc__spin wait = {0};
    int err = q_lock(q, lock_dl, &wake);
    if (err)
        return err;
    for (;;) {
        qpos p;
        err = load_pos(q, &p);
        if (err || p.unfinished == 0)
            break;
        err = q_wait(q, &st->done_seq, &st->join_waiters, &wait, deadline,
                     lock_dl, &wake);
        if (err == 1) {
            err = MPROC_ETIMEDOUT;
            break;
        }
        if (err)
            return err;
    }
    q_unlock(q, wake);
    return err;
}
