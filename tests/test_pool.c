/* SPDX-License-Identifier: MIT */
/* Pool basics: apply, map (both forms), starmap, async handles, callbacks,
 * close/join/terminate, and bad arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static int square_bytes(mproc_task *t, const void *arg, size_t len) {
    long x;
    if (len != sizeof x)
        return mproc_task_fail(t, "want %zu bytes, got %zu", sizeof x, len);
    memcpy(&x, arg, sizeof x);
    long y = x * x;
    return mproc_task_return(t, &y, sizeof y);
}

static int square_elem(mproc_task *t, const void *in, void *out) {
    (void)t;
    *(long *)out = *(const long *)in * *(const long *)in;
    return 0;
}

TEST(pool_apply) {
    mproc_pool *p;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 2}));
    long x = 7;
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply(p, square_bytes, &x, sizeof x, NULL, &r));
    size_t len;
    const long *y = mproc_result_data(r, 0, &len);
    ck_assert_uint_eq(len, sizeof *y);
    ck_assert_int_eq(*y, 49);
    ck_assert_int_eq(mproc_result_successful(r), 1);
    mproc_result_free(r);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}

TEST(pool_map_ordered) {
    mproc_pool *p;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 3}));
    enum { N = 1000 };
    long in[N], out[N];
    for (long i = 0; i < N; i++)
        in[i] = i;
    mproc_result *r;
    ASSERT_OK(mproc_pool_map_array(p, square_elem, in, N, sizeof *in, out,
                                   sizeof *out, NULL, &r));
    for (long i = 0; i < N; i++)
        ck_assert_int_eq(out[i], i * i);
    mproc_result_free(r);

    mproc_buf items[N];
    for (long i = 0; i < N; i++)
        items[i] = (mproc_buf){&in[i], sizeof in[i]};
    ASSERT_OK(mproc_pool_map(p, square_bytes, items, N,
                             &(mproc_call_opts){.chunksize = 7}, &r));
    ck_assert_uint_eq(mproc_result_count(r), N);
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(*(const long *)mproc_result_data(r, i, NULL),
                         (long)(i * i));
    mproc_result_free(r);
    mproc_pool_destroy(p);
}
