/* SPDX-License-Identifier: MIT */
/*
 * Shared-state benchmarks between Processes: Queue throughput with small
 * messages (queue_small) and the cost of handing one Lock back and forth
 * (lock_handoff), the mproc side of Python's multiprocessing.Queue and Lock.
 *
 * The processes are mproc Processes (forked from this thread), so they use
 * the queue, lock and shared memory handles as they are. They wait at a
 * barrier until all of them and this process have arrived, so forking is
 * not timed. The children read the clock themselves (CLOCK_MONOTONIC is one
 * clock for every process) when the barrier lets them go and when they are
 * done, and the run lasts from the first start to the last end. This
 * process cannot time them: it sleeps while they run, and on a machine
 * with as many CPUs as children it is woken only once one of them has
 * finished, long after the start. How much work makes batch_s seconds is
 * found by calibration runs, which also warm everything up. A child
 * reports a wrong answer through its exit status.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* Joins bound how long a wedged child can hang the suite. */
#define JOIN_MS 120000L

/* Grow count from start until run(ctx, count) lasts at least batch_s
 * seconds; return that count. With --quick, start as it is. */
static long calibrate(const struct bench_cfg *cfg,
                      double (*run)(void *ctx, long count), void *ctx,
                      long start) {
    if (cfg->quick)
        return start;
    for (long n = start;;) {
        double t = run(ctx, n);
        if (t >= cfg->batch_s)
            return n;
        double f = t > 0 ? 1.2 * cfg->batch_s / t : 10.0;
        n = (long)((double)n * (f > 10.0 ? 10.0 : f < 1.5 ? 1.5 : f));
    }
}

/* Daemon children: if this process stops on an error, they go with it
 * instead of waiting for ever on a queue or a lock. */
static mproc_process *child_start(mproc_process_fn fn, const void *arg,
                                  size_t len) {
    mproc_process *p;
    CHECK(mproc_process_create(&p, fn, arg, len,
                               &(mproc_process_opts){.daemon = 1}));
    CHECK(mproc_process_start(p));
    return p;
}

/* When each child started and ended, in shared memory. */
enum { KIDS_MAX = 8 };
struct kid_times {
    double begin[KIDS_MAX], end[KIDS_MAX];
};

/* From the first begin to the last end of n children. */
static double kid_span(const struct kid_times *t, int n) {
    double begin = t->begin[0], end = t->end[0];
    for (int i = 1; i < n; i++) {
        begin = t->begin[i] < begin ? t->begin[i] : begin;
        end = t->end[i] > end ? t->end[i] : end;
    }
    return end - begin;
}

/* Join and free a child; stop if it failed or hangs. */
static void child_join(mproc_process *p, const char *what) {
    int code = 0;
    int err = mproc_process_join(p, JOIN_MS);
    if (!err)
        err = mproc_process_exitcode(p, &code);
    if (err || code) {
        mproc_process_kill(p);
        bench_die("%s: %s", what,
                  err ? mproc_strerror(err) : "wrong result (exit status)");
    }
    mproc_process_destroy(p);
}

/* ---- queue_small ------------------------------------------------------- */

enum { QMAX = 4 };

/* In shared memory: the times, what the consumers found, and how many
 * producers are still putting. The last producer to finish closes the
 * queue, so that the consumers see the end at once, without a round trip
 * through this process. */
struct q_shared {
    struct kid_times times; /* producers first, then consumers */
    uint64_t count[QMAX], seq_sum[QMAX];
    atomic_int producers_left;
};

struct q_arg {
    mproc_queue *q;
    mproc_barrier *start;
    struct q_shared *sh;
    int id, slot; /* slot: in times, one per child */
    int nprod;
    long per_producer;
};

/* A message: 16 bytes, {producer id, sequence number}. */
static int producer_main(void *arg, size_t len) {
    struct q_arg a;
    memcpy(&a, arg, sizeof a < len ? sizeof a : len);
    int status = 0;
    if (mproc_barrier_wait(a.start, JOIN_MS) < 0)
        status = 10;
    a.sh->times.begin[a.slot] = bench_now();
    uint64_t msg[2] = {(uint64_t)a.id, 0};
    for (long s = 0; s < a.per_producer && !status; s++) {
        msg[1] = (uint64_t)s;
        if (mproc_queue_put(a.q, msg, sizeof msg, MPROC_FOREVER))
            status = 11;
    }
    a.sh->times.end[a.slot] = bench_now();
    /* Even after a failure, or the consumers would wait for ever. */
    if (atomic_fetch_sub(&a.sh->producers_left, 1) == 1 &&
        mproc_queue_close(a.q))
        status = 12;
    return status;
}

