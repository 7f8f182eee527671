/* SPDX-License-Identifier: MIT */
/*
 * The fault matrix (shared/RELIABILITY.md §3.2, scenarios 1-11, 15-17 and
 * 20-23): a task that crashes, aborts, exits, hangs, runs out of memory or
 * CPU, or is killed from outside; workers killing each other; crash storms;
 * the parent killed; garbage on the wire; callbacks misbehaving; Ctrl-C;
 * terminate; a worker killed during shutdown; a multi-threaded caller.
 * In every case: exactly the guilty item fails, with an error that names the
 * cause, every other item keeps its result, and nothing hangs or leaks.
 *
 * Synchronisation with tasks goes through pipes made before the first pool,
 * so that the fork server, and every worker it forks, inherits them.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "mbox.h" /* the worker's mailbox layout, to break it on purpose */
#include "wire.h" /* and its messages */

/* Task behaviours, chosen per item by the argument. */
enum {
    DO_SQUARE = 0,
    DO_SEGV,
    DO_ABORT,
    DO_EXIT,
    DO__EXIT,
    DO_HANG, /* report the pid on ready_pipe, then pause() */
    DO_HANG_NOTERM /* same, with SIGTERM blocked */,
    DO_OOM,         /* allocate 256 MiB and touch it, no NULL check */
    DO_OOM_CHECKED, /* same, failing politely when malloc says no */
    DO_CPU,         /* spin past a 1 s RLIMIT_CPU */
    DO_GARBAGE,     /* write junk into every socket the worker has */
    DO_BIG,         /* return more than max_result_bytes */
    DO_KILL_SELF,   /* SIGKILL its own worker */
    DO_RING_JUNK,   /* put a record of no known type in the result ring */
    DO_TAIL_JUNK,   /* claim to have read past the end of the task ring */
};

typedef struct job {
    int what;
    long x;
} job;

static int ready_pipe[2] = {-1, -1};

static void make_ready_pipe(void) {
    ck_assert_int_eq(pipe2(ready_pipe, O_CLOEXEC), 0);
}

static void close_ready_pipe(void) {
    close(ready_pipe[0]);
    close(ready_pipe[1]);
}

static pid_t wait_ready(void) {
    pid_t pid = 0;
    ck_assert_int_eq(read(ready_pipe[0], &pid, sizeof pid), sizeof pid);
    return pid;
}

static void say_ready(void) {
    pid_t me = getpid();
    ssize_t n = write(ready_pipe[1], &me, sizeof me);
    (void)n;
}

static void garbage_everywhere(void) {
    unsigned char junk[512];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)(i * 131u + 7u);
    for (int fd = 3; fd < 1024; fd++) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
            for (size_t len = 1; len <= sizeof junk; len *= 3)
                (void)send(fd, junk, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
    }
}

/* The worker's mailbox: the memfd named mproc-mbox in its maps. */
static mproc__mbox *my_mailbox(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    unsigned long lo = 0, hi;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "mproc-mbox") &&
            sscanf(line, "%lx-%lx", &lo, &hi) == 2)
            break;
    if (f)
        fclose(f);
    ck_assert_uint_ne(lo, 0);
    return (mproc__mbox *)(uintptr_t)lo;
}

/* Publish a record of a type that does not exist in the result ring, wake
 * the pool, and wait to be killed for it. */
static void ring_junk(void) {
    mproc__mbox *mb = my_mailbox();
    unsigned char *ring =
        (unsigned char *)mb + MPROC__MBOX_HDR + MPROC__RING_BYTES;
    uint64_t head = atomic_load(&mb->result.head);
    mproc__rec junk = {.len = 8, .type = 99};
    memcpy(ring + (head & (MPROC__RING_BYTES - 1)), &junk, sizeof junk);
    atomic_store(&mb->result.head, head + sizeof junk + 8);
    /* Wake the pool as a worker does, on its channel (its only socket). */
    mproc__hdr wake = {.magic = MPROC__WIRE_MAGIC,
                       .version = MPROC__WIRE_VERSION,
                       .type = MPROC__MSG_WAKE};
    for (int fd = 3; fd < 1024; fd++) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode))
            (void)send(fd, &wake, sizeof wake, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    for (;;)
        pause(); /* the pool kills us; a hang here fails the test */
}

