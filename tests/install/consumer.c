/* SPDX-License-Identifier: MIT */
/* A program outside the tree that uses an installed mproc. */
#include <mproc.h>
#include <stdio.h>

static int twice(mproc_task *t, const void *in, void *out) {
    (void)t;
    *(int *)out = 2 * *(const int *)in;
    return 0;
}

int main(void) {
    mproc_pool *p;
    int in[4] = {1, 2, 3, 4}, out[4];
    mproc_result *r;
    if (mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 2}) ||
        mproc_pool_map_array(p, twice, in, 4, sizeof *in, out, sizeof *out,
                             NULL, &r))
        return 1;
    printf("%s %d %d %d %d\n", mproc_version_string(), out[0], out[1], out[2],
           out[3]);
    mproc_result_free(r);
    mproc_pool_destroy(p);
    return 0;
}
