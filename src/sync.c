/* SPDX-License-Identifier: MIT */
/*
 * Process-shared synchronisation: Lock, RLock, Semaphore, BoundedSemaphore,
 * Condition, Event, Barrier. Each lives in a shared segment of its own (see
 * shm.h) and can be used by any process that holds a handle to it.
 *
 * What owns something is built on a robust mutex, so the death of a holder
 * is noticed: Lock and RLock, a Condition's lock, the Barrier's state. What
 * only signals is built on raw futex words, with waiter counts so that a
 * wake costs a system call only when someone sleeps: Semaphore, Event, the
 * Condition's wake-ups, the Barrier's generation. A waiter that dies while
 * asleep leaves a waiter count one too high, which costs at most a useless
 * wake-up later. Every wait takes a deadline, so a dead peer never blocks
 * anyone for ever unless they asked to wait for ever.
 *
 * pthread condition variables are deliberately not used: glibc's
 * pthread_cond_destroy() hangs after a waiter was killed inside
 * pthread_cond_wait (RELIABILITY.md, section 2).
 */
#include "sync.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "futex.h"
#include "internal.h"

#define STATE(h) mproc__obj_state(&(h)->obj)

static int32_t self_tid(void) {
    return (int32_t)gettid();
}

/* ---- Lock and RLock ------------------------------------------------------ */

int mproc__lockstate_init(mproc__lockstate *s, int recursive) {
    atomic_store(&s->owner, 0);
    s->depth = 0;
    s->recursive = recursive ? 1 : 0;
    return mproc__rmutex_init(&s->m);
}

void mproc__lock_borrow(struct mproc_lock *l, mproc__lockstate *s) {
    memset(l, 0, sizeof *l);
    l->obj.fd = -1;
    l->s = s;
}

static int lock_ok(const mproc_lock *l) {
    return l && l->s && (l->obj.magic == 0 || l->obj.magic == MPROC__OBJ_MAGIC);
}

static int lock_take(mproc__lockstate *s, uint64_t deadline) {
    int32_t me = self_tid();
    if (atomic_load_explicit(&s->owner, memory_order_relaxed) == me) {
        /* Ours, unless a dead holder had the same tid: the mutex knows. */
        int r = mproc__rmutex_lock(&s->m, 0);
        if (r == MPROC_EDEADLK) {
            if (!s->recursive)
                return MPROC_EDEADLK;
            if (s->depth == INT32_MAX)
                return MPROC_EOVERFLOW;
            s->depth++;
            return 0;
        }
        if (r == 0 || r == MPROC_EOWNERDEAD) {
            atomic_store_explicit(&s->owner, me, memory_order_relaxed);
            s->depth = 1;
        }
        if (r != MPROC_ETIMEDOUT)
            return r;
    }
    int r = mproc__rmutex_lock(&s->m, deadline);
    if (r == 0 || r == MPROC_EOWNERDEAD) {
        atomic_store_explicit(&s->owner, me, memory_order_relaxed);
        s->depth = 1;
    }
    return r;
}

static int lock_give(mproc__lockstate *s) {
    if (atomic_load_explicit(&s->owner, memory_order_relaxed) != self_tid() ||
        s->depth <= 0)
        return MPROC_EPERM;
    if (--s->depth > 0)
        return 0;
    atomic_store_explicit(&s->owner, 0, memory_order_relaxed);
    int r = pthread_mutex_unlock(&s->m);
    return r ? -r : 0;
}

static int lock_new(mproc_lock **out, int recursive) {
    if (!out)
        return MPROC_EINVAL;
    int err;
    mproc_lock *l = mproc__handle_new(sizeof *l, MPROC__K_LOCK,
                                      sizeof(mproc__lockstate), &err);
    if (!l) {
        *out = NULL;
        return err;
    }
    l->s = STATE(l);
    err = mproc__lockstate_init(l->s, recursive);
    if (err) {
        mproc__handle_free(l);
        l = NULL;
    }
    *out = l;
    return err;
}

int mproc_lock_create(mproc_lock **out) {
    return lock_new(out, 0);
}

int mproc_rlock_create(mproc_lock **out) {
    return lock_new(out, 1);
}

