/* Pool tasks that write into one shared Array, each its own slice. A pool
 * worker is not a fork of this program, so it cannot use our handle
 * pointer: each task gets a reference (mproc_ref, plain bytes) in its
 * argument, attaches the array, writes i*i for i in [lo, hi) and frees its
 * handle. (Python refuses to pickle a shared Array into a pool task; it
 * must be inherited through the initializer.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mproc.h>

#include "example.h"

#define N 1000

struct slice {
    mproc_ref ref;
    size_t lo, hi;
};

static int fill_squares(mproc_task *t, const void *arg, size_t len) {
    struct slice s;
    if (len != sizeof s)
        return mproc_task_fail(t, "want a struct slice, got %zu bytes", len);
    memcpy(&s, arg, sizeof s);
    mproc_array *arr;
    int err = mproc_array_attach(&arr, &s.ref);
    if (err)
        return mproc_task_fail(t, "attach: %s", mproc_strerror(err));
    long *data = mproc_array_data(arr); /* slices do not overlap: no lock */
    for (size_t i = s.lo; i < s.hi; i++)
        data[i] = (long)(i * i);
    mproc_array_free(arr);
    return 0;
}

int main(void) {
    CHECK(mproc_init());
    mproc_array *arr;
    CHECK(mproc_array_create(&arr, MPROC_T_LONG, 0, N, NULL, MPROC_NOLOCK));
    mproc_ref ref; /* 16 plain bytes that name the array */
    CHECK(mproc_ref_of(arr, &ref));
    struct slice slices[4];
    mproc_buf items[4];
    for (size_t k = 0; k < 4; k++) {
        slices[k] = (struct slice){ref, k * N / 4, (k + 1) * N / 4};
        items[k] = (mproc_buf){&slices[k], sizeof slices[k]};
    }
    mproc_pool *pool;
    CHECK(mproc_pool_create(&pool, &(mproc_pool_opts){.nworkers = 4}));
    mproc_result *r;
    CHECK(mproc_pool_map(pool, fill_squares, items, 4, NULL, &r));
    mproc_result_free(r);
    mproc_pool_destroy(pool);

    const long *data = mproc_array_data(arr);
    long sum = 0, expected = (long)(N - 1) * N * (2 * N - 1) / 6;
    for (size_t i = 0; i < N; i++)
        sum += data[i];
    printf("arr[0..%d] = [%ld, %ld, %ld, ..., %ld]\n", N - 1, data[0], data[1],
           data[2], data[N - 1]);
    printf("sum = %ld (%s)\n", sum, sum == expected ? "ok" : "WRONG");
    mproc_array_free(arr);
    return sum == expected ? 0 : 1;
}
