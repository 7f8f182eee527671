/* SPDX-License-Identifier: MIT */
/*
 * Internals of the small helper modules: cpu.c (usable CPU count), log.c
 * (the one-line logger) and progress.c (the progress line of long maps).
 * Nothing here is public API.
 *
 * The functions marked MPROC__TESTABLE are exported from the shared library
 * even though they are internal: the test binary links against the shared
 * library, where every other internal symbol is hidden, and the tests drive
 * these directly (fake cgroup trees, a captured log fd, a progress reporter
 * with a chosen interval). They keep the mproc__ prefix and may change at
 * any time.
 */
#ifndef MPROC_HELPERS_H
#define MPROC_HELPERS_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

#if defined(__GNUC__)
#define MPROC__TESTABLE __attribute__((visibility("default")))
#else
#define MPROC__TESTABLE
#endif

/* ---- cpu.c ----------------------------------------------------------------
 */

/* The CPU quota of the cgroup a process is in, rounded up to whole CPUs, or 0
 * when there is none (or nothing could be read). proc_self_cgroup is a file
 * in the format of /proc/self/cgroup; sysfs_cgroup_root is where the cgroup
 * file systems are mounted (/sys/fs/cgroup). Both cgroup v2 (cpu.max) and
 * v1 (cpu.cfs_quota_us, cpu.cfs_period_us) are read, and every ancestor of
 * the process's cgroup too: the smallest quota found wins. */
MPROC__TESTABLE int mproc__cpu_quota_from(const char *proc_self_cgroup,
                                          const char *sysfs_cgroup_root);

/* ---- log.c ----------------------------------------------------------------
 */

/* Where log lines go; 2 (stderr) unless a test says otherwise. */
MPROC__TESTABLE void mproc__log_set_fd(int fd);

/* ---- progress.c -----------------------------------------------------------
 */

/* Format one progress line, "map: 512/1000 (51%) 812.3/s ETA 0.6s", into
 * buf (always NUL-terminated when cap > 0). label NULL means "map". Returns
 * the length of what is in buf. */
MPROC__TESTABLE size_t mproc__progress_format(char *buf, size_t cap,
                                              const char *label, size_t done,
                                              size_t total, double elapsed_s);

/* A throttled reporter for one call. Used by one thread at a time (the
 * pool's result thread). */
typedef struct mproc__progress {
    uint64_t start_ns;    /* when init ran */
    uint64_t last_ns;     /* last report; 0 = none yet */
    uint64_t interval_ns; /* least time between reports; init: 200 ms */
    int mode;             /* MPROC_PROGRESS_* */
    int fd;               /* where MPROC_PROGRESS_STDERR writes; init: 2 */
    size_t last_done;     /* what the last report said */
    size_t last_total;
    size_t last_len; /* length of the line on screen, to blank it */
    mproc_progress_cb cb;
    void *arg;
    const char *label; /* not copied; NULL means "map" */
} mproc__progress;

MPROC__TESTABLE void mproc__progress_init(mproc__progress *p, int mode,
                                          mproc_progress_cb cb, void *arg,
                                          const char *label);
/* Report that done of total items are finished. Reports (callback, stderr
 * line) are made for the first update, then at most once per interval, and
 * always for a final one (done >= total) unless the report before it said
 * the same. The stderr line ends with a newline after a final report. */
MPROC__TESTABLE void mproc__progress_update(mproc__progress *p, size_t done,
                                            size_t total);

#endif /* MPROC_HELPERS_H */
