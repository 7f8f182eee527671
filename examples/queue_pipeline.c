/* A producer/consumer pipeline on two Queues, in the style of the seeds'
 * Process examples: two producers put the numbers 1..100 on `tasks`, two
 * consumers take them and put their squares on `results`, and the parent
 * adds the results up. When both producers are done the parent closes
 * `tasks`; a consumer's get then drains what is left and returns MPROC_EOF,
 * which ends it (no sentinel messages needed). */
#include <stdio.h>
#include <stdlib.h>

#include <mproc.h>

#include "example.h"

struct queues {
    mproc_queue *tasks, *results;
    long lo, hi; /* a producer's numbers: lo..hi-1 */
};

static int producer(void *arg, size_t len) {
    (void)len;
    const struct queues *q = arg;
    for (long x = q->lo; x < q->hi; x++)
        CHECK(mproc_queue_put(q->tasks, &x, sizeof x, MPROC_FOREVER));
    return 0;
}

static int consumer(void *arg, size_t len) {
    (void)len;
    const struct queues *q = arg;
    long x;
    size_t n;
    int err;
    while ((err = mproc_queue_get_into(q->tasks, &x, sizeof x, &n,
                                       MPROC_FOREVER)) == 0) {
        long y = x * x;
        CHECK(mproc_queue_put(q->results, &y, sizeof y, MPROC_FOREVER));
    }
    return err == MPROC_EOF ? 0 : 1;
}

int main(void) {
    CHECK(mproc_init());
    struct queues q = {0};
    CHECK(mproc_queue_create(&q.tasks, NULL));
    CHECK(mproc_queue_create(&q.results, NULL));
    mproc_process *procs[4];
    for (int i = 0; i < 4; i++) {
        q.lo = 1 + 50 * i, q.hi = q.lo + 50; /* producers 0, 1: 1..100 */
        CHECK(mproc_process_create(&procs[i], i < 2 ? producer : consumer, &q,
                                   sizeof q, NULL));
        CHECK(mproc_process_start(procs[i]));
    }
    for (int i = 0; i < 2; i++)
        CHECK(mproc_process_join(procs[i], MPROC_FOREVER));
    CHECK(mproc_queue_close(q.tasks)); /* no more work: consumers stop */

    long sum = 0, y;
    size_t n;
    for (int i = 0; i < 100; i++) {
        CHECK(mproc_queue_get_into(q.results, &y, sizeof y, &n, MPROC_FOREVER));
        sum += y;
    }
    printf("100 results, sum of squares 1..100 = %ld\nexit codes: [", sum);
    for (int i = 0; i < 4; i++) {
        int code;
        CHECK(mproc_process_join(procs[i], MPROC_FOREVER));
        CHECK(mproc_process_exitcode(procs[i], &code));
        printf("%s%d", i ? ", " : "", code);
        mproc_process_destroy(procs[i]);
    }
    printf("]\n");
    mproc_queue_free(q.tasks);
    mproc_queue_free(q.results);
    return 0;
}
