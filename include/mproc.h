/* SPDX-License-Identifier: MIT */
/*
 * mproc: process-based parallelism for C, in the spirit of Python's
 * multiprocessing, with crash isolation as the point.
 *
 * This is the one public header. What is not declared here is not API.
 *
 * Conventions
 *   - Every fallible function returns int: 0 on success, a negative
 *     MPROC_E* code on failure (see mproc/errno.h). mproc_strerror() turns a
 *     code into a sentence. errno is never the channel for errors.
 *   - Handles are opaque and created by the library; every destroy/free
 *     function accepts NULL and does nothing with it.
 *   - Options structs: zero means "default", and a NULL options pointer
 *     means all defaults. Each field's comment names its default and unit.
 *   - Timeouts are milliseconds; MPROC_FOREVER (-1) waits without limit and
 *     0 polls.
 *
 * Where code runs
 *   - Pool workers are forked from a single-threaded fork server that mproc
 *     starts the first time it is needed, or when mproc_init() is called.
 *     Call mproc_init() at the top of main(), before your program starts
 *     threads: the server is a copy of the program as it was then, so locks
 *     other threads hold later never leak into workers. Consequence: workers
 *     see global variables as they were when the server started. Pass what a
 *     task needs in its argument bytes (or the pool's initializer argument),
 *     never as a pointer into the caller's memory.
 *   - Task functions run in a worker process. They are passed as plain
 *     function pointers, so they must belong to the program or to a library
 *     loaded before the fork server started.
 *   - A Process (mproc_process_*) is forked directly from the calling thread,
 *     like Python's "fork" start method: it sees the caller's memory as it is
 *     at mproc_process_start().
 *   - Callbacks (success, error, progress) run on the pool's result thread in
 *     the calling process, one at a time. They may submit new work to the
 *     pool; they must not wait for results of that pool (such a wait returns
 *     MPROC_EDEADLK). A callback that crashes crashes the program: C has no
 *     exceptions to catch it.
 */
#ifndef MPROC_H
#define MPROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mproc/errno.h"
#include "mproc/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(MPROC_BUILDING)
#define MPROC_API __attribute__((visibility("default")))
#else
#define MPROC_API
#endif

#if defined(__GNUC__)
#define MPROC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MPROC_PRINTF(a, b)
#endif

#define MPROC_FOREVER (-1L)

/* ----------------------------------------------------------------------------
 * Library
 * ------------------------------------------------------------------------- */

/* Version of the library actually linked (compare with MPROC_VERSION_HEX). */
MPROC_API unsigned mproc_version(void);
MPROC_API const char *mproc_version_string(void);

/* A sentence for an error code ("task ran past its timeout"); never NULL. */
MPROC_API const char *mproc_strerror(int err);
/* The code's name ("MPROC_ETASKTIMEOUT"); never NULL. */
MPROC_API const char *mproc_err_name(int err);

/* Start the fork server that pool workers come from. Optional: mproc starts it
 * on first use. Call it first thing in main() if the program will have
 * threads. Idempotent and thread-safe. Returns 0 or -errno. */
MPROC_API int mproc_init(void);

/* Stop the fork server (and with it every worker that is still alive). Pools
 * must be destroyed first; afterwards mproc_init() or the next pool starts a
 * new server. Mainly for tests and for programs that want no helper process
 * lingering. */
MPROC_API void mproc_shutdown(void);

/* ----------------------------------------------------------------------------
 * Helpers: CPU count, process identity, logging
 * ------------------------------------------------------------------------- */

/* CPUs online in the machine (sysconf). At least 1. */
MPROC_API int mproc_cpu_count(void);
/* CPUs this process may really use: the affinity mask intersected with the
 * cgroup (v1 or v2) CPU quota, rounded up. The environment variable
 * MPROC_CPU_COUNT, when set to a positive integer, overrides it. At least 1.
 * This is the default number of pool workers. */
MPROC_API int mproc_cpu_count_available(void);

