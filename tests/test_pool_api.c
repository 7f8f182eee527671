/* SPDX-License-Identifier: MIT */
/*
 * The pool API beyond the basics: argument checking and error codes, task
 * failures, result handles (timeouts, readiness, freeing early), callbacks
 * (thread, order, re-entrancy, deadlock detection), imap and
 * imap_unordered, initializers, max_tasks_per_child, retries, worker
 * identity, task indexes, progress, CPU pinning, concurrent submitters,
 * large payloads, and close/join/terminate/destroy.
 *
 * Synchronisation with tasks never sleeps: pool workers are forked from the
 * fork server, which starts with the first pool of a test, so a pipe or a
 * MAP_SHARED anonymous mapping made before that pool is inherited by every
 * worker. Tasks block reading a byte from the "gate" pipe until the test
 * writes one, and count their attempts in shared memory. Task bodies run in
 * workers and cannot use ck_assert: they report through their result bytes
 * or by failing, and the test asserts on that.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"

/* ---- shared with workers: made before the first pool of a test -------- */

/* Tasks that must wait block reading one byte from g_gate[0]. */
static int g_gate[2] = {-1, -1};

typedef struct shared_state {
    _Atomic int attempts;
    _Atomic int item_attempts[64];
} shared_state;
static shared_state *g_sh;

static void gate_open(void) {
    ck_assert_int_eq(pipe2(g_gate, O_CLOEXEC), 0);
}

static void gate_release(int n, char c) {
    for (int i = 0; i < n; i++) {
        ssize_t w;
        do
            w = write(g_gate[1], &c, 1);
        while (w < 0 && errno == EINTR);
        ck_assert_int_eq(w, 1);
    }
}

static void gate_close(void) {
    close(g_gate[0]);
    close(g_gate[1]);
    g_gate[0] = g_gate[1] = -1;
}

static void shared_open(void) {
    void *m = mmap(NULL, sizeof *g_sh, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert(m != MAP_FAILED);
    g_sh = m;
}

static void shared_close(void) {
    munmap(g_sh, sizeof *g_sh);
    g_sh = NULL;
}

/* ---- small helpers in the test process ---------------------------------- */

static void make_pipe(int fds[2]) {
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
}

/* Read one byte, waiting at most ms (scaled); -1 on timeout or error. */
static int read_byte_within(int fd, char *c, long ms) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int r;
    do
        r = poll(&pf, 1, (int)test_ms(ms));
    while (r < 0 && errno == EINTR);
    if (r != 1)
        return -1;
    ssize_t n;
    do
        n = read(fd, c, 1);
    while (n < 0 && errno == EINTR);
    return n == 1 ? 0 : -1;
}

static void write_byte(int fd, char c) {
    ssize_t n;
    do
        n = write(fd, &c, 1);
    while (n < 0 && errno == EINTR);
    ck_assert_int_eq(n, 1);
}

static mproc_pool *pool_new(int nworkers) {
    mproc_pool *p = NULL;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = nworkers}));
    ck_assert_ptr_nonnull(p);
    return p;
}

static void pool_end(mproc_pool *p) {
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}

static long result_long(mproc_result *r, size_t i) {
    size_t len = 0;
    const void *d = mproc_result_data(r, i, &len);
    ck_assert_msg(d != NULL, "item %zu has no data (status %s)", i,
                  mproc_err_name(mproc_result_status(r, i)));
    ck_assert_uint_eq(len, sizeof(long));
    long v;
    memcpy(&v, d, sizeof v);
    return v;
}

/* ---- task bodies (run in workers) --------------------------------------- */

static long arg_long(const void *arg, size_t len) {
    long x = -1;
    if (len == sizeof x)
        memcpy(&x, arg, sizeof x);
    return x;
}

static int t_long_x2(mproc_task *t, const void *arg, size_t len) {
    if (len != sizeof(long))
        return mproc_task_fail(t, "want %zu bytes, got %zu", sizeof(long), len);
    long y = arg_long(arg, len) * 2;
    return mproc_task_return(t, &y, sizeof y);
}

/* Typed elements are copied in and out with memcpy: no alignment is
 * promised for them. */
static long elem_long(const void *in) {
    long v;
    memcpy(&v, in, sizeof v);
    return v;
}

static void put_long(void *out, long v) {
    memcpy(out, &v, sizeof v);
}

static int e_long_x2(mproc_task *t, const void *in, void *out) {
    (void)t;
    put_long(out, elem_long(in) * 2);
    return 0;
}