static int job_fn(mproc_task *t, const void *in, void *out) {
    const job *j = in;
    switch (j->what) {
    case DO_SEGV:
        *(volatile int *)(uintptr_t)(j->x + 8) = 1; /* x is 0: page zero */
        break;
    case DO_ABORT:
        abort();
    case DO_EXIT:
        exit(0);
    case DO__EXIT:
        _exit(0);
    case DO_HANG_NOTERM: {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGTERM);
        sigprocmask(SIG_BLOCK, &s, NULL);
    } /* fall through */
    case DO_HANG:
        say_ready();
        for (;;)
            pause();
    case DO_OOM: {
        /* volatile, so the optimiser cannot drop the allocation */
        volatile char *volatile p = malloc(256u << 20);
        for (size_t i = 0; i < (256u << 20); i += 4096)
            p[i] = 1; /* p is NULL under the limit */
        free((void *)p);
        break;
    }
    case DO_OOM_CHECKED: {
        volatile char *volatile p = malloc(256u << 20);
        if (!p)
            return mproc_task_fail(t, "could not allocate 256 MiB");
        for (size_t i = 0; i < (256u << 20); i += 4096)
            p[i] = 1;
        free((void *)p);
        break;
    }
    case DO_CPU: {
        struct rlimit rl = {1, 2};
        setrlimit(RLIMIT_CPU, &rl);
        for (volatile unsigned long i = 0;; i++)
            ;
    }
    case DO_GARBAGE:
        garbage_everywhere();
        break;
    case DO_BIG: {
        static char big[1 << 20];
        if (mproc_task_result_buf(t, (size_t)2 << 30) != NULL)
            return mproc_task_fail(t, "a 2 GiB buffer was granted");
        return mproc_task_return(t, big, sizeof big);
    }
    case DO_KILL_SELF:
        raise(SIGKILL);
        break;
    case DO_RING_JUNK:
        ring_junk();
        break;
    case DO_TAIL_JUNK:
        /* The pool finds out when it next puts a task in the ring. */
        atomic_store(&my_mailbox()->task.tail, (uint64_t)1 << 40);
        say_ready();
        for (;;)
            pause();
    default:
        break;
    }
    *(long *)out = j->x * j->x;
    return 0;
}

/* Map n items, all squares except item bad, which does `what`. */
static mproc_result *map_with(mproc_pool *p, size_t n, size_t bad, int what,
                              long *out, const mproc_call_opts *o) {
    job *jobs = calloc(n, sizeof *jobs);
    for (size_t i = 0; i < n; i++)
        jobs[i] = (job){i == bad ? what : DO_SQUARE, i == bad ? 0 : (long)i};
    mproc_result *r = NULL;
    int rc = mproc_pool_map_array(p, job_fn, jobs, n, sizeof *jobs, out,
                                  sizeof *out, o, &r);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(rc, mproc_result_get(r, 0));
    free(jobs);
    return r;
}

/* Every item but bad has its square; bad failed with code, and its
 * message contains every needle. */
static void check_one_failed(mproc_result *r, const long *out, size_t n,
                             size_t bad, int code, const char *needle) {
    for (size_t i = 0; i < n; i++) {
        if (i == bad)
            continue;
        ck_assert_msg(mproc_result_status(r, i) == 0, "item %zu: %s", i,
                      mproc_result_errmsg(r, i));
        ck_assert_int_eq(out[i], (long)(i * i));
    }
    int st = mproc_result_status(r, bad);
    const char *msg = mproc_result_errmsg(r, bad);
    ck_assert_msg(st == code, "item %zu: %s (%s), want %s", bad,
                  mproc_err_name(st), msg ? msg : "-", mproc_err_name(code));
    ck_assert_ptr_nonnull(msg);
    if (needle)
        ck_assert_msg(strstr(msg, needle), "message '%s' lacks '%s'", msg,
                      needle);
    ck_assert_int_eq(out[bad], 0);
}

static mproc_pool *pool_of(int n, const mproc_pool_opts *extra) {
    mproc_pool_opts o = extra ? *extra : (mproc_pool_opts){0};
    o.nworkers = n;
    mproc_pool *p = NULL;
    ASSERT_OK(mproc_pool_create(&p, &o));
    return p;
}