/* The current process's name: "MainProcess" in the program, "Process-N" (or
 * the given name) in a Process, "PoolWorker-N" in a pool worker. */
MPROC_API const char *mproc_current_name(void);
MPROC_API pid_t mproc_current_pid(void);
/* Parent process: its pid and name ("MainProcess" for children mproc
 * started, NULL name in the main process, whose parent mproc does not know). */
MPROC_API pid_t mproc_parent_pid(void);
MPROC_API const char *mproc_parent_name(void);

enum mproc_log_level {
    MPROC_LOG_OFF = 0,
    MPROC_LOG_ERROR = 1,
    MPROC_LOG_WARNING = 2,
    MPROC_LOG_INFO = 3,
    MPROC_LOG_DEBUG = 4
};

/* Logging is off by default. MPROC_LOG=error|warning|info|debug in the
 * environment sets the level at first use; mproc_log_set_level() overrides
 * it. Each line goes to stderr in one write() as
 *     [INFO/PoolWorker-3 12345] message
 * so lines from different processes never interleave mid-line. */
MPROC_API void mproc_log_set_level(int level);
MPROC_API int mproc_log_get_level(void);
MPROC_API void mproc_log(int level, const char *fmt, ...) MPROC_PRINTF(2, 3);

/* ----------------------------------------------------------------------------
 * Process: one function in one child process
 * ------------------------------------------------------------------------- */

typedef struct mproc_process mproc_process;

/* The body of a Process. arg points to the child's copy of the argument
 * bytes. The return value becomes the exit status (0..255). */
typedef int (*mproc_process_fn)(void *arg, size_t len);

typedef struct mproc_process_opts {
    const char *name; /* default "Process-N", N counting from 1 per program */
    int daemon;       /* nonzero: killed and reaped when the parent exits or
                         is killed (default 0) */
} mproc_process_opts;

/* Create a Process that will run fn with a copy of len bytes at arg (arg may
 * be NULL when len is 0). Nothing is forked until mproc_process_start(). */
MPROC_API int mproc_process_create(mproc_process **out, mproc_process_fn fn,
                                   const void *arg, size_t len,
                                   const mproc_process_opts *opts);
/* Fork and run. MPROC_ESTATE if already started. */
MPROC_API int mproc_process_start(mproc_process *p);
/* Wait for the child to end. 0 when it has ended, MPROC_ETIMEDOUT when it is
 * still running at the timeout, MPROC_ESTATE if never started. */
MPROC_API int mproc_process_join(mproc_process *p, long timeout_ms);
/* 1 while the child runs, 0 otherwise. */
MPROC_API int mproc_process_is_alive(mproc_process *p);
/* Send SIGTERM / SIGKILL. 0 also when the child has already ended. */
MPROC_API int mproc_process_terminate(mproc_process *p);
MPROC_API int mproc_process_kill(mproc_process *p);
/* Exit code after the child ended: its exit status, or minus the signal that
 * killed it (Python's convention). Stored in *code; returns MPROC_ENOTREADY
 * while the child runs or before it was joined. */
MPROC_API int mproc_process_exitcode(mproc_process *p, int *code);
MPROC_API pid_t mproc_process_pid(const mproc_process *p); /* 0 before start */
MPROC_API const char *mproc_process_name(const mproc_process *p);
MPROC_API int mproc_process_daemon(const mproc_process *p);
/* Free the handle. A running non-daemon child is left to run (and is reaped
 * by mproc later); a running daemon child is killed and reaped. */
MPROC_API void mproc_process_destroy(mproc_process *p);

/* ----------------------------------------------------------------------------
 * Tasks: what runs inside a pool worker
 * ------------------------------------------------------------------------- */

/* Worker-side context of the task that is running. */
typedef struct mproc_task mproc_task;

/* Bytes in, bytes out. arg/len is the task's argument; it carries no
 * alignment promise (items of a map are packed back to back), so read
 * structured arguments with memcpy. Set the result with
 * mproc_task_return() or mproc_task_result_buf() and return 0, or return
 * mproc_task_fail(t, ...) (any nonzero return fails the task). */
