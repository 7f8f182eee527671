/* Ping-pong over a duplex Pipe, in the style of the seeds' Process
 * examples: the parent and a child Process bounce a counter back and forth,
 * each adding 1 before sending it on. The child is a fork and has its own
 * copy of both ends: it closes the parent's, so that when the parent closes
 * its end the child's recv returns MPROC_EOF and the child ends. */
#include <stdio.h>
#include <stdlib.h>

#include <mproc.h>

#include "example.h"

#define N 1000 /* round trips */

struct ends {
    mproc_conn *parent, *child;
};

static int pong(void *arg, size_t len) {
    (void)len;
    const struct ends *e = arg;
    mproc_conn_close(e->parent);
    long count;
    size_t n;
    int err;
    while ((err = mproc_conn_recv_into(e->child, &count, sizeof count, &n,
                                       MPROC_FOREVER)) == 0) {
        count++;
        CHECK(mproc_conn_send(e->child, &count, sizeof count));
    }
    mproc_conn_close(e->child);
    return err == MPROC_EOF ? 0 : 1;
}

int main(void) {
    CHECK(mproc_init());
    struct ends e;
    CHECK(mproc_pipe(&e.parent, &e.child, 1));
    mproc_process *p;
    CHECK(mproc_process_create(&p, pong, &e, sizeof e, NULL));
    CHECK(mproc_process_start(p));
    mproc_conn_close(e.child);

    long count = 0;
    size_t n;
    for (int i = 0; i < N; i++) {
        count++;
        CHECK(mproc_conn_send(e.parent, &count, sizeof count));
        CHECK(mproc_conn_recv_into(e.parent, &count, sizeof count, &n,
                                   MPROC_FOREVER));
    }
    mproc_conn_close(e.parent); /* the child sees EOF */
    int code;
    CHECK(mproc_process_join(p, MPROC_FOREVER));
    CHECK(mproc_process_exitcode(p, &code));
    mproc_process_destroy(p);
    printf("%d round trips, count = %ld, child exit code %d\n", N, count, code);
    return 0;
}
