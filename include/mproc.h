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
 *     never as a pointer into the caller's memory. File descriptors open at
 *     that time are inherited by every worker too (fork semantics): open
 *     what workers should not have after mproc_init(), close-on-exec or not.
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
 * out points at the item's out_size bytes: zeroed, or, when the result
 * array is in mproc shared memory, the array itself with what it held
 * (possibly the item's own input, for a map in place). Return 0, or fail
 * with mproc_task_fail(). */
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
 * pool counts it as a worker death and starts another. After max(3,
 * nworkers) failures in a row with no worker ready in between, the pool
 * breaks: pending and later calls fail with MPROC_EWORKERINIT. */
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
                             heuristic, ceil(n / (4 * nworkers)). Chunks
                             are also cut so that the bytes they carry
                             stay under 128 KiB, so that big maps stream
                             through the workers' rings. When a
                             worker dies inside a chunk, the item it ran
                             fails and the chunk's other items run again
                             elsewhere, including those it had finished
                             (their results died with it): with chunksize
                             above 1, items may run more than once */
    long task_timeout_ms; /* default: the pool's; negative: none */
    int retries;          /* default: the pool's; negative: none */
    mproc_result_cb on_success;
    mproc_result_cb on_error;
    void *cb_arg;
    int progress; /* MPROC_PROGRESS_* */
    mproc_progress_cb on_progress;
    void *progress_arg;
    size_t max_in_flight; /* imap only: items submitted but not yet
                             consumed; default 32 * nworkers * chunksize */
    int unordered;        /* imap only: nonzero = imap_unordered */
} mproc_call_opts;

/* Create a pool and start its workers. MPROC_EINVAL for nonsense options
 * (negative nworkers, initarg_len without initarg ...). On failure nothing is
 * left running.
 *
 * How work moves: each worker shares a mailbox with the pool, two rings in
 * shared memory, one for tasks and one for results (payloads too big for
 * them go over the worker's socket). A worker that runs out of tasks spins
 * on its ring for up to 50 us, then sleeps; the pool then wakes it with a
 * message. A thread that waits for a result (get, wait, a sync call,
 * mproc_iter_next) first spins on the result rings for up to 50 us, but
 * only while a CPU is free for it (fewer busy workers and spinning callers
 * than usable CPUs); otherwise it sleeps at once. An idle pool uses no CPU.
 * Short tasks are queued a few at a time to each worker, and an idle
 * worker takes back queued tasks that a busy one has not started. */
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
 * out_size bytes. Neither array is copied up front: the input is read when
 * its chunk is sent to a worker, and results are written straight into
 * out. Both arrays must therefore stay valid until the handle is ready (or
 * freed). A failed item's out slot is zeroed. starmap is the same call
 * over an array of argument structs.
 *
 * Arrays in mproc shared memory that this process made (the data of an
 * mproc_array, the bytes of an mproc_shm) are not copied at all: workers
 * attach the segment and read and write it in place, so a map over a big
 * array runs at memory speed. in and out may then be the same array. A
 * worker keeps the last 8 segments it attached mapped, which keeps their
 * memory alive until they are pushed out or the pool ends. */
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
 * o->unordered selects imap_unordered. The progress options do not apply
 * to imap (its total is unknown); count the items as they come instead. */
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