typedef int (*mproc_fn)(mproc_task *t, const void *arg, size_t len);

/* Typed fast path: one fixed-size element in, one fixed-size element out.
 * out points into the result array (out_size bytes, zeroed). Return 0, or
 * fail with mproc_task_fail(). */
typedef int (*mproc_elem_fn)(mproc_task *t, const void *in, void *out);

/* Copy len bytes as the task's result. MPROC_ETOOBIG past the pool's
 * max_result_bytes. */
MPROC_API int mproc_task_return(mproc_task *t, const void *data, size_t len);
/* A result buffer of len bytes to fill in place (no copy). NULL when len is
 * over max_result_bytes or memory is short. Valid until the task returns. */
MPROC_API void *mproc_task_result_buf(mproc_task *t, size_t len);
/* Fail the task with a printf-style message, which the caller gets back from
 * mproc_result_errmsg(). Returns MPROC_ETASK so that `return
 * mproc_task_fail(t, "bad input %d", x);` reads naturally. */
MPROC_API int mproc_task_fail(mproc_task *t, const char *fmt, ...)
    MPROC_PRINTF(2, 3);
/* Index of the item within its map call (0 for apply). */
MPROC_API size_t mproc_task_index(const mproc_task *t);

/* ----------------------------------------------------------------------------
 * Pool
 * ------------------------------------------------------------------------- */

typedef struct mproc_pool mproc_pool;
typedef struct mproc_result mproc_result;
typedef struct mproc_iter mproc_iter;

/* Called in each new worker before its first task, with a copy of the
 * initializer argument bytes. A nonzero return makes the worker exit; the
 * pool counts it as a worker death (and stops forking after too many). */
typedef int (*mproc_init_fn)(void *arg, size_t len);

/* Result callbacks: run on the pool's result thread when the whole call has
 * completed (on_success when every item succeeded, on_error otherwise). The
 * result handle stays valid during the call. A nonzero return is logged and
 * otherwise ignored. */
typedef int (*mproc_result_cb)(mproc_result *r, void *arg);

/* Progress callback: done and total items of one call, on the result thread,
 * at most about five times a second and once at the end. */
typedef void (*mproc_progress_cb)(size_t done, size_t total, void *arg);

typedef struct mproc_pool_opts {
    int nworkers;              /* default mproc_cpu_count_available() */
    mproc_init_fn initializer; /* default none */
    const void *initarg;       /* bytes copied to each worker's initializer */
    size_t initarg_len;
    int max_tasks_per_child; /* replace a worker after this many items;
                                default 0 = never */
    long task_timeout_ms;    /* per item, wall clock; default 0 = none */
    int retries;             /* re-runs of an item whose worker died or timed
                                out; default 0. Items that fail by themselves
                                are never retried */
    size_t mem_limit_bytes;  /* per worker address-space limit (RLIMIT_AS);
                                default 0 = none */
    int pin_cpus;            /* nonzero: pin worker i to the i-th usable CPU */
    size_t max_result_bytes; /* largest result an item may return; default
                                1 GiB */
    int restart_limit;       /* more than this many worker deaths within
                                restart_window_ms breaks the pool; default
                                max(16, 4 * nworkers); negative: never */
    long restart_window_ms;  /* default 2000 */
    long terminate_grace_ms; /* SIGTERM to SIGKILL delay in terminate;
                                default 200 */
} mproc_pool_opts;

enum mproc_progress_mode {
    MPROC_PROGRESS_OFF = 0,
    MPROC_PROGRESS_STDERR = 1 /* "map: 512/1000 (51%) 812.3/s ETA 0.6s" */
};