static void fault_case(int what, int code, const char *needle) {
    enum { N = 100, BAD = 37 };
    mproc_pool *p = pool_of(2, NULL);
    long out[N];
    mproc_result *r = map_with(p, N, BAD, what, out, NULL);
    check_one_failed(r, out, N, BAD, code, needle);
    mproc_pool_stats st;
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_uint_eq(st.workers_died, 1);
    ck_assert_uint_eq(st.items_failed, 1);
    mproc_result_free(r);
    /* The pool goes on: the worker was replaced. */
    r = map_with(p, 10, 99, DO_SQUARE, out, NULL);
    ck_assert_int_eq(mproc_result_successful(r), 1);
    mproc_result_free(r);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}

/* 1 */
TEST(fault_segv) {
    fault_case(DO_SEGV, MPROC_ECRASHED, "SIGSEGV");
}

/* 2 */
TEST(fault_abort) {
    fault_case(DO_ABORT, MPROC_ECRASHED, "SIGABRT");
}

/* 3: exiting mid-task is a loss, not a success, whichever exit it is. */
TEST(fault_exit) {
    fault_case(DO_EXIT, MPROC_EEXITED, "exited with status 0");
}

TEST(fault__exit) {
    fault_case(DO__EXIT, MPROC_EEXITED, "exited with status 0");
}

/* 4: a hung task, with and without SIGTERM blocked. */
TEST(fault_timeout) {
    mproc_pool *p = pool_of(2, &(mproc_pool_opts){.task_timeout_ms = 200});
    for (int what = DO_HANG; what <= DO_HANG_NOTERM; what++) {
        long out[8];
        uint64_t t0 = test_now_ms();
        mproc_result *r = map_with(p, 8, 5, what, out, NULL);
        uint64_t took = test_now_ms() - t0;
        check_one_failed(r, out, 8, 5, MPROC_ETASKTIMEOUT, "timed out");
        ck_assert_msg(took < 200 + (uint64_t)test_ms(1000), "took %llu ms",
                      (unsigned long long)took);
        mproc_result_free(r);
    }
    mproc_pool_destroy(p);
}

/* 5: the memory limit. RLIMIT_AS and AddressSanitizer do not mix. */
TEST(fault_memlimit) {
#if defined(__SANITIZE_ADDRESS__)
    return;
#endif
    mproc_pool *p =
        pool_of(2, &(mproc_pool_opts){.mem_limit_bytes = 64u << 20});
    long out[10];
    mproc_result *r = map_with(p, 10, 3, DO_OOM, out, NULL);
    check_one_failed(r, out, 10, 3, MPROC_EMEMLIMIT, "memory limit");
    mproc_result_free(r);
    r = map_with(p, 10, 4, DO_OOM_CHECKED, out, NULL);
    check_one_failed(r, out, 10, 4, MPROC_EMEMLIMIT,
                     "could not allocate 256 MiB");
    mproc_result_free(r);
    mproc_pool_destroy(p);
}

/* 6: CPU limit. */
TEST(fault_cpulimit) {
    mproc_pool *p = pool_of(2, NULL);
    long out[4];
    mproc_result *r = map_with(p, 4, 2, DO_CPU, out, NULL);
    check_one_failed(r, out, 4, 2, MPROC_ECRASHED, "SIGXCPU");
    mproc_result_free(r);
    mproc_pool_destroy(p);
}

/* 7: an idle worker killed from outside is replaced; nothing is lost. */
TEST(fault_kill_idle) {
    mproc_pool *p = pool_of(2, NULL);
    long out[20];
    mproc_result *r = map_with(p, 20, 99, DO_SQUARE, out, NULL);
    mproc_result_free(r);
    pid_t pids[2];
    ck_assert_int_eq(mproc_pool_worker_pids(p, pids, 2), 2);
    ck_assert_int_eq(kill(pids[0], SIGKILL), 0);
    ck_assert(test_wait_gone(pids[0], 5000));
    for (int round = 0; round < 5; round++) {
        r = map_with(p, 20, 99, DO_SQUARE, out, NULL);
        ck_assert_int_eq(mproc_result_successful(r), 1);
        for (long i = 0; i < 20; i++)
            ck_assert_int_eq(out[i], i * i);
        mproc_result_free(r);
    }
    mproc_pool_destroy(p);
}

/* 8: a busy worker killed from outside: exactly its item fails (this is
 * where CPython's Pool hangs for ever, gh-66587). */