/* ----------------------------------------------------------------------------
 * Shared state: memory, locks and messages between processes
 *
 * Every object below lives in shared memory backed by a sealed memfd: there
 * is no name under /dev/shm to collide with or to leak, its size cannot be
 * changed by anyone, and the kernel frees it when the last handle (in any
 * process) is gone. A handle belongs to the process that created or
 * attached it; any thread of that process may use it. Free a handle with
 * its *_free function (a Pipe connection with mproc_conn_close).
 *
 * Handing an object to another process
 *   - To a Process: pass the handle pointer itself in the argument bytes
 *     (`mproc_value *v; ... mproc_process_create(&p, fn, &v, sizeof v, 0)`).
 *     The child is a fork, so the handle is valid there as it is.
 *   - To a pool task, or to a pool's initializer: workers come from the fork
 *     server, not from you, so a pointer means nothing there. Take a
 *     reference with mproc_ref_of(), put the mproc_ref (16 plain bytes) in
 *     the argument, and in the task call mproc_<type>_attach() to get a
 *     handle of the worker's own; free it before the task returns, or keep
 *     it for the worker's life (attach in the initializer). The worker
 *     fetches the object from the process that owns the pool, over the
 *     worker's channel, so that process must hold a handle to the object
 *     (created there, or attached there) while tasks attach it.
 *   - Objects created before the fork server started (see mproc_init) are
 *     also inherited by every worker, like global variables: a worker may
 *     use such a handle directly, and attaching its reference needs no
 *     fetch. The fork server then holds them too, so their memory is
 *     returned only at mproc_shutdown().
 *
 * MPROC_EOWNERDEAD is a success with a warning: the call did its work (the
 * lock is held, the value copied). Check for it where a half-done update
 * matters, and treat it like 0 elsewhere.
 *
 * When a process dies while holding something
 *   - Lock, RLock, the lock of a Value or Array, a Condition's lock: the next
 *     acquirer gets the lock together with MPROC_EOWNERDEAD. The lock works
 *     normally from then on; only the data it protected may be half-updated.
 *   - Semaphore: a count is not owned, so a unit taken by a process that
 *     then dies is lost, as in Python. Waiters time out; nothing hangs if
 *     timeouts are used.
 *   - Condition, Event: a waiter that dies inside a wait is simply gone.
 *   - Barrier: a party that never arrives makes the others' waits time out,
 *     and a timeout breaks the barrier for every waiter (MPROC_EBROKEN). A
 *     party that dies inside its wait had arrived: the barrier trips
 *     without it.
 *   - Queue: a producer killed in the middle of a put delivers nothing; the
 *     queue goes on for everyone else.
 *   - Pipe: a peer that exits gives MPROC_EOF to the other end.
 * ------------------------------------------------------------------------- */

/* A reference to a shared object: plain bytes, safe to copy into a task
 * argument or a message. */
typedef struct mproc_ref {
    uint64_t id;
    uint32_t kind;
    uint32_t check;
} mproc_ref;

/* Reference to any shared handle below (mproc_shm, mproc_value, mproc_array,
 * mproc_lock, mproc_sem, mproc_cond, mproc_event, mproc_barrier,
 * mproc_queue, mproc_conn). MPROC_EINVAL for anything else, including the
 * lock returned by mproc_value_lock() (pass the value's reference). */
MPROC_API int mproc_ref_of(const void *handle, mproc_ref *out);

/* ---- raw shared memory (Python's shared_memory.SharedMemory) ---- */

typedef struct mproc_shm mproc_shm;

/* size bytes of zeroed shared memory, 64-byte aligned. */
MPROC_API int mproc_shm_create(mproc_shm **out, size_t size);
MPROC_API int mproc_shm_attach(mproc_shm **out, const mproc_ref *ref);
MPROC_API void *mproc_shm_ptr(const mproc_shm *s);
MPROC_API size_t mproc_shm_size(const mproc_shm *s);
MPROC_API void mproc_shm_free(mproc_shm *s);

/* ---- Value and Array ---- */

/* Element types (Python's typecodes). MPROC_T_BYTES is an opaque element
 * of the size given at creation, for structs. */