/* Per-call options (NULL: all defaults). */
typedef struct mproc_call_opts {
    size_t chunksize;     /* items per message; default: Python's
                             heuristic, ceil(n / (4 * nworkers)) */
    long task_timeout_ms; /* default: the pool's; negative: none */
    int retries;          /* default: the pool's; negative: none */
    mproc_result_cb on_success;
    mproc_result_cb on_error;
    void *cb_arg;
    int progress; /* MPROC_PROGRESS_* */
    mproc_progress_cb on_progress;
    void *progress_arg;
    size_t max_in_flight; /* imap only: items submitted but not yet
                             consumed; default 4 * nworkers * chunksize */
    int unordered;        /* imap only: nonzero = imap_unordered */
} mproc_call_opts;

/* Create a pool and start its workers. MPROC_EINVAL for nonsense options
 * (negative nworkers, initarg_len without initarg ...). On failure nothing is
 * left running. */
MPROC_API int mproc_pool_create(mproc_pool **out, const mproc_pool_opts *opts);

/* One task, bytes form. The async form returns at once with a handle; the
 * sync form waits and returns the task's status (0 or its error code), and
 * hands back the completed handle in *out (always set when the call was
 * accepted, so the error message can be read). */
MPROC_API int mproc_pool_apply_async(mproc_pool *p, mproc_fn fn,
                                     const void *arg, size_t len,
                                     const mproc_call_opts *o,
                                     mproc_result **out);
MPROC_API int mproc_pool_apply(mproc_pool *p, mproc_fn fn, const void *arg,
                               size_t len, const mproc_call_opts *o,
                               mproc_result **out);

/* An argument for the bytes form of map. */
typedef struct mproc_buf {
    const void *data;
    size_t len;
} mproc_buf;

/* Map, bytes form: one task per items[i]; results in order of the input.
 * The argument bytes are copied before the call returns. The sync form
 * returns 0 when every item succeeded, else the first failing item's code;
 * either way *out has every item's status and data. */
MPROC_API int mproc_pool_map_async(mproc_pool *p, mproc_fn fn,
                                   const mproc_buf *items, size_t n,
                                   const mproc_call_opts *o,
                                   mproc_result **out);
MPROC_API int mproc_pool_map(mproc_pool *p, mproc_fn fn, const mproc_buf *items,
                             size_t n, const mproc_call_opts *o,
                             mproc_result **out);

/* Map, typed fast path: fn(in[i]) -> out[i] for n elements of in_size and
 * out_size bytes. Neither array is copied: the input is read when its chunk
 * is sent to a worker, and results are written straight into out. Both
 * arrays must therefore stay valid until the handle is ready (or freed). A
 * failed item's out slot is left zeroed. starmap is the same call over an
 * array of argument structs. */
MPROC_API int
mproc_pool_map_array_async(mproc_pool *p, mproc_elem_fn fn, const void *in,
                           size_t n, size_t in_size, void *out, size_t out_size,
                           const mproc_call_opts *o, mproc_result **res);
MPROC_API int mproc_pool_map_array(mproc_pool *p, mproc_elem_fn fn,
                                   const void *in, size_t n, size_t in_size,
                                   void *out, size_t out_size,
                                   const mproc_call_opts *o,
                                   mproc_result **res);
MPROC_API int
mproc_pool_starmap_async(mproc_pool *p, mproc_elem_fn fn, const void *args,
                         size_t n, size_t args_size, void *out, size_t out_size,
                         const mproc_call_opts *o, mproc_result **res);
MPROC_API int mproc_pool_starmap(mproc_pool *p, mproc_elem_fn fn,
                                 const void *args, size_t n, size_t args_size,
                                 void *out, size_t out_size,
                                 const mproc_call_opts *o, mproc_result **res);

/* Lazy map. The source is called on the caller's thread, from inside
 * mproc_pool_imap() and mproc_iter_next(), to produce input i: it sets *data
 * and *len (copied at once) and returns 1, or returns 0 at the end of input,
 * or a negative code to stop with that error. At most o->max_in_flight items
 * are submitted and not yet consumed, so a huge input never sits in memory.
 * o->unordered selects imap_unordered. */
typedef int (*mproc_source_fn)(void *arg, size_t i, const void **data,
                               size_t *len);
