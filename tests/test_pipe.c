/* SPDX-License-Identifier: MIT */
/*
 * Pipe: messages between a parent and a Process child, sizes on both sides
 * of the inline limit, recv_into, poll, end of file when a peer exits or is
 * killed, one-way pipes, attaching from a pool task, threads sharing an
 * end, and misuse.
 *
 * Children are Processes (direct forks), so they get the handle pointers
 * themselves in their argument bytes. They cannot use ck_assert: they
 * report through their exit code, and the test asserts on that. Nothing
 * waits by sleeping: the messages themselves are the synchronisation.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* Payloads up to this size travel inline (src/wire.h). */
#define INLINE_MAX (96u * 1024u)

/* Both ends, as a Process child gets them. */
typedef struct ends {
    mproc_conn *a, *b;
} ends;

static ends ends_of(const void *arg, size_t len) {
    ends e = {NULL, NULL};
    if (len == sizeof e)
        memcpy(&e, arg, sizeof e);
    return e;
}

static ends pipe_new(int duplex) {
    ends e = {NULL, NULL};
    ASSERT_OK(mproc_pipe(&e.a, &e.b, duplex));
    ck_assert_ptr_nonnull(e.a);
    ck_assert_ptr_nonnull(e.b);
    ck_assert_ptr_ne(e.a, e.b);
    return e;
}

/* Start fn with both ends; the parent then closes end b, which the child
 * uses (the child closes a). */
static mproc_process *start_child(mproc_process_fn fn, ends *e) {
    mproc_process *p = NULL;
    ASSERT_OK(mproc_process_create(&p, fn, e, sizeof *e, NULL));
    ASSERT_OK(mproc_process_start(p));
    mproc_conn_close(e->b);
    e->b = NULL;
    return p;
}

static int join_code(mproc_process *p) {
    int code = 12345;
    ASSERT_OK(mproc_process_join(p, MPROC_FOREVER));
    ASSERT_OK(mproc_process_exitcode(p, &code));
    mproc_process_destroy(p);
    return code;
}

/* Byte i of a test message of a given seed. */
static unsigned char pat(size_t i, unsigned seed) {
    return (unsigned char)((i * 131u + seed * 7u + (i >> 9)) & 0xffu);
}

static unsigned char *pattern(size_t n, unsigned seed) {
    unsigned char *p = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++)
        p[i] = pat(i, seed);
    return p;
}

static int is_pattern(const void *d, size_t n, unsigned seed) {
    const unsigned char *p = d;
    for (size_t i = 0; i < n; i++)
        if (p[i] != pat(i, seed))
            return 0;
    return 1;
}

static void recv_expect(mproc_conn *c, const void *want, size_t n) {
    void *d = NULL;
    size_t len = 12345;
    ASSERT_OK(mproc_conn_recv(c, &d, &len, test_ms(10000)));
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(len, n);
    if (n)
        ck_assert(memcmp(d, want, n) == 0);
    free(d);
}

static void recv_expect_str(mproc_conn *c, const char *s) {
    recv_expect(c, s, strlen(s) + 1);
}

static void send_str(mproc_conn *c, const char *s) {
    ASSERT_OK(mproc_conn_send(c, s, strlen(s) + 1));
}

/* ---- child bodies ----------------------------------------------------- */

/* Sends back every message it gets, until end of file. */
static int body_echo(void *arg, size_t len) {
    ends e = ends_of(arg, len);
    mproc_conn_close(e.a);
    int rc = 0;
    for (;;) {
        void *d = NULL;
        size_t n = 0;
        int r = mproc_conn_recv(e.b, &d, &n, MPROC_FOREVER);
        if (r == MPROC_EOF)
            break;
        if (r) {
            rc = 10;
            break;
        }
        r = mproc_conn_send(e.b, d, n);
        free(d);
        if (r) {
            rc = 11;
            break;
        }
    }
    mproc_conn_close(e.b);
    return rc;
}

/* Ping-pong: gets {uint64 i, tail}, checks the tail, answers {i + 1,
 * tail}. */
static int body_pong(void *arg, size_t len) {
    ends e = ends_of(arg, len);
    mproc_conn_close(e.a);
    unsigned char buf[512];
    for (;;) {
        size_t n = 0;
        int r = mproc_conn_recv_into(e.b, buf, sizeof buf, &n, MPROC_FOREVER);
        if (r == MPROC_EOF)
            return 0;
        if (r || n < 8)
            return 20;
        uint64_t i;
        memcpy(&i, buf, 8);
        if (!is_pattern(buf + 8, n - 8, (unsigned)i))
            return 21;
        i++;
        memcpy(buf, &i, 8);
        if (mproc_conn_send(e.b, buf, n))
            return 22;
    }
}

/* Sends "one" and "two", then exits without closing anything. */
static int body_send_two_exit(void *arg, size_t len) {
    ends e = ends_of(arg, len);
    mproc_conn_close(e.a);
    if (mproc_conn_send(e.b, "one", 4) || mproc_conn_send(e.b, "two", 4))
        return 30;
    return 0;
}

/* Sends "ready", then waits to be killed. */
static int body_ready_pause(void *arg, size_t len) {
    ends e = ends_of(arg, len);
    mproc_conn_close(e.a);
    if (mproc_conn_send(e.b, "ready", 6))
        return 31;
    for (;;)
        pause();
}

