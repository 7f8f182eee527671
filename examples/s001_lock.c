/* For seeds/001_e93c5923adf3846b.txt "Panduan Lengkap Python
 * Multiprocessing", 4.2 "Mencegah Konflik dengan Lock", which has no code:
 * four processes each add 1 three times to a counter that has no lock of
 * its own (a RawValue) and print it, all under one shared Lock. The lock
 * makes read, add and print one step, so no addition is lost and the
 * printed counts run 1, 2, ..., 12 in order, whichever process prints. */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <mproc.h>

#include "example.h"

struct args {
    mproc_lock *lock;
    mproc_value *counter;
    int id;
};

static int worker(void *arg, size_t len) {
    (void)len;
    const struct args *a = arg;
    int *counter = mproc_value_ptr(a->counter);
    for (int i = 0; i < 3; i++) {
        CHECK(mproc_lock_acquire(a->lock, MPROC_FOREVER)); /* with lock: */
        int n = *counter;
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL); /* 1 ms */
        *counter = n + 1;
        printf("Proses %d: counter = %d\n", a->id, *counter);
        CHECK(mproc_lock_release(a->lock));
    }
    return 0;
}

int main(void) {
    CHECK(mproc_init());
    setvbuf(stdout, NULL, _IOLBF, 0); /* each line goes out under the lock */
    struct args a;
    CHECK(mproc_lock_create(&a.lock));
    CHECK(mproc_value_create(&a.counter, MPROC_T_INT, 0, NULL, MPROC_NOLOCK));
    mproc_process *processes[4];
    for (a.id = 0; a.id < 4; a.id++) {
        CHECK(
            mproc_process_create(&processes[a.id], worker, &a, sizeof a, NULL));
        CHECK(mproc_process_start(processes[a.id]));
    }
    for (int i = 0; i < 4; i++) {
        CHECK(mproc_process_join(processes[i], MPROC_FOREVER));
        mproc_process_destroy(processes[i]);
    }
    int value;
    CHECK(mproc_value_get(a.counter, &value, sizeof value));
    printf("Nilai akhir: %d\n", value);
    mproc_value_free(a.counter);
    mproc_lock_free(a.lock);
    return 0;
}
