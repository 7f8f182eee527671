/* SPDX-License-Identifier: MIT */
/*
 * Pool benchmarks: the cost of one task (apply_rtt), of many trivial ones
 * (map_default, map_chunk1, imap, imap_unordered), of real work split over
 * 1..N workers (pi), of a pool's whole life (pool_start), and the bandwidth
 * of a map over a large array beside memcpy's (large_map, memcpy).
 *
 * Method, shared by the per-operation figures: the pool is warm before the
 * clock starts (every worker has run a task, see bench_pool_new) and the
 * operation has run once untimed; then operations run back to back until
 * cfg->batch_s seconds (0.3 s) have passed, and the sample is the average
 * over that batch (batch()). The sizes follow PERF-BASELINES.md sections B and
 * C, so that the Python peers' figures compare: map of 1e6 items at the default
 * chunksize, 1e5 items one per message, one apply at a time.
 *
 * The trivial task is square(x) on an int64_t, in the two forms the API
 * has: bytes (mproc_fn, for apply, map and imap) and typed (mproc_elem_fn,
 * for map_array). Python's Pool.map compares best with the typed form,
 * which is the one a C programmer would use; the bytes form is reported
 * beside it with param "bytes".
 */
#define _GNU_SOURCE /* M_PI */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* ---- tasks ------------------------------------------------------------- */

static int square_task(mproc_task *t, const void *arg, size_t len) {
    int64_t x;
    if (len != sizeof x)
        return mproc_task_fail(t, "argument of %zu bytes", len);
    memcpy(&x, arg, sizeof x);
    x *= x;
    return mproc_task_return(t, &x, sizeof x);
}

static int square_elem(mproc_task *t, const void *in, void *out) {
    (void)t;
    int64_t x;
    memcpy(&x, in, sizeof x);
    x *= x;
    memcpy(out, &x, sizeof x);
    return 0;
}

/* The int64_t result of item i of a bytes-form call, checked to be x*x. */
static void check_square(mproc_result *r, size_t i, int64_t x) {
    size_t len;
    const void *d = mproc_result_data(r, i, &len);
    int64_t y;
    if (!d || len != sizeof y)
        bench_die("item %zu: result of %zu bytes", i, d ? len : 0);
    memcpy(&y, d, sizeof y);
    if (y != x * x)
        bench_die("item %zu: square(%lld) gave %lld", i, (long long)x,
                  (long long)y);
}

/* 0, 1, ..., n-1. */
static int64_t *iota_new(size_t n) {
    int64_t *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        bench_die("out of memory");
    for (size_t i = 0; i < n; i++)
        v[i] = (int64_t)i;
    return v;
}

/* Run op(ctx) back to back until cfg->batch_s seconds have passed (at
 * least once). Returns seconds per operation. */
static double batch(const struct bench_cfg *cfg, void (*op)(void *ctx),
                    void *ctx) {
    size_t n = 0;
    double t0 = bench_now(), t;
    do {
        op(ctx);
        n++;
        t = bench_now() - t0;
    } while (t < cfg->batch_s);
    return t / (double)n;
}

/* ---- apply_rtt: one task at a time ------------------------------------- */

struct apply_ctx {
    mproc_pool *pool;
    int64_t x;
};

static void apply_op(void *arg) {
    struct apply_ctx *c = arg;
    int64_t x = c->x++ % 1000000;
    mproc_result *r;
    CHECK(mproc_pool_apply(c->pool, square_task, &x, sizeof x, NULL, &r));
    check_square(r, 0, x);
    mproc_result_free(r);
}

void bench_apply_rtt(const struct bench_cfg *cfg) {
    struct apply_ctx c = {bench_pool_new(cfg->workers), 0};
    for (int i = 0; i < 100; i++) /* warm up */
        apply_op(&c);
    for (int rep = 0; rep < cfg->reps; rep++)
        bench_emit("apply_rtt", "mproc", "", "us", BENCH_LOWER,
                   batch(cfg, apply_op, &c) * 1e6);
    bench_pool_free(c.pool);
}

/* ---- map_default, map_chunk1: one call over n items -------------------- */

struct map_ctx {
    mproc_pool *pool;
    size_t n, chunksize; /* chunksize 0: the default heuristic */
    int bytes;           /* bytes form (mproc_pool_map) or typed */
    int64_t *in, *out;
    mproc_buf *items;
    mproc_result *last; /* of the bytes form, checked after the batch */
};

