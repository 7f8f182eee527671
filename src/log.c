/* SPDX-License-Identifier: MIT */
/*
 * The library's logger, in the style of Python's multiprocessing logger:
 *     [INFO/PoolWorker-3 12345] message
 * Off unless MPROC_LOG or mproc_log_set_level() turns it on.
 *
 * Workers and Processes log too, and they are forked children, possibly of a
 * threaded program. So the logger holds no lock and allocates nothing: the
 * level is an atomic, and each line is formatted in a stack buffer and
 * written with one write(). Lines of at most PIPE_BUF bytes are written
 * atomically to a pipe, so lines from different processes sharing stderr
 * never interleave mid-line.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "helpers.h"

/* One line, newline included, at most this long: PIPE_BUF, the largest
 * write a pipe keeps whole. */
#define LOG_LINE_CAP PIPE_BUF

/* -1 until the environment has been read. */
static atomic_int log_level = -1;
static atomic_int log_fd = 2;

static const char *const level_names[] = {"OFF", "ERROR", "WARNING", "INFO",
                                          "DEBUG"};

static int clamp_level(int level) {
    if (level < MPROC_LOG_OFF)
        return MPROC_LOG_OFF;
    return level > MPROC_LOG_DEBUG ? MPROC_LOG_DEBUG : level;
}

/* MPROC_LOG's value: a level name in any case, or its number 0 to 4.
 * Anything else leaves logging off. */
static int parse_level(const char *s) {
    if (!s)
        return MPROC_LOG_OFF;
    if (s[0] >= '0' && s[0] <= '4' && s[1] == '\0')
        return s[0] - '0';
    if (strcasecmp(s, "warn") == 0)
        return MPROC_LOG_WARNING;
    for (int l = MPROC_LOG_ERROR; l <= MPROC_LOG_DEBUG; l++)
        if (strcasecmp(s, level_names[l]) == 0)
            return l;
    return MPROC_LOG_OFF;
}

int mproc_log_get_level(void) {
    int level = atomic_load_explicit(&log_level, memory_order_relaxed);
    if (level >= 0)
        return level;
    /* First use. Threads racing here compute the same value; the exchange
     * fails if mproc_log_set_level() got in first, and then it wins. */
    int expected = -1;
    atomic_compare_exchange_strong(&log_level, &expected,
                                   parse_level(getenv("MPROC_LOG")));
    return atomic_load(&log_level);
}

void mproc_log_set_level(int level) {
    atomic_store(&log_level, clamp_level(level));
}

void mproc__log_set_fd(int fd) {
    atomic_store(&log_fd, fd);
}

void mproc_log(int level, const char *fmt, ...) {
    if (level <= MPROC_LOG_OFF || level > mproc_log_get_level())
        return;
    level = clamp_level(level);
    /* Logging must not disturb a caller that checks errno next; saving it
     * first also keeps %m meaning the caller's errno. */
    int saved = errno;
    char buf[LOG_LINE_CAP];
    int n = snprintf(buf, sizeof buf, "[%s/%s %d] ", level_names[level],
                     mproc_current_name(), (int)getpid());
    if (n < 0)
        n = 0;
    /* The prefix is short (names are at most 63 bytes), but be exact. */
    size_t head = (size_t)n < sizeof buf - 1 ? (size_t)n : sizeof buf - 1;
    /* The message may use buf up to, not including, the last byte, which
     * is kept for the newline. */
    size_t room = sizeof buf - 1 - head;
    va_list ap;
    va_start(ap, fmt);
    errno = saved;
    int m = vsnprintf(buf + head, room, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len;
    if ((size_t)m >= room) {
        /* Truncated: vsnprintf wrote room - 1 bytes. Mark the cut. */
        len = head + room - 1;
        memcpy(buf + len - 3, "...", 3);
    } else {
        len = head + (size_t)m;
        if (len > head && buf[len - 1] == '\n')
            len--; /* the caller's own newline; we add ours */
    }
    buf[len++] = '\n';
    int fd = atomic_load(&log_fd);
    while (write(fd, buf, len) < 0 && errno == EINTR)
        ;
    errno = saved;
}
