/* SPDX-License-Identifier: MIT */
/*
 * Pool internals shared by pool.c (the executor: workers, dispatch, faults),
 * result.c (result handles) and iter.c (imap).
 *
 * Locking: one mutex per pool, pool->mu, guards the pool, its workers, its
 * queue and every result and iterator attached to it. pool->cond (on the
 * monotonic clock) is broadcast whenever an item gets its outcome or the
 * pool changes state. Callbacks are called with pool->mu released.
 */
#ifndef MPROC_POOL_H
#define MPROC_POOL_H

#include <pthread.h>

#include "helpers.h"
#include "internal.h"
#include "mbox.h"
#include "wire.h"

/* A run of consecutive items of one result, sent to a worker as one TASK.
 * It sits in the pool's queue or in one worker's in-flight list. */
typedef struct mproc__chunk {
    struct mproc__chunk *next;
    mproc_result *res;
    size_t first, n; /* items [first, first + n) of res */
    uint64_t id;     /* set when sent */
    uint64_t sent_ns;
    uint64_t ring_pos; /* where its record is in the worker's task ring */
} mproc__chunk;

/* Results completed during one pass, for callbacks (run on the result
 * thread only). */
typedef struct mproc__cbq {
    mproc_result **r; /* completed: callbacks to run */
    size_t n, cap;
    mproc_result **pr; /* with a progress report due */
    size_t pn, pcap;
} mproc__cbq;

struct mproc_result {
    mproc_pool *pool; /* NULL once the pool is destroyed */
    struct mproc_result *next_live, *prev_live; /* pool's list */
    int kind;                                   /* MPROC__KIND_* */
    size_t n, done;
    int first_error;
    /* Per item: a done bit, and the error code of a failed one (the codes
     * are allocated at the first failure). A map over millions of items
     * thus costs one bit each until something fails. */
    uint64_t *done_bits;
    int *codes;
    int codes_lost; /* no memory for the codes at the first failure */
    char **errmsg;  /* per item, NULL on success; allocated at the first
                       failure */
    void **data;    /* bytes form: per item result */
    size_t *len;
    uint8_t *attempts; /* retries used per item; allocated at the first */
    /* input */
    mproc_fn fn;
    mproc_elem_fn efn;
    unsigned char *in_buf;   /* bytes form: copied arguments */
    size_t *in_off;          /* n + 1 offsets into in_buf */
    const unsigned char *in; /* typed form: the caller's arrays */
    size_t in_size;
    unsigned char *out;
    size_t out_size;
    /* typed form: in or out lies in a shared segment of ours (shm.h), so
     * workers read and write it in place */
    int in_shm, out_shm;
    uint64_t in_id, out_id;
    uint32_t in_kind, out_kind;
    size_t in_soff, out_soff; /* of element 0 from the segment's start */
    /* per-call settings */
    uint64_t timeout_ns; /* 0 = none */
    int retries;
    mproc_result_cb on_success, on_error;
    void *cb_arg;
    mproc__progress progress;
    int want_progress;
    int user_freed; /* freed before ready: drop when done */
    int progress_queued;
    int empty_noted;
    int callbacks_done;
    mproc_iter *iter;  /* imap batch: the iterator to wake */
    size_t index_base; /* imap batch: index of its first item */
};

enum wstate {
    W_EMPTY = 0, /* no worker in this slot */
    W_SPAWNING,  /* asked the fork server, no pid yet */
    W_STARTING,  /* INIT sent, waiting for READY */
    W_IDLE,
    W_BUSY,
    W_EXITING /* told to go (or going by itself); waiting for EXITED */
};

enum kill_reason { KILL_NONE = 0, KILL_TIMEOUT, KILL_TERMINATE, KILL_PROTO };

typedef struct mproc__worker {
    /* The slot's mailbox lives as long as the pool (mbox.h). */
    mproc__mbox *mb;
    int mb_fd;
    mproc__ring tasks, results; /* the pool's ends */
    int ring_bad;               /* the worker broke its result ring */
    /* The worker in the slot. */
    enum wstate state; /* BUSY while chunks are in flight */
    pid_t pid;
    int pidfd;
    int chan; /* our end of the channel; -1 when closed */
    mproc__chunk *fl_head, *fl_tail; /* in flight, oldest first */
    size_t fl_chunks, fl_items;
    uint64_t head_since; /* when fl_head became the oldest */
    uint64_t idle_since;
    uint64_t items_sent; /* for max_tasks_per_child */
    enum kill_reason killed;
} mproc__worker;