/* Reads nothing; sends "x" and "y" and exits. */
static int body_no_read_send(void *arg, size_t len) {
    ends e = ends_of(arg, len);
    mproc_conn_close(e.a);
    /* The parent's messages came before the start: leave them unread. */
    if (mproc_conn_poll(e.b, 0) != 1)
        return 32;
    if (mproc_conn_send(e.b, "x", 2) || mproc_conn_send(e.b, "y", 2))
        return 33;
    return 0;
}

/* Closes everything and exits. */
static int body_close_all(void *arg, size_t len) {
    ends e = ends_of(arg, len);
    mproc_conn_close(e.a);
    mproc_conn_close(e.b);
    return 0;
}

enum { STREAM_N = 3000 };

static size_t stream_len(size_t i) {
    if (i % 500 == 499)
        return 150 * 1024 + i; /* past the inline limit: a memfd */
    return 8 + (i * 37) % 5000;
}

/* Is d (n bytes) message i of the stream? */
static int stream_ok(const unsigned char *d, size_t n, size_t i) {
    uint64_t j;
    if (n != stream_len(i))
        return 0;
    memcpy(&j, d, 8);
    for (size_t k = 8; k < n; k++)
        if (d[k] != pat(k, (unsigned)i))
            return 0;
    return j == i;
}

/* Sends STREAM_N messages {uint64 i, pattern} of stream_len(i) bytes. */
static int body_stream(void *arg, size_t len) {
    ends e = ends_of(arg, len);
    mproc_conn_close(e.a);
    for (size_t i = 0; i < STREAM_N; i++) {
        size_t n = stream_len(i);
        unsigned char *m = malloc(n);
        if (!m)
            return 40;
        for (size_t k = 0; k < n; k++)
            m[k] = pat(k, (unsigned)i);
        uint64_t i64 = i;
        memcpy(m, &i64, 8);
        int r = mproc_conn_send(e.b, m, n);
        free(m);
        if (r)
            return 41;
    }
    mproc_conn_close(e.b);
    return 0;
}

/* ---- ping-pong and sizes ---------------------------------------------- */

TEST(pipe_ping_pong) {
    ends e = pipe_new(1);
    mproc_process *p = start_child(body_pong, &e);
    unsigned char buf[512], got[512];
    for (uint64_t i = 0; i < 1000; i++) {
        size_t n = 8 + (size_t)(i * 13 % 300);
        memcpy(buf, &i, 8);
        for (size_t k = 8; k < n; k++)
            buf[k] = pat(k - 8, (unsigned)i);
        ASSERT_OK(mproc_conn_send(e.a, buf, n));
        size_t len = 0;
        ASSERT_OK(
            mproc_conn_recv_into(e.a, got, sizeof got, &len, test_ms(10000)));
        ck_assert_uint_eq(len, n);
        uint64_t j;
        memcpy(&j, got, 8);
        ck_assert_uint_eq(j, i + 1);
        ck_assert(memcmp(got + 8, buf + 8, n - 8) == 0);
    }
    mproc_conn_close(e.a); /* the child sees EOF and exits */
    ck_assert_int_eq(join_code(p), 0);
}

TEST(pipe_large_messages) {
    static const size_t sizes[] = {0,
                                   1,
                                   2,
                                   4096,
                                   INLINE_MAX - 1,
                                   INLINE_MAX,
                                   INLINE_MAX + 1,
                                   1024 * 1024,
                                   10 * 1024 * 1024,
                                   0,
                                   INLINE_MAX + 1,
                                   1};
    enum { N = sizeof sizes / sizeof sizes[0] };
    ends e = pipe_new(1);
    mproc_process *p = start_child(body_echo, &e);
    for (size_t i = 0; i < N; i++) {
        unsigned char *m = pattern(sizes[i], (unsigned)i);
        ASSERT_OK(mproc_conn_send(e.a, m, sizes[i]));
        void *d = NULL;
        size_t len = 12345;
        ASSERT_OK(mproc_conn_recv(e.a, &d, &len, test_ms(10000)));
        ck_assert_ptr_nonnull(d); /* also for 0 bytes */
        ck_assert_uint_eq(len, sizes[i]);
        ck_assert_msg(memcmp(d, m, sizes[i]) == 0, "size %zu differs",
                      sizes[i]);
        free(d);
        free(m);
    }
    /* Several in flight at once, both sides of the limit, in order. */
    for (size_t i = 4; i < 7; i++) {
        unsigned char *m = pattern(sizes[i], (unsigned)i + 100);
        ASSERT_OK(mproc_conn_send(e.a, m, sizes[i]));
        free(m);
    }
    for (size_t i = 4; i < 7; i++) {
        void *d = NULL;
        size_t len = 0;
        ASSERT_OK(mproc_conn_recv(e.a, &d, &len, test_ms(10000)));
        ck_assert_uint_eq(len, sizes[i]);
        ck_assert(is_pattern(d, len, (unsigned)i + 100));
        free(d);
    }
    mproc_conn_close(e.a);
    ck_assert_int_eq(join_code(p), 0);
}