int mproc_lock_attach(mproc_lock **out, const mproc_ref *ref) {
    if (!out)
        return MPROC_EINVAL;
    int err;
    mproc_lock *l = mproc__handle_attach(sizeof *l, ref, MPROC__K_LOCK,
                                         sizeof(mproc__lockstate), &err);
    if (l) {
        l->s = STATE(l);
        if (l->s->recursive > 1) {
            mproc__handle_free(l);
            l = NULL;
            err = MPROC_EPROTO;
        }
    }
    *out = l;
    return err;
}

int mproc_lock_acquire(mproc_lock *l, long timeout_ms) {
    if (!lock_ok(l))
        return MPROC_EINVAL;
    return lock_take(l->s, mproc__deadline(timeout_ms));
}

int mproc_lock_release(mproc_lock *l) {
    if (!lock_ok(l))
        return MPROC_EINVAL;
    return lock_give(l->s);
}

int mproc_lock_held(mproc_lock *l) {
    if (!lock_ok(l))
        return 0;
    return atomic_load_explicit(&l->s->owner, memory_order_relaxed) ==
               self_tid() &&
           l->s->depth > 0;
}

void mproc_lock_free(mproc_lock *l) {
    if (l && l->obj.magic == MPROC__OBJ_MAGIC)
        mproc__handle_free(l);
}

/* ---- Semaphore ------------------------------------------------------------
 */

typedef struct semstate {
    _Atomic uint32_t value;
    _Atomic uint32_t waiters;
    uint32_t bound; /* BoundedSemaphore: the initial value */
    uint32_t bounded;
} semstate;

struct mproc_sem {
    mproc__obj obj;
    semstate *s;
};

static int sem_new(mproc_sem **out, unsigned value, int bounded) {
    if (!out)
        return MPROC_EINVAL;
    *out = NULL;
    if (value > INT32_MAX)
        return MPROC_EINVAL;
    int err;
    mproc_sem *s =
        mproc__handle_new(sizeof *s, MPROC__K_SEM, sizeof(semstate), &err);
    if (!s)
        return err;
    s->s = STATE(s);
    atomic_store(&s->s->value, value);
    s->s->bound = value;
    s->s->bounded = bounded ? 1 : 0;
    *out = s;
    return 0;
}

int mproc_sem_create(mproc_sem **out, unsigned value) {
    return sem_new(out, value, 0);
}

int mproc_bsem_create(mproc_sem **out, unsigned value) {
    return sem_new(out, value, 1);
}

int mproc_sem_attach(mproc_sem **out, const mproc_ref *ref) {
    if (!out)
        return MPROC_EINVAL;
    int err;
    mproc_sem *s = mproc__handle_attach(sizeof *s, ref, MPROC__K_SEM,
                                        sizeof(semstate), &err);
    if (s) {
        s->s = STATE(s);
        if (s->s->bounded > 1 || s->s->bound > INT32_MAX) {
            mproc__handle_free(s);
            s = NULL;
            err = MPROC_EPROTO;
        }
    }
    *out = s;
    return err;
}

int mproc_sem_acquire(mproc_sem *sem, long timeout_ms) {
    if (!mproc__obj_ok(sem, MPROC__K_SEM))
        return MPROC_EINVAL;
    semstate *s = sem->s;
    uint64_t deadline = mproc__deadline(timeout_ms);
    for (;;) {
        uint32_t v = atomic_load(&s->value);
        while (v > 0) {
            if (atomic_compare_exchange_weak(&s->value, &v, v - 1))
                return 0;
        }
        if (timeout_ms == 0) /* a poll: do not sleep at all */
            return MPROC_ETIMEDOUT;
        /* Announce ourselves before sleeping; release() bumps the value
         * before it reads the count, so one of us sees the other. */
        atomic_fetch_add(&s->waiters, 1);
        int r = mproc__futex_wait(&s->value, 0, deadline);
        atomic_fetch_sub(&s->waiters, 1);
        if (r == MPROC_ETIMEDOUT) {
            /* One last try: a release may have come with the deadline. */
            v = atomic_load(&s->value);
            while (v > 0) {
                if (atomic_compare_exchange_weak(&s->value, &v, v - 1))
                    return 0;
            }
            return MPROC_ETIMEDOUT;
        }
    }
}