typedef enum mproc_type {
    MPROC_T_BYTES = 0,
    MPROC_T_CHAR,
    MPROC_T_SCHAR,
    MPROC_T_UCHAR,
    MPROC_T_SHORT,
    MPROC_T_USHORT,
    MPROC_T_INT,
    MPROC_T_UINT,
    MPROC_T_LONG,
    MPROC_T_ULONG,
    MPROC_T_LLONG,
    MPROC_T_ULLONG,
    MPROC_T_FLOAT,
    MPROC_T_DOUBLE,
    MPROC_T_INT8,
    MPROC_T_UINT8,
    MPROC_T_INT16,
    MPROC_T_UINT16,
    MPROC_T_INT32,
    MPROC_T_UINT32,
    MPROC_T_INT64,
    MPROC_T_UINT64,
    MPROC_T_SIZE,
    MPROC_T_BOOL,
    MPROC_T_MAX_
} mproc_type;

/* Size of one element of type t; 0 for MPROC_T_BYTES or an unknown type. */
MPROC_API size_t mproc_type_size(mproc_type t);

/* Creation flag: no built-in lock (Python's RawValue / RawArray). */
#define MPROC_NOLOCK 1u

typedef struct mproc_lock mproc_lock;
typedef struct mproc_value mproc_value;
typedef struct mproc_array mproc_array;

/* A shared scalar. size is the element size: required for MPROC_T_BYTES,
 * and 0 or mproc_type_size(type) otherwise. init points to size bytes, or
 * is NULL for zero. The built-in lock is recursive, as in Python. */
MPROC_API int mproc_value_create(mproc_value **out, mproc_type type,
                                 size_t size, const void *init, unsigned flags);
MPROC_API int mproc_value_attach(mproc_value **out, const mproc_ref *ref);
/* Copy the value out / in, under the built-in lock if there is one. size
 * must be the element size (MPROC_EINVAL otherwise: the type check).
 * MPROC_EOWNERDEAD: done, but a process died holding the lock before, so
 * the value may be half-written. */
MPROC_API int mproc_value_get(mproc_value *v, void *out, size_t size);
MPROC_API int mproc_value_set(mproc_value *v, const void *in, size_t size);
/* Direct access, for use under mproc_value_lock(), like Python's .value
 * inside `with v.get_lock():`. */
MPROC_API void *mproc_value_ptr(mproc_value *v);
/* The built-in lock (Python's get_lock()); NULL for MPROC_NOLOCK. It
 * belongs to the value: do not free it. */
MPROC_API mproc_lock *mproc_value_lock(mproc_value *v);
MPROC_API mproc_type mproc_value_type(const mproc_value *v);
MPROC_API void mproc_value_free(mproc_value *v);

/* A shared array of n elements (n > 0). init points to n elements, or is
 * NULL for zeros. Data is 64-byte aligned. */
MPROC_API int mproc_array_create(mproc_array **out, mproc_type type,
                                 size_t size, size_t n, const void *init,
                                 unsigned flags);
MPROC_API int mproc_array_attach(mproc_array **out, const mproc_ref *ref);
/* Bounds-checked copy of element i, under the built-in lock if any:
 * MPROC_ERANGE past the end, MPROC_EINVAL for a wrong size,
 * MPROC_EOWNERDEAD as for values. */
MPROC_API int mproc_array_get(mproc_array *a, size_t i, void *out, size_t size);
MPROC_API int mproc_array_set(mproc_array *a, size_t i, const void *in,
                              size_t size);
/* Direct access to the elements, for speed (no lock, no bounds). */
MPROC_API void *mproc_array_data(mproc_array *a);
MPROC_API size_t mproc_array_len(const mproc_array *a);
MPROC_API size_t mproc_array_elem_size(const mproc_array *a);
MPROC_API mproc_type mproc_array_type(const mproc_array *a);
MPROC_API mproc_lock *mproc_array_lock(mproc_array *a); /* NULL if none */
MPROC_API void mproc_array_free(mproc_array *a);

/* ---- Lock and RLock ---- */

/* A Lock is owned by the thread that acquired it: only that thread may
 * release it (Python's multiprocessing.Lock lets any process release it;
 * ownership is what makes owner death detectable). An RLock may be taken
 * again by its owner and must be released as many times. */