static void map_op(void *arg) {
    struct map_ctx *c = arg;
    mproc_call_opts o = {.chunksize = c->chunksize};
    mproc_result *r;
    if (c->bytes) {
        /* Freeing a call's results is part of its cost: here it is paid at
         * the next call, so that the last one can still be checked. */
        mproc_result_free(c->last);
        CHECK(mproc_pool_map(c->pool, square_task, c->items, c->n, &o, &r));
        c->last = r;
    } else {
        CHECK(mproc_pool_map_array(c->pool, square_elem, c->in, c->n,
                                   sizeof *c->in, c->out, sizeof *c->out, &o,
                                   &r));
        mproc_result_free(r);
    }
}

/* Check the last call's results. The typed form zeroes out at the start of
 * every call, so nothing stale can pass. */
static void map_check(struct map_ctx *c) {
    for (size_t i = 0; i < c->n; i++) {
        if (c->bytes)
            check_square(c->last, i, c->in[i]);
        else if (c->out[i] != c->in[i] * c->in[i])
            bench_die("map_array item %zu: square(%lld) gave %lld", i,
                      (long long)c->in[i], (long long)c->out[i]);
    }
}

static void map_bench(const struct bench_cfg *cfg, const char *name, size_t n,
                      size_t chunksize) {
    struct map_ctx c = {.pool = bench_pool_new(cfg->workers),
                        .n = n,
                        .chunksize = chunksize,
                        .in = iota_new(n),
                        .out = calloc(n, sizeof(int64_t)),
                        .items = malloc(n * sizeof(mproc_buf))};
    if (!c.out || !c.items)
        bench_die("out of memory");
    for (size_t i = 0; i < n; i++)
        c.items[i] = (mproc_buf){&c.in[i], sizeof c.in[i]};
    for (c.bytes = 0; c.bytes <= 1; c.bytes++) {
        map_op(&c); /* warm up */
        for (int rep = 0; rep < cfg->reps; rep++) {
            double per_task = batch(cfg, map_op, &c) / (double)n;
            map_check(&c);
            bench_emit(name, "mproc", c.bytes ? "bytes" : "", "us", BENCH_LOWER,
                       per_task * 1e6);
        }
    }
    mproc_result_free(c.last);
    free(c.in);
    free(c.out);
    free(c.items);
    bench_pool_free(c.pool);
}

void bench_map_default(const struct bench_cfg *cfg) {
    map_bench(cfg, "map_default", cfg->quick ? 1000 : 1000000, 0);
}

void bench_map_chunk1(const struct bench_cfg *cfg) {
    map_bench(cfg, "map_chunk1", cfg->quick ? 1000 : 100000, 1);
}

/* ---- imap, imap_unordered: streaming, one item per message ------------- */

struct imap_ctx {
    mproc_pool *pool;
    size_t n;
    int unordered;
    const int64_t *in;
};

static int imap_source(void *arg, size_t i, const void **data, size_t *len) {
    const struct imap_ctx *c = arg;
    if (i >= c->n)
        return 0;
    *data = &c->in[i];
    *len = sizeof c->in[i];
    return 1;
}

/* One imap over n items, consumed to the end and checked as they come:
 * each result is the square of its input, ordered imap yields them in
 * input order, and either yields each index once (count and index sum). */
static void imap_op(void *arg) {
    const struct imap_ctx *c = arg;
    mproc_call_opts o = {.chunksize = 1, .unordered = c->unordered};
    mproc_iter *it;
    CHECK(
        mproc_pool_imap(c->pool, square_task, imap_source, (void *)c, &o, &it));
    mproc_item item;
    size_t got = 0, index_sum = 0;
    int err;
    while ((err = mproc_iter_next(it, MPROC_FOREVER, &item)) == 0) {
        int64_t y;
        if (item.status || item.len != sizeof y || item.index >= c->n ||
            (!c->unordered && item.index != got))
            bench_die("imap: item %zu (#%zu): status %d, %zu bytes", item.index,
                      got, item.status, item.len);
        memcpy(&y, item.data, sizeof y);
        if (y != c->in[item.index] * c->in[item.index])
            bench_die("imap: item %zu: wrong square %lld", item.index,
                      (long long)y);
        index_sum += item.index;
        got++;
    }
    if (err != MPROC_EOF)
        bench_die("mproc_iter_next: %s", mproc_strerror(err));
    if (got != c->n || index_sum != c->n * (c->n - 1) / 2)
        bench_die("imap: %zu items of %zu, or some twice", got, c->n);
    mproc_iter_free(it);
}

static void imap_bench(const struct bench_cfg *cfg, const char *name,
                       int unordered) {
    size_t n = cfg->quick ? 1000 : 100000;
    int64_t *in = iota_new(n);
    struct imap_ctx c = {bench_pool_new(cfg->workers), n, unordered, in};
    imap_op(&c); /* warm up */
    for (int rep = 0; rep < cfg->reps; rep++)
        bench_emit(name, "mproc", "", "us", BENCH_LOWER,
                   batch(cfg, imap_op, &c) / (double)n * 1e6);
    bench_pool_free(c.pool);
    free(in);
}

