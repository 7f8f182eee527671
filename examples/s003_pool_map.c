/* Twin of seeds/003_18d07619cd255c6b.txt "Parallel Processing in Python", "Pool
 * class": Pool(processes=4).map(square, [0, 1, 2, 3, 4]). */
#include <stdio.h>
#include <stdlib.h>

#include <mproc.h>

#include "example.h"

static void print_list(const char *label, const long *v, size_t n) {
    printf("%s[", label);
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
    mproc_pool *pool;
    CHECK(mproc_pool_create(&pool, &(mproc_pool_opts){.nworkers = 4}));
    long inputs[] = {0, 1, 2, 3, 4}, outputs[5];
    mproc_result *r;
    CHECK(mproc_pool_map_array(pool, square, inputs, 5, sizeof *inputs, outputs,
                               sizeof *outputs, NULL, &r));
    print_list("Input: ", inputs, 5);
    print_list("Output: ", outputs, 5);
    mproc_result_free(r);
    mproc_pool_destroy(pool);
    return 0;
}