TEST(pipe_stream_order) {
    /* Thousands of messages, some large, with the reader behind the
     * writer: sends block and resume, and nothing is lost or reordered. */
    ends e = pipe_new(1);
    mproc_process *p = start_child(body_stream, &e);
    unsigned char *buf = malloc(200 * 1024);
    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i < STREAM_N; i++) {
        size_t n = 0;
        const unsigned char *d;
        void *heap = NULL;
        if (i % 2) {
            ASSERT_OK(
                mproc_conn_recv_into(e.a, buf, 200 * 1024, &n, test_ms(10000)));
            d = buf;
        } else {
            ASSERT_OK(mproc_conn_recv(e.a, &heap, &n, test_ms(10000)));
            d = heap;
        }
        ck_assert_uint_eq(n, stream_len(i));
        uint64_t j;
        memcpy(&j, d, 8);
        ck_assert_uint_eq(j, i);
        ck_assert_msg(stream_ok(d, n, i), "message %zu differs", i);
        free(heap);
    }
    size_t n = 0;
    ASSERT_ERR(mproc_conn_recv_into(e.a, buf, 16, &n, test_ms(10000)),
               MPROC_EOF);
    free(buf);
    mproc_conn_close(e.a);
    ck_assert_int_eq(join_code(p), 0);
}

/* ---- recv_into and poll ------------------------------------------------ */

TEST(pipe_recv_into) {
    ends e = pipe_new(1);
    char buf[64];
    size_t len = 0;

    /* Fits, also exactly. */
    send_str(e.b, "hello");
    ASSERT_OK(mproc_conn_recv_into(e.a, buf, sizeof buf, &len, 0));
    ck_assert_uint_eq(len, 6);
    ck_assert_str_eq(buf, "hello");
    send_str(e.b, "abc");
    ASSERT_OK(mproc_conn_recv_into(e.a, buf, 4, &len, 0));
    ck_assert_uint_eq(len, 4);
    ck_assert_str_eq(buf, "abc");

    /* Too long: MPROC_EMSGSIZE with the length, and it stays. */
    unsigned char *m = pattern(100, 1);
    ASSERT_OK(mproc_conn_send(e.b, m, 100));
    send_str(e.b, "after");
    memset(buf, 0xee, sizeof buf);
    len = 0;
    ASSERT_ERR(mproc_conn_recv_into(e.a, buf, 10, &len, 0), MPROC_EMSGSIZE);
    ck_assert_uint_eq(len, 100);
    ck_assert_uint_eq((unsigned char)buf[0], 0xee); /* untouched */
    len = 0;
    ASSERT_ERR(mproc_conn_recv_into(e.a, buf, 99, &len, MPROC_FOREVER),
               MPROC_EMSGSIZE);
    ck_assert_uint_eq(len, 100);
    ck_assert_int_eq(mproc_conn_poll(e.a, 0), 1);
    unsigned char big[100];
    ASSERT_OK(mproc_conn_recv_into(e.a, big, sizeof big, &len, 0));
    ck_assert_uint_eq(len, 100);
    ck_assert(memcmp(big, m, 100) == 0);
    free(m);
    ASSERT_OK(mproc_conn_recv_into(e.a, buf, sizeof buf, &len, 0));
    ck_assert_str_eq(buf, "after");

    /* A large one (a memfd): refused, and then recv gets it whole. */
    m = pattern(INLINE_MAX + 5000, 2);
    ASSERT_OK(mproc_conn_send(e.b, m, INLINE_MAX + 5000));
    len = 0;
    ASSERT_ERR(mproc_conn_recv_into(e.a, buf, sizeof buf, &len, 0),
               MPROC_EMSGSIZE);
    ck_assert_uint_eq(len, INLINE_MAX + 5000);
    recv_expect(e.a, m, INLINE_MAX + 5000);
    free(m);

    /* 0 bytes into no buffer at all. */
    ASSERT_OK(mproc_conn_send(e.b, NULL, 0));
    len = 7;
    ASSERT_OK(mproc_conn_recv_into(e.a, NULL, 0, &len, 0));
    ck_assert_uint_eq(len, 0);
    send_str(e.b, "x");
    ASSERT_ERR(mproc_conn_recv_into(e.a, NULL, 0, &len, 0), MPROC_EMSGSIZE);
    ck_assert_uint_eq(len, 2);
    recv_expect_str(e.a, "x");

    /* Nothing there: MPROC_ETIMEDOUT and *len 0. */
    len = 9;
    ASSERT_ERR(mproc_conn_recv_into(e.a, buf, sizeof buf, &len, 0),
               MPROC_ETIMEDOUT);
    ck_assert_uint_eq(len, 0);
    mproc_conn_close(e.a);
    mproc_conn_close(e.b);
}

TEST(pipe_poll) {
    ends e = pipe_new(1);

    /* Nothing waiting: 0 at once for timeout 0, 0 after the timeout. */
    uint64_t t0 = test_now_ms();
    ck_assert_int_eq(mproc_conn_poll(e.a, 0), 0);
    ck_assert_uint_lt(test_now_ms() - t0, (uint64_t)test_ms(1000));
    t0 = test_now_ms();
    ck_assert_int_eq(mproc_conn_poll(e.a, 100), 0);
    uint64_t dt = test_now_ms() - t0;
    ck_assert_uint_ge(dt, 99);
    ck_assert_uint_lt(dt, (uint64_t)test_ms(3000));

    /* A message waits: 1, and poll does not take it. */
    send_str(e.b, "m");
    ck_assert_int_eq(mproc_conn_poll(e.a, 0), 1);
    ck_assert_int_eq(mproc_conn_poll(e.a, MPROC_FOREVER), 1);
    ck_assert_int_eq(mproc_conn_poll(e.b, 0), 0); /* the other direction */
    recv_expect_str(e.a, "m");
    ck_assert_int_eq(mproc_conn_poll(e.a, 0), 0);

    /* End of file: 1, and recv says MPROC_EOF, every time. */
    mproc_conn_close(e.b);
    ck_assert_int_eq(mproc_conn_poll(e.a, 0), 1);
    ck_assert_int_eq(mproc_conn_poll(e.a, MPROC_FOREVER), 1);
    void *d = (void *)&e;
    size_t len = 5;
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, MPROC_FOREVER), MPROC_EOF);
    ck_assert_ptr_null(d);
    ck_assert_uint_eq(len, 0);
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, 0), MPROC_EOF);
    mproc_conn_close(e.a);
}

