/* SPDX-License-Identifier: MIT */
/*
 * mproc_bench's own declarations: the run settings every benchmark gets,
 * the benchmarks (one function each, in bench_pool.c, bench_idle.c and
 * bench_ipc.c, listed in mproc_bench.c), and the helpers they share.
 */
#ifndef MPROC_BENCH_H
#define MPROC_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include <mproc.h>

#include "bench_util.h"

struct bench_cfg {
    int quick;      /* --quick: tiny sizes, 1 sample, no batching */
    int reps;       /* samples per figure (--reps, default 5; 1 if quick) */
    int workers;    /* pool size (--workers, default: the usable CPUs) */
    long pi_steps;  /* --pi-steps, default 1e8 (1e6 if quick) */
    double batch_s; /* least seconds a batched sample lasts (0 if quick) */
};

/* Stop with the call's text and mproc's sentence when an mproc call does
 * not return 0. For code in the main process only: a forked child reports
 * failure through its exit status instead. */
#define CHECK(call)                                                            \
    do {                                                                       \
        int err_ = (call);                                                     \
        if (err_)                                                              \
            bench_die("%s:%d: %s: %s (%s)", __FILE__, __LINE__, #call,         \
                      mproc_strerror(err_), mproc_err_name(err_));             \
    } while (0)

/* A pool of n workers in which every worker has run a task, so that no
 * fork, first fault or first message is left for the clock to see. */
mproc_pool *bench_pool_new(int nworkers);
/* close, join, destroy. */
void bench_pool_free(mproc_pool *p);

/* The benchmarks. Each emits cfg->reps samples of each of its figures. */
void bench_apply_rtt(const struct bench_cfg *cfg);
void bench_map_default(const struct bench_cfg *cfg);
void bench_map_chunk1(const struct bench_cfg *cfg);
void bench_imap(const struct bench_cfg *cfg);
void bench_imap_unordered(const struct bench_cfg *cfg);
void bench_pi(const struct bench_cfg *cfg);
void bench_pool_start(const struct bench_cfg *cfg);
void bench_large_map(const struct bench_cfg *cfg);
void bench_memcpy(const struct bench_cfg *cfg);
void bench_idle_mem(const struct bench_cfg *cfg);
void bench_idle_cpu(const struct bench_cfg *cfg);
void bench_queue_small(const struct bench_cfg *cfg);
void bench_lock_handoff(const struct bench_cfg *cfg);

#endif
