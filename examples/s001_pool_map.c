/* Twin of seeds/001_e93c5923adf3846b.txt "Panduan Lengkap Python
 * Multiprocessing", 5.1 "Pemanfaatan Kelas Pool": Pool(4).map(square,
 * range(10)). */
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
    long in[10], results[10];
    for (long i = 0; i < 10; i++)
        in[i] = i;
    mproc_pool *pool;
    CHECK(mproc_pool_create(&pool, &(mproc_pool_opts){.nworkers = 4}));
    mproc_result *r;
    CHECK(mproc_pool_map_array(pool, square, in, 10, sizeof *in, results,
                               sizeof *results, NULL, &r));
    mproc_result_free(r);
    mproc_pool_destroy(pool); /* leaving `with Pool(4)` */
    print_list(results, 10);
    return 0;
}
