/* The main demo, after seeds/004_ceacc5e06b6d1ace.txt "Parallel programming
 * in Python: multiprocessing (part 1)", "Example: computing π".
 *
 * π = ∫₀¹ 4/(1+x²) dx by the midpoint rule with 10⁹ steps (or the first
 * argument: 2000000, 1e8, ...), computed serially and with a pool of 1, 2, ...
 * N workers, N = the CPUs this process may use. The steps are split into 4×N
 * tasks (the same split for every row, so every pool row sums the same
 * partial results) and handed out one task at a time, so that a worker that
 * finishes early takes the next one.
 *
 * What is timed (CLOCK_MONOTONIC): for a pool row, everything a caller pays:
 * creating the pool (forking its workers), the map, close + join, and adding
 * up the parts; for the serial row, the same loop in this process. */
#define _XOPEN_SOURCE 700 /* M_PI, clock_gettime */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <mproc.h>

#include "example.h"

struct span {
    long start, end; /* steps [start, end) */
    double dx;
};

static double midpoint_sum(long start, long end, double dx) {
    double sum = 0.0;
    for (long i = start; i < end; i++) {
        double x = (i + 0.5) * dx;
        sum += 4.0 / (1.0 + x * x);
    }
    return sum;
}

static int partial_pi(mproc_task *t, const void *in, void *out) {
    (void)t;
    const struct span *s = in;
    *(double *)out = midpoint_sum(s->start, s->end, s->dx) * s->dx;
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void row(const char *who, double secs, double serial, double pi) {
    printf("%-8s %9.3f %8.2f  %.15f  %.1e\n", who, secs, serial / secs, pi,
           fabs(pi - M_PI));
}

int main(int argc, char **argv) {
    CHECK(mproc_init());
    const char *arg = argc > 1 ? argv[1] : "1e9";
    char *end;
    double steps_d = strtod(arg, &end);
    long steps = (long)steps_d;
    if (*end || !(steps_d >= 1 && steps_d <= 1e15) ||
        (double)steps != steps_d) {
        fprintf(stderr, "usage: %s [steps, default 1e9]\n", argv[0]);
        return 2;
    }
    int ncpu = mproc_cpu_count_available();
    size_t ntasks = 4 * (size_t)ncpu; /* the same split for every row */
    double dx = 1.0 / (double)steps;
    struct span *spans = malloc(ntasks * sizeof *spans);
    double *parts = malloc(ntasks * sizeof *parts);
    if (!spans || !parts)
        return 1;
    long per = steps / (long)ntasks, extra = steps % (long)ntasks, at = 0;
    for (long k = 0; k < (long)ntasks; k++) { /* the first `extra` get +1 */
        long n = per + (k < extra);
        spans[k] = (struct span){at, at + n, dx};
        at += n;
    }

    printf("pi by the midpoint rule: %ld steps, %zu tasks, %d usable CPUs\n",
           steps, ntasks, ncpu);
    printf("workers   wall [s]  speedup  pi                 |error|\n");
    double t0 = now();
    double pi = midpoint_sum(0, steps, dx) * dx;
    double serial = now() - t0;
    row("serial", serial, serial, pi);

    for (int nworkers = 1; nworkers <= ncpu; nworkers++) {
        t0 = now();
        mproc_pool *pool;
        mproc_result *r;
        CHECK(
            mproc_pool_create(&pool, &(mproc_pool_opts){.nworkers = nworkers}));
        CHECK(mproc_pool_map_array(pool, partial_pi, spans, ntasks,
                                   sizeof *spans, parts, sizeof *parts,
                                   &(mproc_call_opts){.chunksize = 1}, &r));
        CHECK(mproc_pool_close(pool));
        CHECK(mproc_pool_join(pool, MPROC_FOREVER));
        pi = 0.0;
        for (size_t k = 0; k < ntasks; k++)
            pi += parts[k];
        double secs = now() - t0;
        mproc_result_free(r);
        mproc_pool_destroy(pool);
        char who[16];
        snprintf(who, sizeof who, "%d", nworkers);
        row(who, secs, serial, pi);
    }
    printf("M_PI              %.15f\n", M_PI);
    free(spans);
    free(parts);
    return 0;
}
