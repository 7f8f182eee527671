/* Twin of seeds/003_18d07619cd255c6b.txt "Parallel Processing in Python", "Pool
 * class": map_async(square, [0, 1, 2, 3, 4]) returns at once; get() waits. */
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
    CHECK(mproc_pool_create(&pool, NULL)); /* one worker per usable CPU */
    long inputs[] = {0, 1, 2, 3, 4}, outputs[5];
    mproc_result *outputs_async;
    CHECK(mproc_pool_map_array_async(pool, square, inputs, 5, sizeof *inputs,
                                     outputs, sizeof *outputs, NULL,
                                     &outputs_async));
    CHECK(mproc_result_get(outputs_async, MPROC_FOREVER));
    print_list("Output: ", outputs, 5);
    mproc_result_free(outputs_async);
    mproc_pool_destroy(pool);
    return 0;
}