TEST(pipe_poll_wakes) {
    /* A poll that waits forever returns when the child's message comes. */
    ends e = pipe_new(1);
    mproc_process *p = start_child(body_echo, &e);
    send_str(e.a, "ping");
    ck_assert_int_eq(mproc_conn_poll(e.a, MPROC_FOREVER), 1);
    recv_expect_str(e.a, "ping");
    mproc_conn_close(e.a);
    ck_assert_int_eq(join_code(p), 0);
}

TEST(pipe_recv_timeout) {
    ends e = pipe_new(1);
    void *d = NULL;
    size_t len = 0;
    char buf[8];

    uint64_t t0 = test_now_ms();
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, 0), MPROC_ETIMEDOUT);
    ck_assert_ptr_null(d);
    ck_assert_uint_lt(test_now_ms() - t0, (uint64_t)test_ms(1000));

    t0 = test_now_ms();
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, 150), MPROC_ETIMEDOUT);
    uint64_t dt = test_now_ms() - t0;
    ck_assert_uint_ge(dt, 149);
    ck_assert_uint_lt(dt, (uint64_t)test_ms(3000));

    t0 = test_now_ms();
    ASSERT_ERR(mproc_conn_recv_into(e.a, buf, sizeof buf, &len, 120),
               MPROC_ETIMEDOUT);
    dt = test_now_ms() - t0;
    ck_assert_uint_ge(dt, 119);
    ck_assert_uint_lt(dt, (uint64_t)test_ms(3000));

    /* The other end too: each direction has its own queue. */
    send_str(e.a, "to b");
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, 20), MPROC_ETIMEDOUT);
    recv_expect_str(e.b, "to b");
    mproc_conn_close(e.a);
    mproc_conn_close(e.b);
}

/* ---- peers that go away ------------------------------------------------ */

TEST(pipe_peer_exit_eof) {
    ends e = pipe_new(1);
    mproc_process *p = start_child(body_send_two_exit, &e);
    /* What the child sent before exiting is still delivered, then EOF. */
    recv_expect_str(e.a, "one");
    recv_expect_str(e.a, "two");
    void *d = NULL;
    size_t len = 0;
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, test_ms(10000)), MPROC_EOF);
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, MPROC_FOREVER), MPROC_EOF);
    ck_assert_int_eq(mproc_conn_poll(e.a, MPROC_FOREVER), 1);
    /* And the peer is gone for sending too, without SIGPIPE. */
    ASSERT_ERR(mproc_conn_send(e.a, "late", 5), MPROC_EPIPE);
    ck_assert_int_eq(join_code(p), 0);
    mproc_conn_close(e.a);
}

TEST(pipe_peer_killed_eof) {
    ends e = pipe_new(1);
    mproc_process *p = start_child(body_ready_pause, &e);
    recv_expect_str(e.a, "ready");
    ASSERT_OK(mproc_process_kill(p));
    void *d = NULL;
    size_t len = 0;
    char buf[8];
    /* Blocks until the kill lands, then EOF: no hang. */
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, MPROC_FOREVER), MPROC_EOF);
    ASSERT_ERR(mproc_conn_recv_into(e.a, buf, sizeof buf, &len, 0), MPROC_EOF);
    ASSERT_ERR(mproc_conn_send(e.a, "x", 2), MPROC_EPIPE);
    ck_assert_int_eq(join_code(p), -SIGKILL);
    mproc_conn_close(e.a);
}

typedef struct flood {
    mproc_conn *c;
    _Atomic int sent;
    int err;
} flood;

/* Sends 64 KiB messages until a send fails. */
static void *flood_main(void *arg) {
    flood *f = arg;
    static unsigned char m[64 * 1024];
    for (;;) {
        f->err = mproc_conn_send(f->c, m, sizeof m);
        if (f->err)
            break;
        atomic_fetch_add(&f->sent, 1);
    }
    return NULL;
}

TEST(pipe_send_blocked_peer_killed) {
    /* A sender blocked on a peer that does not read is woken by the
     * peer's death, with MPROC_EPIPE. */
    ends e = pipe_new(1);
    mproc_process *p = start_child(body_ready_pause, &e);
    recv_expect_str(e.a, "ready");
    flood f = {.c = e.a};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, flood_main, &f), 0);
    /* The socket holds a few of them, then the sender blocks (or it is
     * still sending when the kill comes: the outcome is the same). */
    while (atomic_load(&f.sent) < 1)
        sched_yield();
    ASSERT_OK(mproc_process_kill(p));
    pthread_join(th, NULL);
    ASSERT_ERR(f.err, MPROC_EPIPE);
    ck_assert_int_lt(atomic_load(&f.sent), 1000);
    ck_assert_int_eq(join_code(p), -SIGKILL);
    mproc_conn_close(e.a);
}