MPROC_API int mproc_lock_create(mproc_lock **out);
MPROC_API int mproc_rlock_create(mproc_lock **out);
MPROC_API int mproc_lock_attach(mproc_lock **out, const mproc_ref *ref);
/* 0: acquired. MPROC_EOWNERDEAD: acquired, and its previous holder died
 * holding it. MPROC_ETIMEDOUT. MPROC_EDEADLK: a Lock (not RLock) already
 * held by the calling thread. */
MPROC_API int mproc_lock_acquire(mproc_lock *l, long timeout_ms);
/* MPROC_EPERM when the calling thread does not hold it. */
MPROC_API int mproc_lock_release(mproc_lock *l);
/* 1 if the calling thread holds it, else 0. */
MPROC_API int mproc_lock_held(mproc_lock *l);
MPROC_API void mproc_lock_free(mproc_lock *l);

/* ---- Semaphore and BoundedSemaphore ---- */

typedef struct mproc_sem mproc_sem;

/* A counter, value <= INT32_MAX. A BoundedSemaphore refuses a release that
 * would take it above its initial value (MPROC_ESTATE). */
MPROC_API int mproc_sem_create(mproc_sem **out, unsigned value);
MPROC_API int mproc_bsem_create(mproc_sem **out, unsigned value);
MPROC_API int mproc_sem_attach(mproc_sem **out, const mproc_ref *ref);
/* 0, or MPROC_ETIMEDOUT. */
MPROC_API int mproc_sem_acquire(mproc_sem *s, long timeout_ms);
/* MPROC_ESTATE past a bounded semaphore's initial value, MPROC_EOVERFLOW
 * past INT32_MAX. */
MPROC_API int mproc_sem_release(mproc_sem *s);
MPROC_API int mproc_sem_value(mproc_sem *s);
MPROC_API void mproc_sem_free(mproc_sem *s);

/* ---- Condition ---- */

typedef struct mproc_cond mproc_cond;
typedef int (*mproc_pred_fn)(void *arg); /* nonzero: the wait is over */

/* A condition on lock, a standalone Lock or RLock from this section (not a
 * value's lock), or on a new RLock of its own when lock is NULL. The
 * condition keeps its own handle to the lock. */
MPROC_API int mproc_cond_create(mproc_cond **out, mproc_lock *lock);
MPROC_API int mproc_cond_attach(mproc_cond **out, const mproc_ref *ref);
/* The condition's lock, to acquire and release around waits and notifies.
 * It belongs to the condition handle: do not free it. */
MPROC_API mproc_lock *mproc_cond_lock(mproc_cond *c);
/* With the lock held (MPROC_EPERM otherwise): release it (every level of
 * an RLock), sleep until notified or timed out, take it back. 0 when woken,
 * MPROC_ETIMEDOUT, or MPROC_EOWNERDEAD when taking the lock back found its
 * holder dead. The lock is held again in all three cases. Like POSIX
 * condition variables, a wait may now and then wake without a notify, and
 * a notify may wake more than n: loop on your condition, or use
 * mproc_cond_wait_for. */
MPROC_API int mproc_cond_wait(mproc_cond *c, long timeout_ms);
/* Wait until pred(arg) is nonzero (checked first, then after each wake).
 * 0 when it is, MPROC_ETIMEDOUT when it is still false at the timeout. */
MPROC_API int mproc_cond_wait_for(mproc_cond *c, mproc_pred_fn pred, void *arg,
                                  long timeout_ms);
/* Wake up to n waiters / all waiters; the lock must be held (MPROC_EPERM). */
MPROC_API int mproc_cond_notify(mproc_cond *c, int n);
MPROC_API int mproc_cond_notify_all(mproc_cond *c);
MPROC_API void mproc_cond_free(mproc_cond *c);

/* ---- Event ---- */

typedef struct mproc_event mproc_event;