/* Take messages until the queue is closed and empty. Each producer's
 * messages must come in the order it put them (FIFO), whichever consumer
 * takes them. */
static int consumer_main(void *arg, size_t len) {
    struct q_arg a;
    memcpy(&a, arg, sizeof a < len ? sizeof a : len);
    int64_t last[QMAX] = {-1, -1, -1, -1};
    uint64_t count = 0, sum = 0;
    if (mproc_barrier_wait(a.start, JOIN_MS) < 0)
        return 20;
    a.sh->times.begin[a.slot] = bench_now();
    for (;;) {
        uint64_t msg[2];
        size_t n;
        int err = mproc_queue_get_into(a.q, msg, sizeof msg, &n, MPROC_FOREVER);
        if (err == MPROC_EOF)
            break;
        if (err || n != sizeof msg || msg[0] >= (uint64_t)a.nprod ||
            (int64_t)msg[1] <= last[msg[0]])
            return 21;
        last[msg[0]] = (int64_t)msg[1];
        count++;
        sum += msg[1];
    }
    a.sh->times.end[a.slot] = bench_now();
    a.sh->count[a.id] = count;
    a.sh->seq_sum[a.id] = sum;
    return 0;
}

struct q_ctx {
    int nprod, ncons;
};

/* One run: nprod producers put per_producer messages each, ncons consumers
 * take them all. Returns the seconds from the first child's start to the
 * last one's end. */
static double queue_run(void *ctx, long per_producer) {
    const struct q_ctx *c = ctx;
    mproc_queue *q;
    mproc_barrier *start;
    mproc_shm *shm;
    mproc_process *prod[QMAX], *cons[QMAX];
    CHECK(mproc_queue_create(&q, NULL));
    CHECK(mproc_barrier_create(&start, (unsigned)(c->nprod + c->ncons + 1),
                               NULL));
    CHECK(mproc_shm_create(&shm, sizeof(struct q_shared)));
    struct q_shared *sh = mproc_shm_ptr(shm);
    atomic_init(&sh->producers_left, c->nprod);
    struct q_arg a = {q, start, sh, 0, 0, c->nprod, per_producer};
    for (a.id = 0; a.id < c->nprod; a.id++, a.slot++)
        prod[a.id] = child_start(producer_main, &a, sizeof a);
    for (a.id = 0; a.id < c->ncons; a.id++, a.slot++)
        cons[a.id] = child_start(consumer_main, &a, sizeof a);
    if (mproc_barrier_wait(start, JOIN_MS) < 0)
        bench_die("queue_small: the children did not start");
    for (int i = 0; i < c->nprod; i++)
        child_join(prod[i], "queue_small producer");
    for (int i = 0; i < c->ncons; i++)
        child_join(cons[i], "queue_small consumer");
    double secs = kid_span(&sh->times, c->nprod + c->ncons);

    uint64_t count = 0, sum = 0, per = (uint64_t)per_producer;
    for (int i = 0; i < c->ncons; i++) {
        count += sh->count[i];
        sum += sh->seq_sum[i];
    }
    if (count != (uint64_t)c->nprod * per ||
        sum != (uint64_t)c->nprod * (per * (per - 1) / 2))
        bench_die("queue_small: %llu messages taken of %llu put",
                  (unsigned long long)count,
                  (unsigned long long)c->nprod * per);
    mproc_shm_free(shm);
    mproc_barrier_free(start);
    mproc_queue_free(q);
    return secs;
}

/* Messages per second through one queue (default options: 1 MiB ring),
 * 1 producer and 1 consumer (param "1x1"), then 4 and 4 ("4x4"). */
void bench_queue_small(const struct bench_cfg *cfg) {
    static const struct q_ctx shapes[] = {{1, 1}, {4, 4}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        struct q_ctx c = shapes[s];
        char param[16];
        snprintf(param, sizeof param, "%dx%d", c.nprod, c.ncons);
        long per = calibrate(cfg, queue_run, &c, 1000);
        for (int rep = 0; rep < cfg->reps; rep++) {
            double secs = queue_run(&c, per);
            bench_emit("queue_small", "mproc", param, "msg/s", BENCH_HIGHER,
                       (double)per * c.nprod / secs);
        }
    }
}

/* ---- lock_handoff ------------------------------------------------------ */

/* Under the lock: whose turn it is, who went last, hand-offs so far, and
 * whether to stop. Then what each process did, and when. */
struct lk_shared {
    int turn, last, stop;
    uint64_t count;
    uint64_t done[2];
    struct kid_times times;
};

