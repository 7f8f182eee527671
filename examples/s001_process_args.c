/* Twin of seeds/001_e93c5923adf3846b.txt "Panduan Lengkap Python
 * Multiprocessing", 3.2 "Cara Memberikan Argumen ke Proses":
 * Process(target=worker, args=(5,)). */
#include <stdio.h>
#include <stdlib.h>

#include <mproc.h>

#include "example.h"

/* The child gets its own copy of the argument bytes. */
static int worker(void *arg, size_t len) {
    (void)len;
    printf("Worker %d dijalankan\n", *(const int *)arg);
    return 0;
}

int main(void) {
    CHECK(mproc_init());
    int number = 5;
    mproc_process *process;
    CHECK(mproc_process_create(&process, worker, &number, sizeof number, NULL));
    CHECK(mproc_process_start(process));
    CHECK(mproc_process_join(process, MPROC_FOREVER));
    mproc_process_destroy(process);
    return 0;
}
