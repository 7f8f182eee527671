/* SPDX-License-Identifier: MIT */
/*
 * The progress report of long maps, opt-in per call (mproc_call_opts): a
 * user callback, and/or a line on stderr rewritten in place,
 *     map: 512/1000 (51%) 812.3/s ETA 0.6s
 * The pool calls mproc__progress_update() on its result thread as results
 * arrive; the reporter throttles that to about five reports a second so a
 * map of tiny items does not spend its time printing.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define PROGRESS_INTERVAL_NS (200ull * 1000 * 1000)
#define PROGRESS_LINE_CAP    256

/* "0.6s", "4m05s", "3h20m": precise when it is short, readable when not. */
static void format_duration(char *buf, size_t cap, double s) {
    if (s < 59.95) {
        snprintf(buf, cap, "%.1fs", s);
        return;
    }
    if (s > 1e10)
        s = 1e10; /* keeps the conversion below defined */
    unsigned long long secs = (unsigned long long)(s + 0.5);
    if (secs < 3600)
        snprintf(buf, cap, "%llum%02llus", secs / 60, secs % 60);
    else
        snprintf(buf, cap, "%lluh%02llum", secs / 3600, secs / 60 % 60);
}

size_t mproc__progress_format(char *buf, size_t cap, const char *label,
                              size_t done, size_t total, double elapsed_s) {
    if (cap == 0)
        return 0;
    /* An empty call is complete. Rounded down, so 100% means all done. */
    unsigned pct =
        total ? (unsigned)((double)done * 100.0 / (double)total) : 100;
    char rate_s[48] = "?", eta_s[48] = "?";
    if (elapsed_s > 0) {
        double rate = (double)done / elapsed_s;
        snprintf(rate_s, sizeof rate_s, "%.1f", rate);
        if (done > 0) {
            double left = done < total ? (double)(total - done) : 0.0;
            format_duration(eta_s, sizeof eta_s, left / rate);
        }
    }
    int n = snprintf(buf, cap, "%s: %zu/%zu (%u%%) %s/s ETA %s",
                     label ? label : "map", done, total, pct, rate_s, eta_s);
    if (n < 0) {
        buf[0] = '\0';
        return 0;
    }
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

void mproc__progress_init(mproc__progress *p, int mode, mproc_progress_cb cb,
                          void *arg, const char *label) {
    memset(p, 0, sizeof *p);
    p->start_ns = mproc__now_ns();
    p->interval_ns = PROGRESS_INTERVAL_NS;
    p->mode = mode;
    p->fd = 2;
    p->cb = cb;
    p->arg = arg;
    p->label = label;
}

/* "\r" and the line, padded with blanks over the rest of a longer previous
 * line, and a newline after the final one: one write, so the line is not
 * torn by log lines that other processes write to the same stderr. */
static void write_line(mproc__progress *p, size_t done, size_t total,
                       uint64_t now, int final) {
    char buf[PROGRESS_LINE_CAP];
    double elapsed = (double)(now - p->start_ns) / 1e9;
    buf[0] = '\r';
    size_t len = 1 + mproc__progress_format(buf + 1, sizeof buf - 2, p->label,
                                            done, total, elapsed);
    /* len - 1 characters are shown; keep the last byte for the newline. */
    while (len - 1 < p->last_len && len < sizeof buf - 1)
        buf[len++] = ' ';
    if (final)
        buf[len++] = '\n';
    p->last_len = final ? 0 : len - 1;
    int saved = errno;
    while (write(p->fd, buf, len) < 0 && errno == EINTR)
        ;
    errno = saved;
}

void mproc__progress_update(mproc__progress *p, size_t done, size_t total) {
    if (!p->cb && p->mode != MPROC_PROGRESS_STDERR)
        return;
    int final = done >= total;
    uint64_t now = mproc__now_ns();
    if (final) {
        /* The pool may report the end more than once; say it once. */
        if (p->last_ns && done == p->last_done && total == p->last_total)
            return;
    } else if (p->last_ns && now - p->last_ns < p->interval_ns) {
        return;
    }
    p->last_ns = now ? now : 1;
    p->last_done = done;
    p->last_total = total;
    if (p->cb)
        p->cb(done, total, p->arg);
    if (p->mode == MPROC_PROGRESS_STDERR)
        write_line(p, done, total, now, final);
}