/* Blocks until the test writes a byte to the gate; returns that byte. */
static int t_gate(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    char c;
    ssize_t n;
    do
        n = read(g_gate[0], &c, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        return mproc_task_fail(t, "gate read returned %zd", n);
    return mproc_task_return(t, &c, 1);
}

static int e_gate(mproc_task *t, const void *in, void *out) {
    (void)in;
    char c;
    ssize_t n;
    do
        n = read(g_gate[0], &c, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        return mproc_task_fail(t, "gate read returned %zd", n);
    put_long(out, c);
    return 0;
}

static int t_fail_item(mproc_task *t, const void *arg, size_t len) {
    return mproc_task_fail(t, "bad item %d", (int)arg_long(arg, len));
}

/* Odd inputs fail with "bad item <i>", even ones return i * 10. */
static int t_odd_fails(mproc_task *t, const void *arg, size_t len) {
    long i = arg_long(arg, len);
    if (i % 2)
        return mproc_task_fail(t, "bad item %ld", i);
    long y = i * 10;
    return mproc_task_return(t, &y, sizeof y);
}

static int e_odd_fails(mproc_task *t, const void *in, void *out) {
    long i = elem_long(in);
    if (i % 2)
        return mproc_task_fail(t, "bad item %ld", i);
    put_long(out, i * 10);
    return 0;
}

static int t_return_minus5(mproc_task *t, const void *arg, size_t len) {
    (void)t;
    (void)arg;
    (void)len;
    return -5;
}

static int t_long_msg(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    return mproc_task_fail(t, "%s", big);
}

static int t_getpid(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    long pid = (long)getpid();
    return mproc_task_return(t, &pid, sizeof pid);
}

static int t_index(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    long i = (long)mproc_task_index(t);
    return mproc_task_return(t, &i, sizeof i);
}

static int e_index(mproc_task *t, const void *in, void *out) {
    (void)in;
    put_long(out, (long)mproc_task_index(t));
    return 0;
}

static int t_len(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    long l = (long)len;
    return mproc_task_return(t, &l, sizeof l);
}

static int t_nothing(mproc_task *t, const void *arg, size_t len) {
    (void)t;
    (void)arg;
    (void)len;
    return 0;
}

/* Crashes on the first attempt of all (counted in shared memory). */
static int t_crash_first(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    int n = atomic_fetch_add(&g_sh->attempts, 1);
    if (n == 0)
        raise(SIGSEGV);
    long v = n;
    return mproc_task_return(t, &v, sizeof v);
}

/* Fails by itself, counting attempts. */
static int t_fail_counted(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    int n = atomic_fetch_add(&g_sh->attempts, 1);
    return mproc_task_fail(t, "attempt %d", n);
}

/* Returns i * 10, crashing on the first attempt of item 5. */
static int t_crash_item5_once(mproc_task *t, const void *arg, size_t len) {
    long i = arg_long(arg, len);
    if (i < 0 || i >= 64)
        return mproc_task_fail(t, "bad input %ld", i);
    int n = atomic_fetch_add(&g_sh->item_attempts[i], 1);
    if (i == 5 && n == 0)
        raise(SIGSEGV);
    long y = i * 10;
    return mproc_task_return(t, &y, sizeof y);
}

/* ---- bad arguments ------------------------------------------------------ */

static int src_none(void *arg, size_t i, const void **data, size_t *len) {
    (void)arg;
    (void)i;
    (void)data;
    (void)len;
    return 0;
}

static int cb_nop(mproc_result *r, void *arg) {
    (void)r;
    (void)arg;
    return 0;
}

static void check_create_einval(const mproc_pool_opts *o, const char *what) {
    mproc_pool *p = (mproc_pool *)&p; /* must be reset to NULL */
    int rc = mproc_pool_create(&p, o);
    ck_assert_msg(rc == MPROC_EINVAL, "create with %s returned %s", what,
                  mproc_err_name(rc));
    ck_assert_ptr_null(p);
}

static int init_ok(void *arg, size_t len) {
    (void)arg;
    (void)len;
    return 0;
}

TEST(pool_api_bad_args) {
    /* Creation. */
    ASSERT_ERR(mproc_pool_create(NULL, NULL), MPROC_EINVAL);
    check_create_einval(&(mproc_pool_opts){.nworkers = -1}, "nworkers -1");
    check_create_einval(&(mproc_pool_opts){.nworkers = 100000},
                        "nworkers 100000");
    check_create_einval(
        &(mproc_pool_opts){.initializer = init_ok, .initarg_len = 8},
        "initarg_len without initarg");
    check_create_einval(
        &(mproc_pool_opts){.nworkers = 1, .max_tasks_per_child = -1},
        "max_tasks_per_child -1");

    mproc_pool *p = pool_new(1);
    long x = 1, in[4] = {1, 2, 3, 4}, out[4];
    mproc_buf items[2] = {{&x, sizeof x}, {NULL, 8}};
    mproc_result *r = (mproc_result *)&r;

    /* apply */
    ASSERT_ERR(mproc_pool_apply_async(NULL, t_long_x2, &x, sizeof x, NULL, &r),
               MPROC_EINVAL);
    ck_assert_ptr_null(r);
    ASSERT_ERR(mproc_pool_apply_async(p, NULL, &x, sizeof x, NULL, &r),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_apply_async(p, t_long_x2, NULL, 8, NULL, &r),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_apply_async(p, t_long_x2, &x, sizeof x, NULL, NULL),
               MPROC_EINVAL);
    r = (mproc_result *)&r;
    ASSERT_ERR(mproc_pool_apply(NULL, t_long_x2, &x, sizeof x, NULL, &r),
               MPROC_EINVAL);
    ck_assert_ptr_null(r);
    ASSERT_ERR(mproc_pool_apply(p, NULL, &x, sizeof x, NULL, &r), MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_apply(p, t_long_x2, NULL, 8, NULL, &r), MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_apply(p, t_long_x2, &x, sizeof x, NULL, NULL),
               MPROC_EINVAL);

    /* map, bytes form */
    r = (mproc_result *)&r;
    ASSERT_ERR(mproc_pool_map_async(NULL, t_long_x2, items, 1, NULL, &r),
               MPROC_EINVAL);
    ck_assert_ptr_null(r);
    ASSERT_ERR(mproc_pool_map_async(p, NULL, items, 1, NULL, &r), MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map_async(p, t_long_x2, NULL, 3, NULL, &r),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map_async(p, t_long_x2, items, 1, NULL, NULL),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map_async(p, t_long_x2, items, 2, NULL, &r),
               MPROC_EINVAL); /* items[1]: len 8, data NULL */
    ck_assert_ptr_null(r);
    ASSERT_ERR(mproc_pool_map(NULL, t_long_x2, items, 1, NULL, &r),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map(p, NULL, items, 1, NULL, &r), MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map(p, t_long_x2, NULL, 3, NULL, &r), MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map(p, t_long_x2, items, 1, NULL, NULL),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map(p, t_long_x2, items, 2, NULL, &r), MPROC_EINVAL);

    /* map_array and starmap */
    r = (mproc_result *)&r;
    ASSERT_ERR(mproc_pool_map_array_async(NULL, e_long_x2, in, 4, sizeof *in,
                                          out, sizeof *out, NULL, &r),
               MPROC_EINVAL);
    ck_assert_ptr_null(r);
    ASSERT_ERR(mproc_pool_map_array_async(p, NULL, in, 4, sizeof *in, out,
                                          sizeof *out, NULL, &r),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map_array_async(p, e_long_x2, NULL, 4, sizeof *in,
                                          out, sizeof *out, NULL, &r),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map_array_async(p, e_long_x2, in, 4, sizeof *in, NULL,
                                          sizeof *out, NULL, &r),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map_array_async(p, e_long_x2, in, 4, sizeof *in, out,
                                          sizeof *out, NULL, NULL),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map_array(NULL, e_long_x2, in, 4, sizeof *in, out,
                                    sizeof *out, NULL, &r),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map_array(p, NULL, in, 4, sizeof *in, out,
                                    sizeof *out, NULL, &r),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_map_array(p, e_long_x2, in, 4, sizeof *in, out,
                                    sizeof *out, NULL, NULL),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_starmap_async(NULL, e_long_x2, in, 4, sizeof *in, out,
                                        sizeof *out, NULL, &r),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_starmap_async(p, NULL, in, 4, sizeof *in, out,
                                        sizeof *out, NULL, &r),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_starmap(NULL, e_long_x2, in, 4, sizeof *in, out,
                                  sizeof *out, NULL, &r),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_starmap(p, e_long_x2, in, 4, sizeof *in, out,
                                  sizeof *out, NULL, NULL),
               MPROC_EINVAL);

    /* n * size overflowing size_t. */
    r = (mproc_result *)&r;
    ASSERT_ERR(mproc_pool_map_array_async(p, e_long_x2, in, (size_t)1 << 31,
                                          (size_t)1 << 40, out, sizeof *out,
                                          NULL, &r),
               MPROC_EOVERFLOW);
    ck_assert_ptr_null(r);
    ASSERT_ERR(mproc_pool_map_array_async(p, e_long_x2, in, (size_t)1 << 31,
                                          sizeof *in, out, (size_t)1 << 40,
                                          NULL, &r),
               MPROC_EOVERFLOW);
    ASSERT_ERR(mproc_pool_map_array(p, e_long_x2, in, SIZE_MAX / 8 + 1, 8, out,
                                    8, NULL, &r),
               MPROC_EOVERFLOW);
    ASSERT_ERR(mproc_pool_starmap(p, e_long_x2, in, SIZE_MAX / 2 + 1, 16, out,
                                  8, NULL, &r),
               MPROC_EOVERFLOW);

    /* imap */
    mproc_iter *it = (mproc_iter *)&it;
    ASSERT_ERR(mproc_pool_imap(NULL, t_long_x2, src_none, NULL, NULL, &it),
               MPROC_EINVAL);
    ck_assert_ptr_null(it);
    ASSERT_ERR(mproc_pool_imap(p, NULL, src_none, NULL, NULL, &it),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_imap(p, t_long_x2, NULL, NULL, NULL, &it),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_imap(p, t_long_x2, src_none, NULL, NULL, NULL),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_imap(p, t_long_x2, src_none, NULL,
                               &(mproc_call_opts){.on_success = cb_nop}, &it),
               MPROC_EINVAL);
    ck_assert_ptr_null(it);
    ASSERT_ERR(mproc_pool_imap(p, t_long_x2, src_none, NULL,
                               &(mproc_call_opts){.on_error = cb_nop}, &it),
               MPROC_EINVAL);
    mproc_item item;
    ASSERT_ERR(mproc_iter_next(NULL, 0, &item), MPROC_EINVAL);
    ASSERT_OK(mproc_pool_imap(p, t_long_x2, src_none, NULL, NULL, &it));
    ASSERT_ERR(mproc_iter_next(it, 0, NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EOF);
    mproc_iter_free(it);
    mproc_iter_free(NULL);

    /* pool queries and lifecycle */
    ASSERT_ERR(mproc_pool_close(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_join(NULL, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_terminate(NULL), MPROC_EINVAL);
    mproc_pool_destroy(NULL);
    ASSERT_ERR(mproc_pool_size(NULL), MPROC_EINVAL);
    pid_t pids[4];
    ASSERT_ERR(mproc_pool_worker_pids(NULL, pids, 4), MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_worker_pids(p, NULL, 4), MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_worker_pids(p, pids, -1), MPROC_EINVAL);
    mproc_pool_stats st;
    ASSERT_ERR(mproc_pool_get_stats(NULL, &st), MPROC_EINVAL);
    ASSERT_ERR(mproc_pool_get_stats(p, NULL), MPROC_EINVAL);

    /* result handles */
    size_t len = 123;
    ASSERT_ERR(mproc_result_wait(NULL, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_result_get(NULL, 0), MPROC_EINVAL);
    ck_assert_int_eq(mproc_result_ready(NULL), 0);
    ASSERT_ERR(mproc_result_successful(NULL), MPROC_EINVAL);
    ck_assert_uint_eq(mproc_result_count(NULL), 0);
    ASSERT_ERR(mproc_result_status(NULL, 0), MPROC_EINVAL);
    ck_assert_ptr_null(mproc_result_data(NULL, 0, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_null(mproc_result_data(NULL, 0, NULL));
    ck_assert_ptr_null(mproc_result_errmsg(NULL, 0));
    mproc_result_free(NULL);

    /* out-of-range items of a real handle */
    ASSERT_OK(mproc_pool_apply(p, t_long_x2, &x, sizeof x, NULL, &r));
    ck_assert_uint_eq(mproc_result_count(r), 1);
    ASSERT_ERR(mproc_result_status(r, 1), MPROC_EINVAL);
    len = 123;
    ck_assert_ptr_null(mproc_result_data(r, 1, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_null(mproc_result_errmsg(r, 1));
    ck_assert_ptr_null(mproc_result_errmsg(r, 0)); /* succeeded */
    ck_assert_int_eq(result_long(r, 0), 2);
    mproc_result_free(r);

    /* the task API outside a task */
    ASSERT_ERR(mproc_task_return(NULL, &x, sizeof x), MPROC_EINVAL);
    ASSERT_ERR(mproc_task_fail(NULL, "bad %d", 1), MPROC_EINVAL);
    ck_assert_uint_eq(mproc_task_index(NULL), 0);
    ck_assert_ptr_null(mproc_task_result_buf(NULL, 8));

    /* join of an open pool; work after close */
    ASSERT_ERR(mproc_pool_join(p, 0), MPROC_ESTATE);
    ASSERT_ERR(mproc_pool_join(p, MPROC_FOREVER), MPROC_ESTATE);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_close(p)); /* idempotent */
    r = (mproc_result *)&r;
    ASSERT_ERR(mproc_pool_apply_async(p, t_long_x2, &x, sizeof x, NULL, &r),
               MPROC_ECLOSED);
    ck_assert_ptr_null(r);
    ASSERT_ERR(mproc_pool_apply(p, t_long_x2, &x, sizeof x, NULL, &r),
               MPROC_ECLOSED);
    ASSERT_ERR(mproc_pool_map(p, t_long_x2, items, 1, NULL, &r), MPROC_ECLOSED);
    ASSERT_ERR(mproc_pool_map_array_async(p, e_long_x2, in, 4, sizeof *in, out,
                                          sizeof *out, NULL, &r),
               MPROC_ECLOSED);
    ASSERT_ERR(mproc_pool_starmap(p, e_long_x2, in, 4, sizeof *in, out,
                                  sizeof *out, NULL, &r),
               MPROC_ECLOSED);
    /* imap may refuse at once or at the first item; either way ECLOSED. */
    int rc = mproc_pool_imap(p, t_long_x2, src_none, NULL, NULL, &it);
    if (rc == 0) {
        ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EOF);
        mproc_iter_free(it);
    } else {
        ASSERT_ERR(rc, MPROC_ECLOSED);
    }
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}

/* imap over a non-empty source on a closed pool: the submission fails. */
static int src_one_long(void *arg, size_t i, const void **data, size_t *len) {
    static long v;
    (void)arg;
    if (i > 0)
        return 0;
    v = 5;
    *data = &v;
    *len = sizeof v;
    return 1;
}

TEST(pool_api_imap_closed) {
    mproc_pool *p = pool_new(1);
    ASSERT_OK(mproc_pool_close(p));
    mproc_iter *it = NULL;
    int rc = mproc_pool_imap(p, t_long_x2, src_one_long, NULL, NULL, &it);
    if (rc == 0) {
        mproc_item item;
        ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_ECLOSED);
        ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EOF);
        mproc_iter_free(it);
    } else {
        ASSERT_ERR(rc, MPROC_ECLOSED);
    }
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}

/* ---- error codes -------------------------------------------------------- */

static void check_code(int code, const char *name, const char *msg) {
    const char *s = mproc_strerror(code);
    const char *n = mproc_err_name(code);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(n);
    ck_assert_msg(s[0] != '\0', "empty strerror for %s", name);
    ck_assert_str_eq(s, msg);
    ck_assert_str_eq(n, name);
    ck_assert_int_lt(code, 0);
}

TEST(pool_api_strerror) {
#define CHECK_CODE_(name, value, msg)                                          \
    check_code(MPROC_##name, "MPROC_" #name, msg);
    MPROC_ERRNO_MAP(CHECK_CODE_)
#undef CHECK_CODE_
    /* Codes outside the map still get a sentence and a name. */
    static const int other[] = {0, 1, -99999, -4095, -EBADF, -ENOENT};
    for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
        ck_assert_ptr_nonnull(mproc_strerror(other[i]));
        ck_assert_ptr_nonnull(mproc_err_name(other[i]));
        ck_assert(mproc_strerror(other[i])[0] != '\0');
        ck_assert(mproc_err_name(other[i])[0] != '\0');
    }
}

/* ---- result handles: timeouts and readiness ---------------------------- */

TEST(pool_api_result_timeout) {
    gate_open();
    mproc_pool *p = pool_new(1);
    mproc_result *r = NULL;
    ASSERT_OK(mproc_pool_apply_async(p, t_gate, NULL, 0, NULL, &r));
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(mproc_result_count(r), 1);

    uint64_t t0 = test_now_ms();
    ASSERT_ERR(mproc_result_get(r, 50), MPROC_ETIMEDOUT);
    ASSERT_ERR(mproc_result_wait(r, 30), MPROC_ETIMEDOUT);
    ASSERT_ERR(mproc_result_wait(r, 0), MPROC_ETIMEDOUT);
    ASSERT_ERR(mproc_result_get(r, 0), MPROC_ETIMEDOUT);
    ck_assert_uint_lt(test_now_ms() - t0, (uint64_t)test_ms(5000));
    ck_assert_int_eq(mproc_result_ready(r), 0);
    ASSERT_ERR(mproc_result_successful(r), MPROC_ENOTREADY);
    ASSERT_ERR(mproc_result_status(r, 0), MPROC_ENOTREADY);
    size_t len = 99;
    ck_assert_ptr_null(mproc_result_data(r, 0, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_null(mproc_result_errmsg(r, 0));

    gate_release(1, 'z');
    ASSERT_OK(mproc_result_get(r, test_ms(10000)));
    ck_assert_int_eq(mproc_result_ready(r), 1);
    ck_assert_int_eq(mproc_result_successful(r), 1);
    ASSERT_OK(mproc_result_status(r, 0));
    ASSERT_OK(mproc_result_wait(r, 0));
    ASSERT_OK(mproc_result_get(r, 0));
    const char *d = mproc_result_data(r, 0, &len);
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(d[0], 'z');
    mproc_result_free(r);

    /* join with a timeout while a closed pool still has work */
    ASSERT_OK(mproc_pool_apply_async(p, t_gate, NULL, 0, NULL, &r));
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_ERR(mproc_pool_join(p, 30), MPROC_ETIMEDOUT);
    ASSERT_ERR(mproc_pool_join(p, 0), MPROC_ETIMEDOUT);
    ck_assert_int_eq(mproc_result_ready(r), 0);
    gate_release(1, 'y');
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    ASSERT_OK(mproc_result_get(r, 0));
    d = mproc_result_data(r, 0, &len);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(d[0], 'y');
    mproc_result_free(r);
    mproc_pool_destroy(p);
    gate_close();
}

/* ---- task failures ------------------------------------------------------ */

TEST(pool_api_task_fail_message) {
    mproc_pool *p = pool_new(2);
    long seven = 7;
    mproc_result *r = NULL;
    ASSERT_ERR(mproc_pool_apply(p, t_fail_item, &seven, sizeof seven, NULL, &r),
               MPROC_ETASK);
    ck_assert_ptr_nonnull(r); /* set: the call was accepted */
    ck_assert_int_eq(mproc_result_ready(r), 1);
    ASSERT_ERR(mproc_result_status(r, 0), MPROC_ETASK);
    ASSERT_ERR(mproc_result_get(r, 0), MPROC_ETASK);
    ck_assert_int_eq(mproc_result_successful(r), 0);
    ck_assert_ptr_nonnull(mproc_result_errmsg(r, 0));
    ck_assert_str_eq(mproc_result_errmsg(r, 0), "bad item 7");
    size_t len = 5;
    ck_assert_ptr_null(mproc_result_data(r, 0, &len));
    ck_assert_uint_eq(len, 0);
    mproc_result_free(r);

    /* Any nonzero return fails the task, with some message. */
    ASSERT_ERR(mproc_pool_apply(p, t_return_minus5, NULL, 0, NULL, &r),
               MPROC_ETASK);
    ASSERT_ERR(mproc_result_status(r, 0), MPROC_ETASK);
    ck_assert_ptr_nonnull(mproc_result_errmsg(r, 0));
    ck_assert(mproc_result_errmsg(r, 0)[0] != '\0');
    mproc_result_free(r);

    /* A long message is cut, not a protocol error. */
    ASSERT_ERR(mproc_pool_apply(p, t_long_msg, NULL, 0, NULL, &r), MPROC_ETASK);
    const char *m = mproc_result_errmsg(r, 0);
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_ge(strlen(m), 100);
    ck_assert_uint_lt(strlen(m), 3000);
    ck_assert_int_eq(strspn(m, "x"), strlen(m));
    mproc_result_free(r);

    /* The pool is fine afterwards. */
    ASSERT_OK(mproc_pool_apply(p, t_long_x2, &seven, sizeof seven, NULL, &r));
    ck_assert_int_eq(result_long(r, 0), 14);
    mproc_result_free(r);
    pool_end(p);
}

TEST(pool_api_map_partial_failure) {
    enum { N = 51 };
    mproc_pool *p = pool_new(3);
    long in[N], out[N];
    mproc_buf items[N];
    for (long i = 0; i < N; i++) {
        in[i] = i;
        items[i] = (mproc_buf){&in[i], sizeof in[i]};
    }
    mproc_result *r = NULL;
    ASSERT_ERR(mproc_pool_map(p, t_odd_fails, items, N,
                              &(mproc_call_opts){.chunksize = 4}, &r),
               MPROC_ETASK);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(mproc_result_count(r), N);
    ck_assert_int_eq(mproc_result_successful(r), 0);
    ASSERT_ERR(mproc_result_get(r, 0), MPROC_ETASK);
    for (size_t i = 0; i < N; i++) {
        if (i % 2) {
            char want[32];
            snprintf(want, sizeof want, "bad item %zu", i);
            ASSERT_ERR(mproc_result_status(r, i), MPROC_ETASK);
            ck_assert_ptr_null(mproc_result_data(r, i, NULL));
            ck_assert_ptr_nonnull(mproc_result_errmsg(r, i));
            ck_assert_str_eq(mproc_result_errmsg(r, i), want);
        } else {
            ASSERT_OK(mproc_result_status(r, i));
            ck_assert_int_eq(result_long(r, i), (long)i * 10);
            ck_assert_ptr_null(mproc_result_errmsg(r, i));
        }
    }
    mproc_result_free(r);

    /* Typed form: failed slots are zeroed, the others kept. */
    memset(out, 0x5a, sizeof out);
    ASSERT_ERR(mproc_pool_map_array(p, e_odd_fails, in, N, sizeof *in, out,
                                    sizeof *out,
                                    &(mproc_call_opts){.chunksize = 5}, &r),
               MPROC_ETASK);
    ck_assert_uint_eq(mproc_result_count(r), N);
    for (size_t i = 0; i < N; i++) {
        ck_assert_ptr_null(mproc_result_data(r, i, NULL)); /* typed */
        if (i % 2) {
            char want[32];
            snprintf(want, sizeof want, "bad item %zu", i);
            ASSERT_ERR(mproc_result_status(r, i), MPROC_ETASK);
            ck_assert_int_eq(out[i], 0);
            ck_assert_str_eq(mproc_result_errmsg(r, i), want);
        } else {
            ASSERT_OK(mproc_result_status(r, i));
            ck_assert_int_eq(out[i], (long)i * 10);
        }
    }
    mproc_result_free(r);

    mproc_pool_stats st;
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_uint_eq(st.items_done, 2 * N);
    ck_assert_uint_eq(st.items_failed, 2 * (N / 2));
    ck_assert_uint_eq(st.items_retried, 0);
    ck_assert_uint_eq(st.workers_died, 0);
    ck_assert_int_eq(st.broken, 0);
    pool_end(p);
}

/* ---- callbacks ---------------------------------------------------------- */

typedef struct cbrec {
    _Atomic int nsucc, nerr;
    pthread_t thread;
    mproc_result *seen;
    int ready_in_cb;
    int status3_in_cb;
    long value;
    int rc; /* what the callback returns */
} cbrec;

static int cb_success(mproc_result *r, void *arg) {
    cbrec *c = arg;
    c->thread = pthread_self();
    c->seen = r;
    c->ready_in_cb = mproc_result_ready(r);
    size_t len = 0;
    const void *d = mproc_result_data(r, 0, &len);
    if (d && len == sizeof c->value)
        memcpy(&c->value, d, sizeof c->value);
    atomic_fetch_add(&c->nsucc, 1);
    return c->rc;
}

static int cb_error(mproc_result *r, void *arg) {
    cbrec *c = arg;
    c->thread = pthread_self();
    c->seen = r;
    c->ready_in_cb = mproc_result_ready(r);
    c->status3_in_cb =
        mproc_result_count(r) > 3 ? mproc_result_status(r, 3) : 0;
    atomic_fetch_add(&c->nerr, 1);
    return c->rc;
}

TEST(pool_api_callbacks) {
    mproc_pool *p = pool_new(2);
    cbrec c = {0};
    mproc_call_opts o = {
        .on_success = cb_success, .on_error = cb_error, .cb_arg = &c};
    long x = 21;
    mproc_result *r = NULL;
    ASSERT_OK(mproc_pool_apply_async(p, t_long_x2, &x, sizeof x, &o, &r));
    ASSERT_OK(mproc_result_wait(r, MPROC_FOREVER));
    /* Ready means the callback has run. */
    ck_assert_int_eq(atomic_load(&c.nsucc), 1);
    ck_assert_int_eq(atomic_load(&c.nerr), 0);
    ck_assert(!pthread_equal(c.thread, pthread_self()));
    ck_assert_ptr_eq(c.seen, r);
    ck_assert_int_eq(c.ready_in_cb, 0);
    ck_assert_int_eq(c.value, 42);
    mproc_result_free(r);

    /* on_error once when any item failed; the sync form runs it before it
     * returns. */
    memset(&c, 0, sizeof c);
    long in[6] = {0, 2, 4, 3, 6, 8};
    mproc_buf items[6];
    for (int i = 0; i < 6; i++)
        items[i] = (mproc_buf){&in[i], sizeof in[i]};
    ASSERT_ERR(mproc_pool_map(p, t_odd_fails, items, 6, &o, &r), MPROC_ETASK);
    ck_assert_int_eq(atomic_load(&c.nerr), 1);
    ck_assert_int_eq(atomic_load(&c.nsucc), 0);
    ck_assert(!pthread_equal(c.thread, pthread_self()));
    ck_assert_ptr_eq(c.seen, r);
    ck_assert_int_eq(c.ready_in_cb, 0);
    ck_assert_int_eq(c.status3_in_cb, MPROC_ETASK);
    mproc_result_free(r);

    /* Sync map where everything succeeds: on_success only. */
    memset(&c, 0, sizeof c);
    ASSERT_OK(mproc_pool_map(p, t_long_x2, items, 6, &o, &r));
    ck_assert_int_eq(atomic_load(&c.nsucc), 1);
    ck_assert_int_eq(atomic_load(&c.nerr), 0);
    ck_assert_int_eq(c.value, 0);
    mproc_result_free(r);

    /* Typed form, async. */
    memset(&c, 0, sizeof c);
    long out[6];
    ASSERT_OK(mproc_pool_map_array_async(p, e_long_x2, in, 6, sizeof *in, out,
                                         sizeof *out, &o, &r));
    ASSERT_OK(mproc_result_get(r, MPROC_FOREVER));
    ck_assert_int_eq(atomic_load(&c.nsucc), 1);
    ck_assert_int_eq(atomic_load(&c.nerr), 0);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(out[i], in[i] * 2);
    mproc_result_free(r);

    /* Only on_error given, and the call succeeds: nothing runs. */
    memset(&c, 0, sizeof c);
    ASSERT_OK(mproc_pool_apply(
        p, t_long_x2, &x, sizeof x,
        &(mproc_call_opts){.on_error = cb_error, .cb_arg = &c}, &r));
    ck_assert_int_eq(atomic_load(&c.nerr), 0);
    mproc_result_free(r);
    pool_end(p);
}

TEST(pool_api_callback_nonzero_ignored) {
    mproc_pool *p = pool_new(2);
    cbrec c = {.rc = -1};
    mproc_call_opts o = {
        .on_success = cb_success, .on_error = cb_error, .cb_arg = &c};
    enum { K = 20 };
    mproc_result *rs[K];
    long xs[K];
    for (int i = 0; i < K; i++) {
        xs[i] = i;
        c.rc = i % 2 ? 1 : -1;
        ASSERT_OK(mproc_pool_apply_async(p, i % 3 ? t_long_x2 : t_fail_item,
                                         &xs[i], sizeof xs[i], &o, &rs[i]));
    }
    for (int i = 0; i < K; i++) {
        int want = i % 3 ? 0 : MPROC_ETASK;
        ASSERT_ERR(mproc_result_get(rs[i], MPROC_FOREVER), want);
        if (want == 0)
            ck_assert_int_eq(result_long(rs[i], 0), 2 * i);
        mproc_result_free(rs[i]);
    }
    ck_assert_int_eq(atomic_load(&c.nsucc) + atomic_load(&c.nerr), K);
    ck_assert_int_eq(atomic_load(&c.nerr), (K + 2) / 3);
    /* The pool keeps going. */
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply(p, t_long_x2, &xs[5], sizeof xs[5], NULL, &r));
    ck_assert_int_eq(result_long(r, 0), 10);
    mproc_result_free(r);
    mproc_pool_stats st;
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_int_eq(st.broken, 0);
    pool_end(p);
}

/* A callback chain: each callback submits the next call, with itself as
 * the callback, until DEPTH calls were made. */
enum { DEPTH = 5 };
typedef struct chain {
    mproc_pool *p;
    _Atomic int depth; /* read by the test while later callbacks run */
    long args[DEPTH];
    mproc_result *res[DEPTH];
    int rcs[DEPTH];
} chain;

static int cb_chain(mproc_result *r, void *arg) {
    (void)r;
    chain *c = arg;
    int d = atomic_load(&c->depth);
    if (d >= DEPTH)
        return 0;
    atomic_store(&c->depth, d + 1);
    c->args[d] = 100 + d;
    mproc_call_opts o = {.on_success = cb_chain, .cb_arg = c};
    c->rcs[d] = mproc_pool_apply_async(c->p, t_long_x2, &c->args[d],
                                       sizeof c->args[d], &o, &c->res[d]);
    return 0;
}

TEST(pool_api_callback_reentrant) {
    mproc_pool *p = pool_new(2);
    chain c = {.p = p};
    long x = 1;
    mproc_result *first;
    ASSERT_OK(mproc_pool_apply_async(
        p, t_long_x2, &x, sizeof x,
        &(mproc_call_opts){.on_success = cb_chain, .cb_arg = &c}, &first));
    ASSERT_OK(mproc_result_get(first, MPROC_FOREVER));
    /* Each handle is ready only after its callback submitted the next. */
    for (int d = 0; d < DEPTH; d++) {
        ck_assert_int_ge(atomic_load(&c.depth), d + 1);
        ASSERT_OK(c.rcs[d]);
        ck_assert_ptr_nonnull(c.res[d]);
        ASSERT_OK(mproc_result_get(c.res[d], MPROC_FOREVER));
        ck_assert_int_eq(result_long(c.res[d], 0), 2 * (100 + d));
    }
    ck_assert_int_eq(atomic_load(&c.depth), DEPTH);
    /* Free the outer handle before the nested ones. */
    mproc_result_free(first);
    for (int d = 0; d < DEPTH; d++)
        mproc_result_free(c.res[d]);
    pool_end(p);
}

typedef struct waiter {
    mproc_pool *p;
    mproc_result *blocked, *ready;
    mproc_iter *it;
    int rc_wait, rc_get, rc_get0, rc_self, rc_ready_wait, rc_join, rc_term,
        rc_sync, rc_iter;
    mproc_result *sync_out;
} waiter;

static int cb_waits(mproc_result *r, void *arg) {
    waiter *w = arg;
    w->rc_wait = mproc_result_wait(w->blocked, MPROC_FOREVER);
    w->rc_get = mproc_result_get(w->blocked, 10);
    w->rc_get0 = mproc_result_get(w->blocked, 0);
    w->rc_self = mproc_result_wait(r, MPROC_FOREVER);
    /* A ready handle needs no waiting: fine from a callback. */
    w->rc_ready_wait = mproc_result_wait(w->ready, MPROC_FOREVER);
    w->rc_join = mproc_pool_join(w->p, MPROC_FOREVER);
    w->rc_term = mproc_pool_terminate(w->p);
    long x = 3;
    w->rc_sync =
        mproc_pool_apply(w->p, t_long_x2, &x, sizeof x, NULL, &w->sync_out);
    mproc_result_free(w->sync_out); /* before ready: dropped */
    mproc_item item;
    w->rc_iter = mproc_iter_next(w->it, MPROC_FOREVER, &item);
    return 0;
}

static int src_one_byte(void *arg, size_t i, const void **data, size_t *len) {
    static const char b = 'b';
    (void)arg;
    if (i > 0)
        return 0;
    *data = &b;
    *len = 1;
    return 1;
}

TEST(pool_api_callback_deadlock) {
    gate_open();
    mproc_pool *p = pool_new(3);
    waiter w = {.p = p};
    long x = 4;
    ASSERT_OK(mproc_pool_apply(p, t_long_x2, &x, sizeof x, NULL, &w.ready));
    ASSERT_OK(mproc_pool_apply_async(p, t_gate, NULL, 0, NULL, &w.blocked));
    ASSERT_OK(mproc_pool_imap(p, t_gate, src_one_byte, NULL, NULL, &w.it));
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply_async(
        p, t_long_x2, &x, sizeof x,
        &(mproc_call_opts){.on_success = cb_waits, .cb_arg = &w}, &r));
    ASSERT_OK(mproc_result_get(r, MPROC_FOREVER));
    ASSERT_ERR(w.rc_wait, MPROC_EDEADLK);
    ASSERT_ERR(w.rc_get, MPROC_EDEADLK);
    ASSERT_ERR(w.rc_get0, MPROC_EDEADLK);
    ASSERT_ERR(w.rc_self, MPROC_EDEADLK);
    ASSERT_OK(w.rc_ready_wait);
    ASSERT_ERR(w.rc_join, MPROC_EDEADLK);
    ASSERT_ERR(w.rc_term, MPROC_EDEADLK);
    ASSERT_ERR(w.rc_sync, MPROC_EDEADLK);
    ck_assert_ptr_nonnull(w.sync_out);
    ASSERT_ERR(w.rc_iter, MPROC_EDEADLK);
    mproc_result_free(r);

    /* None of that hurt the pool. */
    ck_assert_int_eq(mproc_result_ready(w.blocked), 0);
    gate_release(2, 'g');
    ASSERT_OK(mproc_result_get(w.blocked, MPROC_FOREVER));
    mproc_item item;
    ASSERT_OK(mproc_iter_next(w.it, MPROC_FOREVER, &item));
    ck_assert_uint_eq(item.index, 0);
    ASSERT_OK(item.status);
    ck_assert_uint_eq(item.len, 1);
    ck_assert_int_eq(((const char *)item.data)[0], 'g');
    ASSERT_ERR(mproc_iter_next(w.it, MPROC_FOREVER, &item), MPROC_EOF);
    mproc_iter_free(w.it);
    mproc_result_free(w.blocked);
    mproc_result_free(w.ready);
    ASSERT_OK(mproc_pool_apply(p, t_long_x2, &x, sizeof x, NULL, &r));
    ck_assert_int_eq(result_long(r, 0), 8);
    mproc_result_free(r);
    pool_end(p);
    gate_close();
}

/* The callback blocks until the test lets it go. */
typedef struct blocker {
    int entered[2], release[2], done[2];
    _Atomic int finished;
} blocker;

static int cb_block(mproc_result *r, void *arg) {
    (void)r;
    blocker *b = arg;
    char c = 'e';
    if (write(b->entered[1], &c, 1) != 1)
        return -1;
    if (read_byte_within(b->release[0], &c, 20000) < 0)
        return -1;
    atomic_store(&b->finished, 1);
    c = 'd';
    if (write(b->done[1], &c, 1) != 1)
        return -1;
    return 0;
}

TEST(pool_api_ready_after_callback) {
    mproc_pool *p = pool_new(2);
    blocker b = {0};
    make_pipe(b.entered);
    make_pipe(b.release);
    make_pipe(b.done);
    mproc_call_opts o = {.on_success = cb_block, .cb_arg = &b};
    long x = 5;
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply_async(p, t_long_x2, &x, sizeof x, &o, &r));
    char c;
    ck_assert_int_eq(read_byte_within(b.entered[0], &c, 10000), 0);
    /* The item is done but the handle is not ready: the callback runs. */
    ck_assert_int_eq(mproc_result_ready(r), 0);
    ASSERT_ERR(mproc_result_wait(r, 20), MPROC_ETIMEDOUT);
    ASSERT_ERR(mproc_result_get(r, 0), MPROC_ETIMEDOUT);
    ASSERT_ERR(mproc_result_successful(r), MPROC_ENOTREADY);
    ASSERT_OK(mproc_result_status(r, 0));
    ck_assert_int_eq(atomic_load(&b.finished), 0);
    write_byte(b.release[1], 'r');
    ASSERT_OK(mproc_result_get(r, MPROC_FOREVER));
    ck_assert_int_eq(atomic_load(&b.finished), 1);
    ck_assert_int_eq(mproc_result_successful(r), 1);
    ck_assert_int_eq(result_long(r, 0), 10);
    ck_assert_int_eq(read_byte_within(b.done[0], &c, 10000), 0);
    mproc_result_free(r);

    /* Free the handle while its callback runs: the callback finishes, the
     * handle goes afterwards. */
    atomic_store(&b.finished, 0);
    ASSERT_OK(mproc_pool_apply_async(p, t_long_x2, &x, sizeof x, &o, &r));
    ck_assert_int_eq(read_byte_within(b.entered[0], &c, 10000), 0);
    mproc_result_free(r);
    write_byte(b.release[1], 'r');
    ck_assert_int_eq(read_byte_within(b.done[0], &c, 10000), 0);
    ck_assert_int_eq(atomic_load(&b.finished), 1);

    pool_end(p);
    for (int i = 0; i < 2; i++) {
        close(b.entered[i]);
        close(b.release[i]);
        close(b.done[i]);
    }
}

/* ---- empty calls -------------------------------------------------------- */

TEST(pool_api_empty_map) {
    mproc_pool *p = pool_new(2);
    cbrec c = {0};
    mproc_call_opts o = {
        .on_success = cb_success, .on_error = cb_error, .cb_arg = &c};
    mproc_result *r = NULL;
    ASSERT_OK(mproc_pool_map(p, t_long_x2, NULL, 0, &o, &r));
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(mproc_result_count(r), 0);
    ck_assert_int_eq(mproc_result_ready(r), 1);
    ck_assert_int_eq(mproc_result_successful(r), 1);
    ASSERT_OK(mproc_result_get(r, 0));
    ASSERT_ERR(mproc_result_status(r, 0), MPROC_EINVAL);
    ck_assert_int_eq(atomic_load(&c.nsucc), 1);
    ck_assert_int_eq(atomic_load(&c.nerr), 0);
    ck_assert(!pthread_equal(c.thread, pthread_self()));
    mproc_result_free(r);

    memset(&c, 0, sizeof c);
    ASSERT_OK(mproc_pool_map_async(p, t_long_x2, NULL, 0, &o, &r));
    ASSERT_OK(mproc_result_get(r, MPROC_FOREVER));
    ck_assert_int_eq(atomic_load(&c.nsucc), 1);
    mproc_result_free(r);

    memset(&c, 0, sizeof c);
    ASSERT_OK(mproc_pool_map_array(p, e_long_x2, NULL, 0, sizeof(long), NULL,
                                   sizeof(long), &o, &r));
    ck_assert_uint_eq(mproc_result_count(r), 0);
    ck_assert_int_eq(mproc_result_successful(r), 1);
    ck_assert_int_eq(atomic_load(&c.nsucc), 1);
    mproc_result_free(r);

    memset(&c, 0, sizeof c);
    ASSERT_OK(mproc_pool_starmap_async(p, e_long_x2, NULL, 0, sizeof(long),
                                       NULL, sizeof(long), &o, &r));
    ASSERT_OK(mproc_result_get(r, MPROC_FOREVER));
    ck_assert_int_eq(atomic_load(&c.nsucc), 1);
    mproc_result_free(r);

    /* Without callbacks. */
    ASSERT_OK(mproc_pool_map(p, t_long_x2, NULL, 0, NULL, &r));
    ck_assert_uint_eq(mproc_result_count(r), 0);
    ck_assert_int_eq(mproc_result_successful(r), 1);
    mproc_result_free(r);

    /* An empty map freed at once: its callbacks still run (checked after
     * join below). */
    cbrec freed = {0};
    mproc_call_opts fo = {
        .on_success = cb_success, .on_error = cb_error, .cb_arg = &freed};
    ASSERT_OK(mproc_pool_map_async(p, t_long_x2, NULL, 0, &fo, &r));
    mproc_result_free(r);

    /* An empty imap. */
    mproc_iter *it;
    mproc_item item;
    ASSERT_OK(mproc_pool_imap(p, t_long_x2, src_none, NULL, NULL, &it));
    ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EOF);
    ASSERT_ERR(mproc_iter_next(it, 0, &item), MPROC_EOF);
    mproc_iter_free(it);

    /* An empty call right before close: its callbacks still run before
     * the pool is done. */
    memset(&c, 0, sizeof c);
    ASSERT_OK(mproc_pool_map_async(p, t_long_x2, NULL, 0, &o, &r));
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    ck_assert_int_eq(mproc_result_ready(r), 1);
    ck_assert_int_eq(atomic_load(&c.nsucc), 1);
    mproc_result_free(r);
    ck_assert_int_eq(atomic_load(&freed.nsucc), 1);
    ck_assert_int_eq(atomic_load(&freed.nerr), 0);
    mproc_pool_destroy(p);
}

/* ---- freeing a handle early --------------------------------------------- */

TEST(pool_api_free_before_ready) {
    gate_open();
    mproc_pool *p = pool_new(1);
    cbrec c = {0};
    mproc_result *r1, *r2, *r3;
    ASSERT_OK(mproc_pool_apply_async(p, t_gate, NULL, 0, NULL, &r1));
    /* Typed map queued behind it, freed before it ran: its out array must
     * not be touched after the free. */
    enum { N = 8 };
    long in[N] = {0}, out[N];
    ASSERT_OK(mproc_pool_map_array_async(p, e_gate, in, N, sizeof *in, out,
                                         sizeof *out, NULL, &r2));
    /* And one with callbacks: they still run. */
    ASSERT_OK(mproc_pool_apply_async(
        p, t_gate, NULL, 0,
        &(mproc_call_opts){
            .on_success = cb_success, .on_error = cb_error, .cb_arg = &c},
        &r3));
    ck_assert_int_eq(mproc_result_ready(r1), 0);
    mproc_result_free(r1);
    mproc_result_free(r2);
    mproc_result_free(r3);
    memset(out, 0x77, sizeof out);
    gate_release(N + 2, 'k');
    /* One worker runs the queue in order: once this is done, so is all of
     * the above. */
    long x = 9;
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply(p, t_long_x2, &x, sizeof x, NULL, &r));
    ck_assert_int_eq(result_long(r, 0), 18);
    mproc_result_free(r);
    for (int i = 0; i < N; i++)
        ck_assert_msg(out[i] == 0x7777777777777777L,
                      "out[%d] written after the handle was freed", i);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    ck_assert_int_eq(atomic_load(&c.nsucc) + atomic_load(&c.nerr), 1);
    mproc_pool_destroy(p);
    gate_close();
}

/* ---- imap --------------------------------------------------------------- */

typedef struct numsrc {
    size_t n;     /* items to produce */
    long fail_at; /* index where the source fails, or -1 */
    int fail_code;
    size_t consumed;  /* items the test has taken */
    size_t max_ahead; /* most items produced and not yet taken */
    size_t next;      /* index expected next */
    int out_of_order;
    int wrong_thread;
    pthread_t caller;
    long val;
} numsrc;

static void numsrc_init(numsrc *s, size_t n) {
    memset(s, 0, sizeof *s);
    s->n = n;
    s->fail_at = -1;
    s->caller = pthread_self();
}

static int src_num(void *arg, size_t i, const void **data, size_t *len) {
    numsrc *s = arg;
    if (!pthread_equal(pthread_self(), s->caller))
        s->wrong_thread = 1;
    if (i != s->next)
        s->out_of_order = 1;
    if (s->fail_at >= 0 && i == (size_t)s->fail_at)
        return s->fail_code;
    if (i >= s->n)
        return 0;
    s->next = i + 1;
    size_t ahead = i + 1 - s->consumed;
    if (ahead > s->max_ahead)
        s->max_ahead = ahead;
    s->val = (long)i;
    *data = &s->val;
    *len = sizeof s->val;
    return 1;
}

static void imap_ordered_run(mproc_pool *p, size_t n, size_t chunksize,
                             size_t max_in_flight) {
    numsrc s;
    numsrc_init(&s, n);
    mproc_iter *it = NULL;
    mproc_call_opts o = {.chunksize = chunksize,
                         .max_in_flight = max_in_flight};
    ASSERT_OK(mproc_pool_imap(p, t_long_x2, src_num, &s, &o, &it));
    ck_assert_ptr_nonnull(it);
    for (size_t k = 0; k < n; k++) {
        mproc_item item;
        memset(&item, 0xff, sizeof item);
        ASSERT_OK(mproc_iter_next(it, MPROC_FOREVER, &item));
        s.consumed++;
        ck_assert_uint_eq(item.index, k);
        ASSERT_OK(item.status);
        ck_assert_ptr_null(item.errmsg);
        ck_assert_uint_eq(item.len, sizeof(long));
        long v;
        memcpy(&v, item.data, sizeof v);
        ck_assert_int_eq(v, 2 * (long)k);
    }
    mproc_item item;
    ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EOF);
    ASSERT_ERR(mproc_iter_next(it, 0, &item), MPROC_EOF);
    ck_assert_int_eq(s.wrong_thread, 0);
    ck_assert_int_eq(s.out_of_order, 0);
    ck_assert_uint_ge(s.max_ahead, 1);
    if (max_in_flight)
        ck_assert_msg(s.max_ahead <= max_in_flight,
                      "source ran %zu items ahead, max_in_flight %zu",
                      s.max_ahead, max_in_flight);
    mproc_iter_free(it);
}

TEST(pool_api_imap_ordered) {
    mproc_pool *p = pool_new(3);
    imap_ordered_run(p, 2000, 0, 8);
    imap_ordered_run(p, 1001, 3, 8);
    imap_ordered_run(p, 500, 7, 30);
    imap_ordered_run(p, 300, 0, 0); /* defaults */
    imap_ordered_run(p, 1, 0, 1);
    pool_end(p);
}

static void imap_unordered_run(mproc_pool *p, size_t n, size_t chunksize,
                               size_t max_in_flight) {
    numsrc s;
    numsrc_init(&s, n);
    mproc_iter *it = NULL;
    mproc_call_opts o = {
        .chunksize = chunksize, .max_in_flight = max_in_flight, .unordered = 1};
    ASSERT_OK(mproc_pool_imap(p, t_long_x2, src_num, &s, &o, &it));
    unsigned char *seen = calloc(n, 1);
    ck_assert_ptr_nonnull(seen);
    for (size_t k = 0; k < n; k++) {
        mproc_item item;
        ASSERT_OK(mproc_iter_next(it, MPROC_FOREVER, &item));
        s.consumed++;
        ck_assert_uint_lt(item.index, n);
        ck_assert_msg(!seen[item.index], "index %zu handed out twice",
                      item.index);
        seen[item.index] = 1;
        ASSERT_OK(item.status);
        ck_assert_uint_eq(item.len, sizeof(long));
        long v;
        memcpy(&v, item.data, sizeof v);
        ck_assert_int_eq(v, 2 * (long)item.index);
    }
    mproc_item item;
    ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EOF);
    for (size_t k = 0; k < n; k++)
        ck_assert(seen[k]);
    free(seen);
    ck_assert_int_eq(s.wrong_thread, 0);
    if (max_in_flight)
        ck_assert_uint_le(s.max_ahead, max_in_flight);
    mproc_iter_free(it);
}

TEST(pool_api_imap_unordered) {
    mproc_pool *p = pool_new(3);
    imap_unordered_run(p, 2000, 0, 8);
    imap_unordered_run(p, 2000, 2, 16);
    imap_unordered_run(p, 333, 0, 0);
    pool_end(p);
}

/* imap of a task that blocks until released, with a gate byte per item:
 * items finish in the order the test chooses. Unordered hands them out as
 * they finish. */
static int t_gate_index(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    char c;
    ssize_t n;
    do
        n = read(g_gate[0], &c, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        return mproc_task_fail(t, "gate read returned %zd", n);
    long i = (long)mproc_task_index(t);
    return mproc_task_return(t, &i, sizeof i);
}

static int t_index_or_gate(mproc_task *t, const void *arg, size_t len) {
    /* Item 0 waits at the gate; the others return at once. */
    if (mproc_task_index(t) == 0)
        return t_gate_index(t, arg, len);
    long i = (long)mproc_task_index(t);
    return mproc_task_return(t, &i, sizeof i);
}

/* A typed map whose input is a shared array that its workers can no
 * longer reach (the caller freed it before the chunk ran, against the
 * contract): every item fails with the reason, none crashes or hangs, and
 * the pool goes on. */
TEST(pool_api_shared_input_gone) {
    gate_open();
    mproc_pool *p = pool_new(1);
    mproc_result *gated, *r;
    ASSERT_OK(mproc_pool_apply_async(p, t_gate, NULL, 0, NULL, &gated));
    mproc_array *a;
    ASSERT_OK(mproc_array_create(&a, MPROC_T_LONG, 0, 8, NULL, 0));
    long *in = mproc_array_data(a), out[8];
    for (int i = 0; i < 8; i++)
        in[i] = i;
    memset(out, 0xff, sizeof out);
    ASSERT_OK(mproc_pool_map_array_async(p, e_long_x2, in, 8, sizeof *in, out,
                                         sizeof *out, NULL, &r));
    mproc_array_free(a); /* the worker is still in t_gate */
    gate_release(1, 'x');
    ASSERT_ERR(mproc_result_get(r, test_ms(10000)), MPROC_ENOENT);
    for (size_t i = 0; i < 8; i++) {
        ck_assert_int_eq(mproc_result_status(r, i), MPROC_ENOENT);
        ck_assert_ptr_nonnull(strstr(mproc_result_errmsg(r, i),
                                     "could not attach the shared array"));
        ck_assert_int_eq(out[i], 0);
    }
    mproc_result_free(r);
    ASSERT_OK(mproc_result_get(gated, test_ms(10000)));
    mproc_result_free(gated);
    long x = 21;
    ASSERT_OK(mproc_pool_apply(p, t_long_x2, &x, sizeof x, NULL, &r));
    ck_assert_int_eq(result_long(r, 0), 42);
    mproc_result_free(r);
    pool_end(p);
    gate_close();
}

TEST(pool_api_imap_unordered_overtakes) {
    gate_open();
    mproc_pool *p = pool_new(2);
    numsrc s;
    numsrc_init(&s, 6);
    mproc_iter *it;
    ASSERT_OK(mproc_pool_imap(p, t_index_or_gate, src_num, &s,
                              &(mproc_call_opts){.unordered = 1}, &it));
    /* Items 1..5 are handed out while item 0 is still blocked. */
    unsigned seen = 0;
    for (int k = 0; k < 5; k++) {
        mproc_item item;
        ASSERT_OK(mproc_iter_next(it, test_ms(10000), &item));
        ck_assert_uint_ne(item.index, 0);
        ck_assert_uint_lt(item.index, 6);
        seen |= 1u << item.index;
    }
    ck_assert_uint_eq(seen, 0x3e);
    mproc_item item;
    ASSERT_ERR(mproc_iter_next(it, 20, &item), MPROC_ETIMEDOUT);
    gate_release(1, 'x');
    ASSERT_OK(mproc_iter_next(it, MPROC_FOREVER, &item));
    ck_assert_uint_eq(item.index, 0);
    ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EOF);
    mproc_iter_free(it);
    pool_end(p);
    gate_close();
}

static void imap_source_error_run(mproc_pool *p, size_t chunksize,
                                  int unordered) {
    numsrc s;
    numsrc_init(&s, 100);
    s.fail_at = 10;
    s.fail_code = MPROC_EIO;
    mproc_iter *it;
    ASSERT_OK(mproc_pool_imap(
        p, t_long_x2, src_num, &s,
        &(mproc_call_opts){.chunksize = chunksize, .unordered = unordered},
        &it));
    unsigned seen = 0;
    /* Every item the source produced comes back, then its error. */
    for (int k = 0; k < 10; k++) {
        mproc_item item;
        int rc = mproc_iter_next(it, MPROC_FOREVER, &item);
        ck_assert_msg(rc == 0,
                      "chunksize %zu unordered %d: item %d of 10: got %s",
                      chunksize, unordered, k, mproc_err_name(rc));
        ck_assert_uint_lt(item.index, 10);
        if (!unordered)
            ck_assert_uint_eq(item.index, (size_t)k);
        seen |= 1u << item.index;
        ASSERT_OK(item.status);
        long v;
        memcpy(&v, item.data, sizeof v);
        ck_assert_int_eq(v, 2 * (long)item.index);
    }
    ck_assert_uint_eq(seen, 0x3ff);
    mproc_item item;
    ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EIO);
    ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EOF);
    mproc_iter_free(it);
}

