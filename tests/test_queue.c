/* SPDX-License-Identifier: MIT */
/*
 * Queue: FIFO order, empty and wrapping messages, timeouts, maxsize,
 * get_into, close, waiters that spin and then sleep, many short hand-offs,
 * JoinableQueue, bad arguments, attaching a reference in a pool task, a
 * corrupted ring, processes killed while blocked or in the middle of a put,
 * a 4 x 4 process stress test of a million messages, and processes
 * SIGKILLed at random while they use the queue.
 *
 * Other processes are Processes (forked directly), which see the queue
 * handle as it is: they get its pointer in their argument bytes. Their
 * bodies cannot use ck_assert, so they report through their exit code, and
 * the test asserts on that. Nothing waits by sleeping: when a test needs a
 * child to be blocked inside the queue, it watches /proc until the child
 * sleeps on a futex (wait_asleep), and everything else goes through the
 * queue itself, with timeouts. (queue_chaos_kills pauses at random between
 * kills, to spread them out; no outcome depends on the pauses.)
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* ---- helpers --------------------------------------------------------------
 */

static mproc_queue *new_queue(size_t maxsize, size_t bytes, int joinable) {
    mproc_queue *q = NULL;
    mproc_queue_opts o = {
        .maxsize = maxsize, .buffer_bytes = bytes, .joinable = joinable};
    ASSERT_OK(mproc_queue_create(&q, &o));
    ck_assert_ptr_nonnull(q);
    return q;
}

/* A byte pattern that depends on the seed and the position. */
static void pattern(unsigned char *b, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(seed * 131u + i * 7u + (i >> 8));
}

static void put_str(mproc_queue *q, const char *s) {
    ASSERT_OK(mproc_queue_put(q, s, strlen(s), test_ms(5000)));
}

static void get_str(mproc_queue *q, const char *want) {
    void *d = NULL;
    size_t n = 0;
    ASSERT_OK(mproc_queue_get(q, &d, &n, test_ms(5000)));
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(n, strlen(want));
    ck_assert_mem_eq(d, want, n);
    free(d);
}

/* Child side: get one message and compare it; 0 when it is want. */
static int child_get_str(mproc_queue *q, const char *want, long timeout_ms) {
    void *d = NULL;
    size_t n = 0;
    int rc = mproc_queue_get(q, &d, &n, timeout_ms);
    if (rc)
        return 10;
    int ok = n == strlen(want) && memcmp(d, want, n) == 0;
    free(d);
    return ok ? 0 : 11;
}

/* What a child gets: the queue and a small string. */
struct qarg {
    mproc_queue *q;
    char s[32];
};

static mproc_process *spawn(mproc_process_fn fn, mproc_queue *q,
                            const char *s) {
    struct qarg a = {.q = q};
    if (s)
        snprintf(a.s, sizeof a.s, "%s", s);
    mproc_process *p = NULL;
    ASSERT_OK(mproc_process_create(&p, fn, &a, sizeof a, NULL));
    ASSERT_OK(mproc_process_start(p));
    return p;
}

static struct qarg arg_of(const void *arg, size_t len) {
    struct qarg a = {0};
    if (len == sizeof a)
        memcpy(&a, arg, sizeof a);
    return a;
}

/* Join (bounded) and destroy; returns the exit code. */
static int reap_within(mproc_process *p, long ms) {
    ASSERT_OK(mproc_process_join(p, test_ms(ms)));
    int code = 12345;
    ASSERT_OK(mproc_process_exitcode(p, &code));
    mproc_process_destroy(p);
    return code;
}

static int reap(mproc_process *p) {
    return reap_within(p, 20000);
}

/* Is pid asleep in the kernel on a futex (a queue wait, or its mutex)? */
static int asleep_on_futex(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || p[2] != 'S')
        return 0;
    snprintf(path, sizeof path, "/proc/%d/wchan", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, "futex") != NULL;
}

/* Wait until the child is blocked inside the queue. This watches a state;
 * the 1 ms naps only pace the polling of /proc. */
