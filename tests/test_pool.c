/* SPDX-License-Identifier: MIT */
/* Pool basics: apply, map (both forms), starmap, async handles, callbacks,
 * close/join/terminate, and bad arguments. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static int square_bytes(mproc_task *t, const void *arg, size_t len) {
    long x;
    if (len != sizeof x)
        return mproc_task_fail(t, "want %zu bytes, got %zu", sizeof x, len);
    memcpy(&x, arg, sizeof x);
    long y = x * x;
    return mproc_task_return(t, &y, sizeof y);
}

static int square_elem(mproc_task *t, const void *in, void *out) {
    (void)t;
    *(long *)out = *(const long *)in * *(const long *)in;
    return 0;
}

TEST(pool_apply) {
    mproc_pool *p;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 2}));
    long x = 7;
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply(p, square_bytes, &x, sizeof x, NULL, &r));
    size_t len;
    const long *y = mproc_result_data(r, 0, &len);
    ck_assert_uint_eq(len, sizeof *y);
    ck_assert_int_eq(*y, 49);
    ck_assert_int_eq(mproc_result_successful(r), 1);
    mproc_result_free(r);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}

TEST(pool_map_ordered) {
    mproc_pool *p;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 3}));
    enum { N = 1000 };
    long in[N], out[N];
    for (long i = 0; i < N; i++)
        in[i] = i;
    mproc_result *r;
    ASSERT_OK(mproc_pool_map_array(p, square_elem, in, N, sizeof *in, out,
                                   sizeof *out, NULL, &r));
    for (long i = 0; i < N; i++)
        ck_assert_int_eq(out[i], i * i);
    mproc_result_free(r);

    mproc_buf items[N];
    for (long i = 0; i < N; i++)
        items[i] = (mproc_buf){&in[i], sizeof in[i]};
    ASSERT_OK(mproc_pool_map(p, square_bytes, items, N,
                             &(mproc_call_opts){.chunksize = 7}, &r));
    ck_assert_uint_eq(mproc_result_count(r), N);
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(*(const long *)mproc_result_data(r, i, NULL),
                         (long)(i * i));
    mproc_result_free(r);
    mproc_pool_destroy(p);
}

/* CPU time (user + system) of process pid, in clock ticks. */
static long cpu_ticks(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command's closing parenthesis: state is 3rd, utime
     * and stime are 14th and 15th. */
    const char *s = strrchr(buf, ')');
    ck_assert_ptr_nonnull(s);
    unsigned long ut = 0, st = 0;
    ck_assert_int_eq(sscanf(s + 2,
                            "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                            "%lu %lu",
                            &ut, &st),
                     2);
    return (long)(ut + st);
}

static double process_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Workers and waiting callers spin only briefly before they sleep: after
 * some work, an idle pool uses no CPU. This measures over 300 ms of
 * idleness (a measurement window, not a wait for anything). */
TEST(pool_idle_uses_no_cpu) {
    mproc_pool *p;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 2}));
    for (long x = 0; x < 100; x++) {
        mproc_result *r;
        ASSERT_OK(mproc_pool_apply(p, square_bytes, &x, sizeof x, NULL, &r));
        mproc_result_free(r);
    }
    pid_t pids[2];
    ck_assert_int_eq(mproc_pool_worker_pids(p, pids, 2), 2);
    long t0[2] = {cpu_ticks(pids[0]), cpu_ticks(pids[1])};
    double c0 = process_cpu_s();
    (void)poll(NULL, 0, 300);
    long hz = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < 2; i++) {
        long used = cpu_ticks(pids[i]) - t0[i];
        ck_assert_msg(used * 1000 / hz <= 10,
                      "idle worker %d used %ld ms of CPU in 300 ms",
                      (int)pids[i], used * 1000 / hz);
    }
    double used = process_cpu_s() - c0;
    ck_assert_msg(used < 0.01, "the idle pool's process used %.3f s of CPU",
                  used);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}
