/* Twin of seeds/001_e93c5923adf3846b.txt "Panduan Lengkap Python
 * Multiprocessing", 5.2 "Contoh Lanjutan: Menggunakan starmap untuk
 * Multi-argumen". */
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

struct xy {
    long x, y;
};

static int multiply(mproc_task *t, const void *in, void *out) {
    (void)t;
    const struct xy *a = in;
    *(long *)out = a->x * a->y;
    return 0;
}

int main(void) {
    CHECK(mproc_init());
    struct xy args[] = {{1, 2}, {3, 4}, {5, 6}, {7, 8}};
    long results[4];
    mproc_pool *pool;
    CHECK(mproc_pool_create(&pool, &(mproc_pool_opts){.nworkers = 4}));
    mproc_result *r;
    CHECK(mproc_pool_starmap(pool, multiply, args, 4, sizeof *args, results,
                             sizeof *results, NULL, &r));
    mproc_result_free(r);
    mproc_pool_destroy(pool);
    print_list(results, 4);
    return 0;
}
