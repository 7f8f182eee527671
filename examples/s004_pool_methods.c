/* Twin of seeds/004_ceacc5e06b6d1ace.txt "Parallel programming in Python:
 * multiprocessing (part 1)", "The Pool class": cpu_count, map(square,
 * range(20)), starmap(power_n, ...), and apply_async(power_n_list, ...) over
 * the slices from slice_data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mproc.h>

#include "example.h"

static void print_list(const long *v, size_t n) {
    printf("[");
    for (size_t i = 0; i < n; i++)
        printf("%s%ld", i ? ", " : "", v[i]);
    printf("]\n");
}

static long power(long x, long n) { /* x ** n */
    long y = 1;
    while (n-- > 0)
        y *= x;
    return y;
}

static int square(mproc_task *t, const void *in, void *out) {
    (void)t;
    long x = *(const long *)in;
    *(long *)out = x * x;
    return 0;
}

struct power_args {
    long x, n;
};

static int power_n(mproc_task *t, const void *in, void *out) {
    (void)t;
    const struct power_args *a = in;
    *(long *)out = power(a->x, a->n);
    return 0;
}

/* power_n_list(x_list, n), bytes form: the argument is n followed by the
 * values of x_list; the result is as many longs as x_list has. */
static int power_n_list(mproc_task *t, const void *arg, size_t len) {
    long n, x;
    size_t k = len / sizeof x - 1;
    long *y = mproc_task_result_buf(t, k * sizeof *y);
    if (!y)
        return mproc_task_fail(t, "no room for %zu results", k);
    memcpy(&n, arg, sizeof n);
    for (size_t i = 0; i < k; i++) {
        memcpy(&x, (const char *)arg + (i + 1) * sizeof x, sizeof x);
        y[i] = power(x, n);
    }
    return 0;
}

/* slice_data(data, nprocs) as (start, count) pairs: nprocs slices, the first
 * len % nprocs of them one item longer. */
static void slice_data(size_t len, int nprocs, size_t *start, size_t *count) {
    size_t aver = len / (size_t)nprocs, res = len % (size_t)nprocs, pos = 0;
    for (int proc = 0; proc < nprocs; proc++) {
        count[proc] = aver + ((size_t)proc < res);
        start[proc] = pos;
        pos += count[proc];
    }
}

int main(void) {
    CHECK(mproc_init());
    int nprocs = mproc_cpu_count();
    printf("Number of CPU cores: %d\n", nprocs);
    mproc_pool *pool;
    CHECK(mproc_pool_create(&pool, &(mproc_pool_opts){.nworkers = nprocs}));
    mproc_result *r;

    /* serial: [square(x) for x in range(20)] */
    long data[20], result[20];
    for (long x = 0; x < 20; x++) {
        data[x] = x;
        result[x] = x * x;
    }
    print_list(result, 20);

    /* map */
    CHECK(mproc_pool_map_array(pool, square, data, 20, sizeof *data, result,
                               sizeof *result, NULL, &r));
    print_list(result, 20);
    mproc_result_free(r);

    /* starmap: [(x, 2) for x in range(20)] */
    struct power_args args[20];
    for (long x = 0; x < 20; x++)
        args[x] = (struct power_args){x, 2};
    CHECK(mproc_pool_starmap(pool, power_n, args, 20, sizeof *args, result,
                             sizeof *result, NULL, &r));
    print_list(result, 20);
    mproc_result_free(r);

    /* apply_async over the slices, results gathered in slice order */
    size_t *start = calloc((size_t)nprocs, sizeof *start);
    size_t *count = calloc((size_t)nprocs, sizeof *count);
    mproc_result **multi_result = calloc((size_t)nprocs, sizeof *multi_result);
    if (!start || !count || !multi_result)
        return 1;
    slice_data(20, nprocs, start, count);
    for (int proc = 0; proc < nprocs; proc++) {
        long arg[1 + 20] = {2}; /* n = 2, then the slice */
        memcpy(&arg[1], &data[start[proc]], count[proc] * sizeof *data);
        CHECK(mproc_pool_apply_async(pool, power_n_list, arg,
                                     (1 + count[proc]) * sizeof *arg, NULL,
                                     &multi_result[proc]));
    }
    size_t k = 0;
    for (int proc = 0; proc < nprocs; proc++) {
        size_t len;
        CHECK(mproc_result_get(multi_result[proc], MPROC_FOREVER));
        const void *y = mproc_result_data(multi_result[proc], 0, &len);
        if (len) /* a slice may be empty when nprocs > 20 */
            memcpy(&result[k], y, len);
        k += len / sizeof *result;
        mproc_result_free(multi_result[proc]);
    }
    print_list(result, k);

    free(start);
    free(count);
    free(multi_result);
    mproc_pool_destroy(pool);
    return 0;
}