int mproc_sem_release(mproc_sem *sem) {
    if (!mproc__obj_ok(sem, MPROC__K_SEM))
        return MPROC_EINVAL;
    semstate *s = sem->s;
    uint32_t v = atomic_load(&s->value);
    do {
        if (s->bounded && v >= s->bound)
            return MPROC_ESTATE;
        if (v >= INT32_MAX)
            return MPROC_EOVERFLOW;
    } while (!atomic_compare_exchange_weak(&s->value, &v, v + 1));
    if (atomic_load(&s->waiters) > 0)
        mproc__futex_wake(&s->value, 1);
    return 0;
}

int mproc_sem_value(mproc_sem *sem) {
    if (!mproc__obj_ok(sem, MPROC__K_SEM))
        return MPROC_EINVAL;
    return (int)atomic_load(&sem->s->value);
}

void mproc_sem_free(mproc_sem *sem) {
    if (mproc__obj_ok(sem, MPROC__K_SEM))
        mproc__handle_free(sem);
}

/* ---- Condition -------------------------------------------------------------
 * Waiters sleep on a sequence number that every notify bumps. A waiter
 * reads it while holding the lock, so a notify that follows (it also needs
 * the lock) changes it and the sleep cannot miss it. */

typedef struct condstate {
    mproc_ref lock; /* the condition's lock, a standalone Lock or RLock */
    _Atomic uint32_t seq;
    _Atomic uint32_t waiters;
} condstate;

struct mproc_cond {
    mproc__obj obj;
    condstate *s;
    mproc_lock *lock; /* our own handle to the lock */
};

int mproc_cond_create(mproc_cond **out, mproc_lock *lock) {
    if (!out)
        return MPROC_EINVAL;
    *out = NULL;
    if (lock && !mproc__obj_ok(lock, MPROC__K_LOCK))
        return MPROC_EINVAL; /* a value's lock cannot be referenced */
    int err;
    mproc_cond *c =
        mproc__handle_new(sizeof *c, MPROC__K_COND, sizeof(condstate), &err);
    if (!c)
        return err;
    c->s = STATE(c);
    if (lock) {
        /* The condition gets its own handle to the same lock, so that the
         * caller may free theirs. */
        mproc_ref r;
        err = mproc_ref_of(lock, &r);
        if (!err)
            err = mproc_lock_attach(&c->lock, &r);
    } else {
        err = mproc_rlock_create(&c->lock);
    }
    if (!err)
        err = mproc_ref_of(c->lock, &c->s->lock);
    if (err) {
        mproc_cond_free(c);
        return err;
    }
    *out = c;
    return 0;
}

int mproc_cond_attach(mproc_cond **out, const mproc_ref *ref) {
    if (!out)
        return MPROC_EINVAL;
    int err;
    mproc_cond *c = mproc__handle_attach(sizeof *c, ref, MPROC__K_COND,
                                         sizeof(condstate), &err);
    if (c) {
        c->s = STATE(c);
        mproc_ref r = c->s->lock; /* copy: the segment is shared */
        err = mproc_lock_attach(&c->lock, &r);
        if (err) {
            mproc_cond_free(c);
            c = NULL;
        }
    }
    *out = c;
    return err;
}

mproc_lock *mproc_cond_lock(mproc_cond *c) {
    return mproc__obj_ok(c, MPROC__K_COND) ? c->lock : NULL;
}

static int cond_wait_dl(mproc_cond *c, uint64_t deadline) {
    mproc__lockstate *ls = c->lock->s;
    if (!mproc_lock_held(c->lock))
        return MPROC_EPERM;
    uint32_t seq = atomic_load(&c->s->seq);
    atomic_fetch_add(&c->s->waiters, 1);
    /* Release every level at once; recursion is counted outside the
     * mutex (sync.h), so one unlock does it. */
    int32_t depth = ls->depth;
    ls->depth = 0;
    atomic_store_explicit(&ls->owner, 0, memory_order_relaxed);
    pthread_mutex_unlock(&ls->m);
    int r = mproc__futex_wait(&c->s->seq, seq, deadline);
    atomic_fetch_sub(&c->s->waiters, 1);
    /* Python takes the lock back without a timeout, and so do we. */
    int lr = mproc__rmutex_lock(&ls->m, UINT64_MAX);
    if (lr != 0 && lr != MPROC_EOWNERDEAD)
        return lr;
    atomic_store_explicit(&ls->owner, self_tid(), memory_order_relaxed);
    ls->depth = depth;
    return lr ? lr : r;
}