TEST(pool_api_imap_source_error) {
    mproc_pool *p = pool_new(2);
    imap_source_error_run(p, 1, 0);
    imap_source_error_run(p, 1, 1);
    imap_source_error_run(p, 4, 0);
    imap_source_error_run(p, 4, 1);
    imap_source_error_run(p, 3, 0);
    pool_end(p);
}

TEST(pool_api_imap_item_failure) {
    mproc_pool *p = pool_new(2);
    numsrc s;
    numsrc_init(&s, 40);
    mproc_iter *it;
    ASSERT_OK(mproc_pool_imap(p, t_odd_fails, src_num, &s,
                              &(mproc_call_opts){.chunksize = 3}, &it));
    for (size_t k = 0; k < 40; k++) {
        mproc_item item;
        ASSERT_OK(mproc_iter_next(it, MPROC_FOREVER, &item));
        ck_assert_uint_eq(item.index, k);
        if (k % 2) {
            char want[32];
            snprintf(want, sizeof want, "bad item %zu", k);
            ASSERT_ERR(item.status, MPROC_ETASK);
            ck_assert_ptr_null(item.data);
            ck_assert_ptr_nonnull(item.errmsg);
            ck_assert_str_eq(item.errmsg, want);
        } else {
            ASSERT_OK(item.status);
            ck_assert_ptr_null(item.errmsg);
            long v;
            memcpy(&v, item.data, sizeof v);
            ck_assert_int_eq(v, 10 * (long)k);
        }
    }
    mproc_item item;
    ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EOF);
    mproc_iter_free(it);
    pool_end(p);
}

