/* Twin of seeds/003_18d07619cd255c6b.txt "Parallel Processing in Python",
 * "Pool class": [pool.apply_async(square, args=(i,)) for i in range(10)],
 * then get() on each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mproc.h>

#include "example.h"

static int square(mproc_task *t, const void *arg, size_t len) {
    long x;
    if (len != sizeof x)
        return mproc_task_fail(t, "want a long, got %zu bytes", len);
    memcpy(&x, arg, sizeof x);
    long y = x * x;
    return mproc_task_return(t, &y, sizeof y);
}

int main(void) {
    CHECK(mproc_init());
    mproc_pool *pool;
    CHECK(mproc_pool_create(&pool, NULL));
    mproc_result *result_async[10];
    for (long i = 0; i < 10; i++)
        CHECK(mproc_pool_apply_async(pool, square, &i, sizeof i, NULL,
                                     &result_async[i]));
    printf("Output: [");
    for (int i = 0; i < 10; i++) {
        CHECK(mproc_result_get(result_async[i], MPROC_FOREVER));
        const long *y = mproc_result_data(result_async[i], 0, NULL);
        printf("%s%ld", i ? ", " : "", *y);
        mproc_result_free(result_async[i]);
    }
    printf("]\n");
    mproc_pool_destroy(pool);
    return 0;
}