MPROC_API int mproc_event_create(mproc_event **out);
MPROC_API int mproc_event_attach(mproc_event **out, const mproc_ref *ref);
MPROC_API int mproc_event_set(mproc_event *e);
MPROC_API int mproc_event_clear(mproc_event *e);
MPROC_API int mproc_event_is_set(mproc_event *e); /* 1 or 0 */
/* 0 once the flag is set (or was set while waiting, even if cleared
 * since, as in Python), MPROC_ETIMEDOUT otherwise. */
MPROC_API int mproc_event_wait(mproc_event *e, long timeout_ms);
MPROC_API void mproc_event_free(mproc_event *e);

/* ---- Barrier ---- */

typedef struct mproc_barrier mproc_barrier;
/* Run by the last party to arrive, before the others are released. A
 * nonzero return breaks the barrier. It is a function pointer, so it must
 * exist in every process that waits (see "Where code runs"). */
typedef int (*mproc_action_fn)(void);

/* parties >= 1 (MPROC_EINVAL for 0); action may be NULL. */
MPROC_API int mproc_barrier_create(mproc_barrier **out, unsigned parties,
                                   mproc_action_fn action);
MPROC_API int mproc_barrier_attach(mproc_barrier **out, const mproc_ref *ref);
/* Returns this party's arrival index (0 .. parties-1), MPROC_EBROKEN when
 * the barrier is or becomes broken (abort, reset while waiting, a failed
 * action, another party's timeout), or MPROC_ETIMEDOUT when this wait timed
 * out, which also breaks the barrier for the others. */
MPROC_API int mproc_barrier_wait(mproc_barrier *b, long timeout_ms);
/* Back to the empty, unbroken state; current waiters get MPROC_EBROKEN. */
MPROC_API int mproc_barrier_reset(mproc_barrier *b);
/* Break it: current and future waiters get MPROC_EBROKEN until a reset. */
MPROC_API int mproc_barrier_abort(mproc_barrier *b);
MPROC_API int mproc_barrier_broken(mproc_barrier *b); /* 1 or 0 */
MPROC_API int mproc_barrier_n_waiting(mproc_barrier *b);
MPROC_API int mproc_barrier_parties(mproc_barrier *b);
MPROC_API void mproc_barrier_free(mproc_barrier *b);

/* ---- Queue (also JoinableQueue and SimpleQueue) ---- */

typedef struct mproc_queue mproc_queue;

typedef struct mproc_queue_opts {
    size_t maxsize;      /* most messages held; default 0: limited only by
                            buffer_bytes */
    size_t buffer_bytes; /* shared ring size; default 1 MiB. Each message
                            takes its length rounded up to 8, plus 8; one
                            larger than the whole ring is MPROC_ETOOBIG */
    int joinable;        /* nonzero: JoinableQueue (task_done, join) */
} mproc_queue_opts;

/* A multi-producer, multi-consumer queue of byte messages, FIFO. A put
 * copies the message into the ring; there is no feeder thread, so a put
 * that returned 0 has delivered, and a process may exit right after it.
 * mproc_queue_create(&q, NULL) is Python's SimpleQueue. */
MPROC_API int mproc_queue_create(mproc_queue **out,
                                 const mproc_queue_opts *opts);
MPROC_API int mproc_queue_attach(mproc_queue **out, const mproc_ref *ref);
/* Put len bytes (len may be 0). Blocks while full (maxsize messages, or no
 * room in the ring for this one). 0, MPROC_ETIMEDOUT (still full),
 * MPROC_ECLOSED, MPROC_ETOOBIG (can never fit), MPROC_EPROTO (the ring was
 * corrupted by a stray write). Timeouts bound the wait for room; the lock
 * inside is held only while one message is copied, and even a timeout of
 * 0 waits for it. */
MPROC_API int mproc_queue_put(mproc_queue *q, const void *data, size_t len,
                              long timeout_ms);