int mproc_cond_wait(mproc_cond *c, long timeout_ms) {
    if (!mproc__obj_ok(c, MPROC__K_COND))
        return MPROC_EINVAL;
    return cond_wait_dl(c, mproc__deadline(timeout_ms));
}

int mproc_cond_wait_for(mproc_cond *c, mproc_pred_fn pred, void *arg,
                        long timeout_ms) {
    if (!mproc__obj_ok(c, MPROC__K_COND) || !pred)
        return MPROC_EINVAL;
    if (!mproc_lock_held(c->lock))
        return MPROC_EPERM;
    uint64_t deadline = mproc__deadline(timeout_ms);
    for (;;) {
        if (pred(arg))
            return 0;
        if (deadline != UINT64_MAX && mproc__now_ns() >= deadline)
            return MPROC_ETIMEDOUT;
        int r = cond_wait_dl(c, deadline);
        if (r != 0 && r != MPROC_ETIMEDOUT)
            return r;
    }
}

int mproc_cond_notify(mproc_cond *c, int n) {
    if (!mproc__obj_ok(c, MPROC__K_COND) || n < 0)
        return MPROC_EINVAL;
    if (!mproc_lock_held(c->lock))
        return MPROC_EPERM;
    if (n > 0 && atomic_load(&c->s->waiters) > 0) {
        atomic_fetch_add(&c->s->seq, 1);
        mproc__futex_wake(&c->s->seq, n);
    }
    return 0;
}

int mproc_cond_notify_all(mproc_cond *c) {
    return mproc_cond_notify(c, INT32_MAX);
}

void mproc_cond_free(mproc_cond *c) {
    if (!mproc__obj_ok(c, MPROC__K_COND))
        return;
    mproc_lock_free(c->lock);
    mproc__handle_free(c);
}

/* ---- Event -----------------------------------------------------------------
 * One word: bit 0 is the flag, the bits above count the sets. A waiter that
 * sees the count move was woken by a set, even if a clear came right after
 * (Python's wait returns True then too). */

typedef struct eventstate {
    _Atomic uint32_t word;
    _Atomic uint32_t waiters;
} eventstate;

struct mproc_event {
    mproc__obj obj;
    eventstate *s;
};

int mproc_event_create(mproc_event **out) {
    if (!out)
        return MPROC_EINVAL;
    int err;
    mproc_event *e =
        mproc__handle_new(sizeof *e, MPROC__K_EVENT, sizeof(eventstate), &err);
    if (e)
        e->s = STATE(e);
    *out = e;
    return e ? 0 : err;
}

int mproc_event_attach(mproc_event **out, const mproc_ref *ref) {
    if (!out)
        return MPROC_EINVAL;
    int err;
    mproc_event *e = mproc__handle_attach(sizeof *e, ref, MPROC__K_EVENT,
                                          sizeof(eventstate), &err);
    if (e)
        e->s = STATE(e);
    *out = e;
    return e ? 0 : err;
}

int mproc_event_set(mproc_event *e) {
    if (!mproc__obj_ok(e, MPROC__K_EVENT))
        return MPROC_EINVAL;
    uint32_t w = atomic_load(&e->s->word);
    do {
        if (w & 1u)
            return 0;
    } while (!atomic_compare_exchange_weak(&e->s->word, &w, (w + 2u) | 1u));
    if (atomic_load(&e->s->waiters) > 0)
        mproc__futex_wake(&e->s->word, INT32_MAX);
    return 0;
}

int mproc_event_clear(mproc_event *e) {
    if (!mproc__obj_ok(e, MPROC__K_EVENT))
        return MPROC_EINVAL;
    atomic_fetch_and(&e->s->word, ~1u);
    return 0;
}

