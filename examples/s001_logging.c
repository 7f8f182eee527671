/* Twin of seeds/001_e93c5923adf3846b.txt "Panduan Lengkap Python
 * Multiprocessing", 7.2 "Best Practice", logging: a Process named Worker1 logs
 * at INFO. To stderr, mproc writes "[INFO/Worker1 <pid>] Proses Worker1
 * dimulai" where Python writes "INFO:root:Proses Worker1 dimulai". */
#include <stdio.h>
#include <stdlib.h>

#include <mproc.h>

#include "example.h"

static int worker_function(void *arg, size_t len) {
    (void)arg, (void)len;
    mproc_log(MPROC_LOG_INFO, "Proses %s dimulai", mproc_current_name());
    return 0;
}

int main(void) {
    CHECK(mproc_init());
    mproc_log_set_level(MPROC_LOG_INFO); /* logging.basicConfig(level=INFO) */
    mproc_process *process;
    CHECK(mproc_process_create(&process, worker_function, NULL, 0,
                               &(mproc_process_opts){.name = "Worker1"}));
    CHECK(mproc_process_start(process));
    CHECK(mproc_process_join(process, MPROC_FOREVER));
    mproc_process_destroy(process);
    return 0;
}
