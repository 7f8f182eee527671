/* SPDX-License-Identifier: MIT */
/*
 * Waiting in shared memory: raw futexes for ownerless signals (counters,
 * flags, generations) and glibc robust mutexes for ownership, so that a
 * holder that dies is noticed (RELIABILITY.md section 2). Futexes here are
 * never FUTEX_PRIVATE: the words live in mappings shared between processes.
 */
#ifndef MPROC_FUTEX_H
#define MPROC_FUTEX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* Sleep while *w == val, until woken or the deadline (mproc__now_ns clock;
 * UINT64_MAX: none). 0 when woken, when *w != val, or on a spurious wake;
 * MPROC_ETIMEDOUT once the deadline has passed. Callers loop. */
int mproc__futex_wait(_Atomic uint32_t *w, uint32_t val, uint64_t deadline);
/* Wake up to n sleepers on w (INT32_MAX: all). */
void mproc__futex_wake(_Atomic uint32_t *w, int n);

/* A process-shared, robust, error-checking mutex, in shared memory. */
int mproc__rmutex_init(pthread_mutex_t *m);
/* Lock by the deadline (0: try once). 0; MPROC_EOWNERDEAD: locked, and the
 * previous holder died holding it (already made consistent again);
 * MPROC_ETIMEDOUT; MPROC_EDEADLK when the caller holds it already;
 * MPROC_ENOTRECOVERABLE. */
int mproc__rmutex_lock(pthread_mutex_t *m, uint64_t deadline);
void mproc__rmutex_unlock(pthread_mutex_t *m);

#endif
