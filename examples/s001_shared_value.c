/* Twin of seeds/001_e93c5923adf3846b.txt "Panduan Lengkap Python
 * Multiprocessing", 4.1 "Berbagi Data dengan Shared Memory": five processes
 * increment a shared Value('i', 0) under its get_lock(). Each child is a
 * fork, so it gets the handle pointer itself as its argument. */
#include <stdio.h>
#include <stdlib.h>

#include <mproc.h>

#include "example.h"

static int increment_value(void *arg, size_t len) {
    (void)len;
    mproc_value *shared_value = *(mproc_value **)arg;
    /* with shared_value.get_lock(): shared_value.value += 1 */
    mproc_lock *lock = mproc_value_lock(shared_value);
    CHECK(mproc_lock_acquire(lock, MPROC_FOREVER));
    *(int *)mproc_value_ptr(shared_value) += 1;
    CHECK(mproc_lock_release(lock));
    return 0;
}

int main(void) {
    CHECK(mproc_init());
    mproc_value *shared_value;
    CHECK(mproc_value_create(&shared_value, MPROC_T_INT, 0, NULL, 0));
    mproc_process *processes[5];
    for (int i = 0; i < 5; i++)
        CHECK(mproc_process_create(&processes[i], increment_value,
                                   &shared_value, sizeof shared_value, NULL));
    for (int i = 0; i < 5; i++)
        CHECK(mproc_process_start(processes[i]));
    for (int i = 0; i < 5; i++) {
        CHECK(mproc_process_join(processes[i], MPROC_FOREVER));
        mproc_process_destroy(processes[i]);
    }
    int value;
    CHECK(mproc_value_get(shared_value, &value, sizeof value));
    printf("Nilai akhir: %d\n", value);
    mproc_value_free(shared_value);
    return 0;
}