TEST(pool_api_imap_timeout) {
    gate_open();
    mproc_pool *p = pool_new(1);
    mproc_iter *it;
    ASSERT_OK(mproc_pool_imap(p, t_gate, src_one_byte, NULL, NULL, &it));
    mproc_item item;
    uint64_t t0 = test_now_ms();
    ASSERT_ERR(mproc_iter_next(it, 50, &item), MPROC_ETIMEDOUT);
    ASSERT_ERR(mproc_iter_next(it, 0, &item), MPROC_ETIMEDOUT);
    ck_assert_uint_lt(test_now_ms() - t0, (uint64_t)test_ms(5000));
    gate_release(1, 'q');
    ASSERT_OK(mproc_iter_next(it, MPROC_FOREVER, &item));
    ck_assert_uint_eq(item.index, 0);
    ASSERT_OK(item.status);
    ck_assert_uint_eq(item.len, 1);
    ck_assert_int_eq(((const char *)item.data)[0], 'q');
    ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EOF);
    mproc_iter_free(it);
    pool_end(p);
    gate_close();
}

/* Item 0 returns at once; every other item waits for a gate byte. */
static int t_gate_after_first(mproc_task *t, const void *arg, size_t len) {
    if (mproc_task_index(t) == 0) {
        char c = '0';
        return mproc_task_return(t, &c, 1);
    }
    return t_gate(t, arg, len);
}