int mproc_event_is_set(mproc_event *e) {
    if (!mproc__obj_ok(e, MPROC__K_EVENT))
        return MPROC_EINVAL;
    return (int)(atomic_load(&e->s->word) & 1u);
}

int mproc_event_wait(mproc_event *e, long timeout_ms) {
    if (!mproc__obj_ok(e, MPROC__K_EVENT))
        return MPROC_EINVAL;
    uint32_t w = atomic_load(&e->s->word);
    if (w & 1u)
        return 0;
    uint64_t deadline = mproc__deadline(timeout_ms);
    if (timeout_ms == 0)
        return MPROC_ETIMEDOUT;
    atomic_fetch_add(&e->s->waiters, 1);
    int r;
    for (;;) {
        r = mproc__futex_wait(&e->s->word, w, deadline);
        uint32_t now = atomic_load(&e->s->word);
        if ((now & 1u) || (now >> 1) != (w >> 1)) {
            r = 0;
            break;
        }
        if (r == MPROC_ETIMEDOUT)
            break;
        w = now;
    }
    atomic_fetch_sub(&e->s->waiters, 1);
    return r;
}

void mproc_event_free(mproc_event *e) {
    if (mproc__obj_ok(e, MPROC__K_EVENT))
        mproc__handle_free(e);
}

/* ---- Barrier ---------------------------------------------------------------
 * A robust mutex guards the counts; waiters sleep on the generation, which
 * moves each time the barrier releases its waiters, whether it tripped or
 * broke. ok_bits remembers, for the last 64 generations, which tripped, so
 * a waiter that wakes late still learns how its own generation ended. */

typedef struct barrierstate {
    pthread_mutex_t m;
    uint32_t parties;
    uint32_t count;  /* waiting in the current generation */
    uint32_t broken; /* until a reset */
    _Atomic uint32_t gen;
    _Atomic uint32_t waiters;
    uint32_t pad_;
    _Atomic uint64_t ok_bits;
    uint64_t action; /* mproc_action_fn, 0 = none */
} barrierstate;

struct mproc_barrier {
    mproc__obj obj;
    barrierstate *s;
};

int mproc_barrier_create(mproc_barrier **out, unsigned parties,
                         mproc_action_fn action) {
    if (!out)
        return MPROC_EINVAL;
    *out = NULL;
    if (parties == 0 || parties > INT32_MAX)
        return MPROC_EINVAL;
    int err;
    mproc_barrier *b = mproc__handle_new(sizeof *b, MPROC__K_BARRIER,
                                         sizeof(barrierstate), &err);
    if (!b)
        return err;
    b->s = STATE(b);
    b->s->parties = parties;
    b->s->action = (uint64_t)(uintptr_t)action;
    err = mproc__rmutex_init(&b->s->m);
    if (err) {
        mproc__handle_free(b);
        return err;
    }
    *out = b;
    return 0;
}

int mproc_barrier_attach(mproc_barrier **out, const mproc_ref *ref) {
    if (!out)
        return MPROC_EINVAL;
    int err;
    mproc_barrier *b = mproc__handle_attach(sizeof *b, ref, MPROC__K_BARRIER,
                                            sizeof(barrierstate), &err);
    if (b) {
        b->s = STATE(b);
        if (b->s->parties == 0 || b->s->parties > INT32_MAX) {
            mproc__handle_free(b);
            b = NULL;
            err = MPROC_EPROTO;
        }
    }
    *out = b;
    return err;
}

/* Release the current generation's waiters, tripped (ok) or broken. With
 * the mutex held. */
static void barrier_release(barrierstate *s, int ok) {
    uint32_t g = atomic_load(&s->gen);
    if (ok)
        atomic_fetch_or(&s->ok_bits, 1ull << (g % 64));
    else
        atomic_fetch_and(&s->ok_bits, ~(1ull << (g % 64)));
    s->count = 0;
    atomic_store(&s->gen, g + 1);
    if (atomic_load(&s->waiters) > 0)
        mproc__futex_wake(&s->gen, INT32_MAX);
}

/* Take the mutex. A party that died holding it (inside the action, say)
 * leaves the counts in doubt: break the barrier. 0, or 1 when broken so. */