void bench_imap(const struct bench_cfg *cfg) {
    imap_bench(cfg, "imap", 0);
}

void bench_imap_unordered(const struct bench_cfg *cfg) {
    imap_bench(cfg, "imap_unordered", 1);
}

/* ---- pi: the seed, on 1..N workers ------------------------------------- */

struct span {
    long start, end; /* steps [start, end) */
    double dx;
};

static int pi_task(mproc_task *t, const void *in, void *out) {
    (void)t;
    struct span s;
    memcpy(&s, in, sizeof s);
    double part = bench_pi_sum(s.start, s.end, s.dx) * s.dx;
    memcpy(out, &part, sizeof part);
    return 0;
}

/* One sample = one computation of pi on a warm pool of nw workers: the
 * steps are split into nw contiguous spans, one task each, which is what
 * OpenMP's schedule(static) does in pi_omp. Timed: the map, and adding up
 * the parts (pool creation is pool_start's business). */
void bench_pi(const struct bench_cfg *cfg) {
    long steps = cfg->pi_steps;
    double dx = 1.0 / (double)steps;
    for (int nw = 1; nw <= cfg->workers; nw++) {
        struct span *spans = malloc((size_t)nw * sizeof *spans);
        double *parts = malloc((size_t)nw * sizeof *parts);
        if (!spans || !parts)
            bench_die("out of memory");
        long per = steps / nw, extra = steps % nw, at = 0;
        for (int k = 0; k < nw; k++) { /* the first `extra` get one more */
            long n = per + (k < extra);
            spans[k] = (struct span){at, at + n, dx};
            at += n;
        }
        mproc_pool *p = bench_pool_new(nw);
        char param[32];
        snprintf(param, sizeof param, "workers=%d", nw);
        for (int rep = -1; rep < cfg->reps; rep++) { /* -1: untimed */
            double t0 = bench_now();
            mproc_result *r;
            CHECK(mproc_pool_map_array(p, pi_task, spans, (size_t)nw,
                                       sizeof *spans, parts, sizeof *parts,
                                       &(mproc_call_opts){.chunksize = 1}, &r));
            double pi = 0.0;
            for (int k = 0; k < nw; k++)
                pi += parts[k];
            double secs = bench_now() - t0;
            mproc_result_free(r);
            if (fabs(pi - M_PI) > 1e-6)
                bench_die("pi on %d workers: %.15f", nw, pi);
            if (rep >= 0)
                bench_emit("pi", "mproc", param, "s", BENCH_LOWER, secs);
        }
        bench_pool_free(p);
        free(spans);
        free(parts);
    }
}

/* ---- pool_start: a pool's whole life ----------------------------------- */

/* Create a pool of 2, run one task, close, join, destroy. The fork server
 * is already running (mproc_init at the top of main), as it is in any
 * program past its first pool. */
static void pool_start_op(void *arg) {
    (void)arg;
    mproc_pool *p;
    mproc_result *r;
    int64_t x = 7;
    CHECK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 2}));
    CHECK(mproc_pool_apply(p, square_task, &x, sizeof x, NULL, &r));
    check_square(r, 0, x);
    mproc_result_free(r);
    bench_pool_free(p);
}

void bench_pool_start(const struct bench_cfg *cfg) {
    pool_start_op(NULL); /* warm up */
    for (int rep = 0; rep < cfg->reps; rep++)
        bench_emit("pool_start", "mproc", "", "ms", BENCH_LOWER,
                   batch(cfg, pool_start_op, NULL) * 1e3);
}

/* ---- large_map and memcpy: bandwidth ----------------------------------- */

/* 256 MiB of doubles in and 256 MiB out (4 MiB with --quick), both
 * faulted in before the clock starts. GB/s count the bytes read plus the
 * bytes written, 2 x size, for the map and for memcpy alike. */
struct big_ctx {
    mproc_pool *pool;
    size_t n;    /* doubles */
    size_t item; /* bytes per map item: one double, or a block */
    double *in, *out;
    mproc_shm *shm_in, *shm_out; /* when in and out are shared memory */
};

static int half_plus_one(mproc_task *t, const void *in, void *out) {
    (void)t;
    double x;
    memcpy(&x, in, sizeof x);
    x = x * 0.5 + 1.0;
    memcpy(out, &x, sizeof x);
    return 0;
}

/* The same on a block of doubles per item. */
enum { BLOCK_DOUBLES = 8192 }; /* 64 KiB */

static int half_plus_one_block(mproc_task *t, const void *in, void *out) {
    (void)t;
    double x[BLOCK_DOUBLES];
    memcpy(x, in, sizeof x);
    for (size_t i = 0; i < BLOCK_DOUBLES; i++)
        x[i] = x[i] * 0.5 + 1.0;
    memcpy(out, x, sizeof x);
    return 0;
}