TEST(pipe_peer_exit_unread) {
    /* The child exits with our messages unread. Its own messages still
     * come, then EOF (the kernel's "connection reset" is not an error
     * here), and sends fail with MPROC_EPIPE. */
    ends e = pipe_new(1);
    send_str(e.a, "unread 1");
    unsigned char *m = pattern(INLINE_MAX * 2, 3);
    ASSERT_OK(mproc_conn_send(e.a, m, INLINE_MAX * 2));
    free(m);
    mproc_process *p = start_child(body_no_read_send, &e);
    recv_expect_str(e.a, "x");
    recv_expect_str(e.a, "y");
    ck_assert_int_eq(join_code(p), 0);
    void *d = NULL;
    size_t len = 0;
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, MPROC_FOREVER), MPROC_EOF);
    ASSERT_ERR(mproc_conn_send(e.a, "z", 2), MPROC_EPIPE);
    mproc_conn_close(e.a);

    /* Again, with the reset seen by a send first. */
    e = pipe_new(1);
    send_str(e.a, "unread 2");
    p = start_child(body_no_read_send, &e);
    ck_assert_int_eq(mproc_conn_poll(e.a, MPROC_FOREVER), 1);
    ck_assert_int_eq(join_code(p), 0);
    ASSERT_ERR(mproc_conn_send(e.a, "z", 2), MPROC_EPIPE);
    recv_expect_str(e.a, "x");
    recv_expect_str(e.a, "y");
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, 0), MPROC_EOF);
    mproc_conn_close(e.a);
}

TEST(pipe_send_closed_peer) {
    /* In-process: closing b (its handle and the registry's dup) is enough
     * for a to see it. No SIGPIPE: the default action would kill us. */
    ends e = pipe_new(1);
    mproc_conn_close(e.b);
    ASSERT_ERR(mproc_conn_send(e.a, "x", 2), MPROC_EPIPE);
    ASSERT_ERR(mproc_conn_send(e.a, NULL, 0), MPROC_EPIPE);
    unsigned char *m = pattern(INLINE_MAX + 1, 4);
    ASSERT_ERR(mproc_conn_send(e.a, m, INLINE_MAX + 1), MPROC_EPIPE);
    void *d = NULL;
    size_t len = 0;
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, 0), MPROC_EOF);
    mproc_conn_close(e.a);

    /* A child that closed its end and exited. */
    e = pipe_new(1);
    mproc_process *p = start_child(body_close_all, &e);
    ck_assert_int_eq(join_code(p), 0);
    ASSERT_ERR(mproc_conn_send(e.a, "x", 2), MPROC_EPIPE);
    ASSERT_ERR(mproc_conn_send(e.a, m, INLINE_MAX + 1), MPROC_EPIPE);
    free(m);
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, MPROC_FOREVER), MPROC_EOF);
    mproc_conn_close(e.a);
}

TEST(pipe_child_keeps_end_open) {
    /* The parent closed b, but a child still holds its copy: no EOF until
     * the child is done with it. */
    ends e = pipe_new(1);
    mproc_process *p = start_child(body_echo, &e);
    void *d = NULL;
    size_t len = 0;
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, 50), MPROC_ETIMEDOUT);
    send_str(e.a, "still there");
    recv_expect_str(e.a, "still there");
    mproc_conn_close(e.a);
    ck_assert_int_eq(join_code(p), 0);
}

/* ---- one-way pipes ---------------------------------------------------- */

TEST(pipe_one_way) {
    ends e = pipe_new(0);
    void *d = NULL;
    size_t len = 0;
    char buf[16];

    /* a only receives, b only sends. */
    ASSERT_ERR(mproc_conn_send(e.a, "x", 2), MPROC_EBADF);
    ASSERT_ERR(mproc_conn_recv(e.b, &d, &len, 0), MPROC_EBADF);
    ASSERT_ERR(mproc_conn_recv(e.b, &d, &len, MPROC_FOREVER), MPROC_EBADF);
    ASSERT_ERR(mproc_conn_recv_into(e.b, buf, sizeof buf, &len, 0),
               MPROC_EBADF);
    ASSERT_ERR(mproc_conn_poll(e.b, 0), MPROC_EBADF);
    ck_assert_int_eq(mproc_conn_poll(e.a, 0), 0);
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, 0), MPROC_ETIMEDOUT);

    send_str(e.b, "b to a");
    ck_assert_int_eq(mproc_conn_poll(e.a, 0), 1);
    recv_expect_str(e.a, "b to a");

    /* The same through attached handles: the direction travels with the
     * socket. */
    mproc_ref ra, rb;
    ASSERT_OK(mproc_ref_of(e.a, &ra));
    ASSERT_OK(mproc_ref_of(e.b, &rb));
    mproc_conn *a2 = NULL, *b2 = NULL;
    ASSERT_OK(mproc_conn_attach(&a2, &ra));
    ASSERT_OK(mproc_conn_attach(&b2, &rb));
    ASSERT_ERR(mproc_conn_send(a2, "x", 2), MPROC_EBADF);
    ASSERT_ERR(mproc_conn_recv(b2, &d, &len, 0), MPROC_EBADF);
    ASSERT_ERR(mproc_conn_poll(b2, 0), MPROC_EBADF);
    send_str(b2, "b2 to a");
    recv_expect_str(e.a, "b2 to a");
    send_str(e.b, "b to a2");
    recv_expect_str(a2, "b to a2");
    mproc_conn_close(a2);
    mproc_conn_close(b2);

    /* Closing the sender gives EOF; closing the receiver, EPIPE. */
    unsigned char *m = pattern(INLINE_MAX + 1, 5);
    ASSERT_OK(mproc_conn_send(e.b, m, INLINE_MAX + 1));
    mproc_conn_close(e.b);
    recv_expect(e.a, m, INLINE_MAX + 1);
    free(m);
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, MPROC_FOREVER), MPROC_EOF);
    mproc_conn_close(e.a);

    e = pipe_new(0);
    mproc_conn_close(e.a);
    ASSERT_ERR(mproc_conn_send(e.b, "x", 2), MPROC_EPIPE);
    mproc_conn_close(e.b);
}