TEST(fault_kill_busy) {
    make_ready_pipe();
    mproc_pool *p = pool_of(2, NULL);
    enum { N = 30, BAD = 11 };
    job jobs[N];
    long out[N];
    for (int i = 0; i < N; i++)
        jobs[i] = (job){i == BAD ? DO_HANG : DO_SQUARE, i == BAD ? 0 : i};
    mproc_result *r;
    ASSERT_OK(mproc_pool_map_array_async(
        p, job_fn, jobs, N, sizeof *jobs, out, sizeof *out,
        &(mproc_call_opts){.chunksize = 4}, &r));
    pid_t victim = wait_ready();
    ck_assert_int_eq(kill(victim, SIGKILL), 0);
    ASSERT_ERR(mproc_result_get(r, test_ms(10000)), MPROC_ECRASHED);
    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "worker %d killed by SIGKILL", (int)victim);
    check_one_failed(r, out, N, BAD, MPROC_ECRASHED, pidstr);
    mproc_result_free(r);
    mproc_pool_destroy(p);
    close_ready_pipe();
}

/* 9: workers SIGKILL each other in reverse order (loky test_crash_races). */
typedef struct race_arg {
    pid_t victim;
    long x;
} race_arg;

static int race_fn(mproc_task *t, const void *in, void *out) {
    (void)t;
    const race_arg *a = in;
    if (a->victim > 0)
        kill(a->victim, SIGKILL);
    *(long *)out = a->x;
    return 0;
}

TEST(fault_crash_races) {
    static const int sizes[] = {1, 2, 5, 13};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        int n = sizes[s];
        mproc_pool *p = pool_of(n, &(mproc_pool_opts){.retries = 2});
        pid_t pids[13];
        /* Creation returns once every worker has its pid. */
        ck_assert_int_eq(mproc_pool_worker_pids(p, pids, n), n);
        race_arg args[13];
        long out[13];
        for (int i = 0; i < n; i++)
            args[i] = (race_arg){pids[n - 1 - i], i};
        mproc_result *r;
        mproc_pool_map_array(p, race_fn, args, (size_t)n, sizeof *args, out,
                             sizeof *out, &(mproc_call_opts){.chunksize = 1},
                             &r);
        ck_assert_ptr_nonnull(r);
        for (int i = 0; i < n; i++) {
            int st = mproc_result_status(r, (size_t)i);
            ck_assert_int_ne(st, MPROC_ENOTREADY);
            if (st == 0)
                ck_assert_int_eq(out[i], i);
        }
        mproc_result_free(r);
        mproc_pool_destroy(p);
    }
}

/* 10: a restart storm breaks the pool instead of forking for ever. */
TEST(fault_restart_storm) {
    mproc_pool *p = pool_of(
        2, &(mproc_pool_opts){.restart_limit = 10, .restart_window_ms = 60000});
    enum { N = 200 };
    job jobs[N];
    long out[N];
    for (int i = 0; i < N; i++)
        jobs[i] = (job){DO_SEGV, 0};
    mproc_result *r;
    int rc =
        mproc_pool_map_array(p, job_fn, jobs, N, sizeof *jobs, out, sizeof *out,
                             &(mproc_call_opts){.chunksize = 1}, &r);
    ck_assert_int_ne(rc, 0);
    size_t crashed = 0, broken = 0;
    for (size_t i = 0; i < N; i++) {
        int st = mproc_result_status(r, i);
        crashed += st == MPROC_ECRASHED;
        broken += st == MPROC_EBROKEN;
        ck_assert(st == MPROC_ECRASHED || st == MPROC_EBROKEN);
    }
    ck_assert_uint_eq(crashed + broken, N);
    ck_assert_uint_ge(broken, N - 20);
    mproc_result_free(r);
    mproc_pool_stats st;
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_int_eq(st.broken, 1);
    ck_assert_uint_le(st.workers_started, 10 + 1 + 2);
    long x = 3;
    mproc_result *r2 = NULL;
    ASSERT_ERR(mproc_pool_map_array(p, job_fn, &(job){0, x}, 1, sizeof(job),
                                    out, sizeof *out, NULL, &r2),
               MPROC_EBROKEN);
    ck_assert_ptr_null(r2);
    mproc_pool_destroy(p);
}

