/* SPDX-License-Identifier: MIT */
/*
 * Lock state shared between sync.c (Lock, RLock, Condition) and shared.c
 * (the built-in lock of a Value or Array).
 */
#ifndef MPROC_SYNC_H
#define MPROC_SYNC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "shm.h"

/* In shared memory. The mutex is robust and error-checking; recursion for
 * an RLock is counted here rather than by the mutex, so that a Condition
 * can release every level with one unlock. owner and depth are written
 * only by the holder. */
typedef struct mproc__lockstate {
    pthread_mutex_t m;
    _Atomic int32_t owner; /* tid of the holder, 0 when free */
    int32_t depth;
    uint32_t recursive;
    uint32_t pad_;
} mproc__lockstate;

struct mproc_lock {
    mproc__obj obj; /* zeroed (no magic) for a lock borrowed from a value */
    mproc__lockstate *s;
};

int mproc__lockstate_init(mproc__lockstate *s, int recursive);
/* Set up a lock handle on state that lives in another object's segment. */
void mproc__lock_borrow(struct mproc_lock *l, mproc__lockstate *s);

#endif