TEST(pipe_one_way_child) {
    /* Data flows from a child holding b to the parent holding a. */
    ends e = pipe_new(0);
    mproc_process *p = start_child(body_stream, &e);
    for (size_t i = 0; i < STREAM_N; i++) {
        void *d = NULL;
        size_t n = 0;
        ASSERT_OK(mproc_conn_recv(e.a, &d, &n, test_ms(10000)));
        ck_assert_uint_eq(n, stream_len(i));
        uint64_t j;
        memcpy(&j, d, 8);
        ck_assert_uint_eq(j, i);
        ck_assert_msg(stream_ok(d, n, i), "message %zu differs", i);
        free(d);
    }
    void *d = NULL;
    size_t n = 0;
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &n, test_ms(10000)), MPROC_EOF);
    mproc_conn_close(e.a);
    ck_assert_int_eq(join_code(p), 0);
}

/* ---- references and attaching ---------------------------------------- */

TEST(pipe_attach_same_process) {
    ends e = pipe_new(1);
    mproc_ref r;
    ASSERT_OK(mproc_ref_of(e.b, &r));
    mproc_conn *b2 = NULL;
    ASSERT_OK(mproc_conn_attach(&b2, &r));
    ck_assert_ptr_nonnull(b2);
    ck_assert_ptr_ne(b2, e.b);
    mproc_ref r2;
    ASSERT_OK(mproc_ref_of(b2, &r2));
    ck_assert(memcmp(&r, &r2, sizeof r) == 0);

    /* Both handles are the same end. */
    send_str(b2, "via b2");
    send_str(e.b, "via b");
    recv_expect_str(e.a, "via b2");
    recv_expect_str(e.a, "via b");
    send_str(e.a, "to b");
    recv_expect_str(b2, "to b");

    /* Closing the original leaves the attached handle working, and the
     * peer sees EOF only when that one is closed too. Once the creator's
     * handle is closed, the reference finds nothing. */
    mproc_conn_close(e.b);
    mproc_conn *b3 = NULL;
    ASSERT_ERR(mproc_conn_attach(&b3, &r), MPROC_ENOENT);
    ck_assert_ptr_null(b3);
    void *d = NULL;
    size_t len = 0;
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, 0), MPROC_ETIMEDOUT);
    send_str(b2, "last");
    recv_expect_str(e.a, "last");
    mproc_conn_close(b2);
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, MPROC_FOREVER), MPROC_EOF);
    mproc_conn_close(e.a);
}

typedef struct task_arg {
    mproc_ref ref;
    int mode;
} task_arg;

enum { MODE_SEND, MODE_WRONG_KIND, MODE_RECV_ONLY, MODE_SEND_ONLY };

/* In a pool worker: attach the reference and act by mode. The result is
 * the int status of the interesting call. */
static int t_conn(mproc_task *t, const void *arg, size_t len) {
    task_arg ta;
    if (len != sizeof ta)
        return mproc_task_fail(t, "bad argument length %zu", len);
    memcpy(&ta, arg, sizeof ta);
    mproc_conn *c = NULL;
    int r;
    if (ta.mode == MODE_WRONG_KIND) {
        ta.ref.kind ^= 3; /* some other kind, check and all */
        r = mproc_conn_attach(&c, &ta.ref);
        if (r == 0)
            mproc_conn_close(c);
        return mproc_task_return(t, &r, sizeof r);
    }
    r = mproc_conn_attach(&c, &ta.ref);
    if (r)
        return mproc_task_fail(t, "attach: %s", mproc_err_name(r));
    if (ta.mode == MODE_SEND) {
        char msg[64];
        snprintf(msg, sizeof msg, "hello from %s", mproc_current_name());
        r = mproc_conn_send(c, msg, strlen(msg) + 1);
        if (!r) {
            unsigned char *m = malloc(INLINE_MAX + 77);
            if (!m) {
                r = MPROC_ENOMEM;
            } else {
                for (size_t k = 0; k < INLINE_MAX + 77; k++)
                    m[k] = pat(k, 6);
                r = mproc_conn_send(c, m, INLINE_MAX + 77);
                free(m);
            }
        }
    } else if (ta.mode == MODE_RECV_ONLY) {
        r = mproc_conn_send(c, "no", 3);
    } else {
        void *d = NULL;
        size_t n = 0;
        r = mproc_conn_recv(c, &d, &n, 0);
        free(d);
    }
    mproc_conn_close(c);
    return mproc_task_return(t, &r, sizeof r);
}

static int run_conn_task(mproc_pool *p, const mproc_conn *c, int mode) {
    task_arg ta;
    memset(&ta, 0, sizeof ta);
    ASSERT_OK(mproc_ref_of(c, &ta.ref));
    ta.mode = mode;
    mproc_result *r = NULL;
    int st = mproc_pool_apply(p, t_conn, &ta, sizeof ta, NULL, &r);
    ck_assert_msg(st == 0, "task failed: %s (%s)", mproc_err_name(st),
                  r ? mproc_result_errmsg(r, 0) : "no result");
    size_t len = 0;
    const void *d = mproc_result_data(r, 0, &len);
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(len, sizeof(int));
    int v;
    memcpy(&v, d, sizeof v);
    mproc_result_free(r);
    return v;
}