/* Take the oldest message into a malloc'd buffer (*data, free() it; not NULL
 * even for 0 bytes). 0, MPROC_ETIMEDOUT (still empty), MPROC_EOF (closed and
 * empty), MPROC_ENOMEM (the message stays), MPROC_EPROTO (the ring was
 * corrupted by a stray write). */
MPROC_API int mproc_queue_get(mproc_queue *q, void **data, size_t *len,
                              long timeout_ms);
/* The same into buf. *len (len may be NULL) gets the message's length,
 * which may be less than cap. MPROC_EMSGSIZE when it is longer than cap
 * (*len is then its length, and it stays in the queue). */
MPROC_API int mproc_queue_get_into(mproc_queue *q, void *buf, size_t cap,
                                   size_t *len, long timeout_ms);
/* No more puts, from any process (MPROC_ECLOSED); gets drain what is left
 * and then return MPROC_EOF. Waiters wake. Unlike Python's Queue.close(),
 * which only concerns the calling process, this ends the stream for
 * everyone: call it once every producer is done. */
MPROC_API int mproc_queue_close(mproc_queue *q);
/* Approximate, as in Python: other processes change them at any time.
 * full: maxsize reached, or not even an empty message would fit. qsize is
 * 0 and empty/full are MPROC_EINVAL for a bad handle. */
MPROC_API size_t mproc_queue_qsize(mproc_queue *q);
MPROC_API int mproc_queue_empty(mproc_queue *q);
MPROC_API int mproc_queue_full(mproc_queue *q);
/* JoinableQueue: one task_done per message got; join waits until every
 * message put has been marked done. MPROC_ESTATE for more task_done calls
 * than messages, MPROC_EINVAL on a queue that is not joinable. */
MPROC_API int mproc_queue_task_done(mproc_queue *q);
MPROC_API int mproc_queue_join(mproc_queue *q, long timeout_ms);
MPROC_API void mproc_queue_free(mproc_queue *q);

/* ---- Pipe ---- */

typedef struct mproc_conn mproc_conn;

/* Two connected ends. duplex: both send and receive. Otherwise, as in
 * Python's Pipe(False), *a only receives and *b only sends. */
MPROC_API int mproc_pipe(mproc_conn **a, mproc_conn **b, int duplex);
MPROC_API int mproc_conn_attach(mproc_conn **out, const mproc_ref *ref);
/* Send one message of any size; it arrives whole or not at all. Blocks
 * while the peer is not reading. MPROC_EPIPE when the peer has closed,
 * MPROC_EBADF on a receive-only end. */
MPROC_API int mproc_conn_send(mproc_conn *c, const void *data, size_t len);
/* Receive one message into a malloc'd buffer (free() it). 0,
 * MPROC_ETIMEDOUT, MPROC_EOF when the peer has closed (or exited) and
 * nothing is left. */
MPROC_API int mproc_conn_recv(mproc_conn *c, void **data, size_t *len,
                              long timeout_ms);
/* The same into buf. *len (len may be NULL) gets the message's length,
 * which may be less than cap. MPROC_EMSGSIZE when it is longer than cap
 * (*len is then its length, and the message stays). */
MPROC_API int mproc_conn_recv_into(mproc_conn *c, void *buf, size_t cap,
                                   size_t *len, long timeout_ms);
/* 1 when a message (or end of file) is waiting, 0 at the timeout. */
MPROC_API int mproc_conn_poll(mproc_conn *c, long timeout_ms);
/* Close this end and free the handle. A forked child has its own copy of
 * both ends: close the one it does not use, or the peer never sees EOF.
 * (The fork server and pool workers never keep Pipe ends, even of pipes
 * made before the server started; a worker gets one only by attaching.)
 * Messages over 96 KiB travel in a memfd each, so a sender can get well
 * ahead of a reader that is slow with large messages. */
MPROC_API void mproc_conn_close(mproc_conn *c);

#ifdef __cplusplus
}
#endif

#endif /* MPROC_H */
