/* Twin of seeds/003_18d07619cd255c6b.txt "Parallel Processing in Python",
 * "Process": a subclass of multiprocessing.Process with its own __init__ (an
 * id) and run(). In C the object is a struct the child gets a copy of. */
#define _POSIX_C_SOURCE 200809L /* sleep */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <mproc.h>

#include "example.h"

typedef struct {
    int id;
} my_process;

static int run(void *arg, size_t len) {
    (void)len;
    const my_process *self = arg;
    sleep(1);
    printf("I'm the process with id: %d\n", self->id);
    return 0;
}

/* Process(id): the __init__ */
static mproc_process *process_new(int id) {
    my_process self = {.id = id};
    mproc_process *p;
    CHECK(mproc_process_create(&p, run, &self, sizeof self, NULL));
    return p;
}

int main(void) {
    CHECK(mproc_init());
    mproc_process *p = process_new(0);
    CHECK(mproc_process_start(p));
    CHECK(mproc_process_join(p, MPROC_FOREVER));
    mproc_process_destroy(p);
    p = process_new(1);
    CHECK(mproc_process_start(p));
    CHECK(mproc_process_join(p, MPROC_FOREVER));
    mproc_process_destroy(p);
    return 0;
}