TEST(pool_api_imap_free_early) {
    gate_open();
    mproc_pool *p = pool_new(2);
    numsrc s;
    numsrc_init(&s, 20);
    mproc_iter *it;
    ASSERT_OK(mproc_pool_imap(p, t_gate_after_first, src_num, &s,
                              &(mproc_call_opts){.max_in_flight = 8}, &it));
    mproc_item item;
    ASSERT_OK(mproc_iter_next(it, MPROC_FOREVER, &item));
    ck_assert_uint_eq(item.index, 0);
    ASSERT_ERR(mproc_iter_next(it, 0, &item), MPROC_ETIMEDOUT);
    /* 9 items were pulled: 1 handed out, 8 waiting for a byte, two of
     * them in workers (by now, or soon). */
    ck_assert_uint_eq(s.next, 9);
    mproc_iter_free(it);
    /* Let exactly those finish, so the gate is empty afterwards. */
    gate_release(8, 'b');
    long x = 2;
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply(p, t_long_x2, &x, sizeof x, NULL, &r));
    ck_assert_int_eq(result_long(r, 0), 4);
    mproc_result_free(r);
    pool_end(p);

    /* Freed with items still blocked, then the pool destroyed at once. */
    p = pool_new(2);
    numsrc_init(&s, 20);
    ASSERT_OK(mproc_pool_imap(p, t_gate, src_num, &s, NULL, &it));
    ASSERT_ERR(mproc_iter_next(it, 0, &item), MPROC_ETIMEDOUT);
    mproc_iter_free(it);
    mproc_pool_destroy(p);
    gate_close();
}

TEST(pool_api_imap_unordered_free_early) {
    gate_open();
    mproc_pool *p = pool_new(2);
    numsrc s;
    numsrc_init(&s, 50);
    mproc_iter *it;
    ASSERT_OK(mproc_pool_imap(
        p, t_gate, src_num, &s,
        &(mproc_call_opts){.unordered = 1, .chunksize = 2}, &it));
    gate_release(3, 'u');
    mproc_item item;
    ASSERT_OK(mproc_iter_next(it, MPROC_FOREVER, &item));
    ASSERT_OK(mproc_iter_next(it, MPROC_FOREVER, &item));
    mproc_iter_free(it);
    gate_release(60, 'v');
    pool_end(p);
    gate_close();
}

/* ---- initializer -------------------------------------------------------- */

typedef struct initcfg {
    int a;
    double b;
    char s[24];
} initcfg;

static initcfg g_initcfg;
static size_t g_initlen = 12345;
static int g_init_calls;

static int init_store(void *arg, size_t len) {
    if (len == sizeof g_initcfg)
        memcpy(&g_initcfg, arg, len);
    g_initlen = len;
    g_init_calls++;
    return 0;
}

typedef struct initseen {
    initcfg cfg;
    size_t len;
    int calls;
} initseen;

static int t_get_init(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    initseen s;
    memset(&s, 0, sizeof s);
    s.cfg = g_initcfg;
    s.len = g_initlen;
    s.calls = g_init_calls;
    return mproc_task_return(t, &s, sizeof s);
}

TEST(pool_api_initializer) {
    initcfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.a = 4242;
    cfg.b = 3.25;
    snprintf(cfg.s, sizeof cfg.s, "hello workers");
    initcfg orig = cfg;
    mproc_pool *p = NULL;
    ASSERT_OK(
        mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 3,
                                                 .initializer = init_store,
                                                 .initarg = &cfg,
                                                 .initarg_len = sizeof cfg}));
    /* The pool copied the bytes: this must not reach the workers. */
    memset(&cfg, 0xee, sizeof cfg);
    enum { N = 24 };
    mproc_buf items[N];
    for (int i = 0; i < N; i++)
        items[i] = (mproc_buf){NULL, 0};
    mproc_result *r;
    ASSERT_OK(mproc_pool_map(p, t_get_init, items, N,
                             &(mproc_call_opts){.chunksize = 1}, &r));
    for (size_t i = 0; i < N; i++) {
        size_t len;
        const initseen *s = mproc_result_data(r, i, &len);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_eq(len, sizeof *s);
        ck_assert_uint_eq(s->len, sizeof orig);
        ck_assert_int_eq(s->calls, 1);
        ck_assert_int_eq(s->cfg.a, orig.a);
        ck_assert(s->cfg.b == orig.b);
        ck_assert_str_eq(s->cfg.s, orig.s);
    }
    mproc_result_free(r);
    pool_end(p);
    /* Nothing ran here. */
    ck_assert_int_eq(g_init_calls, 0);

    /* An initializer without an argument gets zero bytes. */
    ASSERT_OK(mproc_pool_create(
        &p, &(mproc_pool_opts){.nworkers = 2, .initializer = init_store}));
    ASSERT_OK(mproc_pool_apply(p, t_get_init, NULL, 0, NULL, &r));
    const initseen *s = mproc_result_data(r, 0, NULL);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->len, 0);
    ck_assert_int_eq(s->calls, 1);
    mproc_result_free(r);
    pool_end(p);
}

static int init_fail(void *arg, size_t len) {
    (void)arg;
    (void)len;
    return 1;
}

TEST(pool_api_initializer_fails) {
    uint64_t t0 = test_now_ms();
    mproc_pool *p = NULL;
    int rc = mproc_pool_create(
        &p, &(mproc_pool_opts){.nworkers = 2, .initializer = init_fail});
    if (rc != 0) {
        ck_assert_msg(rc == MPROC_EWORKERINIT || rc == MPROC_EBROKEN,
                      "create returned %s", mproc_err_name(rc));
        ck_assert_ptr_null(p);
        return;
    }
    enum { N = 4 };
    long in[N] = {1, 2, 3, 4};
    mproc_buf items[N];
    for (int i = 0; i < N; i++)
        items[i] = (mproc_buf){&in[i], sizeof in[i]};
    mproc_result *r = NULL;
    rc = mproc_pool_map(p, t_long_x2, items, N, NULL, &r);
    ASSERT_ERR(rc, MPROC_EWORKERINIT);
    if (r) {
        for (size_t i = 0; i < N; i++)
            ASSERT_ERR(mproc_result_status(r, i), MPROC_EWORKERINIT);
        ck_assert_ptr_nonnull(mproc_result_errmsg(r, 0));
        mproc_result_free(r);
    }
    mproc_pool_stats st;
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_int_eq(st.broken, 1);
    ck_assert_uint_ge(st.workers_died, 1);
    /* A broken pool takes no more work. */
    ASSERT_ERR(
        mproc_pool_apply_async(p, t_long_x2, &in[0], sizeof in[0], NULL, &r),
        MPROC_EWORKERINIT);
    ck_assert_ptr_null(r);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, test_ms(10000)));
    mproc_pool_destroy(p);
    ck_assert_uint_lt(test_now_ms() - t0, (uint64_t)test_ms(15000));
}

/* An initializer that fails only after a while: the deaths come slower
 * than restart_limit per restart_window_ms, yet every worker fails the
 * same way, so no item can ever run. The call must still end (broken
 * pool, or the initializer's failure), not wait for ever. The sleep is
 * the initializer's "work", not synchronisation. */
