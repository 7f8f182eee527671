/* Twin of seeds/002_2ea5c0edd8eb8e95.txt "平行化你的 Python 程式", "實作 Worker
 * Pool": demo(a, b) over [(i, i) for i in range(10)] with starmap (pool_sync)
 * and with starmap_async + get (pool_async). The workers print in whatever
 * order they run; the returned lists are in input order. */
#include <stdio.h>
#include <stdlib.h>

#include <mproc.h>

#include "example.h"

static void print_list(const long *v, size_t n) {
    printf("[");
    for (size_t i = 0; i < n; i++)
        printf("%s%ld", i ? ", " : "", v[i]);
    printf("]\n");
}

struct ab {
    long a, b;
};

static int demo(mproc_task *t, const void *in, void *out) {
    (void)t;
    const struct ab *x = in;
    printf("%ld + %ld = %ld\n", x->a, x->b, x->a + x->b);
    *(long *)out = x->a + x->b;
    return 0;
}

static void pool_sync(void) {
    struct ab args[10];
    long res[10];
    for (long i = 0; i < 10; i++)
        args[i] = (struct ab){i, i};
    mproc_pool *p;
    CHECK(mproc_pool_create(&p,
                            &(mproc_pool_opts){.nworkers = mproc_cpu_count()}));
    mproc_result *r;
    CHECK(mproc_pool_starmap(p, demo, args, 10, sizeof *args, res, sizeof *res,
                             NULL, &r));
    CHECK(mproc_pool_close(p));
    CHECK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_result_free(r);
    mproc_pool_destroy(p);
    print_list(res, 10);
}

static void pool_async(void) {
    struct ab args[10];
    long res[10];
    for (long i = 0; i < 10; i++)
        args[i] = (struct ab){i, i};
    mproc_pool *p;
    CHECK(mproc_pool_create(&p,
                            &(mproc_pool_opts){.nworkers = mproc_cpu_count()}));
    mproc_result *cb; /* returns immediately */
    CHECK(mproc_pool_starmap_async(p, demo, args, 10, sizeof *args, res,
                                   sizeof *res, NULL, &cb));
    CHECK(mproc_result_get(cb, MPROC_FOREVER));
    CHECK(mproc_pool_close(p));
    CHECK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_result_free(cb);
    mproc_pool_destroy(p);
    print_list(res, 10);
}

int main(void) {
    CHECK(mproc_init());
    /* Line-buffered, so that our lines and the workers' (they share our
     * stdout) come out in the order they were printed, even into a pipe. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    pool_sync();
    pool_async();
    return 0;
}