struct lk_arg {
    mproc_lock *lock;
    mproc_barrier *start;
    struct lk_shared *sh;
    int me;
    long turns;
    double limit; /* seconds, see handoff_main */
};

/* Take the lock; if it is my turn, pass the turn to the other process.
 * Either way let go, and again until I have had my turns. The two
 * processes therefore alternate strictly, and each hand-off is one
 * acquire/release by each side at least, as in Python's version.
 *
 * The loop spins: the process whose turn it is not takes and drops the
 * lock until the turn comes. When the scheduler puts both processes on one
 * CPU, the turn comes only when the spinner is preempted, so a hand-off
 * then costs a time slice (milliseconds) instead of a microsecond. A time
 * limit therefore bounds the run, as in the Python peer: past it, the
 * first process to notice raises stop, both leave, and the figure divides
 * by the hand-offs made. */
static int handoff_main(void *arg, size_t len) {
    struct lk_arg a;
    memcpy(&a, arg, sizeof a < len ? sizeof a : len);
    if (mproc_barrier_wait(a.start, JOIN_MS) < 0)
        return 10;
    double t0 = bench_now();
    a.sh->times.begin[a.me] = t0;
    long done = 0;
    for (unsigned long spins = 0; done < a.turns; spins++) {
        if (mproc_lock_acquire(a.lock, MPROC_FOREVER))
            return 11;
        int stop = a.sh->stop;
        if (!stop && a.sh->turn == a.me) {
            if (a.sh->last == a.me) /* the lock let me in twice */
                return 12;
            a.sh->last = a.me;
            a.sh->turn = 1 - a.me;
            a.sh->count++; /* not atomic: only the lock keeps it exact */
            done++;
        }
        if (!stop && spins % 64 == 63 && bench_now() - t0 > a.limit)
            stop = a.sh->stop = 1;
        if (mproc_lock_release(a.lock))
            return 13;
        if (stop)
            break;
    }
    a.sh->times.end[a.me] = bench_now();
    a.sh->done[a.me] = (uint64_t)done;
    return 0;
}

struct lk_ctx {
    double limit;  /* seconds a run may last */
    uint64_t made; /* hand-offs made by the last run */
};

/* One run of up to 2 x turns hand-offs (fewer if it hits the limit);
 * seconds from the first start to the last end. */
static double lock_run(void *ctx, long turns) {
    struct lk_ctx *c = ctx;
    mproc_lock *lock;
    mproc_barrier *start;
    mproc_shm *shm;
    mproc_process *kids[2];
    CHECK(mproc_lock_create(&lock));
    CHECK(mproc_barrier_create(&start, 3, NULL));
    CHECK(mproc_shm_create(&shm, sizeof(struct lk_shared)));
    struct lk_shared *sh = mproc_shm_ptr(shm);
    *sh = (struct lk_shared){.turn = 0, .last = 1};
    struct lk_arg a = {lock, start, sh, 0, turns, c->limit};
    for (a.me = 0; a.me < 2; a.me++)
        kids[a.me] = child_start(handoff_main, &a, sizeof a);
    if (mproc_barrier_wait(start, JOIN_MS) < 0)
        bench_die("lock_handoff: the children did not start");
    child_join(kids[0], "lock_handoff process 0");
    child_join(kids[1], "lock_handoff process 1");
    double secs = kid_span(&sh->times, 2);
    /* The shared count, bumped under the lock, must match what the two
     * processes counted alone; all of it when no one stopped early. */
    if (sh->count != sh->done[0] + sh->done[1] || sh->count == 0 ||
        (!sh->stop && sh->count != 2 * (uint64_t)turns))
        bench_die("lock_handoff: %llu hand-offs counted, %llu + %llu made",
                  (unsigned long long)sh->count,
                  (unsigned long long)sh->done[0],
                  (unsigned long long)sh->done[1]);
    if (sh->stop)
        fprintf(stderr,
                "lock_handoff: stopped at the %.1f s limit after %llu "
                "hand-offs\n",
                c->limit, (unsigned long long)sh->count);
    c->made = sh->count;
    mproc_shm_free(shm);
    mproc_barrier_free(start);
    mproc_lock_free(lock);
    return secs;
}

/* Microseconds per hand-off between two processes. */
void bench_lock_handoff(const struct bench_cfg *cfg) {
    struct lk_ctx c = {cfg->quick ? 0.5 : 2.0, 0};
    long turns = calibrate(cfg, lock_run, &c, 1000);
    for (int rep = 0; rep < cfg->reps; rep++) {
        double secs = lock_run(&c, turns);
        bench_emit("lock_handoff", "mproc", "", "us", BENCH_LOWER,
                   secs / (double)c.made * 1e6);
    }
}
