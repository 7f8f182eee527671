/* Twin of seeds/004_ceacc5e06b6d1ace.txt "Parallel programming in Python:
 * multiprocessing (part 1)", "Example: computing π": the serial loop, then
 * calc_partial_pi with starmap and with apply_async. Optional argument: nsteps
 * (default 10000000). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mproc.h>

#include "example.h"

/* Like Python's print(float): the shortest digits that read back the same. */
static void print_float(const char *label, double v) {
    char buf[32];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    printf("%s%s\n", label, buf);
}

struct pi_args {
    long rank, nprocs, nsteps;
    double dx;
};

static double calc_partial_pi(long rank, long nprocs, long nsteps, double dx) {
    double partial_pi = 0.0;
    for (long i = rank; i < nsteps; i += nprocs) {
        double x = (i + 0.5) * dx;
        partial_pi += 4.0 / (1.0 + x * x);
    }
    return partial_pi * dx;
}

/* For starmap (typed) and apply_async (bytes). */
static int calc_partial_pi_elem(mproc_task *t, const void *in, void *out) {
    (void)t;
    const struct pi_args *a = in;
    *(double *)out = calc_partial_pi(a->rank, a->nprocs, a->nsteps, a->dx);
    return 0;
}

static int calc_partial_pi_bytes(mproc_task *t, const void *arg, size_t len) {
    (void)len;
    struct pi_args a;
    memcpy(&a, arg, sizeof a);
    double y = calc_partial_pi(a.rank, a.nprocs, a.nsteps, a.dx);
    return mproc_task_return(t, &y, sizeof y);
}

int main(int argc, char **argv) {
    CHECK(mproc_init());
    long nsteps = argc > 1 ? atol(argv[1]) : 10000000;
    if (nsteps <= 0) {
        fprintf(stderr, "usage: %s [nsteps]\n", argv[0]);
        return 2;
    }
    double dx = 1.0 / nsteps;

    /* Serial code */
    double pi = 0.0;
    for (long i = 0; i < nsteps; i++) {
        double x = (i + 0.5) * dx;
        pi += 4.0 / (1.0 + x * x);
    }
    pi *= dx;
    print_float("pi (serial)      = ", pi);

    /* Parallel code: starmap */
    int nprocs = mproc_cpu_count();
    struct pi_args *inputs = calloc((size_t)nprocs, sizeof *inputs);
    double *result = calloc((size_t)nprocs, sizeof *result);
    mproc_result **multi_result = calloc((size_t)nprocs, sizeof *multi_result);
    if (!inputs || !result || !multi_result)
        return 1;
    for (int rank = 0; rank < nprocs; rank++)
        inputs[rank] = (struct pi_args){rank, nprocs, nsteps, dx};
    mproc_pool *pool;
    CHECK(mproc_pool_create(&pool, &(mproc_pool_opts){.nworkers = nprocs}));
    mproc_result *r;
    CHECK(mproc_pool_starmap(pool, calc_partial_pi_elem, inputs, (size_t)nprocs,
                             sizeof *inputs, result, sizeof *result, NULL, &r));
    mproc_result_free(r);
    pi = 0.0; /* sum(result) */
    for (int rank = 0; rank < nprocs; rank++)
        pi += result[rank];
    print_float("pi (starmap)     = ", pi);

    /* Parallel code: apply_async */
    for (int rank = 0; rank < nprocs; rank++)
        CHECK(mproc_pool_apply_async(pool, calc_partial_pi_bytes, &inputs[rank],
                                     sizeof *inputs, NULL,
                                     &multi_result[rank]));
    pi = 0.0;
    for (int rank = 0; rank < nprocs; rank++) {
        CHECK(mproc_result_get(multi_result[rank], MPROC_FOREVER));
        double y;
        memcpy(&y, mproc_result_data(multi_result[rank], 0, NULL), sizeof y);
        pi += y;
        mproc_result_free(multi_result[rank]);
    }
    print_float("pi (apply_async) = ", pi);

    mproc_pool_destroy(pool);
    free(inputs);
    free(result);
    free(multi_result);
    return 0;
}
