/* SPDX-License-Identifier: MIT */
/*
 * Futex and robust-mutex helpers (see futex.h).
 */
#include "futex.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int mproc__futex_wait(_Atomic uint32_t *w, uint32_t val, uint64_t deadline) {
    struct timespec ts, *tp = NULL;
    if (deadline != UINT64_MAX) {
        if (mproc__now_ns() >= deadline)
            return MPROC_ETIMEDOUT;
        ts = mproc__ts_from_ns(deadline);
        tp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a
     * retry after EINTR needs no recomputation. */
    long r = syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_BITSET, val, tp, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    if (r < 0 && errno == ETIMEDOUT)
        return MPROC_ETIMEDOUT;
    return 0; /* woken, EAGAIN (value changed) or EINTR: the caller loops */
}

void mproc__futex_wake(_Atomic uint32_t *w, int n) {
    (void)syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, n, NULL, NULL, 0);
}

int mproc__rmutex_init(pthread_mutex_t *m) {
    pthread_mutexattr_t a;
    int r = pthread_mutexattr_init(&a);
    if (r)
        return -r;
    r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!r)
        r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!r)
        r = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    if (!r)
        r = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return -r;
}

int mproc__rmutex_lock(pthread_mutex_t *m, uint64_t deadline) {
    int r = pthread_mutex_trylock(m);
    if (r == EBUSY && deadline != 0) {
        if (deadline == UINT64_MAX) {
            r = pthread_mutex_lock(m);
        } else {
            struct timespec ts = mproc__ts_from_ns(deadline);
            r = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
        }
    }
    switch (r) {
    case 0:
        return 0;
    case EOWNERDEAD:
        /* The holder died: the lock is ours. Keep it usable; the caller
         * reports that the data it protects may be half-updated. */
        (void)pthread_mutex_consistent(m);
        return MPROC_EOWNERDEAD;
    case EBUSY:
    case ETIMEDOUT:
        return MPROC_ETIMEDOUT;
    case EDEADLK:
        return MPROC_EDEADLK;
    case ENOTRECOVERABLE:
        return MPROC_ENOTRECOVERABLE;
    default:
        return -r;
    }
}

void mproc__rmutex_unlock(pthread_mutex_t *m) {
    (void)pthread_mutex_unlock(m);
}
