/* Twin of seeds/001_e93c5923adf3846b.txt "Panduan Lengkap Python
 * Multiprocessing", 6.1 "Optimasi Jumlah Proses dengan cpu_count()":
 * Pool(cpu_count() - 1). */
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

static int square(mproc_task *t, const void *in, void *out) {
    (void)t;
    long x = *(const long *)in;
    *(long *)out = x * x;
    return 0;
}

int main(void) {
    CHECK(mproc_init());
    long in[100], results[100];
    for (long i = 0; i < 100; i++)
        in[i] = i;
    /* Leave one core to the system, but keep at least one worker (Python's
     * Pool(0) on a 1-CPU machine raises ValueError). */
    int n = mproc_cpu_count() - 1;
    mproc_pool *pool;
    CHECK(mproc_pool_create(&pool,
                            &(mproc_pool_opts){.nworkers = n > 0 ? n : 1}));
    mproc_result *r;
    CHECK(mproc_pool_map_array(pool, square, in, 100, sizeof *in, results,
                               sizeof *results, NULL, &r));
    mproc_result_free(r);
    mproc_pool_destroy(pool);
    print_list(results, 100);
    return 0;
}