static void check_worker_messages(mproc_conn *a) {
    void *d = NULL;
    size_t len = 0;
    ASSERT_OK(mproc_conn_recv(a, &d, &len, test_ms(10000)));
    ck_assert_msg(strncmp(d, "hello from PoolWorker-", 22) == 0, "got %.*s",
                  (int)len, (const char *)d);
    ck_assert_uint_eq(len, strlen(d) + 1);
    free(d);
    ASSERT_OK(mproc_conn_recv(a, &d, &len, test_ms(10000)));
    ck_assert_uint_eq(len, INLINE_MAX + 77);
    ck_assert(is_pattern(d, len, 6));
    free(d);
}

TEST(pipe_attach_pool_task) {
    /* The pool exists first, so its worker must fetch the end from us. */
    mproc_pool *p = NULL;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 1}));
    ends e = pipe_new(1);
    ck_assert_int_eq(run_conn_task(p, e.b, MODE_SEND), 0);
    check_worker_messages(e.a);
    /* The worker closed its handle; ours still works both ways. */
    send_str(e.a, "to b");
    recv_expect_str(e.b, "to b");
    ck_assert_int_eq(run_conn_task(p, e.b, MODE_WRONG_KIND), MPROC_EINVAL);

    /* One-way ends keep their direction in the worker. */
    ends o = pipe_new(0);
    ck_assert_int_eq(run_conn_task(p, o.a, MODE_RECV_ONLY), MPROC_EBADF);
    ck_assert_int_eq(run_conn_task(p, o.b, MODE_SEND_ONLY), MPROC_EBADF);
    ck_assert_int_eq(run_conn_task(p, o.b, MODE_SEND), 0);
    check_worker_messages(o.a);

    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
    mproc_conn_close(o.a);
    mproc_conn_close(o.b);
    mproc_conn_close(e.a);
    mproc_conn_close(e.b);
}

TEST(pipe_attach_pool_inherited) {
    /* The pipe exists before the fork server starts. The server drops its
     * copies of both ends, so workers fetch the end like any other, and
     * the peer still sees EOF as soon as the program closes its end. */
    mproc_shutdown();
    ends e = pipe_new(1);
    ASSERT_OK(mproc_init());
    mproc_pool *p = NULL;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 2}));
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(run_conn_task(p, e.b, MODE_SEND), 0);
        check_worker_messages(e.a);
    }
    mproc_conn_close(e.b);
    e.b = NULL;
    void *d = NULL;
    size_t len = 0;
    ASSERT_ERR(mproc_conn_recv(e.a, &d, &len, test_ms(5000)), MPROC_EOF);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
    mproc_conn_close(e.a);
    mproc_conn_close(e.b);
}

/* ---- threads ------------------------------------------------------------ */

typedef struct reader {
    mproc_conn *c;
    _Atomic int *seen;
    int use_into;
    int err;
    int got;
} reader;

static void *reader_main(void *arg) {
    reader *r = arg;
    unsigned char *buf = malloc(200 * 1024);
    for (;;) {
        void *heap = NULL;
        const unsigned char *d = buf;
        size_t n = 0;
        int rc = r->use_into
                     ? mproc_conn_recv_into(r->c, buf, 200 * 1024, &n, 100)
                     : mproc_conn_recv(r->c, &heap, &n, 100);
        if (heap)
            d = heap;
        if (rc == MPROC_ETIMEDOUT)
            continue;
        if (rc == MPROC_EOF)
            break;
        if (rc) {
            r->err = rc;
            break;
        }
        uint64_t i = UINT64_MAX;
        if (n >= 8)
            memcpy(&i, d, 8);
        if (i >= STREAM_N || !stream_ok(d, n, i)) {
            r->err = MPROC_EPROTO;
            free(heap);
            break;
        }
        atomic_fetch_add(&r->seen[i], 1);
        r->got++;
        free(heap);
    }
    free(buf);
    return NULL;
}