static int init_fail_slowly(void *arg, size_t len) {
    (void)arg;
    (void)len;
    struct timespec ts = {0, 150 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return 1;
}

TEST(pool_api_initializer_fails_slowly) {
    mproc_pool *p = NULL;
    int rc = mproc_pool_create(
        &p, &(mproc_pool_opts){.nworkers = 1, .initializer = init_fail_slowly});
    if (rc != 0) {
        ck_assert_msg(rc == MPROC_EWORKERINIT || rc == MPROC_EBROKEN,
                      "create returned %s", mproc_err_name(rc));
        ck_assert_ptr_null(p);
        return;
    }
    mproc_buf none[2] = {{NULL, 0}};
    mproc_result *r = NULL;
    rc = mproc_pool_map_async(p, t_nothing, none, 2, NULL, &r);
    if (rc == 0) {
        rc = mproc_result_wait(r, test_ms(10000));
        mproc_pool_stats st;
        ASSERT_OK(mproc_pool_get_stats(p, &st));
        int s0 = mproc_result_status(r, 0);
        mproc_result_free(r);
        mproc_pool_destroy(p);
        ck_assert_msg(rc == 0,
                      "map over a pool whose initializer always fails did "
                      "not end in 10 s (%llu workers started, %llu died, "
                      "broken %d)",
                      (unsigned long long)st.workers_started,
                      (unsigned long long)st.workers_died, st.broken);
        ck_assert_msg(s0 == MPROC_EWORKERINIT, "item status %s",
                      mproc_err_name(s0));
        return;
    }
    mproc_pool_destroy(p);
    ck_assert_msg(rc == MPROC_EWORKERINIT, "map returned %s",
                  mproc_err_name(rc));
}

/* ---- max_tasks_per_child ------------------------------------------------ */

static int e_getpid(mproc_task *t, const void *in, void *out) {
    (void)t;
    (void)in;
    put_long(out, (long)getpid());
    return 0;
}

static void check_pid_spread(const long *pids, size_t n, int max_per,
                             size_t min_distinct) {
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        int count = 0, first = 1;
        for (size_t j = 0; j < n; j++) {
            if (pids[j] == pids[i]) {
                count++;
                if (j < i)
                    first = 0;
            }
        }
        ck_assert_msg(count <= max_per, "pid %ld ran %d items", pids[i], count);
        distinct += first;
    }
    ck_assert_uint_ge(distinct, min_distinct);
}

TEST(pool_api_max_tasks_per_child) {
    mproc_pool *p = NULL;
    ASSERT_OK(mproc_pool_create(
        &p, &(mproc_pool_opts){.nworkers = 2, .max_tasks_per_child = 2}));
    enum { N = 10 };
    mproc_buf items[N];
    for (int i = 0; i < N; i++)
        items[i] = (mproc_buf){NULL, 0};
    mproc_result *r;
    ASSERT_OK(mproc_pool_map(p, t_getpid, items, N,
                             &(mproc_call_opts){.chunksize = 1}, &r));
    long pids[N];
    for (size_t i = 0; i < N; i++)
        pids[i] = result_long(r, i);
    mproc_result_free(r);
    check_pid_spread(pids, N, 2, 5);
    mproc_pool_stats st;
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_uint_ge(st.workers_started, 5);
    ck_assert_uint_eq(st.workers_died, 0); /* planned exits are no deaths */

    /* Typed form too. */
    long in[N] = {0}, out[N];
    ASSERT_OK(mproc_pool_map_array(p, e_getpid, in, N, sizeof *in, out,
                                   sizeof *out,
                                   &(mproc_call_opts){.chunksize = 1}, &r));
    mproc_result_free(r);
    check_pid_spread(out, N, 2, 5);
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_uint_ge(st.workers_started, 10);
    ck_assert_uint_eq(st.workers_died, 0);
    pool_end(p);
}

/* ---- retries ------------------------------------------------------------ */

static mproc_pool *pool_retries(int nworkers, int retries) {
    mproc_pool *p = NULL;
    ASSERT_OK(mproc_pool_create(
        &p, &(mproc_pool_opts){.nworkers = nworkers, .retries = retries}));
    return p;
}

TEST(pool_api_retries) {
    shared_open();
    mproc_pool_stats st;
    mproc_result *r;

    /* Crash on the first attempt, one retry allowed: success. */
    mproc_pool *p = pool_retries(1, 1);
    ASSERT_OK(mproc_pool_apply(p, t_crash_first, NULL, 0, NULL, &r));
    ck_assert_int_eq(result_long(r, 0), 1);
    mproc_result_free(r);
    ck_assert_int_eq(atomic_load(&g_sh->attempts), 2);
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_uint_eq(st.items_retried, 1);
    ck_assert_uint_eq(st.workers_died, 1);
    ck_assert_uint_eq(st.items_failed, 0);
    pool_end(p);

    /* No retries: the crash is the outcome. */
    atomic_store(&g_sh->attempts, 0);
    p = pool_retries(1, 0);
    ASSERT_ERR(mproc_pool_apply(p, t_crash_first, NULL, 0, NULL, &r),
               MPROC_ECRASHED);
    const char *m = mproc_result_errmsg(r, 0);
    ck_assert_ptr_nonnull(m);
    ck_assert_msg(strstr(m, "SEGV") != NULL, "message: %s", m);
    mproc_result_free(r);
    ck_assert_int_eq(atomic_load(&g_sh->attempts), 1);
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_uint_eq(st.items_retried, 0);
    /* The worker was replaced: the pool still works. */
    ASSERT_OK(mproc_pool_apply(p, t_crash_first, NULL, 0, NULL, &r));
    ck_assert_int_eq(result_long(r, 0), 1);
    mproc_result_free(r);
    pool_end(p);

    /* A task that fails by itself is never retried. */
    atomic_store(&g_sh->attempts, 0);
    p = pool_retries(2, 3);
    ASSERT_ERR(mproc_pool_apply(p, t_fail_counted, NULL, 0, NULL, &r),
               MPROC_ETASK);
    ck_assert_str_eq(mproc_result_errmsg(r, 0), "attempt 0");
    mproc_result_free(r);
    ck_assert_int_eq(atomic_load(&g_sh->attempts), 1);
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_uint_eq(st.items_retried, 0);
    ck_assert_uint_eq(st.workers_died, 0);
    pool_end(p);

    shared_close();
}

TEST(pool_api_retries_per_call) {
    shared_open();
    mproc_pool_stats st;
    mproc_result *r;

    /* retries = -1 in the call turns the pool's retries off. */
    mproc_pool *p = pool_retries(1, 2);
    ASSERT_ERR(mproc_pool_apply(p, t_crash_first, NULL, 0,
                                &(mproc_call_opts){.retries = -1}, &r),
               MPROC_ECRASHED);
    mproc_result_free(r);
    ck_assert_int_eq(atomic_load(&g_sh->attempts), 1);
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_uint_eq(st.items_retried, 0);
    pool_end(p);

    /* retries = 1 in the call, none in the pool. */
    atomic_store(&g_sh->attempts, 0);
    p = pool_retries(1, 0);
    ASSERT_OK(mproc_pool_apply(p, t_crash_first, NULL, 0,
                               &(mproc_call_opts){.retries = 1}, &r));
    ck_assert_int_eq(result_long(r, 0), 1);
    mproc_result_free(r);
    ck_assert_int_eq(atomic_load(&g_sh->attempts), 2);
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_uint_eq(st.items_retried, 1);
    pool_end(p);

    /* In a map: the items around the crashed one are run again
     * elsewhere and every result is right. */
    p = pool_retries(2, 1);
    enum { N = 20 };
    long in[N];
    mproc_buf items[N];
    for (long i = 0; i < N; i++) {
        in[i] = i;
        items[i] = (mproc_buf){&in[i], sizeof in[i]};
    }
    ASSERT_OK(mproc_pool_map(p, t_crash_item5_once, items, N,
                             &(mproc_call_opts){.chunksize = 4}, &r));
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(result_long(r, i), 10 * (long)i);
    mproc_result_free(r);
    ck_assert_int_eq(atomic_load(&g_sh->item_attempts[5]), 2);
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_uint_eq(st.items_retried, 1);
    ck_assert_uint_eq(st.items_failed, 0);
    pool_end(p);
    shared_close();
}

/* ---- identity and task index -------------------------------------------- */

typedef struct ident {
    char name[64];
    char pname[64];
    long ppid, pid, cur_pid;
} ident;

static int t_ident(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    ident id;
    memset(&id, 0, sizeof id);
    const char *n = mproc_current_name(), *pn = mproc_parent_name();
    snprintf(id.name, sizeof id.name, "%s", n ? n : "(null)");
    snprintf(id.pname, sizeof id.pname, "%s", pn ? pn : "(null)");
    id.ppid = (long)mproc_parent_pid();
    id.pid = (long)getpid();
    id.cur_pid = (long)mproc_current_pid();
    return mproc_task_return(t, &id, sizeof id);
}

TEST(pool_api_identity) {
    ck_assert_str_eq(mproc_current_name(), "MainProcess");
    ck_assert_ptr_null(mproc_parent_name());
    mproc_pool *p = pool_new(2);
    enum { N = 12 };
    mproc_buf items[N];
    for (int i = 0; i < N; i++)
        items[i] = (mproc_buf){NULL, 0};
    mproc_result *r;
    ASSERT_OK(mproc_pool_map(p, t_ident, items, N,
                             &(mproc_call_opts){.chunksize = 1}, &r));
    for (size_t i = 0; i < N; i++) {
        size_t len;
        const ident *id = mproc_result_data(r, i, &len);
        ck_assert_ptr_nonnull(id);
        ck_assert_uint_eq(len, sizeof *id);
        unsigned num = 0;
        char extra = 0;
        ck_assert_msg(sscanf(id->name, "PoolWorker-%u%c", &num, &extra) == 1 &&
                          num > 0,
                      "worker name \"%s\"", id->name);
        ck_assert_str_eq(id->pname, "MainProcess");
        ck_assert_int_eq(id->ppid, (long)getpid());
        ck_assert_int_eq(id->cur_pid, id->pid);
        ck_assert_int_ne(id->pid, (long)getpid());
        /* One name per worker process. */
        for (size_t j = 0; j < i; j++) {
            const ident *o = mproc_result_data(r, j, NULL);
            ck_assert_int_eq(strcmp(o->name, id->name) == 0, o->pid == id->pid);
        }
    }
    mproc_result_free(r);
    pool_end(p);
}

static int src_empty_items(void *arg, size_t i, const void **data,
                           size_t *len) {
    size_t n = *(const size_t *)arg;
    if (i >= n)
        return 0;
    *data = NULL;
    *len = 0;
    return 1;
}

TEST(pool_api_task_index) {
    mproc_pool *p = pool_new(3);
    enum { N = 100 };
    mproc_buf items[N];
    for (int i = 0; i < N; i++)
        items[i] = (mproc_buf){NULL, 0};
    static const size_t chunks[] = {0, 1, 7, 100, 1000};
    mproc_result *r;
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
        mproc_call_opts o = {.chunksize = chunks[c]};
        ASSERT_OK(mproc_pool_map(p, t_index, items, N, &o, &r));
        for (size_t i = 0; i < N; i++)
            ck_assert_int_eq(result_long(r, i), (long)i);
        mproc_result_free(r);

        long in[N] = {0}, out[N];
        ASSERT_OK(mproc_pool_map_array(p, e_index, in, N, sizeof *in, out,
                                       sizeof *out, &o, &r));
        for (long i = 0; i < N; i++)
            ck_assert_int_eq(out[i], i);
        mproc_result_free(r);

        for (int unordered = 0; unordered < 2; unordered++) {
            size_t n = N;
            mproc_iter *it;
            mproc_call_opts io = {.chunksize = chunks[c] ? chunks[c] : 3,
                                  .unordered = unordered};
            ASSERT_OK(
                mproc_pool_imap(p, t_index, src_empty_items, &n, &io, &it));
            for (size_t k = 0; k < N; k++) {
                mproc_item item;
                ASSERT_OK(mproc_iter_next(it, MPROC_FOREVER, &item));
                ASSERT_OK(item.status);
                long v;
                memcpy(&v, item.data, sizeof v);
                ck_assert_int_eq(v, (long)item.index);
            }
            mproc_item item;
            ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EOF);
            mproc_iter_free(it);
        }
    }
    ASSERT_OK(mproc_pool_apply(p, t_index, NULL, 0, NULL, &r));
    ck_assert_int_eq(result_long(r, 0), 0);
    mproc_result_free(r);
    pool_end(p);
}

/* ---- progress ----------------------------------------------------------- */

typedef struct prog {
    int calls;
    size_t last_done, total;
    int decreasing, wrong_total, on_caller;
    pthread_t caller;
} prog;

static void on_prog(size_t done, size_t total, void *arg) {
    prog *g = arg;
    if (g->calls && done < g->last_done)
        g->decreasing = 1;
    if (total != g->total)
        g->wrong_total = 1;
    if (pthread_equal(pthread_self(), g->caller))
        g->on_caller = 1;
    g->last_done = done;
    g->calls++;
}

static int t_slow_x2(mproc_task *t, const void *arg, size_t len) {
    /* Work that takes a little time, so that progress has something to
     * report along the way. Not synchronisation. */
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return t_long_x2(t, arg, len);
}