static void wait_asleep(mproc_process *p) {
    pid_t pid = mproc_process_pid(p);
    uint64_t end = test_now_ms() + (uint64_t)test_ms(10000);
    while (!asleep_on_futex(pid)) {
        ck_assert_msg(test_now_ms() < end, "child %d never blocked", (int)pid);
        ck_assert_int_eq(mproc_process_is_alive(p), 1);
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
}

/* ---- basics ---------------------------------------------------------------
 */

TEST(queue_fifo) {
    mproc_queue *q;
    ASSERT_OK(mproc_queue_create(&q, NULL));
    ck_assert_int_eq(mproc_queue_empty(q), 1);
    ck_assert_int_eq(mproc_queue_full(q), 0);
    ck_assert_uint_eq(mproc_queue_qsize(q), 0);

    enum { N = 200 };
    unsigned char buf[5000], got[5000];
    for (unsigned i = 0; i < N; i++) {
        size_t n = (i * 37u) % sizeof buf;
        pattern(buf, n, i);
        ASSERT_OK(mproc_queue_put(q, buf, n, 0));
    }
    ck_assert_uint_eq(mproc_queue_qsize(q), N);
    ck_assert_int_eq(mproc_queue_empty(q), 0);
    for (unsigned i = 0; i < N; i++) {
        size_t n = (i * 37u) % sizeof buf, len = 0;
        pattern(buf, n, i);
        void *d = NULL;
        if (i % 2) {
            ASSERT_OK(mproc_queue_get(q, &d, &len, 0));
            ck_assert_ptr_nonnull(d);
        } else {
            ASSERT_OK(mproc_queue_get_into(q, got, sizeof got, &len, 0));
        }
        ck_assert_uint_eq(len, n);
        ck_assert_mem_eq(d ? d : got, buf, n);
        free(d);
    }
    ck_assert_int_eq(mproc_queue_empty(q), 1);
    ck_assert_uint_eq(mproc_queue_qsize(q), 0);
    mproc_queue_free(q);
}

TEST(queue_empty_message) {
    mproc_queue *q;
    ASSERT_OK(mproc_queue_create(&q, NULL));
    ASSERT_OK(mproc_queue_put(q, NULL, 0, 0));
    ASSERT_OK(mproc_queue_put(q, "ignored", 0, 0));
    ASSERT_OK(mproc_queue_put(q, NULL, 0, 0));
    ck_assert_uint_eq(mproc_queue_qsize(q), 3);

    void *d = NULL;
    size_t n = 99;
    ASSERT_OK(mproc_queue_get(q, &d, &n, 0));
    ck_assert_ptr_nonnull(d); /* never NULL, even for 0 bytes */
    ck_assert_uint_eq(n, 0);
    free(d);
    n = 99;
    ASSERT_OK(mproc_queue_get_into(q, NULL, 0, &n, 0));
    ck_assert_uint_eq(n, 0);
    char c;
    n = 99;
    ASSERT_OK(mproc_queue_get_into(q, &c, 0, &n, 0));
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(mproc_queue_empty(q), 1);
    mproc_queue_free(q);
}

/* A small ring: records and payloads wrap around its end all the time. */
TEST(queue_wraparound) {
    /* 250 rounds up to 256: a 248-byte message (256 with its header) fits
     * exactly, a 249-byte one never does. */
    mproc_queue *q = new_queue(0, 250, 0);
    unsigned char buf[256], got[256];
    pattern(buf, 248, 1);
    ASSERT_OK(mproc_queue_put(q, buf, 248, 0));
    ck_assert_int_eq(mproc_queue_full(q), 1);
    ASSERT_ERR(mproc_queue_put(q, NULL, 0, 0), MPROC_ETIMEDOUT);
    size_t len = 0;
    ASSERT_OK(mproc_queue_get_into(q, got, sizeof got, &len, 0));
    ck_assert_uint_eq(len, 248);
    ck_assert_mem_eq(got, buf, 248);
    ASSERT_ERR(mproc_queue_put(q, buf, 249, 0), MPROC_ETOOBIG);

    /* Keep one or two messages in flight, of sizes that are not multiples
     * of 8, so every offset of the ring is a boundary at some point. */
    size_t prev = 0;
    unsigned char pbuf[256];
    for (unsigned i = 0; i < 3000; i++) {
        size_t n = (i * 13u) % 120;
        pattern(buf, n, i);
        ASSERT_OK(mproc_queue_put(q, buf, n, 0));
        if (i > 0) {
            pattern(pbuf, prev, i - 1);
            ASSERT_OK(mproc_queue_get_into(q, got, sizeof got, &len, 0));
            ck_assert_uint_eq(len, prev);
            ck_assert_mem_eq(got, pbuf, prev);
        }
        prev = n;
    }
    ASSERT_OK(mproc_queue_get_into(q, got, sizeof got, &len, 0));
    ck_assert_uint_eq(len, prev);
    ck_assert_uint_eq(mproc_queue_qsize(q), 0);
    mproc_queue_free(q);
}

TEST(queue_timeouts) {
    mproc_queue *q = new_queue(1, 0, 0);
    void *d = (void *)1;
    size_t n = 5;
    char buf[8];

    /* Empty: a poll fails at once, a timed get after its timeout. */
    uint64_t t0 = test_now_ms();
    ASSERT_ERR(mproc_queue_get(q, &d, &n, 0), MPROC_ETIMEDOUT);
    ck_assert_ptr_null(d);
    ASSERT_ERR(mproc_queue_get_into(q, buf, sizeof buf, &n, 0),
               MPROC_ETIMEDOUT);
    ck_assert_uint_lt(test_now_ms() - t0, 1000);
    t0 = test_now_ms();
    ASSERT_ERR(mproc_queue_get(q, &d, &n, 200), MPROC_ETIMEDOUT);
    uint64_t dt = test_now_ms() - t0;
    ck_assert_uint_ge(dt, 199);
    ck_assert_uint_lt(dt, 200 + (uint64_t)test_ms(2000));
    t0 = test_now_ms();
    ASSERT_ERR(mproc_queue_get_into(q, buf, sizeof buf, &n, 150),
               MPROC_ETIMEDOUT);
    dt = test_now_ms() - t0;
    ck_assert_uint_ge(dt, 149);
    ck_assert_uint_lt(dt, 150 + (uint64_t)test_ms(2000));

    /* Full (maxsize 1): the same for put. */
    put_str(q, "one");
    ck_assert_int_eq(mproc_queue_full(q), 1);
    t0 = test_now_ms();
    ASSERT_ERR(mproc_queue_put(q, "two", 3, 0), MPROC_ETIMEDOUT);
    ck_assert_uint_lt(test_now_ms() - t0, 1000);
    t0 = test_now_ms();
    ASSERT_ERR(mproc_queue_put(q, "two", 3, 200), MPROC_ETIMEDOUT);
    dt = test_now_ms() - t0;
    ck_assert_uint_ge(dt, 199);
    ck_assert_uint_lt(dt, 200 + (uint64_t)test_ms(2000));
    ck_assert_uint_eq(mproc_queue_qsize(q), 1);
    get_str(q, "one");
    mproc_queue_free(q);

    /* Full by bytes: 64-byte ring holding one 56-byte message. */
    q = new_queue(0, 64, 0);
    char big[56] = {0};
    ASSERT_OK(mproc_queue_put(q, big, sizeof big, 0));
    ck_assert_int_eq(mproc_queue_full(q), 1);
    ASSERT_ERR(mproc_queue_put(q, NULL, 0, 0), MPROC_ETIMEDOUT);
    ASSERT_ERR(mproc_queue_put(q, NULL, 0, 50), MPROC_ETIMEDOUT);
    mproc_queue_free(q);
}

TEST(queue_maxsize) {
    mproc_queue *q = new_queue(3, 0, 0);
    put_str(q, "a");
    put_str(q, "b");
    ck_assert_int_eq(mproc_queue_full(q), 0);
    put_str(q, "c");
    ck_assert_int_eq(mproc_queue_full(q), 1);
    ck_assert_uint_eq(mproc_queue_qsize(q), 3);
    ASSERT_ERR(mproc_queue_put(q, "d", 1, 0), MPROC_ETIMEDOUT);
    get_str(q, "a");
    ck_assert_int_eq(mproc_queue_full(q), 0);
    put_str(q, "d");
    ASSERT_ERR(mproc_queue_put(q, "e", 1, 0), MPROC_ETIMEDOUT);
    get_str(q, "b");
    get_str(q, "c");
    get_str(q, "d");
    ck_assert_int_eq(mproc_queue_empty(q), 1);
    mproc_queue_free(q);
}

TEST(queue_get_into_small) {
    mproc_queue *q;
    ASSERT_OK(mproc_queue_create(&q, NULL));
    put_str(q, "hello world");
    put_str(q, "next");
    char buf[32];
    size_t n = 0;
    ASSERT_ERR(mproc_queue_get_into(q, buf, 5, &n, 0), MPROC_EMSGSIZE);
    ck_assert_uint_eq(n, 11);
    n = 0;
    ASSERT_ERR(mproc_queue_get_into(q, NULL, 0, &n, 0), MPROC_EMSGSIZE);
    ck_assert_uint_eq(n, 11);
    ASSERT_ERR(mproc_queue_get_into(q, buf, 10, &n, test_ms(1000)),
               MPROC_EMSGSIZE);
    ck_assert_uint_eq(mproc_queue_qsize(q), 2); /* the message stayed */
    ASSERT_OK(mproc_queue_get_into(q, buf, 11, &n, 0));
    ck_assert_uint_eq(n, 11);
    ck_assert_mem_eq(buf, "hello world", 11);
    ASSERT_OK(mproc_queue_get_into(q, buf, sizeof buf, &n, 0));
    ck_assert_uint_eq(n, 4);
    ck_assert_mem_eq(buf, "next", 4);
    mproc_queue_free(q);
}

TEST(queue_toobig) {
    mproc_queue *q = new_queue(0, 1024, 0);
    static unsigned char buf[1 << 20];
    /* 1017 bytes take 1024 + 8: never fits. 1016 take exactly 1024. */
    ASSERT_ERR(mproc_queue_put(q, buf, 1017, 0), MPROC_ETOOBIG);
    ASSERT_ERR(mproc_queue_put(q, buf, 1017, MPROC_FOREVER), MPROC_ETOOBIG);
    pattern(buf, 1016, 3);
    ASSERT_OK(mproc_queue_put(q, buf, 1016, 0));
    ck_assert_int_eq(mproc_queue_full(q), 1);
    unsigned char got[1016];
    size_t n = 0;
    ASSERT_OK(mproc_queue_get_into(q, got, sizeof got, &n, 0));
    ck_assert_uint_eq(n, 1016);
    ck_assert_mem_eq(got, buf, 1016);
    /* Lengths past 32 bits are refused before anything is read. */
    ASSERT_ERR(mproc_queue_put(q, buf, (size_t)1 << 33, 0), MPROC_ETOOBIG);
    mproc_queue_free(q);

    /* The default ring is 1 MiB. */
    ASSERT_OK(mproc_queue_create(&q, NULL));
    ASSERT_ERR(mproc_queue_put(q, buf, sizeof buf, 0), MPROC_ETOOBIG);
    pattern(buf, sizeof buf - 8, 4);
    ASSERT_OK(mproc_queue_put(q, buf, sizeof buf - 8, 0));
    void *d = NULL;
    ASSERT_OK(mproc_queue_get(q, &d, &n, 0));
    ck_assert_uint_eq(n, sizeof buf - 8);
    ck_assert_mem_eq(d, buf, n);
    free(d);
    mproc_queue_free(q);
}

TEST(queue_close) {
    mproc_queue *q;
    ASSERT_OK(mproc_queue_create(&q, NULL));
    put_str(q, "a");
    put_str(q, "b");
    ASSERT_OK(mproc_queue_close(q));
    ASSERT_ERR(mproc_queue_put(q, "c", 1, 0), MPROC_ECLOSED);
    ASSERT_ERR(mproc_queue_put(q, "c", 1, MPROC_FOREVER), MPROC_ECLOSED);
    ck_assert_uint_eq(mproc_queue_qsize(q), 2);
    get_str(q, "a");
    get_str(q, "b");
    void *d = NULL;
    size_t n = 0;
    char buf[4];
    ASSERT_ERR(mproc_queue_get(q, &d, &n, 0), MPROC_EOF);
    ASSERT_ERR(mproc_queue_get(q, &d, &n, MPROC_FOREVER), MPROC_EOF);
    ck_assert_ptr_null(d);
    ASSERT_ERR(mproc_queue_get_into(q, buf, sizeof buf, &n, 100), MPROC_EOF);
    ASSERT_OK(mproc_queue_close(q)); /* again: fine */
    ck_assert_int_eq(mproc_queue_empty(q), 1);
    mproc_queue_free(q);
}

static int body_get_expect_eof(void *arg, size_t len) {
    struct qarg a = arg_of(arg, len);
    void *d = NULL;
    size_t n = 0;
    int rc = mproc_queue_get(a.q, &d, &n, MPROC_FOREVER);
    free(d);
    return rc == MPROC_EOF ? 0 : 20;
}

static int body_put_expect_closed(void *arg, size_t len) {
    struct qarg a = arg_of(arg, len);
    int rc = mproc_queue_put(a.q, a.s, strlen(a.s), MPROC_FOREVER);
    return rc == MPROC_ECLOSED ? 0 : 21;
}

/* A close wakes a getter blocked on an empty queue and a putter blocked on
 * a full one. */
TEST(queue_close_wakes_waiters) {
    mproc_queue *empty = new_queue(0, 0, 0);
    mproc_queue *full = new_queue(1, 0, 0);
    put_str(full, "x");
    mproc_process *g = spawn(body_get_expect_eof, empty, NULL);
    mproc_process *p = spawn(body_put_expect_closed, full, "y");
    wait_asleep(g);
    wait_asleep(p);
    ASSERT_OK(mproc_queue_close(empty));
    ASSERT_OK(mproc_queue_close(full));
    ck_assert_int_eq(reap(g), 0);
    ck_assert_int_eq(reap(p), 0);
    get_str(full, "x");
    mproc_queue_free(empty);
    mproc_queue_free(full);
}

static int body_get_str(void *arg, size_t len) {
    struct qarg a = arg_of(arg, len);
    return child_get_str(a.q, a.s, test_ms(20000));
}

static int body_put_str(void *arg, size_t len) {
    struct qarg a = arg_of(arg, len);
    return mproc_queue_put(a.q, a.s, strlen(a.s), test_ms(20000)) ? 22 : 0;
}

/* A timeout too long to add to the clock waits; it does not time out. */
static int body_get_str_long(void *arg, size_t len) {
    struct qarg a = arg_of(arg, len);
    return child_get_str(a.q, a.s, LONG_MAX);
}

/* Blocked on one side, woken by the other side from another process. */
TEST(queue_blocking_wakeups) {
    mproc_queue *q = new_queue(1, 0, 0);
    mproc_process *c = spawn(body_get_str, q, "ping");
    wait_asleep(c);
    put_str(q, "ping");
    ck_assert_int_eq(reap(c), 0);
    c = spawn(body_get_str_long, q, "pong");
    wait_asleep(c);
    put_str(q, "pong");
    ck_assert_int_eq(reap(c), 0);

    put_str(q, "first");
    mproc_process *p = spawn(body_put_str, q, "second");
    wait_asleep(p);
    get_str(q, "first");
    ck_assert_int_eq(reap(p), 0);
    get_str(q, "second");
    ck_assert_int_eq(mproc_queue_empty(q), 1);
    mproc_queue_free(q);
}

/* Waiters spin a little before they sleep (queue.c, "Spinning"). Several
 * consumers that have spun out and sleep must each still get a message
 * put long after, one put each, and so must producers asleep on a full
 * queue, one get each: a spinning waiter is not counted as a sleeper, so
 * these check that no wake-up goes missing between the two. */
TEST(queue_sleepers_after_spin) {
    enum { N = 3 };
    mproc_queue *q = new_queue(1, 0, 0);
    mproc_process *c[N];
    for (int i = 0; i < N; i++)
        c[i] = spawn(body_get_str, q, "m");
    for (int i = 0; i < N; i++)
        wait_asleep(c[i]);
    for (int i = 0; i < N; i++)
        put_str(q, "m"); /* waits while the single slot is taken */
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(reap(c[i]), 0);
    ck_assert_int_eq(mproc_queue_empty(q), 1);

    put_str(q, "x");
    for (int i = 0; i < N; i++)
        c[i] = spawn(body_put_str, q, "p");
    for (int i = 0; i < N; i++)
        wait_asleep(c[i]);
    get_str(q, "x");
    for (int i = 0; i < N; i++)
        get_str(q, "p");
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(reap(c[i]), 0);
    ck_assert_int_eq(mproc_queue_empty(q), 1);
    mproc_queue_free(q);
}

#define HANDOFFS 20000u

struct pingpong {
    mproc_queue *ping, *pong, *seq;
};

/* Answer every ping with its complement, then put 0..HANDOFFS-1 into a
 * queue of one slot, so that nearly every put waits for a get. */
static int body_pong(void *arg, size_t len) {
    struct pingpong a;
    if (len != sizeof a)
        return 50;
    memcpy(&a, arg, sizeof a);
    for (uint32_t i = 0; i < HANDOFFS; i++) {
        uint32_t v = 0;
        size_t n = 0;
        if (mproc_queue_get_into(a.ping, &v, sizeof v, &n, test_ms(20000)))
            return 51;
        if (n != sizeof v || v != i)
            return 52;
        v = ~v;
        if (mproc_queue_put(a.pong, &v, sizeof v, test_ms(20000)))
            return 53;
    }
    for (uint32_t i = 0; i < HANDOFFS; i++)
        if (mproc_queue_put(a.seq, &i, sizeof i, test_ms(20000)))
            return 54;
    return 0;
}

/* Many short waits, on both sides: round trips, where each side waits for
 * the other's put (mostly caught while spinning), then a stream through a
 * single slot, where the producer waits for each get as well. Every
 * message arrives once, in order. */
TEST(queue_spin_handoffs) {
    struct pingpong a = {new_queue(0, 0, 0), new_queue(0, 0, 0),
                         new_queue(1, 0, 0)};
    mproc_process *p = NULL;
    ASSERT_OK(mproc_process_create(&p, body_pong, &a, sizeof a, NULL));
    ASSERT_OK(mproc_process_start(p));
    for (uint32_t i = 0; i < HANDOFFS; i++) {
        uint32_t v = 0;
        size_t n = 0;
        ASSERT_OK(mproc_queue_put(a.ping, &i, sizeof i, test_ms(20000)));
        ASSERT_OK(
            mproc_queue_get_into(a.pong, &v, sizeof v, &n, test_ms(20000)));
        ck_assert_uint_eq(n, sizeof v);
        ck_assert_uint_eq(v, ~i);
    }
    for (uint32_t i = 0; i < HANDOFFS; i++) {
        uint32_t v = 0;
        size_t n = 0;
        ASSERT_OK(
            mproc_queue_get_into(a.seq, &v, sizeof v, &n, test_ms(20000)));
        ck_assert_uint_eq(n, sizeof v);
        ck_assert_uint_eq(v, i);
    }
    ck_assert_int_eq(reap(p), 0);
    ck_assert_int_eq(mproc_queue_empty(a.ping), 1);
    ck_assert_int_eq(mproc_queue_empty(a.pong), 1);
    ck_assert_int_eq(mproc_queue_empty(a.seq), 1);
    mproc_queue_free(a.ping);
    mproc_queue_free(a.pong);
    mproc_queue_free(a.seq);
}

/* ---- JoinableQueue --------------------------------------------------------
 */

static int body_task_done(void *arg, size_t len) {
    struct qarg a = arg_of(arg, len);
    return mproc_queue_task_done(a.q) ? 23 : 0;
}

TEST(queue_joinable) {
    mproc_queue *plain;
    ASSERT_OK(mproc_queue_create(&plain, NULL));
    ASSERT_ERR(mproc_queue_task_done(plain), MPROC_EINVAL);
    ASSERT_ERR(mproc_queue_join(plain, 0), MPROC_EINVAL);
    mproc_queue_free(plain);

    mproc_queue *q = new_queue(0, 0, 1);
    ASSERT_OK(mproc_queue_join(q, 0)); /* nothing put: done */
    ASSERT_ERR(mproc_queue_task_done(q), MPROC_ESTATE);
    put_str(q, "a");
    put_str(q, "b");
    put_str(q, "c");
    ASSERT_ERR(mproc_queue_join(q, 0), MPROC_ETIMEDOUT);
    uint64_t t0 = test_now_ms();
    ASSERT_ERR(mproc_queue_join(q, 100), MPROC_ETIMEDOUT);
    ck_assert_uint_ge(test_now_ms() - t0, 99);
    get_str(q, "a");
    get_str(q, "b");
    get_str(q, "c");
    /* Got is not done. */
    ASSERT_ERR(mproc_queue_join(q, 0), MPROC_ETIMEDOUT);
    ASSERT_OK(mproc_queue_task_done(q));
    ASSERT_OK(mproc_queue_task_done(q));
    ASSERT_ERR(mproc_queue_join(q, 0), MPROC_ETIMEDOUT);

    /* The last task_done may come from another process. (queue_join_wakes
     * has the joiner asleep for sure.) */
    mproc_process *c = spawn(body_task_done, q, NULL);
    ASSERT_OK(mproc_queue_join(q, test_ms(20000)));
    ck_assert_int_eq(reap(c), 0);
    ASSERT_OK(mproc_queue_join(q, 0));
    ASSERT_ERR(mproc_queue_task_done(q), MPROC_ESTATE);
    mproc_queue_free(q);
}

static int body_join(void *arg, size_t len) {
    struct qarg a = arg_of(arg, len);
    return mproc_queue_join(a.q, test_ms(20000)) ? 24 : 0;
}

TEST(queue_join_wakes) {
    mproc_queue *q = new_queue(0, 0, 1);
    put_str(q, "a");
    put_str(q, "b");
    get_str(q, "a");
    get_str(q, "b");
    ASSERT_OK(mproc_queue_task_done(q));
    mproc_process *j1 = spawn(body_join, q, NULL);
    mproc_process *j2 = spawn(body_join, q, NULL);
    wait_asleep(j1);
    wait_asleep(j2);
    ASSERT_OK(mproc_queue_task_done(q));
    ck_assert_int_eq(reap(j1), 0);
    ck_assert_int_eq(reap(j2), 0);
    mproc_queue_free(q);
}

/* ---- misuse ---------------------------------------------------------------
 */

TEST(queue_bad_args) {
    mproc_queue *q = (mproc_queue *)1;
    ASSERT_ERR(mproc_queue_create(NULL, NULL), MPROC_EINVAL);
    mproc_queue_opts o = {.buffer_bytes = SIZE_MAX};
    ASSERT_ERR(mproc_queue_create(&q, &o), MPROC_EOVERFLOW);
    ck_assert_ptr_null(q);
    o.buffer_bytes = (size_t)1 << 50;
    ASSERT_ERR(mproc_queue_create(&q, &o), MPROC_EINVAL);
    ck_assert_ptr_null(q);
    ASSERT_ERR(mproc_queue_attach(NULL, NULL), MPROC_EINVAL);
    q = (mproc_queue *)1;
    ASSERT_ERR(mproc_queue_attach(&q, NULL), MPROC_EINVAL);
    ck_assert_ptr_null(q);

    ASSERT_OK(mproc_queue_create(&q, NULL));
    void *d = (void *)1;
    size_t n = 7;
    char buf[8];
    /* NULL handle */
    ASSERT_ERR(mproc_queue_put(NULL, "x", 1, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_queue_get(NULL, &d, &n, 0), MPROC_EINVAL);
    ck_assert_ptr_null(d);
    ck_assert_uint_eq(n, 0);
    ASSERT_ERR(mproc_queue_get_into(NULL, buf, sizeof buf, &n, 0),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_queue_close(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_queue_task_done(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_queue_join(NULL, 0), MPROC_EINVAL);
    ck_assert_uint_eq(mproc_queue_qsize(NULL), 0);
    ck_assert_int_eq(mproc_queue_empty(NULL), MPROC_EINVAL);
    ck_assert_int_eq(mproc_queue_full(NULL), MPROC_EINVAL);
    /* NULL data with a length, NULL out pointers */
    ASSERT_ERR(mproc_queue_put(q, NULL, 1, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_queue_get(q, NULL, &n, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_queue_get(q, &d, NULL, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_queue_get_into(q, NULL, 4, &n, 0), MPROC_EINVAL);
    /* len may be NULL: the queue is empty, so this just times out. */
    ASSERT_ERR(mproc_queue_get_into(q, buf, sizeof buf, NULL, 0),
               MPROC_ETIMEDOUT);
    /* None of that touched the queue. */
    ck_assert_uint_eq(mproc_queue_qsize(q), 0);
    put_str(q, "ok");
    get_str(q, "ok");

    /* A handle of another kind is not a queue. */
    mproc_shm *s;
    ASSERT_OK(mproc_shm_create(&s, 64));
    mproc_queue *fake = (mproc_queue *)(void *)s;
    ASSERT_ERR(mproc_queue_put(fake, "x", 1, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_queue_get(fake, &d, &n, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_queue_close(fake), MPROC_EINVAL);
    ck_assert_uint_eq(mproc_queue_qsize(fake), 0);
    mproc_queue_free(fake); /* not a queue: left alone */
    ck_assert_ptr_nonnull(mproc_shm_ptr(s));
    mproc_shm_free(s);

    mproc_ref ref;
    ASSERT_ERR(mproc_ref_of(NULL, &ref), MPROC_EINVAL);
    ASSERT_OK(mproc_ref_of(q, &ref));
    mproc_queue_free(q);
    mproc_queue_free(NULL);
}

/* ---- attaching --------------------------------------------------------- */

static int task_attach_put(mproc_task *t, const void *arg, size_t len) {
    mproc_ref ref;
    if (len != sizeof ref)
        return mproc_task_fail(t, "want %zu bytes, got %zu", sizeof ref, len);
    memcpy(&ref, arg, sizeof ref);
    mproc_queue *q = NULL;
    int rc = mproc_queue_attach(&q, &ref);
    if (rc)
        return mproc_task_fail(t, "attach: %s", mproc_err_name(rc));
    char msg[64];
    int n = snprintf(msg, sizeof msg, "from worker %d", (int)getpid());
    rc = mproc_queue_put(q, msg, (size_t)n, 5000);
    mproc_queue_free(q);
    if (rc)
        return mproc_task_fail(t, "put: %s", mproc_err_name(rc));
    int pid = (int)getpid();
    return mproc_task_return(t, &pid, sizeof pid);
}

/* A task attaches the reference it got, puts, and frees its handle. */
static void apply_attach_put(mproc_pool *pool, mproc_queue *q) {
    mproc_ref ref;
    ASSERT_OK(mproc_ref_of(q, &ref));
    mproc_result *r = NULL;
    int rc =
        mproc_pool_apply(pool, task_attach_put, &ref, sizeof ref, NULL, &r);
    ck_assert_msg(rc == 0, "task failed: %s: %s", mproc_err_name(rc),
                  r ? mproc_result_errmsg(r, 0) : "?");
    size_t len = 0;
    const void *data = mproc_result_data(r, 0, &len);
    int pid = 0;
    ck_assert_uint_eq(len, sizeof pid);
    memcpy(&pid, data, sizeof pid);
    mproc_result_free(r);

    char want[64];
    snprintf(want, sizeof want, "from worker %d", pid);
    get_str(q, want);
}

TEST(queue_attach_pool) {
    /* q0 exists before the fork server starts (workers inherit it); q1 is
     * made afterwards, so the worker fetches it from us. */
    mproc_queue *q0, *q1;
    ASSERT_OK(mproc_queue_create(&q0, NULL));
    mproc_pool *pool;
    ASSERT_OK(mproc_pool_create(&pool, &(mproc_pool_opts){.nworkers = 1}));
    ASSERT_OK(mproc_queue_create(&q1, NULL));
    apply_attach_put(pool, q0);
    apply_attach_put(pool, q1);
    apply_attach_put(pool, q1); /* again: the first handle was freed */
    ASSERT_OK(mproc_pool_close(pool));
    ASSERT_OK(mproc_pool_join(pool, test_ms(20000)));
    mproc_pool_destroy(pool);
    ck_assert_int_eq(mproc_queue_empty(q0), 1);
    ck_assert_int_eq(mproc_queue_empty(q1), 1);
    mproc_queue_free(q0);
    mproc_queue_free(q1);
}

TEST(queue_attach_refs) {
    mproc_queue *q, *q2 = NULL;
    ASSERT_OK(mproc_queue_create(&q, &(mproc_queue_opts){.joinable = 1}));
    mproc_ref ref;
    ASSERT_OK(mproc_ref_of(q, &ref));

    /* In the same process: a second handle on the same queue. */
    ASSERT_OK(mproc_queue_attach(&q2, &ref));
    put_str(q2, "via q2");
    get_str(q, "via q2");
    ASSERT_OK(mproc_queue_task_done(q2)); /* joinable was kept */
    ASSERT_OK(mproc_queue_join(q, 0));
    mproc_queue_free(q2);
    put_str(q, "still there");
    get_str(q, "still there");

    /* Another kind's reference. */
    mproc_shm *s;
    ASSERT_OK(mproc_shm_create(&s, 64));
    mproc_ref sref;
    ASSERT_OK(mproc_ref_of(s, &sref));
    ASSERT_ERR(mproc_queue_attach(&q2, &sref), MPROC_EINVAL);
    ck_assert_ptr_null(q2);
    mproc_shm_free(s);

    /* Garbage: tampered fields, zeros, random bytes. */
    mproc_ref bad = ref;
    bad.id ^= 1;
    ASSERT_ERR(mproc_queue_attach(&q2, &bad), MPROC_EINVAL);
    bad = ref;
    bad.check ^= 0x100;
    ASSERT_ERR(mproc_queue_attach(&q2, &bad), MPROC_EINVAL);
    bad = (mproc_ref){0};
    ASSERT_ERR(mproc_queue_attach(&q2, &bad), MPROC_EINVAL);
    memset(&bad, 0xa5, sizeof bad);
    ASSERT_ERR(mproc_queue_attach(&q2, &bad), MPROC_EINVAL);
    ck_assert_ptr_null(q2);

    /* A well-formed reference to a queue that is gone. */
    mproc_queue_free(q);
    ASSERT_ERR(mproc_queue_attach(&q2, &ref), MPROC_ENOENT);
    ck_assert_ptr_null(q2);
}

/* ---- a corrupted ring -----------------------------------------------------
 */

/* Find len bytes of marker in this process's shared-object mappings. */
static unsigned char *find_in_memfd(const char *marker, size_t len) {
    FILE *f = fopen("/proc/self/maps", "re");
    ck_assert_ptr_nonnull(f);
    char line[512];
    unsigned char *hit = NULL;
    while (!hit && fgets(line, sizeof line, f)) {
        if (!strstr(line, "memfd:mproc") || !strstr(line, "rw-s"))
            continue;
        unsigned long lo = 0, hi = 0;
        ck_assert_int_eq(sscanf(line, "%lx-%lx", &lo, &hi), 2);
        unsigned char *p = memmem((void *)lo, hi - lo, marker, len);
        if (p)
            hit = p;
    }
    fclose(f);
    return hit;
}

TEST(queue_corrupt_ring) {
    mproc_queue *q = new_queue(0, 4096, 0);
    const char *mark = "unique-marker-0123456789abcdef";
    size_t mlen = strlen(mark);
    ASSERT_OK(mproc_queue_put(q, mark, mlen, 0));
    unsigned char *p = find_in_memfd(mark, mlen);
    ck_assert_ptr_nonnull(p);

    /* Record header (8 bytes before the payload) with a huge length. */
    unsigned char saved[8];
    memcpy(saved, p - 8, 8);
    memset(p - 8, 0xff, 4);
    void *d = NULL;
    size_t n = 0;
    char buf[64];
    ASSERT_ERR(mproc_queue_get(q, &d, &n, 0), MPROC_EPROTO);
    ck_assert_ptr_null(d);
    ASSERT_ERR(mproc_queue_get_into(q, buf, sizeof buf, &n, 0), MPROC_EPROTO);
    /* A plausible length whose check does not match. */
    memcpy(p - 8, saved, 8);
    p[-8] ^= 1;
    ASSERT_ERR(mproc_queue_get(q, &d, &n, test_ms(1000)), MPROC_EPROTO);
    /* Put back, it reads again: nothing was consumed on the way. */
    memcpy(p - 8, saved, 8);
    ASSERT_OK(mproc_queue_get_into(q, buf, sizeof buf, &n, 0));
    ck_assert_uint_eq(n, mlen);
    ck_assert_mem_eq(buf, mark, mlen);
    mproc_queue_free(q);
}

/* ---- processes killed at the wrong moment ---------------------------------
 */

static int body_get_forever(void *arg, size_t len) {
    struct qarg a = arg_of(arg, len);
    void *d = NULL;
    size_t n = 0;
    (void)mproc_queue_get(a.q, &d, &n, MPROC_FOREVER);
    free(d);
    return 30; /* never: it is killed first */
}

static int body_put_forever(void *arg, size_t len) {
    struct qarg a = arg_of(arg, len);
    (void)mproc_queue_put(a.q, a.s, strlen(a.s), MPROC_FOREVER);
    return 31;
}

TEST(queue_killed_blocked_consumer) {
    mproc_queue *q;
    ASSERT_OK(mproc_queue_create(&q, NULL));
    mproc_process *k = spawn(body_get_forever, q, NULL);
    wait_asleep(k);
    ASSERT_OK(mproc_process_kill(k));
    ck_assert_int_eq(reap(k), -SIGKILL);

    /* A consumer blocked now must get the next message, though the dead
     * one still counts as a sleeper. */
    mproc_process *c = spawn(body_get_str, q, "after");
    wait_asleep(c);
    put_str(q, "after");
    ck_assert_int_eq(reap(c), 0);
    put_str(q, "x");
    get_str(q, "x");
    ck_assert_int_eq(mproc_queue_empty(q), 1);
    mproc_queue_free(q);
}

TEST(queue_killed_blocked_producer) {
    mproc_queue *q = new_queue(1, 0, 0);
    put_str(q, "first");
    mproc_process *k = spawn(body_put_forever, q, "never");
    wait_asleep(k);
    ASSERT_OK(mproc_process_kill(k));
    ck_assert_int_eq(reap(k), -SIGKILL);

    mproc_process *p = spawn(body_put_str, q, "second");
    wait_asleep(p);
    get_str(q, "first");
    ck_assert_int_eq(reap(p), 0);
    get_str(q, "second");
    put_str(q, "third");
    get_str(q, "third");
    ck_assert_int_eq(mproc_queue_empty(q), 1);
    mproc_queue_free(q);
}

#define TORN_LEN ((size_t)1 << 20)
#define TORN_OK  ((size_t)64 << 10)

/* Put 1 MiB from a buffer whose pages past 64 KiB cannot be read: the copy
 * into the ring faults in the middle, with the queue's mutex held. */
static int body_torn_put(void *arg, size_t len) {
    struct qarg a = arg_of(arg, len);
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none); /* no core file from this test */
    signal(SIGSEGV, SIG_DFL);      /* die of it, sanitizer or not */
    unsigned char *m = mmap(NULL, TORN_LEN, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 40;
    memset(m, 0xab, TORN_OK);
    if (mprotect(m + TORN_OK, TORN_LEN - TORN_OK, PROT_NONE) != 0)
        return 41;
    (void)mproc_queue_put(a.q, m, TORN_LEN, MPROC_FOREVER);
    return 42; /* never: the put faults */
}

static void torn_put(mproc_queue *q) {
    mproc_process *t = spawn(body_torn_put, q, NULL);
    ck_assert_int_eq(reap(t), -SIGSEGV);
}

/* RELIABILITY.md, row 14: a producer dies in the middle of a large put. */
TEST(queue_torn_message) {
    mproc_queue *q = new_queue(0, (size_t)4 << 20, 0);

    /* A consumer blocked on the empty queue while the producer dies must
     * not see a partial message: the first thing it gets is "after". */
    mproc_process *c = spawn(body_get_str, q, "after");
    wait_asleep(c);
    torn_put(q);
    ck_assert_uint_eq(mproc_queue_qsize(q), 0);
    ck_assert_int_eq(mproc_process_is_alive(c), 1);
    put_str(q, "after");
    ck_assert_int_eq(reap(c), 0);

    /* With messages on both sides of the dead put, from us and from
     * another producer: all of them, in order, and nothing else. */
    put_str(q, "m1");
    torn_put(q);
    mproc_process *p = spawn(body_put_str, q, "m2");
    ck_assert_int_eq(reap(p), 0);
    torn_put(q);
    put_str(q, "m3");
    ck_assert_uint_eq(mproc_queue_qsize(q), 3);
    get_str(q, "m1");
    get_str(q, "m2");
    get_str(q, "m3");
    void *d = NULL;
    size_t n = 0;
    ASSERT_ERR(mproc_queue_get(q, &d, &n, 0), MPROC_ETIMEDOUT);

    /* The space the dead put wrote into is reused: whole large messages
     * still go through, byte for byte. */
    unsigned char *big = malloc(TORN_LEN);
    ck_assert_ptr_nonnull(big);
    for (unsigned i = 0; i < 6; i++) {
        pattern(big, TORN_LEN, i);
        ASSERT_OK(mproc_queue_put(q, big, TORN_LEN, test_ms(5000)));
        ASSERT_OK(mproc_queue_get(q, &d, &n, test_ms(5000)));
        ck_assert_uint_eq(n, TORN_LEN);
        ck_assert_int_eq(memcmp(d, big, n), 0);
        free(d);
    }
    free(big);
    ASSERT_OK(mproc_queue_close(q));
    ASSERT_ERR(mproc_queue_get(q, &d, &n, 0), MPROC_EOF);
    mproc_queue_free(q);
}

/* ---- stress ---------------------------------------------------------------
 *
 * 4 producers x 4 consumers, 10^6 messages in all. Message (p, s) of
 * producer p has id = 4 s + p (< 2^20) and a length from 1 B to 64 KiB,
 * both fixed by the id. Its first min(len, 8) bytes are the id, little
 * endian; from byte 8 on, 8-byte words of an arithmetic sequence seeded by
 * the id, so a whole message is made and checked 8 bytes at a time.
 *
 * Lengths are log-uniform over 1..65536 (len = 2^(16 u), u uniform in
 * [0, 1], in steps of 1/4096): every octave is as likely as the next, so
 * tiny, small and large messages all get exercised, and records of every
 * size wrap around the ring's end. The mean is about 5.9 KB: 5.9 GB put and
 * 5.9 GB got, about 3 s here. A uniform 1..65536 would copy 33 GB each way
 * (over five times longer) and be almost all large messages.
 *
 * Consumers set bit id of a shared bitmap for every message of 3 bytes or
 * more (those carry their whole id) after checking its length and every
 * byte; a bit found already set is a duplicate. The 1- and 2-byte messages
 * cannot say which they are: consumers add a hash of (len, bytes) to a sum,
 * which must come out as the sum over every such message sent (a multiset
 * check), and the total count must be exact.
 */

#define ST_P     4
#define ST_C     4
#define ST_TOTAL 1000000u /* at most 2^24: an id fits in 3 bytes */
#define ST_MAX   65536u
#define ST_STEP  0x9e3779b97f4a7c15ull

struct st_cons {
    uint64_t got, bytes, tiny_sum, bad, dup;
    int rc;
};

struct st_shared {
    struct st_cons cons[ST_C];
    _Atomic uint64_t seen[(ST_TOTAL + 63) / 64];
};

static double st_frac[256]; /* 2^(j/256); set before any fork */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void st_init_sizes(void) {
    double x = 1.0;
    for (int j = 0; j < 256; j++) {
        st_frac[j] = x;
        x *= 1.0027112750502025; /* 2^(1/256) */
    }
}

static uint32_t st_len(uint32_t id) {
    uint32_t k = (uint32_t)(mix64(id + 1) % 4097); /* 16 * 256 + 1 steps */
    return (uint32_t)(st_frac[k & 255] * (double)(1u << (k >> 8)));
}

static void st_fill(unsigned char *m, uint32_t len, uint32_t id) {
    for (uint32_t i = 0; i < len && i < 8; i++)
        m[i] = i < 4 ? (unsigned char)(id >> (8 * i)) : 0;
    uint64_t w = mix64(id ^ 0x5157u);
    uint32_t i = 8;
    for (; i + 8 <= len; i += 8, w += ST_STEP)
        memcpy(m + i, &w, 8);
    if (i < len)
        memcpy(m + i, &w, len - i);
}

/* 0 when m is message id, byte for byte. */
static int st_check(const unsigned char *m, uint32_t len, uint32_t id) {
    for (uint32_t i = 0; i < len && i < 8; i++)
        if (m[i] != (i < 4 ? (unsigned char)(id >> (8 * i)) : 0))
            return 1;
    uint64_t w = mix64(id ^ 0x5157u), v;
    uint32_t i = 8;
    for (; i + 8 <= len; i += 8, w += ST_STEP) {
        memcpy(&v, m + i, 8);
        if (v != w)
            return 1;
    }
    if (i < len && memcmp(m + i, &w, len - i) != 0)
        return 1;
    return 0;
}

static uint64_t st_tiny_hash(const unsigned char *m, size_t len) {
    uint64_t v = len;
    for (size_t i = 0; i < len; i++)
        v |= (uint64_t)m[i] << (8 * (i + 1));
    return mix64(v ^ 0x7417u);
}

struct st_arg {
    mproc_queue *q;
    struct st_shared *sh;
    int index;
    uint32_t total; /* messages in the run, a multiple of ST_P */
};

static int body_st_producer(void *arg, size_t len) {
    struct st_arg a;
    if (len != sizeof a)
        return 50;
    memcpy(&a, arg, sizeof a);
    unsigned char *m = malloc(ST_MAX);
    if (!m)
        return 51;
    for (uint32_t s = 0; s < a.total / ST_P; s++) {
        uint32_t id = s * ST_P + (uint32_t)a.index;
        uint32_t n = st_len(id);
        st_fill(m, n, id);
        if (mproc_queue_put(a.q, m, n, MPROC_FOREVER) != 0) {
            free(m);
            return 52;
        }
    }
    free(m);
    return 0;
}

static int body_st_consumer(void *arg, size_t len) {
    struct st_arg a;
    if (len != sizeof a)
        return 60;
    memcpy(&a, arg, sizeof a);
    struct st_cons *c = &a.sh->cons[a.index];
    unsigned char *buf = malloc(ST_MAX);
    if (!buf)
        return 61;
    /* Half the consumers use get (a new buffer each time), half get_into. */
    int use_get = a.index % 2;
    for (;;) {
        unsigned char *m = buf;
        size_t n = 0;
        int rc;
        if (use_get)
            rc = mproc_queue_get(a.q, (void **)&m, &n, MPROC_FOREVER);
        else
            rc = mproc_queue_get_into(a.q, buf, ST_MAX, &n, MPROC_FOREVER);
        if (rc == MPROC_EOF)
            break;
        if (rc) {
            c->rc = rc;
            break;
        }
        c->got++;
        c->bytes += n;
        if (n < 3) {
            c->tiny_sum += st_tiny_hash(m, n);
        } else {
            uint32_t id = m[0] | (uint32_t)m[1] << 8 | (uint32_t)m[2] << 16;
            if (id >= a.total || n != st_len(id) ||
                st_check(m, (uint32_t)n, id)) {
                c->bad++;
            } else {
                uint64_t bit = 1ull << (id % 64);
                if (atomic_fetch_or(&a.sh->seen[id / 64], bit) & bit)
                    c->dup++;
            }
        }
        if (m != buf)
            free(m);
    }
    free(buf);
    return c->rc ? 62 : 0;
}

/* Run total messages through q with ST_P producers and ST_C consumers and
 * check that each arrived exactly once, byte for byte. */
static void st_run(const char *name, mproc_queue *q, uint32_t total) {
    st_init_sizes();
    /* Expected: how many short messages and their hash sum; total bytes. */
    uint64_t want_tiny = 0, want_tiny_sum = 0, want_bytes = 0;
    for (uint32_t id = 0; id < total; id++) {
        uint32_t n = st_len(id);
        ck_assert(n >= 1 && n <= ST_MAX);
        want_bytes += n;
        if (n < 3) {
            unsigned char m[2];
            st_fill(m, n, id);
            want_tiny++;
            want_tiny_sum += st_tiny_hash(m, n);
        }
    }

    mproc_shm *shm;
    ASSERT_OK(mproc_shm_create(&shm, sizeof(struct st_shared)));
    struct st_shared *sh = mproc_shm_ptr(shm);

    uint64_t t0 = test_now_ms();
    mproc_process *cons[ST_C], *prod[ST_P];
    for (int i = 0; i < ST_C; i++) {
        struct st_arg a = {.q = q, .sh = sh, .index = i, .total = total};
        ASSERT_OK(mproc_process_create(&cons[i], body_st_consumer, &a, sizeof a,
                                       NULL));
        ASSERT_OK(mproc_process_start(cons[i]));
    }
    for (int i = 0; i < ST_P; i++) {
        struct st_arg a = {.q = q, .sh = sh, .index = i, .total = total};
        ASSERT_OK(mproc_process_create(&prod[i], body_st_producer, &a, sizeof a,
                                       NULL));
        ASSERT_OK(mproc_process_start(prod[i]));
    }
    for (int i = 0; i < ST_P; i++)
        ck_assert_int_eq(reap_within(prod[i], 170000), 0);
    ASSERT_OK(mproc_queue_close(q)); /* consumers drain, then see EOF */
    for (int i = 0; i < ST_C; i++)
        ck_assert_int_eq(reap_within(cons[i], 170000), 0);
    uint64_t dt = test_now_ms() - t0;
    if (dt == 0)
        dt = 1;

    uint64_t got = 0, bytes = 0, tiny_sum = 0, bad = 0, dup = 0, bits = 0;
    for (int i = 0; i < ST_C; i++) {
        got += sh->cons[i].got;
        bytes += sh->cons[i].bytes;
        tiny_sum += sh->cons[i].tiny_sum;
        bad += sh->cons[i].bad;
        dup += sh->cons[i].dup;
        ck_assert_int_eq(sh->cons[i].rc, 0);
    }
    for (size_t w = 0; w < (ST_TOTAL + 63) / 64; w++)
        bits += (uint64_t)__builtin_popcountll(sh->seen[w]);
    printf("%s: %u messages (%llu of 1-2 B), %.2f GB each way, %.1f s, "
           "%.0f msg/s; per consumer:",
           name, total, (unsigned long long)want_tiny, (double)want_bytes / 1e9,
           (double)dt / 1000.0, (double)total * 1000.0 / (double)dt);
    for (int i = 0; i < ST_C; i++)
        printf(" %llu", (unsigned long long)sh->cons[i].got);
    printf("\n");

    ck_assert_uint_eq(bad, 0);
    ck_assert_uint_eq(dup, 0);
    ck_assert_uint_eq(got, total);
    ck_assert_uint_eq(bytes, want_bytes);
    ck_assert_uint_eq(bits, total - want_tiny);
    ck_assert_uint_eq(tiny_sum, want_tiny_sum);
    ck_assert_int_eq(mproc_queue_empty(q), 1);
    mproc_shm_free(shm);
}

TEST(queue_stress) {
    mproc_queue *q;
    ASSERT_OK(mproc_queue_create(&q, NULL)); /* default 1 MiB ring */
    st_run("queue_stress", q, ST_TOTAL);
    mproc_queue_free(q);
}

/* The same with the queue full most of the time: a ring of two largest
 * messages and at most 8 messages, so producers of large and small
 * messages sleep side by side and compete for the space each get frees. */
TEST(queue_stress_full) {
    mproc_queue *q = new_queue(8, 2 * (ST_MAX + 8), 0);
    st_run("queue_stress_full", q, ST_TOTAL / 5);
    mproc_queue_free(q);
}

/* ---- chaos: SIGKILL at random moments ----------------------------------
 *
 * Two producers and two consumers run the stress messages while the test
 * SIGKILLs one of them at a random moment, over and over, and starts a new
 * one in its place. Much of their time is spent copying with the mutex
 * held, so many kills land there and exercise owner death. Messages may be
 * lost (a producer killed in its put, a consumer killed after taking one),
 * but none may arrive twice or damaged, and nothing may hang. The random
 * pauses between kills pace them; no result depends on their length.
 */

#define CH_KILLS 500

struct ch_shared {
    _Atomic uint32_t next_id;
    _Atomic uint64_t got, bad, dup;
    _Atomic uint64_t seen[(ST_TOTAL + 63) / 64];
};

struct ch_arg {
    mproc_queue *q;
    struct ch_shared *sh;
};

static int body_ch_producer(void *arg, size_t len) {
    struct ch_arg a;
    if (len != sizeof a)
        return 70;
    memcpy(&a, arg, sizeof a);
    unsigned char *m = malloc(ST_MAX);
    if (!m)
        return 71;
    for (;;) {
        uint32_t id = atomic_fetch_add(&a.sh->next_id, 1);
        if (id >= ST_TOTAL)
            break;
        uint32_t n = st_len(id);
        st_fill(m, n, id);
        int rc = mproc_queue_put(a.q, m, n, MPROC_FOREVER);
        if (rc == MPROC_ECLOSED)
            break;
        if (rc) {
            free(m);
            return 72;
        }
    }
    free(m);
    return 0;
}

static int body_ch_consumer(void *arg, size_t len) {
    struct ch_arg a;
    if (len != sizeof a)
        return 80;
    memcpy(&a, arg, sizeof a);
    unsigned char *m = malloc(ST_MAX);
    if (!m)
        return 81;
    for (;;) {
        size_t n = 0;
        int rc = mproc_queue_get_into(a.q, m, ST_MAX, &n, MPROC_FOREVER);
        if (rc == MPROC_EOF)
            break;
        if (rc) {
            free(m);
            return 82;
        }
        atomic_fetch_add(&a.sh->got, 1);
        uint32_t id = n < 3 ? 0 : m[0] | (uint32_t)m[1] << 8 | m[2] << 16;
        if (n < 3) /* cannot say which it is; its bytes still must match */
            continue;
        if (id >= ST_TOTAL || n != st_len(id) || st_check(m, (uint32_t)n, id)) {
            atomic_fetch_add(&a.sh->bad, 1);
            continue;
        }
        uint64_t bit = 1ull << (id % 64);
        if (atomic_fetch_or(&a.sh->seen[id / 64], bit) & bit)
            atomic_fetch_add(&a.sh->dup, 1);
    }
    free(m);
    return 0;
}

static mproc_process *ch_start(int producer, struct ch_arg *a) {
    mproc_process *p = NULL;
    ASSERT_OK(
        mproc_process_create(&p, producer ? body_ch_producer : body_ch_consumer,
                             a, sizeof *a, NULL));
    ASSERT_OK(mproc_process_start(p));
    return p;
}

TEST(queue_chaos_kills) {
    st_init_sizes();
    mproc_shm *shm;
    ASSERT_OK(mproc_shm_create(&shm, sizeof(struct ch_shared)));
    struct ch_shared *sh = mproc_shm_ptr(shm);
    /* A small ring: producers block often too. */
    mproc_queue *q = new_queue(0, (size_t)256 << 10, 0);
    struct ch_arg a = {.q = q, .sh = sh};

    uint64_t seed = (uint64_t)test_now_ms() * 0x9e3779b97f4a7c15ull | 1;
    printf("queue_chaos_kills: seed %llu\n", (unsigned long long)seed);
    mproc_process *kids[4]; /* 0, 1 produce; 2, 3 consume */
    for (int i = 0; i < 4; i++)
        kids[i] = ch_start(i < 2, &a);
    int killed = 0;
    for (int k = 0; k < CH_KILLS; k++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        nanosleep(&(struct timespec){0, (long)(seed % 3000000)}, NULL);
        int i = (int)((seed >> 32) % 4);
        ASSERT_OK(mproc_process_kill(kids[i]));
        int code = reap(kids[i]);
        /* 0: a producer that ran out of ids before the kill. */
        ck_assert(code == -SIGKILL || (i < 2 && code == 0));
        killed += code == -SIGKILL;
        kids[i] = ch_start(i < 2, &a);
    }
    /* Let the producers finish what they do (they stop when the ids run
     * out or the queue closes), then drain. */
    atomic_store(&sh->next_id, ST_TOTAL);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(reap(kids[i]), 0);
    ASSERT_OK(mproc_queue_close(q));
    for (int i = 2; i < 4; i++)
        ck_assert_int_eq(reap(kids[i]), 0);

    printf("queue_chaos_kills: %d kills, %llu messages got\n", killed,
           (unsigned long long)atomic_load(&sh->got));
    ck_assert_uint_eq(atomic_load(&sh->bad), 0);
    ck_assert_uint_eq(atomic_load(&sh->dup), 0);
    ck_assert_uint_gt(atomic_load(&sh->got), 0);
    /* The state is whole: an empty closed queue says EOF, not EPROTO. */
    void *d = NULL;
    size_t n = 0;
    ASSERT_ERR(mproc_queue_get(q, &d, &n, 0), MPROC_EOF);
    ck_assert_uint_eq(mproc_queue_qsize(q), 0);
    mproc_queue_free(q);
    mproc_shm_free(shm);
}
