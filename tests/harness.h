/* SPDX-License-Identifier: MIT */
/*
 * Test harness on top of Check. Every test runs in its own forked process
 * (Check's fork mode) with a timeout, and is registered as its own ctest test
 * (tests/CMakeLists.txt reads tests/test-list.h). Around every test a checked
 * fixture asserts that the library left nothing behind:
 *   - no file descriptor that was not open before the test;
 *   - no child process, alive or zombie: the test process is a subreaper,
 *     so an orphaned worker is re-parented to it and caught here;
 *   - no new mproc entry in /dev/shm.
 * Before checking, the fixture stops the fork server (mproc_shutdown), which
 * must reap every worker it started.
 */
#ifndef MPROC_TEST_HARNESS_H
#define MPROC_TEST_HARNESS_H

#include <check.h>
#include <stdint.h>
#include <sys/types.h>

#include "mproc.h"

#define ASSERT_OK(expr)                                                        \
    do {                                                                       \
        int rc_ = (expr);                                                      \
        ck_assert_msg(rc_ == 0, "%s failed: %s (%s)", #expr,                   \
                      mproc_err_name(rc_), mproc_strerror(rc_));               \
    } while (0)

#define ASSERT_ERR(expr, code)                                                 \
    do {                                                                       \
        int rc_ = (expr);                                                      \
        ck_assert_msg(rc_ == (code), "%s returned %s (%s), expected %s",       \
                      #expr, mproc_err_name(rc_), mproc_strerror(rc_),         \
                      mproc_err_name(code));                                   \
    } while (0)

/* Timeouts in tests scale with MPROC_TEST_TIMEOUT_MULTIPLIER (default 1),
 * for sanitizer and valgrind runs. */
long test_ms(long ms);

/* Monotonic milliseconds, for asserting that something ended in time. */
uint64_t test_now_ms(void);

/* Count of open fds in this process. */
int test_fd_count(void);

/* Is the process alive (not a zombie, not gone)? */
int test_pid_alive(pid_t pid);

/* Wait (on a pidfd) until pid has exited or the timeout passes; returns 1
 * if it exited. */
int test_wait_gone(pid_t pid, long timeout_ms);

/* Fork a child that runs fn(arg) and exits with its return value (child
 * bodies cannot use ck_assert: they report through the exit code). */
pid_t test_spawn(int (*fn)(void *arg), void *arg);
/* Wait for a child of ours: its exit status, or minus the signal that
 * killed it. */
int test_reap(pid_t pid);
/* Block until one byte arrives on fd (a child saying "I am there"); returns
 * the byte, or -1 at EOF. */
int test_read_byte(int fd);

/* The fixture, usable directly by tests that need a custom suite. */
void test_leak_setup(void);
void test_leak_teardown(void);

/* Define a test: TEST(name) { body }. The body may use every ck_assert_*
 * macro. The name must also appear in test-list.h. */
#define TEST(name)                                                             \
    static void name##_body(void);                                             \
    START_TEST(name##_ck) {                                                    \
        name##_body();                                                         \
    }                                                                          \
    END_TEST                                                                   \
    const TTest *test_get_##name(void);                                        \
    const TTest *test_get_##name(void) {                                       \
        return name##_ck;                                                      \
    }                                                                          \
    static void name##_body(void)
#endif