/* 11: the parent SIGKILLed mid-map: every worker is gone within a second. */
TEST(fault_parent_killed) {
    int pp[2];
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    make_ready_pipe();
    pid_t app = fork();
    ck_assert_int_ge(app, 0);
    if (app == 0) {
        mproc_pool *p = pool_of(3, NULL);
        job jobs[6];
        for (int i = 0; i < 6; i++)
            jobs[i] = (job){DO_HANG, 0};
        long out[6];
        mproc_result *r;
        mproc_pool_map_array_async(p, job_fn, jobs, 6, sizeof *jobs, out,
                                   sizeof *out,
                                   &(mproc_call_opts){.chunksize = 1}, &r);
        for (int i = 0; i < 3; i++) {
            pid_t w = wait_ready();
            ssize_t n = write(pp[1], &w, sizeof w);
            (void)n;
        }
        raise(SIGKILL);
    }
    close(pp[1]);
    pid_t workers[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(read(pp[0], &workers[i], sizeof workers[i]),
                         sizeof workers[i]);
    int status;
    ck_assert_int_eq(waitpid(app, &status, 0), app);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    uint64_t t0 = test_now_ms();
    for (int i = 0; i < 3; i++)
        ck_assert_msg(test_wait_gone(workers[i], 1000),
                      "worker %d outlived its parent", (int)workers[i]);
    ck_assert_uint_lt(test_now_ms() - t0, (uint64_t)test_ms(1000));
    /* The fork server and the workers were re-parented to us (we are a
     * subreaper): reap them. */
    while (waitpid(-1, NULL, 0) > 0)
        ;
    close(pp[0]);
    close_ready_pipe();
}

/* 15: a result over the cap fails that item alone, and the parent never
 * allocates what was claimed. */
TEST(fault_result_too_big) {
    mproc_pool *p =
        pool_of(2, &(mproc_pool_opts){.max_result_bytes = 64 * 1024});
    long out[10];
    mproc_result *r = map_with(p, 10, 6, DO_BIG, out, NULL);
    check_one_failed(r, out, 10, 6, MPROC_ETOOBIG, NULL);
    mproc_result_free(r);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    ck_assert_int_lt(ru.ru_maxrss, 512 * 1024); /* KiB */
    mproc_pool_destroy(p);
}

/* After one worker was killed for what it did: the pool goes on (a new map
 * succeeds), and once closed it has counted exactly that one death. Then
 * destroy it. */
static void goes_on_after_one_death(mproc_pool *p) {
    long out[12];
    mproc_result *r = map_with(p, 12, 99, DO_SQUARE, out, NULL);
    ck_assert_int_eq(mproc_result_successful(r), 1);
    mproc_result_free(r);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, test_ms(10000)));
    mproc_pool_stats st;
    ASSERT_OK(mproc_pool_get_stats(p, &st));
    ck_assert_uint_eq(st.workers_died, 1);
    mproc_pool_destroy(p);
}

/* 16: garbage on the transport: the worker is cut off, its item fails with
 * MPROC_EPROTO, the pool goes on. */
TEST(fault_garbage) {
    mproc_pool *p = pool_of(2, NULL);
    long out[12];
    mproc_result *r =
        map_with(p, 12, 4, DO_GARBAGE, out, &(mproc_call_opts){.chunksize = 1});
    /* The junk on the channel races the item's own well-formed result in
     * the worker's result ring: a caller spinning on the ring may take the
     * result before anyone reads the junk. Either way every other item
     * succeeds and the worker is killed for it (checked below). */
    if (mproc_result_status(r, 4) == 0) {
        for (size_t i = 0; i < 12; i++) {
            ck_assert_int_eq(mproc_result_status(r, i), 0);
            ck_assert_int_eq(out[i], i == 4 ? 0 : (long)(i * i));
        }
    } else {
        check_one_failed(r, out, 12, 4, MPROC_EPROTO, "malformed");
    }
    mproc_result_free(r);
    goes_on_after_one_death(p);
}

/* A worker that puts junk in its result ring is killed; the item it ran
 * fails with MPROC_EPROTO, the others succeed, and the pool goes on. */
TEST(fault_ring_junk) {
    mproc_pool *p = pool_of(2, NULL);
    long out[12];
    mproc_result *r = map_with(p, 12, 5, DO_RING_JUNK, out,
                               &(mproc_call_opts){.chunksize = 1});
    check_one_failed(r, out, 12, 5, MPROC_EPROTO, "malformed");
    mproc_result_free(r);
    goes_on_after_one_death(p);
}

/* A worker whose task ring's read position is nonsense gets no more work
 * there: it is killed, its item fails with MPROC_EPROTO, and the work
 * meant for it runs on its replacement. */