TEST(pipe_threads_share_end) {
    /* Four threads receive from one handle while a child sends: every
     * message reaches exactly one of them, and all see EOF. */
    enum { T = 4 };
    ends e = pipe_new(1);
    static _Atomic int seen[STREAM_N];
    for (size_t i = 0; i < STREAM_N; i++)
        atomic_store(&seen[i], 0);
    /* The child first: a fork while the readers run could copy a lock one
     * of them holds (the allocator's, under ASan) into a child that then
     * never gets it. */
    mproc_process *p = start_child(body_stream, &e);
    reader r[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        r[i] = (reader){.c = e.a, .seen = seen, .use_into = i % 2};
        ck_assert_int_eq(pthread_create(&th[i], NULL, reader_main, &r[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(r[i].err == 0, "reader %d: %s", i,
                      mproc_err_name(r[i].err));
        total += r[i].got;
    }
    ck_assert_int_eq(total, STREAM_N);
    for (size_t i = 0; i < STREAM_N; i++)
        ck_assert_int_eq(atomic_load(&seen[i]), 1);
    mproc_conn_close(e.a);
    ck_assert_int_eq(join_code(p), 0);
}

typedef struct sender {
    mproc_conn *c;
    int id;
    int err;
} sender;

static void *sender_main(void *arg) {
    sender *s = arg;
    for (uint32_t i = 0; i < 500 && !s->err; i++) {
        uint32_t m[2] = {(uint32_t)s->id, i};
        s->err = mproc_conn_send(s->c, m, sizeof m);
    }
    return NULL;
}

TEST(pipe_threads_send) {
    /* Threads sending on one handle: messages never mix, and each
     * thread's own order holds. The child echoes them back. */
    enum { T = 3 };
    ends e = pipe_new(1);
    mproc_process *p = start_child(body_echo, &e);
    sender s[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        s[i] = (sender){.c = e.a, .id = i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, sender_main, &s[i]), 0);
    }
    uint32_t next[T] = {0};
    for (int k = 0; k < T * 500; k++) {
        uint32_t m[2];
        size_t len = 0;
        ASSERT_OK(mproc_conn_recv_into(e.a, m, sizeof m, &len, test_ms(10000)));
        ck_assert_uint_eq(len, sizeof m);
        ck_assert_uint_lt(m[0], T);
        ck_assert_uint_eq(m[1], next[m[0]]);
        next[m[0]]++;
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ASSERT_OK(s[i].err);
    }
    mproc_conn_close(e.a);
    ck_assert_int_eq(join_code(p), 0);
}

/* ---- misuse -------------------------------------------------------------- */

TEST(pipe_bad_args) {
    mproc_conn *a = NULL, *b = NULL;
    ASSERT_ERR(mproc_pipe(NULL, &b, 1), MPROC_EINVAL);
    ASSERT_ERR(mproc_pipe(&a, NULL, 1), MPROC_EINVAL);
    ASSERT_ERR(mproc_pipe(&a, &a, 1), MPROC_EINVAL);
    ASSERT_ERR(mproc_pipe(NULL, NULL, 0), MPROC_EINVAL);
    ck_assert_ptr_null(a);
    ck_assert_ptr_null(b);

    ends e = pipe_new(1);
    void *d = NULL;
    size_t len = 0;
    char buf[8];

    /* send */
    ASSERT_ERR(mproc_conn_send(NULL, "x", 1), MPROC_EINVAL);
    ASSERT_ERR(mproc_conn_send(e.a, NULL, 1), MPROC_EINVAL);
    ASSERT_OK(mproc_conn_send(e.a, NULL, 0)); /* an empty message */
    recv_expect(e.b, NULL, 0);

    /* recv */
    ASSERT_ERR(mproc_conn_recv(NULL, &d, &len, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_conn_recv(e.a, NULL, &len, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_conn_recv(e.a, &d, NULL, 0), MPROC_EINVAL);

    /* recv_into */
    ASSERT_ERR(mproc_conn_recv_into(NULL, buf, sizeof buf, &len, 0),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_conn_recv_into(e.a, NULL, 8, &len, 0), MPROC_EINVAL);
    /* len may be NULL: nothing is waiting, so this just times out. */
    ASSERT_ERR(mproc_conn_recv_into(e.a, buf, sizeof buf, NULL, 0),
               MPROC_ETIMEDOUT);

    /* poll */
    ASSERT_ERR(mproc_conn_poll(NULL, 0), MPROC_EINVAL);

    /* Misuse took nothing: a message sent before is still there. */
    send_str(e.b, "kept");
    ASSERT_ERR(mproc_conn_recv(e.a, NULL, NULL, 0), MPROC_EINVAL);
    recv_expect_str(e.a, "kept");

    /* attach */
    mproc_ref r;
    ASSERT_OK(mproc_ref_of(e.a, &r));
    mproc_conn *c = (mproc_conn *)&e; /* must be overwritten with NULL */
    ASSERT_ERR(mproc_conn_attach(NULL, &r), MPROC_EINVAL);
    ASSERT_ERR(mproc_conn_attach(&c, NULL), MPROC_EINVAL);
    ck_assert_ptr_null(c);
    mproc_ref bad = r;
    bad.check ^= 1;
    ASSERT_ERR(mproc_conn_attach(&c, &bad), MPROC_EINVAL);
    bad = r;
    bad.id ^= 1;
    ASSERT_ERR(mproc_conn_attach(&c, &bad), MPROC_EINVAL);
    memset(&bad, 0, sizeof bad);
    ASSERT_ERR(mproc_conn_attach(&c, &bad), MPROC_EINVAL);
    ck_assert_ptr_null(c);

    /* A reference of another kind, and a handle of another kind. */
    mproc_shm *s = NULL;
    ASSERT_OK(mproc_shm_create(&s, 64));
    mproc_ref sr;
    ASSERT_OK(mproc_ref_of(s, &sr));
    ASSERT_ERR(mproc_conn_attach(&c, &sr), MPROC_EINVAL);
    ck_assert_ptr_null(c);
    mproc_shm *s2 = NULL;
    ASSERT_ERR(mproc_shm_attach(&s2, &r), MPROC_EINVAL);
    mproc_conn *not_conn = (mproc_conn *)s;
    ASSERT_ERR(mproc_conn_send(not_conn, "x", 1), MPROC_EINVAL);
    ASSERT_ERR(mproc_conn_recv(not_conn, &d, &len, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_conn_recv_into(not_conn, buf, sizeof buf, &len, 0),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_conn_poll(not_conn, 0), MPROC_EINVAL);
    mproc_conn_close(not_conn); /* not a connection: left alone */
    ck_assert_uint_eq(mproc_shm_size(s), 64);
    mproc_shm_free(s);

    /* A reference to a pipe that is gone. */
    mproc_conn_close(e.a);
    mproc_conn_close(e.b);
    ASSERT_ERR(mproc_conn_attach(&c, &r), MPROC_ENOENT);
    ck_assert_ptr_null(c);

    mproc_conn_close(NULL);
}
