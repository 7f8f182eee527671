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

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MPROC_TSAN_BUILD 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define MPROC_TSAN_BUILD 1
#endif

/* Lock with a deadline on the monotonic clock. ThreadSanitizer before LLVM
 * 15 does not intercept pthread_mutex_clocklock, and then reports every
 * unlock of a mutex taken that way as an unlock of an unlocked mutex; its
 * builds use pthread_mutex_timedlock on the realtime clock instead (a
 * clock jump can stretch or cut that wait; only those builds are
 * affected). */
static int clocklock(pthread_mutex_t *m, uint64_t deadline) {
#ifdef MPROC_TSAN_BUILD
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t mono = mproc__now_ns();
    uint64_t left = deadline > mono ? deadline - mono : 0;
    uint64_t real =
        (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec + left;
    struct timespec ts = {.tv_sec = (time_t)(real / 1000000000ull),
                          .tv_nsec = (long)(real % 1000000000ull)};
    return pthread_mutex_timedlock(m, &ts);
#else
    struct timespec ts = mproc__ts_from_ns(deadline);
    return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
#endif
}

int mproc__rmutex_lock(pthread_mutex_t *m, uint64_t deadline) {
    int r = pthread_mutex_trylock(m);
    if (r == EBUSY && deadline != 0) {
        if (deadline == UINT64_MAX) {
            r = pthread_mutex_lock(m);
        } else {
            r = clocklock(m, deadline);
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