TEST(fault_tail_junk) {
    make_ready_pipe();
    mproc_pool *p = pool_of(1, NULL);
    static const job bad = {DO_TAIL_JUNK, 0};
    long out = -1;
    mproc_result *r, *r2;
    ASSERT_OK(mproc_pool_map_array_async(p, job_fn, &bad, 1, sizeof bad, &out,
                                         sizeof out, NULL, &r));
    wait_ready();
    static const job sq = {DO_SQUARE, 7};
    long out2 = 0;
    ASSERT_OK(mproc_pool_map_array_async(p, job_fn, &sq, 1, sizeof sq, &out2,
                                         sizeof out2, NULL, &r2));
    ASSERT_ERR(mproc_result_get(r, test_ms(10000)), MPROC_EPROTO);
    ck_assert_ptr_nonnull(strstr(mproc_result_errmsg(r, 0), "malformed"));
    ck_assert_int_eq(out, 0);
    ASSERT_OK(mproc_result_get(r2, test_ms(10000)));
    ck_assert_int_eq(out2, 49);
    mproc_result_free(r);
    mproc_result_free(r2);
    mproc_pool_destroy(p);
    close_ready_pipe();
}

/* 17: callbacks that fail, and callbacks that submit more work. */
static int cb_fails(mproc_result *r, void *arg) {
    (void)r;
    (*(int *)arg)++;
    return -1;
}

typedef struct nest {
    mproc_pool *p;
    mproc_result *inner;
    int inner_done;
    int submit_rc;
} nest;

static int cb_inner(mproc_result *r, void *arg) {
    (void)r;
    ((nest *)arg)->inner_done = 1;
    return 0;
}

static int cb_resubmit(mproc_result *r, void *arg) {
    (void)r;
    nest *n = arg;
    static const job crash = {DO_SEGV, 0}; /* must outlive the call */
    static long out;
    n->submit_rc = mproc_pool_map_array_async(
        n->p, job_fn, &crash, 1, sizeof(job), &out, sizeof out,
        &(mproc_call_opts){.on_error = cb_inner, .cb_arg = n}, &n->inner);
    return 0;
}

TEST(fault_callbacks) {
    mproc_pool *p = pool_of(2, NULL);
    int calls = 0;
    long out[5];
    mproc_result *r =
        map_with(p, 5, 2, DO_SEGV, out,
                 &(mproc_call_opts){.on_error = cb_fails, .cb_arg = &calls});
    ck_assert_int_eq(calls, 1);
    mproc_result_free(r);
    nest n = {.p = p};
    r = map_with(p, 5, 99, DO_SQUARE, out,
                 &(mproc_call_opts){.on_success = cb_resubmit, .cb_arg = &n});
    ASSERT_OK(n.submit_rc);
    ck_assert_ptr_nonnull(n.inner);
    ASSERT_ERR(mproc_result_get(n.inner, test_ms(10000)), MPROC_ECRASHED);
    ck_assert_int_eq(n.inner_done, 1);
    mproc_result_free(n.inner);
    mproc_result_free(r);
    mproc_pool_destroy(p);
}

/* 20: Ctrl-C to the program's process group during a map. The workers are
 * in the fork server's own group, so the signal reaches the program only;
 * the program dies of it and its workers follow within a second. */
TEST(fault_sigint_group) {
    int pp[2];
    ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
    make_ready_pipe();
    pid_t app = fork();
    ck_assert_int_ge(app, 0);
    if (app == 0) {
        setpgid(0, 0);
        signal(SIGINT, SIG_DFL);
        mproc_pool *p = pool_of(2, NULL);
        job jobs[4];
        for (int i = 0; i < 4; i++)
            jobs[i] = (job){DO_HANG, 0};
        long out[4];
        mproc_result *r;
        mproc_pool_map_array(p, job_fn, jobs, 4, sizeof *jobs, out, sizeof *out,
                             &(mproc_call_opts){.chunksize = 1}, &r);
        _exit(3); /* not reached: SIGINT ends the program mid-map */
    }
    setpgid(app, app);
    close(pp[1]);
    pid_t w[2] = {wait_ready(), wait_ready()};
    ck_assert_int_eq(kill(-app, SIGINT), 0);
    int status;
    ck_assert_int_eq(waitpid(app, &status, 0), app);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT);
    for (int i = 0; i < 2; i++)
        ck_assert(test_wait_gone(w[i], 1000));
    while (waitpid(-1, NULL, 0) > 0)
        ;
    close(pp[0]);
    close_ready_pipe();
}

