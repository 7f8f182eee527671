/* Twin of seeds/001_e93c5923adf3846b.txt "Panduan Lengkap Python
 * Multiprocessing", 3.1 "Cara Menggunakan Kelas Process": run worker_function
 * in a new process. */
#include <stdio.h>
#include <stdlib.h>

#include <mproc.h>

#include "example.h"

static int worker_function(void *arg, size_t len) {
    (void)arg, (void)len;
    printf("Proses baru telah dijalankan\n");
    return 0;
}

int main(void) {
    CHECK(mproc_init());
    mproc_process *process;
    CHECK(mproc_process_create(&process, worker_function, NULL, 0, NULL));
    CHECK(mproc_process_start(process));
    CHECK(mproc_process_join(process, MPROC_FOREVER));
    mproc_process_destroy(process);
    return 0;
}
