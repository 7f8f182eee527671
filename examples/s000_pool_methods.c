/* Twin of seeds/000_5a9eb090709de31f.txt "Paralelisasi di Python", "Contoh
 * penggunaan": apply, map, map_async with a callback, and starmap on a pool of
 * 4 processes. */
#define _POSIX_C_SOURCE 200809L /* sleep */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mproc.h>

#include "example.h"

static void print_list(const char *label, const long *v, size_t n) {
    printf("%s[", label);
    for (size_t i = 0; i < n; i++)
        printf("%s%ld", i ? ", " : "", v[i]);
    printf("]\n");
}

/* f(x) = x*x, once in the bytes form (for apply), once typed (for map). */
static int f_bytes(mproc_task *t, const void *arg, size_t len) {
    long x;
    if (len != sizeof x)
        return mproc_task_fail(t, "want a long, got %zu bytes", len);
    memcpy(&x, arg, sizeof x);
    long y = x * x;
    return mproc_task_return(t, &y, sizeof y);
}

static int f(mproc_task *t, const void *in, void *out) {
    (void)t;
    *(long *)out = *(const long *)in * *(const long *)in;
    return 0;
}

static int g(mproc_task *t, const void *in, void *out) {
    sleep(1);
    return f(t, in, out);
}

struct hargs {
    long x, y;
};

static int h(mproc_task *t, const void *in, void *out) {
    (void)t;
    const struct hargs *a = in;
    *(long *)out = a->x * a->y;
    return 0;
}

/* Runs in this process, on the pool's result thread; arg is the out array. */
static int cback(mproc_result *r, void *arg) {
    print_list("**async**: ", arg, mproc_result_count(r));
    return 0;
}

int main(void) {
    CHECK(mproc_init());
    mproc_pool *pool;
    CHECK(mproc_pool_create(&pool, &(mproc_pool_opts){.nworkers = 4}));
    mproc_result *r;

    /* apply */
    long seven = 7;
    CHECK(mproc_pool_apply(pool, f_bytes, &seven, sizeof seven, NULL, &r));
    printf("apply    : %ld\n", *(const long *)mproc_result_data(r, 0, NULL));
    mproc_result_free(r);

    /* map */
    long range[10], out[10];
    for (long i = 0; i < 10; i++)
        range[i] = i;
    CHECK(mproc_pool_map_array(pool, f, range, 10, sizeof *range, out,
                               sizeof *out, NULL, &r));
    print_list("map      : ", out, 10);
    mproc_result_free(r);

    /* map_async: returns at once; cback prints when all 10 are done */
    long async_out[10];
    mproc_result *ar;
    CHECK(mproc_pool_map_array_async(
        pool, g, range, 10, sizeof *range, async_out, sizeof *async_out,
        &(mproc_call_opts){.on_success = cback, .cb_arg = async_out}, &ar));
    printf("map_async: <mproc_result object at %p>\n", (void *)ar);

    /* starmap */
    struct hargs hin[] = {{1, 2}, {3, 4}};
    long hout[2];
    CHECK(mproc_pool_starmap(pool, h, hin, 2, sizeof *hin, hout, sizeof *hout,
                             NULL, &r));
    print_list("starmap  : ", hout, 2);
    mproc_result_free(r);

    CHECK(mproc_pool_close(pool));
    CHECK(mproc_pool_join(pool, MPROC_FOREVER)); /* cback has run by now */
    mproc_result_free(ar);
    mproc_pool_destroy(pool);
    return 0;
}