static int barrier_lock(barrierstate *s) {
    int r = mproc__rmutex_lock(&s->m, UINT64_MAX);
    if (r == MPROC_EOWNERDEAD) {
        s->broken = 1;
        barrier_release(s, 0);
        return 1;
    }
    return 0;
}

int mproc_barrier_wait(mproc_barrier *b, long timeout_ms) {
    if (!mproc__obj_ok(b, MPROC__K_BARRIER))
        return MPROC_EINVAL;
    barrierstate *s = b->s;
    uint64_t deadline = mproc__deadline(timeout_ms);
    barrier_lock(s);
    if (s->broken || s->count >= s->parties) {
        pthread_mutex_unlock(&s->m);
        return MPROC_EBROKEN;
    }
    uint32_t idx = s->count++;
    if (s->count == s->parties) {
        int ok = 1;
        if (s->action)
            ok = ((mproc_action_fn)(uintptr_t)s->action)() == 0;
        if (!ok)
            s->broken = 1;
        barrier_release(s, ok);
        pthread_mutex_unlock(&s->m);
        return ok ? (int)idx : MPROC_EBROKEN;
    }
    uint32_t g = atomic_load(&s->gen);
    atomic_fetch_add(&s->waiters, 1);
    pthread_mutex_unlock(&s->m);
    int r = 0;
    while (atomic_load(&s->gen) == g) {
        r = mproc__futex_wait(&s->gen, g, deadline);
        if (r == MPROC_ETIMEDOUT)
            break;
    }
    atomic_fetch_sub(&s->waiters, 1);
    if (r == MPROC_ETIMEDOUT) {
        barrier_lock(s);
        if (atomic_load(&s->gen) == g) {
            /* Still waiting: our timeout breaks it for everyone. */
            s->broken = 1;
            barrier_release(s, 0);
            pthread_mutex_unlock(&s->m);
            return MPROC_ETIMEDOUT;
        }
        pthread_mutex_unlock(&s->m); /* released just in time */
    }
    /* The bit of generation g is written before gen moves past g, and
     * rewritten only 64 generations later. */
    if ((atomic_load(&s->ok_bits) >> (g % 64)) & 1u)
        return (int)idx;
    return MPROC_EBROKEN;
}

int mproc_barrier_reset(mproc_barrier *b) {
    if (!mproc__obj_ok(b, MPROC__K_BARRIER))
        return MPROC_EINVAL;
    barrierstate *s = b->s;
    barrier_lock(s);
    if (s->count > 0)
        barrier_release(s, 0); /* current waiters: broken */
    s->broken = 0;
    pthread_mutex_unlock(&s->m);
    return 0;
}

int mproc_barrier_abort(mproc_barrier *b) {
    if (!mproc__obj_ok(b, MPROC__K_BARRIER))
        return MPROC_EINVAL;
    barrierstate *s = b->s;
    if (!barrier_lock(s)) {
        s->broken = 1;
        barrier_release(s, 0);
    }
    pthread_mutex_unlock(&s->m);
    return 0;
}

int mproc_barrier_broken(mproc_barrier *b) {
    if (!mproc__obj_ok(b, MPROC__K_BARRIER))
        return MPROC_EINVAL;
    barrierstate *s = b->s;
    barrier_lock(s);
    int r = s->broken ? 1 : 0;
    pthread_mutex_unlock(&s->m);
    return r;
}

int mproc_barrier_n_waiting(mproc_barrier *b) {
    if (!mproc__obj_ok(b, MPROC__K_BARRIER))
        return MPROC_EINVAL;
    barrierstate *s = b->s;
    barrier_lock(s);
    int r = (int)s->count;
    pthread_mutex_unlock(&s->m);
    return r;
}

int mproc_barrier_parties(mproc_barrier *b) {
    if (!mproc__obj_ok(b, MPROC__K_BARRIER))
        return MPROC_EINVAL;
    return (int)b->s->parties;
}

void mproc_barrier_free(mproc_barrier *b) {
    if (mproc__obj_ok(b, MPROC__K_BARRIER))
        mproc__handle_free(b);
}
