/* SPDX-License-Identifier: MIT */
/*
 * mproc_bench: the library's side of the benchmark suite (issue
 * "Performance: a benchmark suite beside the peers"). The Python peers and
 * pi_omp measure the same things; bench/run.py puts them side by side.
 *
 *   mproc_bench [--quick] [--reps R] [--workers N] [--pi-steps S] [BENCH...]
 *   mproc_bench --list
 *
 * Each sample is one JSON line on stdout (see bench_util.h); a summary of
 * medians goes to stderr at the end. Every benchmark checks what it
 * computed: a wrong answer or a failed mproc call stops the program with a
 * message and exit status 1.
 *
 * This file: the command line, the table of benchmarks, and the warm pool
 * that most of them start from. The benchmarks live in bench_pool.c (pool
 * calls, pi, large arrays), bench_idle.c (an idle pool's memory and CPU)
 * and bench_ipc.c (Queue and Lock between processes).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static const struct {
    const char *name;
    void (*run)(const struct bench_cfg *cfg);
} benches[] = {
    {"apply_rtt", bench_apply_rtt},
    {"map_default", bench_map_default},
    {"map_chunk1", bench_map_chunk1},
    {"imap", bench_imap},
    {"imap_unordered", bench_imap_unordered},
    {"pi", bench_pi},
    {"pool_start", bench_pool_start},
    {"idle_mem", bench_idle_mem},
    {"idle_cpu", bench_idle_cpu},
    {"large_map", bench_large_map},
    {"memcpy", bench_memcpy},
    {"queue_small", bench_queue_small},
    {"lock_handoff", bench_lock_handoff},
};
enum { NBENCH = sizeof benches / sizeof benches[0] };

/* ---- the warm pool ----------------------------------------------------- */

/* Sleeps the given number of milliseconds and returns the worker's pid, so
 * that the caller can see which workers have run a task. */
static int warm_task(mproc_task *t, const void *in, void *out) {
    (void)t;
    int32_t ms;
    memcpy(&ms, in, sizeof ms);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    int32_t pid = (int32_t)getpid();
    memcpy(out, &pid, sizeof pid);
    return 0;
}

static int count_distinct(const int32_t *v, int n) {
    int distinct = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = v[j] == v[i];
        distinct += !seen;
    }
    return distinct;
}

/* n tasks, one per message, each long enough that a worker that has one
 * cannot take a second before every other worker has had its own. A worker
 * still starting up may miss its turn; then try again with longer tasks. */
static void pool_warm(mproc_pool *p, int n) {
    int32_t *ms = malloc((size_t)n * sizeof *ms);
    int32_t *pids = malloc((size_t)n * sizeof *pids);
    if (!ms || !pids)
        bench_die("out of memory");
    for (int attempt = 1;; attempt++) {
        for (int i = 0; i < n; i++)
            ms[i] = 5 * attempt;
        mproc_result *r;
        CHECK(mproc_pool_map_array(p, warm_task, ms, (size_t)n, sizeof *ms,
                                   pids, sizeof *pids,
                                   &(mproc_call_opts){.chunksize = 1}, &r));
        mproc_result_free(r);
        if (count_distinct(pids, n) == n)
            break;
        if (attempt == 10)
            bench_die("warm-up: %d workers, only %d ran a task", n,
                      count_distinct(pids, n));
    }
    free(ms);
    free(pids);
}

mproc_pool *bench_pool_new(int nworkers) {
    mproc_pool *p;
    CHECK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = nworkers}));
    pool_warm(p, nworkers);
    return p;
}

void bench_pool_free(mproc_pool *p) {
    CHECK(mproc_pool_close(p));
    CHECK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}

/* ---- command line ------------------------------------------------------ */

static void usage(FILE *f) {
    fprintf(f, "usage: mproc_bench [--quick] [--reps R] [--workers N] "
               "[--pi-steps S] [BENCH...]\n"
               "       mproc_bench --list\n"
               "  --quick       tiny sizes, one sample each (proves that "
               "everything runs)\n"
               "  --reps R      samples per figure (default 5)\n"
               "  --workers N   pool size (default: usable CPUs); pi runs "
               "1..N\n"
               "  --pi-steps S  steps of the pi integral (default 1e8)\n"
               "No BENCH runs them all; --list names them.\n");
}

static const char *opt_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        usage(stderr);
        exit(2);
    }
    return argv[++*i];
}

int main(int argc, char **argv) {
    /* The fork server first, while this program is small and has no
     * threads: every worker is a copy of it as it is now. */
    CHECK(mproc_init());

    struct bench_cfg cfg = {.reps = 0, .pi_steps = 0};
    int explicit_reps = 0;
    char selected[NBENCH] = {0};
    int nselected = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--list")) {
            for (int b = 0; b < NBENCH; b++)
                puts(benches[b].name);
            mproc_shutdown();
            return 0;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            mproc_shutdown();
            return 0;
        } else if (!strcmp(a, "--quick")) {
            cfg.quick = 1;
        } else if (!strcmp(a, "--reps")) {
            long r = bench_parse_count(opt_value(argc, argv, &i), 1000);
            if (r < 0)
                bench_die("--reps wants a count from 1 to 1000");
            cfg.reps = (int)r;
            explicit_reps = 1;
        } else if (!strcmp(a, "--workers")) {
            long w = bench_parse_count(opt_value(argc, argv, &i), 4096);
            if (w < 0)
                bench_die("--workers wants a count from 1 to 4096");
            cfg.workers = (int)w;
        } else if (!strcmp(a, "--pi-steps")) {
            long s = bench_parse_count(opt_value(argc, argv, &i), 1L << 50);
            if (s < 1000)
                bench_die("--pi-steps wants a count from 1000 to 2^50");
            cfg.pi_steps = s;
        } else if (a[0] == '-') {
            usage(stderr);
            return 2;
        } else {
            int b = 0;
            while (b < NBENCH && strcmp(benches[b].name, a))
                b++;
            if (b == NBENCH)
                bench_die("no benchmark named %s (see --list)", a);
            nselected += !selected[b];
            selected[b] = 1;
        }
    }
    if (!explicit_reps)
        cfg.reps = cfg.quick ? 1 : 5;
    if (!cfg.workers)
        cfg.workers = mproc_cpu_count_available();
    /* 1e8 steps, not the seed's 1e7 (~10 ms serial, too short to time
     * well) nor pi_demo's 1e9 (which alone would take most of the suite's
     * ten minutes): ~0.1 s serial here. */
    if (!cfg.pi_steps)
        cfg.pi_steps = cfg.quick ? 1000000 : 100000000;
    cfg.batch_s = cfg.quick ? 0.0 : 0.3;

    fprintf(stderr, "mproc_bench: mproc %s, %d workers, %d reps%s\n",
            mproc_version_string(), cfg.workers, cfg.reps,
            cfg.quick ? ", quick" : "");
    double t0 = bench_now();
    for (int b = 0; b < NBENCH; b++) {
        if (nselected && !selected[b])
            continue;
        double tb = bench_now();
        benches[b].run(&cfg);
        fprintf(stderr, "%s (%.1f s):\n", benches[b].name, bench_now() - tb);
        bench_summary();
    }
    fprintf(stderr, "mproc_bench: done in %.1f s\n", bench_now() - t0);
    mproc_shutdown();
    return 0;
}