struct mproc_pool {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t thread; /* the result thread */
    int thread_started;
    int wake_fd; /* eventfd: new work or a state change */
    int epfd;
    mproc__zconn zc;
    int ncpu;      /* CPUs this process may use, for the spinning policy */
    int nspinners; /* callers spinning on the result rings */
    _Atomic uint64_t event_seq; /* bumped with every broadcast of cond */
    uint64_t avg_chunk_ns;      /* how long a chunk runs, smoothed */
    mproc__cbq deferred;    /* completions seen by callers: the thread's job */
    unsigned char *ringbuf; /* a result record, copied out of its ring */

    mproc_pool_opts o; /* with defaults filled in */
    void *initarg;     /* our copy */
    int *cpus;         /* pinning targets, nworkers of them */
    mproc__worker *w;
    unsigned char *rxbuf;

    mproc__chunk *qhead, *qtail; /* chunks waiting for a worker */
    uint64_t next_chunk_id;
    mproc_result *live; /* results not yet complete, or not yet freed */

    enum { P_OPEN, P_CLOSED, P_TERMINATING, P_DONE } state;
    int broken;
    int broken_code;      /* what calls get once broken (MPROC_EBROKEN) */
    int init_fail_streak; /* initializer failures since the last READY */
    int empty_pending;
    uint64_t spawn_failures; /* SPAWN_FAILED reports */
    int spawn_err;           /* a call over zero items awaits callbacks */
    const char *broken_why;
    uint64_t term_deadline; /* when SIGTERM turns into SIGKILL */
    uint64_t *deaths;       /* ring of recent death times */
    int ndeaths_ring, death_pos;
    mproc_pool_stats stats;
};

typedef struct mproc__batch {
    mproc_result *r;
    size_t handed;  /* items handed out */
    uint8_t *taken; /* unordered: per item, handed out */
} mproc__batch;

struct mproc_iter {
    mproc_pool *pool;
    mproc_fn fn;
    mproc_source_fn source;
    void *source_arg;
    mproc_call_opts o;
    size_t chunksize, max_in_flight;
    size_t pulled;        /* inputs taken from the source */
    size_t in_flight;     /* submitted and not yet handed out */
    int source_done, err; /* err: the source's or a submission's */
    mproc__batch *b;      /* submitted batches, oldest first */
    size_t nb, capb;
};

/* An item's status: MPROC_ENOTREADY, 0 or its error. With mu held (or
 * once the result is complete). */
static inline int mproc__item_done(const mproc_result *r, size_t i) {
    return (r->done_bits[i / 64] >> (i % 64)) & 1;
}
static inline int mproc__item_status(const mproc_result *r, size_t i) {
    if (!mproc__item_done(r, i))
        return MPROC_ENOTREADY;
    if (r->codes)
        return r->codes[i];
    /* No memory was left to record which items failed: say so for every
     * item rather than call a failed one a success. */
    return r->codes_lost ? MPROC_ENOMEM : 0;
}

/* pool.c */
int mproc__pool_submit(mproc_pool *p, mproc_result *r, size_t chunksize);
void mproc__pool_wake(mproc_pool *p);
/* Broadcast cond (with mu held) and tell spinning callers. */
void mproc__pool_signal(mproc_pool *p);
/* A caller about to wait, with mu held: take in what the workers posted
 * and, if a CPU is free for it, spin a while on the result rings instead
 * of sleeping. Returns done(arg), checked last. */
int mproc__pool_spin_locked(mproc_pool *p, int (*done)(void *), void *arg);

/* result.c */
mproc_result *mproc__result_new(mproc_pool *p, int kind, size_t n,
                                const mproc_call_opts *o);
/* Record an item's outcome; with pool->mu held. Takes ownership of data
 * and msg (malloc'd, may be NULL). Returns 1 when the result is complete. */
int mproc__result_set(mproc_result *r, size_t i, int code, void *data,
                      size_t len, char *msg);
/* Items [first, first + n) of a typed call succeeded; their outputs are
 * in place. Returns 1 when the result is complete. */
int mproc__result_set_ok_range(mproc_result *r, size_t first, size_t n);
/* Retries used by item i so far, and one more. */
int mproc__result_attempts(const mproc_result *r, size_t i);
int mproc__result_count_attempt(mproc_result *r, size_t i);
void mproc__result_destroy(mproc_result *r);
/* map.c: copy the bytes-form arguments into r. */
int mproc__result_copy_inputs(mproc_result *r, const mproc_buf *items,
                              size_t n);
/* Wait with pool->mu held. */
int mproc__result_wait_locked(mproc_result *r, uint64_t deadline);

#endif