/* 21: terminate while 10 000 long tasks run or wait, even with SIGTERM
 * blocked in the tasks; twice; then join. */
TEST(fault_terminate) {
    make_ready_pipe();
    mproc_pool *p = pool_of(2, &(mproc_pool_opts){.terminate_grace_ms = 100});
    enum { N = 10000 };
    job *jobs = calloc(N, sizeof *jobs);
    long *out = calloc(N, sizeof *out);
    for (int i = 0; i < N; i++)
        jobs[i] = (job){DO_HANG_NOTERM, 0};
    mproc_result *r;
    ASSERT_OK(mproc_pool_map_array_async(
        p, job_fn, jobs, N, sizeof *jobs, out, sizeof *out,
        &(mproc_call_opts){.chunksize = 1}, &r));
    wait_ready();
    wait_ready();
    uint64_t t0 = test_now_ms();
    ASSERT_OK(mproc_pool_terminate(p));
    ck_assert_uint_lt(test_now_ms() - t0, 100 + (uint64_t)test_ms(1000));
    ASSERT_OK(mproc_pool_terminate(p));
    ASSERT_OK(mproc_pool_join(p, 0));
    ASSERT_ERR(mproc_result_get(r, 0), MPROC_ECANCELLED);
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(mproc_result_status(r, i), MPROC_ECANCELLED);
    mproc_result_free(r);
    mproc_pool_destroy(p);
    free(jobs);
    free(out);
    close_ready_pipe();
}

/* 22: a worker dies during close + join: shutdown still completes and every
 * item has its outcome. */
TEST(fault_kill_during_close) {
    mproc_pool *p = pool_of(2, NULL);
    enum { N = 40 };
    job jobs[N];
    long out[N];
    for (int i = 0; i < N; i++)
        jobs[i] = (job){i % 10 == 9 ? DO_KILL_SELF : DO_SQUARE, i};
    mproc_result *r;
    ASSERT_OK(mproc_pool_map_array_async(
        p, job_fn, jobs, N, sizeof *jobs, out, sizeof *out,
        &(mproc_call_opts){.chunksize = 1}, &r));
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, test_ms(20000)));
    ck_assert(mproc_result_ready(r));
    for (int i = 0; i < N; i++) {
        int st = mproc_result_status(r, (size_t)i);
        if (i % 10 == 9) {
            ck_assert_int_eq(st, MPROC_ECRASHED);
        } else {
            ck_assert_int_eq(st, 0);
            ck_assert_int_eq(out[i], (long)i * i);
        }
    }
    mproc_result_free(r);
    mproc_pool_destroy(p);
}

/* 23: a multi-threaded caller whose threads hold locks and malloc in a
 * loop: workers come from the fork server, so nothing deadlocks. */
static pthread_mutex_t user_locks[4] = {
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};
static atomic_int stop_threads;

static void *busy_thread(void *arg) {
    pthread_mutex_t *m = arg;
    while (!atomic_load(&stop_threads)) {
        pthread_mutex_lock(m);
        free(malloc(1000));
        pthread_mutex_unlock(m);
    }
    return NULL;
}

static int locking_fn(mproc_task *t, const void *in, void *out) {
    (void)t;
    /* A copy of a user lock: must not be held in a worker. */
    pthread_mutex_t *m = &user_locks[*(const long *)in % 4];
    if (pthread_mutex_trylock(m) != 0)
        return mproc_task_fail(t, "user lock inherited locked");
    pthread_mutex_unlock(m);
    free(malloc(100));
    *(long *)out = *(const long *)in + 1;
    return 0;
}

TEST(fault_threads_fork) {
    ASSERT_OK(mproc_init());
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(
            pthread_create(&th[i], NULL, busy_thread, &user_locks[i]), 0);
    mproc_pool *p = pool_of(2, &(mproc_pool_opts){.max_tasks_per_child = 3});
    for (int round = 0; round < 200; round++) {
        long in[8], out[8];
        for (int i = 0; i < 8; i++)
            in[i] = i + round;
        mproc_result *r;
        ASSERT_OK(mproc_pool_map_array(p, locking_fn, in, 8, sizeof *in, out,
                                       sizeof *out,
                                       &(mproc_call_opts){.chunksize = 2}, &r));
        for (int i = 0; i < 8; i++)
            ck_assert_int_eq(out[i], in[i] + 1);
        mproc_result_free(r);
    }
    atomic_store(&stop_threads, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    mproc_pool_destroy(p);
}