static size_t big_mib(const struct bench_cfg *cfg) {
    return cfg->quick ? 4 : 256;
}

/* The arrays: malloc'd, or (shared) mproc shared memory, which a typed map
 * reads and writes in place. */
static void big_init(struct big_ctx *c, const struct bench_cfg *cfg,
                     int shared) {
    c->n = big_mib(cfg) * 1024 * 1024 / sizeof(double);
    if (shared) {
        CHECK(mproc_shm_create(&c->shm_in, c->n * sizeof(double)));
        CHECK(mproc_shm_create(&c->shm_out, c->n * sizeof(double)));
        c->in = mproc_shm_ptr(c->shm_in);
        c->out = mproc_shm_ptr(c->shm_out);
    } else {
        c->in = malloc(c->n * sizeof(double));
        c->out = malloc(c->n * sizeof(double));
    }
    if (!c->in || !c->out)
        bench_die("out of memory");
    for (size_t i = 0; i < c->n; i++)
        c->in[i] = (double)i;
    memset(c->out, 0, c->n * sizeof(double));
}

/* The typed path at its default chunksize (4 chunks per worker). */
static void large_map_op(void *arg) {
    struct big_ctx *c = arg;
    mproc_result *r;
    size_t items = c->n * sizeof(double) / c->item;
    CHECK(mproc_pool_map_array(
        c->pool,
        c->item == sizeof(double) ? half_plus_one : half_plus_one_block, c->in,
        items, c->item, c->out, c->item, NULL, &r));
    mproc_result_free(r);
}

static void big_free(struct big_ctx *c) {
    if (c->shm_in) {
        mproc_shm_free(c->shm_in);
        mproc_shm_free(c->shm_out);
    } else {
        free(c->in);
        free(c->out);
    }
}

/* The figure the issue asks for maps one double per item (param
 * "MiB=256"), which measures the per-item cost as much as the transport:
 * the arrays are malloc'd, so every byte goes through the workers' rings.
 * The same bytes in 64 KiB items (param "MiB=256,item=64KiB") show the
 * transport alone. With the arrays in mproc shared memory (params ending
 * in ",shared") the workers read and write them in place: nothing is
 * copied. */
static void large_map_variants(const struct bench_cfg *cfg, int shared);

void bench_large_map(const struct bench_cfg *cfg) {
    for (int shared = 0; shared <= 1; shared++)
        large_map_variants(cfg, shared);
}

static void large_map_variants(const struct bench_cfg *cfg, int shared) {
    struct big_ctx c = {.pool = bench_pool_new(cfg->workers)};
    big_init(&c, cfg, shared);
    double bytes = 2.0 * (double)(c.n * sizeof(double));
    static const size_t items[] = {sizeof(double),
                                   BLOCK_DOUBLES * sizeof(double)};
    for (size_t v = 0; v < sizeof items / sizeof items[0]; v++) {
        c.item = items[v];
        char param[48];
        snprintf(param, sizeof param, "MiB=%zu%s%s", big_mib(cfg),
                 v ? ",item=64KiB" : "", shared ? ",shared" : "");
        large_map_op(&c); /* warm up */
        for (int rep = 0; rep < cfg->reps; rep++) {
            double secs = batch(cfg, large_map_op, &c);
            for (size_t i = 0; i < c.n; i++) /* every value is exact */
                if (c.out[i] != (double)i * 0.5 + 1.0)
                    bench_die("large_map item %zu: %g", i, c.out[i]);
            bench_emit("large_map", "mproc", param, "GB/s", BENCH_HIGHER,
                       bytes / secs / 1e9);
        }
    }
    bench_pool_free(c.pool);
    big_free(&c);
}

static void memcpy_op(void *arg) {
    struct big_ctx *c = arg;
    memcpy(c->out, c->in, c->n * sizeof *c->in);
}

void bench_memcpy(const struct bench_cfg *cfg) {
    struct big_ctx c = {0};
    big_init(&c, cfg, 0);
    char param[32];
    snprintf(param, sizeof param, "MiB=%zu", big_mib(cfg));
    double bytes = 2.0 * (double)(c.n * sizeof(double));
    memcpy_op(&c); /* warm up */
    for (int rep = 0; rep < cfg->reps; rep++) {
        double secs = batch(cfg, memcpy_op, &c);
        if (memcmp(c.out, c.in, c.n * sizeof *c.in))
            bench_die("memcpy: the copy differs");
        bench_emit("memcpy", "c", param, "GB/s", BENCH_HIGHER,
                   bytes / secs / 1e9);
    }
    big_free(&c);
}
