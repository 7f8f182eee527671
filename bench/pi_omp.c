/* SPDX-License-Identifier: MIT */
/*
 * pi_omp: the references for mproc_bench's pi: the seed's computation
 * (seeds/004, examples/pi_demo.c: pi = integral of 4/(1+x^2) over [0, 1] by
 * the midpoint rule) in plain serial C and with OpenMP.
 *
 *   pi_omp [--quick] [--reps R] [--workers N] [--steps S]
 *          [serial [STEPS] | omp THREADS [STEPS]]
 *
 * No mode: serial, then OpenMP on 1..N threads (N: --workers, default the
 * CPUs this process may use, as mproc_bench counts them). Steps default to
 * 1e8, as in mproc_bench (1e6 with --quick). Each sample is one JSON line
 * on stdout (see bench_util.h): bench "pi", impl "c_serial" (param
 * "workers=1") or "openmp" (param "workers=T"), unit s.
 *
 * Timed: one whole computation, after an untimed one with the same
 * settings, so that OpenMP's threads already exist, as mproc_bench's pool
 * is warm. The OpenMP loop is the plain `parallel for reduction` with a
 * static schedule: one contiguous span per thread, the split mproc_bench
 * gives its workers.
 */
#define _GNU_SOURCE /* M_PI */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mproc.h>

#include "bench_util.h"

static double pi_serial(long steps) {
    double dx = 1.0 / (double)steps;
    return bench_pi_sum(0, steps, dx) * dx;
}

static double pi_openmp(long steps, int threads) {
    double dx = 1.0 / (double)steps, sum = 0.0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : sum)
    for (long i = 0; i < steps; i++) {
        double x = ((double)i + 0.5) * dx;
        sum += 4.0 / (1.0 + x * x);
    }
    return sum * dx;
}

/* threads 0: serial. One untimed run, then reps timed ones. */
static void run(long steps, int threads, int reps) {
    char param[32];
    snprintf(param, sizeof param, "workers=%d", threads ? threads : 1);
    for (int rep = -1; rep < reps; rep++) {
        double t0 = bench_now();
        double pi = threads ? pi_openmp(steps, threads) : pi_serial(steps);
        double secs = bench_now() - t0;
        if (fabs(pi - M_PI) > 1e-6)
            bench_die("pi (%s, %s): %.15f", threads ? "openmp" : "serial",
                      param, pi);
        if (rep >= 0)
            bench_emit("pi", threads ? "openmp" : "c_serial", param, "s",
                       BENCH_LOWER, secs);
    }
}

static void usage(FILE *f) {
    fprintf(f, "usage: pi_omp [--quick] [--reps R] [--workers N] [--steps S]"
               " [serial [STEPS] | omp THREADS [STEPS]]\n");
}

static long count_arg(const char *s, long min, long max, const char *what) {
    long v = bench_parse_count(s, max);
    if (v < min)
        bench_die("%s wants a count from %ld to %ld, not %s", what, min, max,
                  s);
    return v;
}

int main(int argc, char **argv) {
    int quick = 0, reps = 0, workers = 0;
    long steps = 0;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--quick")) {
            quick = 1;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--reps"))
            reps = (int)count_arg(argv[++i], 1, 1000, "--reps");
        else if (!strcmp(a, "--workers"))
            workers = (int)count_arg(argv[++i], 1, 4096, "--workers");
        else if (!strcmp(a, "--steps"))
            steps = count_arg(argv[++i], 1000, 1L << 50, "--steps");
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!reps)
        reps = quick ? 1 : 5;
    if (!workers)
        workers = mproc_cpu_count_available();

    /* Mode and its positional arguments. */
    const char *mode = i < argc ? argv[i++] : "all";
    int threads = 0;
    if (!strcmp(mode, "omp")) {
        if (i >= argc) {
            usage(stderr);
            return 2;
        }
        threads = (int)count_arg(argv[i++], 1, 4096, "THREADS");
    } else if (strcmp(mode, "serial") && strcmp(mode, "all")) {
        usage(stderr);
        return 2;
    }
    if (i < argc && strcmp(mode, "all"))
        steps = count_arg(argv[i++], 1000, 1L << 50, "STEPS");
    if (i < argc) {
        usage(stderr);
        return 2;
    }
    if (!steps)
        steps = quick ? 1000000 : 100000000;

    fprintf(stderr, "pi_omp: %ld steps, %d reps\n", steps, reps);
    if (!strcmp(mode, "serial")) {
        run(steps, 0, reps);
    } else if (threads) {
        run(steps, threads, reps);
    } else {
        run(steps, 0, reps);
        for (int t = 1; t <= workers; t++)
            run(steps, t, reps);
    }
    bench_summary();
    return 0;
}