TEST(pool_api_progress) {
    mproc_pool *p = pool_new(2);
    enum { N = 120 };
    long in[N];
    mproc_buf items[N];
    for (long i = 0; i < N; i++) {
        in[i] = i;
        items[i] = (mproc_buf){&in[i], sizeof in[i]};
    }
    prog g = {.total = N, .caller = pthread_self()};
    mproc_result *r;
    ASSERT_OK(mproc_pool_map(p, t_slow_x2, items, N,
                             &(mproc_call_opts){.chunksize = 2,
                                                .on_progress = on_prog,
                                                .progress_arg = &g},
                             &r));
    ck_assert_int_ge(g.calls, 1);
    ck_assert_int_eq(g.decreasing, 0);
    ck_assert_int_eq(g.wrong_total, 0);
    ck_assert_int_eq(g.on_caller, 0);
    ck_assert_uint_eq(g.last_done, N); /* the last call says: all done */
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(result_long(r, i), 2 * (long)i);
    mproc_result_free(r);

    /* Typed form, async. */
    long out[N];
    memset(&g, 0, sizeof g);
    g.total = N;
    g.caller = pthread_self();
    ASSERT_OK(mproc_pool_map_array_async(
        p, e_long_x2, in, N, sizeof *in, out, sizeof *out,
        &(mproc_call_opts){.on_progress = on_prog, .progress_arg = &g}, &r));
    ASSERT_OK(mproc_result_get(r, MPROC_FOREVER));
    ck_assert_int_ge(g.calls, 1);
    ck_assert_uint_eq(g.last_done, N);
    ck_assert_int_eq(g.decreasing, 0);
    mproc_result_free(r);

    /* Progress to stderr: fd 2 goes to a pipe for the call. The pipe is
     * made after the pool, so no worker holds it. */
    int pf[2];
    make_pipe(pf);
    int saved = dup(2);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_eq(dup2(pf[1], 2), 2);
    int rc = mproc_pool_map(
        p, t_long_x2, items, 50,
        &(mproc_call_opts){.progress = MPROC_PROGRESS_STDERR}, &r);
    ck_assert_int_eq(dup2(saved, 2), 2);
    close(saved);
    close(pf[1]);
    ASSERT_OK(rc);
    mproc_result_free(r);
    char buf[4096];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(pf[0], buf + got, sizeof buf - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    close(pf[0]);
    ck_assert_msg(strstr(buf, "50/50 (100%)") != NULL, "stderr got: %s", buf);
    ck_assert_msg(got > 0 && buf[got - 1] == '\n', "no final newline: %s", buf);
    pool_end(p);
}

/* ---- CPU pinning -------------------------------------------------------- */

static int t_affinity(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    cpu_set_t s;
    CPU_ZERO(&s);
    if (sched_getaffinity(0, sizeof s, &s) != 0)
        return mproc_task_fail(t, "sched_getaffinity failed: errno %d", errno);
    long out[2] = {CPU_COUNT(&s), -1};
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &s)) {
            out[1] = c;
            break;
        }
    return mproc_task_return(t, out, sizeof out);
}

TEST(pool_api_pin_cpus) {
    cpu_set_t mine;
    CPU_ZERO(&mine);
    ck_assert_int_eq(sched_getaffinity(0, sizeof mine, &mine), 0);
    int nw = CPU_COUNT(&mine);
    if (nw > 4)
        nw = 4;
    mproc_pool *p = NULL;
    ASSERT_OK(mproc_pool_create(
        &p, &(mproc_pool_opts){.nworkers = nw, .pin_cpus = 1}));
    size_t n = (size_t)nw * 4;
    mproc_buf *items = calloc(n, sizeof *items);
    ck_assert_ptr_nonnull(items);
    mproc_result *r;
    ASSERT_OK(mproc_pool_map(p, t_affinity, items, n,
                             &(mproc_call_opts){.chunksize = 1}, &r));
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const long *a = mproc_result_data(r, i, &len);
        ck_assert_ptr_nonnull(a);
        ck_assert_uint_eq(len, 2 * sizeof(long));
        ck_assert_int_eq(a[0], 1);
        ck_assert_int_ge(a[1], 0);
        ck_assert_msg(CPU_ISSET((int)a[1], &mine),
                      "worker pinned to cpu %ld, not ours", a[1]);
    }
    mproc_result_free(r);
    free(items);
    pool_end(p);
}

/* ---- concurrent submitters ---------------------------------------------- */

typedef struct submitter {
    mproc_pool *p;
    int id;
    int errors;
    char first_error[160];
} submitter;

static void sub_err(submitter *s, const char *what, int rc) {
    if (s->errors++ == 0)
        snprintf(s->first_error, sizeof s->first_error, "thread %d: %s: %s",
                 s->id, what, mproc_err_name(rc));
}

static void *submit_thread(void *arg) {
    submitter *s = arg;
    enum { M = 64 };
    long in[M], out[M];
    mproc_buf items[M];
    for (int iter = 0; iter < 25; iter++) {
        long base = s->id * 100000L + iter * 1000L;
        for (long i = 0; i < M; i++) {
            in[i] = base + i;
            items[i] = (mproc_buf){&in[i], sizeof in[i]};
        }
        mproc_result *r = NULL;
        int rc =
            mproc_pool_apply(s->p, t_long_x2, &in[0], sizeof in[0], NULL, &r);
        const long *v = mproc_result_data(r, 0, NULL);
        if (rc || !v || *v != 2 * in[0])
            sub_err(s, "apply", rc);
        mproc_result_free(r);

        rc = mproc_pool_map_array(s->p, e_long_x2, in, M, sizeof *in, out,
                                  sizeof *out, NULL, &r);
        for (int i = 0; i < M && !rc; i++)
            if (out[i] != 2 * in[i])
                rc = MPROC_EPROTO;
        if (rc)
            sub_err(s, "map_array", rc);
        mproc_result_free(r);

        rc = mproc_pool_map(s->p, t_long_x2, items, 16,
                            &(mproc_call_opts){.chunksize = 3}, &r);
        for (size_t i = 0; i < 16 && !rc; i++) {
            v = mproc_result_data(r, i, NULL);
            if (!v || *v != 2 * in[i])
                rc = MPROC_EPROTO;
        }
        if (rc)
            sub_err(s, "map", rc);
        mproc_result_free(r);

        rc = mproc_pool_apply_async(s->p, t_long_x2, &in[1], sizeof in[1], NULL,
                                    &r);
        if (rc == 0)
            rc = mproc_result_get(r, MPROC_FOREVER);
        v = mproc_result_data(r, 0, NULL);
        if (rc || !v || *v != 2 * in[1])
            sub_err(s, "apply_async", rc);
        mproc_result_free(r);
    }
    return NULL;
}

TEST(pool_api_concurrent_submitters) {
    mproc_pool *p = pool_new(3);
    enum { T = 4 };
    pthread_t th[T];
    submitter s[T];
    for (int i = 0; i < T; i++) {
        memset(&s[i], 0, sizeof s[i]);
        s[i].p = p;
        s[i].id = i + 1;
        ck_assert_int_eq(pthread_create(&th[i], NULL, submit_thread, &s[i]), 0);
    }
    for (int i = 0; i < T; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < T; i++)
        ck_assert_msg(s[i].errors == 0, "%d errors; first: %s", s[i].errors,
                      s[i].first_error);
    mproc_pool_stats st;
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_uint_eq(st.items_done, (uint64_t)T * 25 * (1 + 64 + 16 + 1));
    ck_assert_uint_eq(st.items_failed, 0);
    pool_end(p);
}

/* ---- large payloads ----------------------------------------------------- */

static unsigned char pattern(size_t i) {
    return (unsigned char)(i * 31 + 7 + (i >> 13));
}

/* Checks the input pattern, returns each byte xor 0x5a, in place. */
static int t_big(mproc_task *t, const void *arg, size_t len) {
    const unsigned char *in = arg;
    for (size_t i = 0; i < len; i++)
        if (in[i] != pattern(i))
            return mproc_task_fail(t, "input byte %zu is %u", i,
                                   (unsigned)in[i]);
    unsigned char *out = mproc_task_result_buf(t, len);
    if (!out)
        return mproc_task_fail(t, "no result buffer of %zu bytes", len);
    for (size_t i = 0; i < len; i++)
        out[i] = in[i] ^ 0x5a;
    return 0;
}

static int e_dbl(mproc_task *t, const void *in, void *out) {
    (void)t;
    double v;
    memcpy(&v, in, sizeof v);
    v = v * 2.0 + 1.0;
    memcpy(out, &v, sizeof v);
    return 0;
}

typedef struct pair {
    int a, b;
} pair;

static int e_pair_mul(mproc_task *t, const void *in, void *out) {
    (void)t;
    pair pr;
    memcpy(&pr, in, sizeof pr);
    long long v = (long long)pr.a * pr.b;
    memcpy(out, &v, sizeof v);
    return 0;
}

TEST(pool_api_large_payloads) {
    mproc_pool *p = pool_new(2);
    size_t big = (size_t)10 << 20;
    unsigned char *buf = malloc(big);
    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i < big; i++)
        buf[i] = pattern(i);
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply(p, t_big, buf, big, NULL, &r));
    size_t len;
    const unsigned char *d = mproc_result_data(r, 0, &len);
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(len, big);
    for (size_t i = 0; i < big; i++)
        if (d[i] != (pattern(i) ^ 0x5a))
            ck_abort_msg("output byte %zu is %u", i, (unsigned)d[i]);
    mproc_result_free(r);

    /* Several big items in one chunk, and a big map result overall. */
    mproc_buf items[3] = {
        {buf, (size_t)1 << 20}, {buf, (size_t)3 << 20}, {buf, 200 * 1024}};
    ASSERT_OK(mproc_pool_map(p, t_big, items, 3,
                             &(mproc_call_opts){.chunksize = 3}, &r));
    for (size_t k = 0; k < 3; k++) {
        d = mproc_result_data(r, k, &len);
        ck_assert_ptr_nonnull(d);
        ck_assert_uint_eq(len, items[k].len);
        for (size_t i = 0; i < len; i++)
            if (d[i] != (pattern(i) ^ 0x5a))
                ck_abort_msg("item %zu byte %zu is %u", k, i, (unsigned)d[i]);
    }
    mproc_result_free(r);
    free(buf);

    /* A typed map over a million doubles. */
    size_t n = 1000000;
    double *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
    ck_assert_ptr_nonnull(in);
    ck_assert_ptr_nonnull(out);
    for (size_t i = 0; i < n; i++)
        in[i] = (double)i * 0.5;
    ASSERT_OK(mproc_pool_map_array(p, e_dbl, in, n, sizeof *in, out,
                                   sizeof *out, NULL, &r));
    ck_assert_uint_eq(mproc_result_count(r), n);
    for (size_t i = 0; i < n; i++)
        if (out[i] != (double)i + 1.0)
            ck_abort_msg("out[%zu] = %f", i, out[i]);
    mproc_result_free(r);
    free(in);
    free(out);

    /* starmap over argument structs. */
    enum { M = 50000 };
    pair *args = malloc(M * sizeof *args);
    long long *prod = malloc(M * sizeof *prod);
    ck_assert_ptr_nonnull(args);
    ck_assert_ptr_nonnull(prod);
    for (int i = 0; i < M; i++)
        args[i] = (pair){i, i % 97 - 40};
    ASSERT_OK(mproc_pool_starmap(p, e_pair_mul, args, M, sizeof *args, prod,
                                 sizeof *prod, NULL, &r));
    for (int i = 0; i < M; i++)
        ck_assert_int_eq(prod[i], (long long)i * (i % 97 - 40));
    mproc_result_free(r);
    free(args);
    free(prod);
    pool_end(p);
}

/* ---- result sizes ------------------------------------------------------- */

typedef struct toobig_report {
    int rc_return, buf_null, rc_small;
} toobig_report;

static char g_big[2000];

static int t_toobig(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    toobig_report rep;
    memset(&rep, 0, sizeof rep);
    rep.rc_return = mproc_task_return(t, g_big, sizeof g_big);
    if (rep.rc_return != MPROC_ETOOBIG)
        return mproc_task_fail(t, "task_return gave %d", rep.rc_return);
    return mproc_task_return(t, &rep, sizeof rep);
}

static int t_toobig_buf(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    toobig_report rep;
    memset(&rep, 0, sizeof rep);
    rep.buf_null = mproc_task_result_buf(t, sizeof g_big) == NULL;
    return mproc_task_return(t, &rep, sizeof rep);
}

static int t_limit(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    return mproc_task_return(t, g_big, 1000);
}

TEST(pool_api_result_sizes) {
    mproc_pool *p = NULL;
    ASSERT_OK(mproc_pool_create(
        &p, &(mproc_pool_opts){.nworkers = 1, .max_result_bytes = 1000}));
    mproc_result *r;
    /* A result that is too big fails the item, even if the task then
     * returns something smaller. */
    ASSERT_ERR(mproc_pool_apply(p, t_toobig, NULL, 0, NULL, &r), MPROC_ETOOBIG);
    ASSERT_ERR(mproc_result_status(r, 0), MPROC_ETOOBIG);
    ck_assert_ptr_null(mproc_result_data(r, 0, NULL));
    ck_assert_ptr_nonnull(mproc_result_errmsg(r, 0));
    mproc_result_free(r);
    /* In place: result_buf says no, nothing fails by itself. */
    ASSERT_OK(mproc_pool_apply(p, t_toobig_buf, NULL, 0, NULL, &r));
    size_t len;
    const toobig_report *rep = mproc_result_data(r, 0, &len);
    ck_assert_ptr_nonnull(rep);
    ck_assert_uint_eq(len, sizeof *rep);
    ck_assert_int_eq(rep->buf_null, 1);
    mproc_result_free(r);
    /* Exactly the limit is fine. */
    ASSERT_OK(mproc_pool_apply(p, t_limit, NULL, 0, NULL, &r));
    (void)mproc_result_data(r, 0, &len);
    ck_assert_uint_eq(len, 1000);
    mproc_result_free(r);

    /* A typed map whose element is larger than any result may be. */
    char in[4] = {0}, out[4 * 2000];
    ASSERT_ERR(
        mproc_pool_map_array(p, e_long_x2, in, 4, 1, out, 2000, NULL, &r),
        MPROC_ETOOBIG);

    /* Zero-length arguments and results. */
    ASSERT_OK(mproc_pool_apply(p, t_len, NULL, 0, NULL, &r));
    ck_assert_int_eq(result_long(r, 0), 0);
    mproc_result_free(r);
    ASSERT_OK(mproc_pool_apply(p, t_nothing, "abc", 3, NULL, &r));
    ASSERT_OK(mproc_result_status(r, 0));
    len = 77;
    (void)mproc_result_data(r, 0, &len);
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_null(mproc_result_errmsg(r, 0));
    mproc_result_free(r);
    pool_end(p);
}