MPROC_API int mproc_pool_imap(mproc_pool *p, mproc_fn fn,
                              mproc_source_fn source, void *source_arg,
                              const mproc_call_opts *o, mproc_iter **out);

/* One item of an imap. data/errmsg stay valid until the next call on the
 * iterator. */
typedef struct mproc_item {
    size_t index;     /* position in the input */
    int status;       /* 0 or the item's error code */
    const void *data; /* result bytes (NULL when failed) */
    size_t len;
    const char *errmsg; /* NULL when status == 0 */
} mproc_item;

/* Next result: 0 and *item filled; MPROC_EOF after the last one;
 * MPROC_ETIMEDOUT when none came in time. */
MPROC_API int mproc_iter_next(mproc_iter *it, long timeout_ms,
                              mproc_item *item);
/* Free the iterator; items still running are left to finish and dropped. */
MPROC_API void mproc_iter_free(mproc_iter *it);

/* No new work; workers exit once the queued work is done. */
MPROC_API int mproc_pool_close(mproc_pool *p);
/* Wait for the workers to exit (after close or terminate). MPROC_ESTATE if
 * the pool is still open; MPROC_ETIMEDOUT at the timeout. */
MPROC_API int mproc_pool_join(mproc_pool *p, long timeout_ms);
/* Stop at once: pending and running items fail with MPROC_ECANCELLED,
 * workers get SIGTERM and, after terminate_grace_ms, SIGKILL. Returns when
 * every worker is reaped. Idempotent. */
MPROC_API int mproc_pool_terminate(mproc_pool *p);
/* Terminate if needed, then free. Results handed out stay valid until freed.
 */
MPROC_API void mproc_pool_destroy(mproc_pool *p);

/* Number of workers (configured) and the pids of the live ones (up to cap;
 * returns how many were stored). */
MPROC_API int mproc_pool_size(const mproc_pool *p);
MPROC_API int mproc_pool_worker_pids(mproc_pool *p, pid_t *pids, int cap);

typedef struct mproc_pool_stats {
    uint64_t workers_started; /* forks, including replacements */
    uint64_t workers_died;    /* deaths not asked for by the pool */
    uint64_t items_done;      /* items with an outcome */
    uint64_t items_failed;
    uint64_t items_retried;
    int broken; /* 1 once the restart limit was hit */
} mproc_pool_stats;
MPROC_API int mproc_pool_get_stats(mproc_pool *p, mproc_pool_stats *st);

/* ----------------------------------------------------------------------------
 * Result handles
 * ------------------------------------------------------------------------- */

/* Wait until every item has an outcome. 0, or MPROC_ETIMEDOUT. */
MPROC_API int mproc_result_wait(mproc_result *r, long timeout_ms);
/* Wait, then return 0 when every item succeeded, else the first failing
 * item's code. MPROC_ETIMEDOUT if not ready in time. */
MPROC_API int mproc_result_get(mproc_result *r, long timeout_ms);
MPROC_API int mproc_result_ready(mproc_result *r); /* 1 or 0 */
/* 1 when ready and every item succeeded, 0 when ready with a failure,
 * MPROC_ENOTREADY before that (Python raises ValueError). */
MPROC_API int mproc_result_successful(mproc_result *r);
MPROC_API size_t mproc_result_count(const mproc_result *r);
/* Per item: status code (MPROC_ENOTREADY while pending), result bytes of the
 * bytes form (NULL for the typed form or a failure), error message (NULL on
 * success). Pointers stay valid until mproc_result_free(). */
MPROC_API int mproc_result_status(mproc_result *r, size_t i);
MPROC_API const void *mproc_result_data(mproc_result *r, size_t i, size_t *len);
MPROC_API const char *mproc_result_errmsg(mproc_result *r, size_t i);
/* Free the handle. Freeing before it is ready is allowed: the work goes on
 * and its results are dropped (callbacks still run). */
MPROC_API void mproc_result_free(mproc_result *r);

#ifdef __cplusplus
}
#endif

#endif /* MPROC_H */