/* Typed maps with zero-sized elements: no input (the index is the input),
 * or no output (side effects or failure only). */
static int e_fail_7(mproc_task *t, const void *in, void *out) {
    (void)in;
    (void)out;
    if (mproc_task_index(t) == 7)
        return mproc_task_fail(t, "item 7");
    return 0;
}

TEST(pool_api_zero_size_elements) {
    mproc_pool *p = pool_new(2);
    enum { N = 10 };
    mproc_result *r;
    long out[N];
    ASSERT_OK(mproc_pool_map_array(p, e_index, NULL, N, 0, out, sizeof *out,
                                   &(mproc_call_opts){.chunksize = 3}, &r));
    for (long i = 0; i < N; i++)
        ck_assert_int_eq(out[i], i);
    mproc_result_free(r);

    ASSERT_ERR(mproc_pool_map_array(p, e_fail_7, NULL, N, 0, NULL, 0,
                                    &(mproc_call_opts){.chunksize = 4}, &r),
               MPROC_ETASK);
    ck_assert_uint_eq(mproc_result_count(r), N);
    for (size_t i = 0; i < N; i++)
        ASSERT_ERR(mproc_result_status(r, i), i == 7 ? MPROC_ETASK : 0);
    ck_assert_str_eq(mproc_result_errmsg(r, 7), "item 7");
    mproc_result_free(r);

    long in[N] = {0};
    ASSERT_OK(
        mproc_pool_starmap(p, e_fail_7, in, 5, sizeof *in, NULL, 0, NULL, &r));
    ck_assert_int_eq(mproc_result_successful(r), 1);
    mproc_result_free(r);
    pool_end(p);
}

/* ---- worker pids and size ----------------------------------------------- */

TEST(pool_api_worker_pids) {
    mproc_pool *p = pool_new(3);
    ck_assert_int_eq(mproc_pool_size(p), 3);
    pid_t pids[8];
    int n = mproc_pool_worker_pids(p, pids, 8);
    ck_assert_int_eq(n, 3);
    for (int i = 0; i < n; i++) {
        ck_assert_int_gt(pids[i], 0);
        ck_assert_int_ne(pids[i], getpid());
        ck_assert_msg(test_pid_alive(pids[i]), "worker %d not alive",
                      (int)pids[i]);
        for (int j = 0; j < i; j++)
            ck_assert_int_ne(pids[i], pids[j]);
    }
    pid_t two[2];
    ck_assert_int_eq(mproc_pool_worker_pids(p, two, 2), 2);
    ck_assert_int_eq(mproc_pool_worker_pids(p, NULL, 0), 0);

    /* The tasks run in those processes. */
    mproc_buf items[9] = {{NULL, 0}};
    mproc_result *r;
    ASSERT_OK(mproc_pool_map(p, t_getpid, items, 9,
                             &(mproc_call_opts){.chunksize = 1}, &r));
    for (size_t i = 0; i < 9; i++) {
        long pid = result_long(r, i);
        int known = 0;
        for (int j = 0; j < n; j++)
            known |= pid == pids[j];
        ck_assert_msg(known, "task ran in pid %ld, not a listed worker", pid);
    }
    mproc_result_free(r);

    /* After close and join every worker is gone. */
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    for (int i = 0; i < n; i++)
        ck_assert_msg(!test_pid_alive(pids[i]), "worker %d still alive",
                      (int)pids[i]);
    ck_assert_int_eq(mproc_pool_worker_pids(p, pids, 8), 0);
    ck_assert_int_eq(mproc_pool_size(p), 3);
    mproc_pool_destroy(p);

    /* Default size: mproc_cpu_count_available(). */
    ck_assert_int_eq(setenv("MPROC_CPU_COUNT", "3", 1), 0);
    ASSERT_OK(mproc_pool_create(&p, NULL));
    ck_assert_int_eq(mproc_pool_size(p), mproc_cpu_count_available());
    ck_assert_int_eq(mproc_pool_size(p), 3);
    ck_assert_int_eq(mproc_pool_worker_pids(p, pids, 8), 3);
    mproc_pool_destroy(p);
    unsetenv("MPROC_CPU_COUNT");
}

/* ---- close, join, terminate, destroy ------------------------------------ */

TEST(pool_api_close_join_drains) {
    mproc_pool *p = pool_new(2);
    enum { K = 30 };
    long xs[K];
    mproc_result *rs[K];
    for (int i = 0; i < K; i++) {
        xs[i] = i;
        ASSERT_OK(mproc_pool_apply_async(p, t_slow_x2, &xs[i], sizeof xs[i],
                                         NULL, &rs[i]));
    }
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    ASSERT_OK(mproc_pool_join(p, 0)); /* again: still done */
    for (int i = 0; i < K; i++) {
        ck_assert_int_eq(mproc_result_ready(rs[i]), 1);
        ASSERT_OK(mproc_result_get(rs[i], 0));
        ck_assert_int_eq(result_long(rs[i], 0), 2 * i);
        mproc_result_free(rs[i]);
    }
    mproc_pool_destroy(p);
}

TEST(pool_api_terminate) {
    mproc_pool *p = pool_new(2);
    pid_t pids[2];
    ck_assert_int_eq(mproc_pool_worker_pids(p, pids, 2), 2);
    uint64_t t0 = test_now_ms();
    ASSERT_OK(mproc_pool_terminate(p));
    ck_assert_uint_lt(test_now_ms() - t0, (uint64_t)test_ms(5000));
    for (int i = 0; i < 2; i++)
        ck_assert(!test_pid_alive(pids[i]));
    ASSERT_OK(mproc_pool_terminate(p)); /* idempotent */
    ASSERT_OK(mproc_pool_join(p, 0));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    ASSERT_OK(mproc_pool_close(p));
    long x = 1;
    mproc_result *r = (mproc_result *)&r;
    ASSERT_ERR(mproc_pool_apply_async(p, t_long_x2, &x, sizeof x, NULL, &r),
               MPROC_ECLOSED);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(mproc_pool_worker_pids(p, pids, 2), 0);
    mproc_pool_destroy(p);

    /* Terminate after close, before join. */
    p = pool_new(2);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_terminate(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}

TEST(pool_api_terminate_cancels) {
    gate_open();
    mproc_pool *p = pool_new(2);
    cbrec c = {0};
    mproc_result *running, *queued;
    ASSERT_OK(mproc_pool_map_async(p, t_gate, (mproc_buf[2]){{0}}, 2,
                                   &(mproc_call_opts){.chunksize = 1},
                                   &running));
    ASSERT_OK(mproc_pool_map_async(p, t_gate, (mproc_buf[5]){{0}}, 5,
                                   &(mproc_call_opts){.on_success = cb_success,
                                                      .on_error = cb_error,
                                                      .cb_arg = &c},
                                   &queued));
    uint64_t t0 = test_now_ms();
    ASSERT_OK(mproc_pool_terminate(p));
    ck_assert_uint_lt(test_now_ms() - t0, (uint64_t)test_ms(5000));
    ASSERT_ERR(mproc_result_get(running, MPROC_FOREVER), MPROC_ECANCELLED);
    ASSERT_ERR(mproc_result_get(queued, MPROC_FOREVER), MPROC_ECANCELLED);
    for (size_t i = 0; i < 2; i++)
        ASSERT_ERR(mproc_result_status(running, i), MPROC_ECANCELLED);
    for (size_t i = 0; i < 5; i++) {
        ASSERT_ERR(mproc_result_status(queued, i), MPROC_ECANCELLED);
        ck_assert_ptr_nonnull(mproc_result_errmsg(queued, i));
    }
    ck_assert_int_eq(atomic_load(&c.nerr), 1);
    ck_assert_int_eq(atomic_load(&c.nsucc), 0);
    mproc_result_free(running);
    mproc_result_free(queued);
    mproc_pool_destroy(p);
    gate_close();
}

TEST(pool_api_destroy_without_close) {
    mproc_pool *p = pool_new(2);
    long x = 6;
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply(p, t_long_x2, &x, sizeof x, NULL, &r));
    mproc_pool_destroy(p);
    /* Handles outlive the pool. */
    ck_assert_int_eq(mproc_result_ready(r), 1);
    ck_assert_int_eq(mproc_result_successful(r), 1);
    ASSERT_OK(mproc_result_wait(r, 0));
    ASSERT_OK(mproc_result_get(r, MPROC_FOREVER));
    ck_assert_int_eq(result_long(r, 0), 12);
    mproc_result_free(r);

    /* A pool that never ran anything. */
    p = pool_new(1);
    mproc_pool_destroy(p);
}

TEST(pool_api_destroy_pending) {
    gate_open();
    mproc_pool *p = pool_new(1);
    mproc_result *r1, *r2;
    long in[3] = {1, 2, 3}, out[3];
    ASSERT_OK(mproc_pool_apply_async(p, t_gate, NULL, 0, NULL, &r1));
    ASSERT_OK(mproc_pool_map_array_async(p, e_long_x2, in, 3, sizeof *in, out,
                                         sizeof *out, NULL, &r2));
    mproc_pool_destroy(p);
    ck_assert_int_eq(mproc_result_ready(r1), 1);
    ASSERT_ERR(mproc_result_get(r1, 0), MPROC_ECANCELLED);
    ASSERT_ERR(mproc_result_status(r1, 0), MPROC_ECANCELLED);
    ck_assert_int_eq(mproc_result_ready(r2), 1);
    ASSERT_ERR(mproc_result_get(r2, MPROC_FOREVER), MPROC_ECANCELLED);
    ck_assert_int_eq(mproc_result_successful(r2), 0);
    mproc_result_free(r1);
    mproc_result_free(r2);
    gate_close();
}

/* Results freed before the pool is destroyed, with work pending. */
TEST(pool_api_destroy_after_free) {
    gate_open();
    mproc_pool *p = pool_new(2);
    cbrec c = {0};
    mproc_call_opts o = {
        .on_success = cb_success, .on_error = cb_error, .cb_arg = &c};
    mproc_result *r;
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(
            mproc_pool_apply_async(p, t_gate, NULL, 0, i % 2 ? &o : NULL, &r));
        mproc_result_free(r);
    }
    mproc_buf none[3] = {{NULL, 0}};
    ASSERT_OK(mproc_pool_map_async(p, t_gate, none, 3, &o, &r));
    mproc_result_free(r);
    mproc_pool_destroy(p);
    /* Every call with callbacks ended (cancelled) and said so once. */
    ck_assert_int_eq(atomic_load(&c.nerr), 3);
    ck_assert_int_eq(atomic_load(&c.nsucc), 0);
    gate_close();
}

/* A callback may close the pool. */
typedef struct closer {
    mproc_pool *p;
    int rc_close, rc_apply;
    mproc_result *late;
} closer;

static int cb_close(mproc_result *r, void *arg) {
    (void)r;
    closer *c = arg;
    c->rc_close = mproc_pool_close(c->p);
    long x = 1;
    c->rc_apply =
        mproc_pool_apply_async(c->p, t_long_x2, &x, sizeof x, NULL, &c->late);
    return 0;
}

TEST(pool_api_callback_close) {
    mproc_pool *p = pool_new(2);
    closer c = {.p = p};
    long x = 3;
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply(
        p, t_long_x2, &x, sizeof x,
        &(mproc_call_opts){.on_success = cb_close, .cb_arg = &c}, &r));
    ASSERT_OK(c.rc_close);
    ASSERT_ERR(c.rc_apply, MPROC_ECLOSED);
    ck_assert_ptr_null(c.late);
    ck_assert_int_eq(result_long(r, 0), 6);
    mproc_result_free(r);
    ASSERT_ERR(mproc_pool_apply_async(p, t_long_x2, &x, sizeof x, NULL, &r),
               MPROC_ECLOSED);
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}

/* Closing the pool while an imap is under way: what was submitted comes
 * back, in order, then MPROC_ECLOSED, then the end. */
TEST(pool_api_imap_close_midway) {
    mproc_pool *p = pool_new(2);
    numsrc s;
    numsrc_init(&s, 1000);
    mproc_iter *it;
    ASSERT_OK(mproc_pool_imap(p, t_long_x2, src_num, &s,
                              &(mproc_call_opts){.max_in_flight = 10}, &it));
    mproc_item item;
    size_t k = 0;
    for (; k < 5; k++) {
        ASSERT_OK(mproc_iter_next(it, MPROC_FOREVER, &item));
        ck_assert_uint_eq(item.index, k);
    }
    ASSERT_OK(mproc_pool_close(p));
    size_t pulled = s.next;
    ck_assert_uint_le(pulled, 15);
    int rc;
    while ((rc = mproc_iter_next(it, MPROC_FOREVER, &item)) == 0) {
        ck_assert_uint_eq(item.index, k);
        ASSERT_OK(item.status);
        long v;
        memcpy(&v, item.data, sizeof v);
        ck_assert_int_eq(v, 2 * (long)k);
        k++;
    }
    ASSERT_ERR(rc, MPROC_ECLOSED);
    ck_assert_uint_eq(k, pulled);
    ASSERT_ERR(mproc_iter_next(it, MPROC_FOREVER, &item), MPROC_EOF);
    mproc_iter_free(it);
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}
