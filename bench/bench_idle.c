/* SPDX-License-Identifier: MIT */
/*
 * What an idle pool costs: memory per worker (idle_mem) and CPU time while
 * nothing is asked of it (idle_cpu), both read from /proc (Linux only).
 *
 * "Idle" means warm: every worker has run a task (bench_pool_new), then the
 * pool sits with no work. The figures cover every process and thread the
 * pool keeps alive on its behalf: the workers, the fork server they come
 * from, and the pool's result thread in this process.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

/* ---- reading /proc ----------------------------------------------------- */

/* USS (Private_Clean + Private_Dirty) and PSS of a process in KiB, from
 * /proc/PID/smaps_rollup. */
static void read_mem(pid_t pid, long *uss_kib, long *pss_kib) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        bench_die("cannot read %s", path);
    long clean = -1, dirty = -1, pss = -1;
    while (fgets(line, sizeof line, f)) {
        char key[32];
        long kib;
        if (sscanf(line, "%31[^:]: %ld kB", key, &kib) != 2)
            continue;
        if (!strcmp(key, "Private_Clean"))
            clean = kib;
        else if (!strcmp(key, "Private_Dirty"))
            dirty = kib;
        else if (!strcmp(key, "Pss"))
            pss = kib;
    }
    fclose(f);
    if (clean < 0 || dirty < 0 || pss < 0)
        bench_die("%s: no Private_Clean, Private_Dirty or Pss line", path);
    *uss_kib = clean + dirty;
    *pss_kib = pss;
}

/* Read a small /proc file whole. 0, or -1 if it cannot be read. */
static int read_small(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n ? 0 : -1;
}

/* From DIR/stat (DIR = /proc/PID or /proc/PID/task/TID): utime + stime in
 * clock ticks, and the parent pid. The fields are counted after the last
 * ')', since the command name in parentheses may hold spaces. */
static void read_stat(const char *dir, unsigned long long *ticks, pid_t *ppid) {
    char path[96], buf[1024];
    snprintf(path, sizeof path, "%s/stat", dir);
    const char *p =
        read_small(path, buf, sizeof buf) ? NULL : strrchr(buf, ')');
    int pp;
    unsigned long long ut, st;
    /* field 3 state, 4 ppid, 5..13 skipped, 14 utime, 15 stime */
    if (!p ||
        sscanf(p + 1, " %*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &pp, &ut, &st) != 3)
        bench_die("cannot parse %s", path);
    *ticks = ut + st;
    if (ppid)
        *ppid = (pid_t)pp;
}

/* From DIR/schedstat: nanoseconds on a CPU and the number of times it was
 * scheduled in (each wake-up counts one). Finer than stat's ticks, so it is
 * printed on stderr beside the figure; 0 0 where the kernel has none. */
static void read_schedstat(const char *dir, unsigned long long *ns,
                           unsigned long long *slices) {
    char path[96], buf[256];
    snprintf(path, sizeof path, "%s/schedstat", dir);
    *ns = *slices = 0;
    if (!read_small(path, buf, sizeof buf) &&
        sscanf(buf, "%llu %*u %llu", ns, slices) != 2)
        *ns = *slices = 0;
}

/* ---- idle_mem ---------------------------------------------------------- */

/* Per idle worker, averaged over the pool's workers: USS (param "", the
 * memory that worker alone holds, i.e. what it adds) and PSS (param "pss",
 * its share of what it holds with others). A fresh pool per sample. */
void bench_idle_mem(const struct bench_cfg *cfg) {
    int n = cfg->workers;
    pid_t *pids = malloc((size_t)n * sizeof *pids);
    if (!pids)
        bench_die("out of memory");
    for (int rep = 0; rep < cfg->reps; rep++) {
        mproc_pool *p = bench_pool_new(n);
        bench_sleep(0.05); /* let the last results land */
        if (mproc_pool_worker_pids(p, pids, n) != n)
            bench_die("idle_mem: fewer than %d live workers", n);
        long uss_sum = 0, pss_sum = 0;
        for (int i = 0; i < n; i++) {
            long uss, pss;
            read_mem(pids[i], &uss, &pss);
            uss_sum += uss;
            pss_sum += pss;
        }
        if (rep == 0) {
            pid_t server;
            unsigned long long ticks;
            long uss, pss;
            char dir[32];
            snprintf(dir, sizeof dir, "/proc/%d", (int)pids[0]);
            read_stat(dir, &ticks, &server);
            read_mem(server, &uss, &pss);
            fprintf(stderr,
                    "idle_mem: fork server (pid %d): USS %ld KiB, PSS %ld "
                    "KiB; this program: ",
                    (int)server, uss, pss);
            read_mem(getpid(), &uss, &pss);
            fprintf(stderr, "USS %ld KiB, PSS %ld KiB\n", uss, pss);
        }
        bench_emit("idle_mem", "mproc", "", "KiB", BENCH_LOWER,
                   (double)uss_sum / n);
        bench_emit("idle_mem", "mproc", "pss", "KiB", BENCH_LOWER,
                   (double)pss_sum / n);
        bench_pool_free(p);
    }
    free(pids);
}

/* ---- idle_cpu ---------------------------------------------------------- */

/* The /proc directories of what an idle pool keeps running: its workers,
 * their parent the fork server, and every thread of this process but the
 * main one (the benchmark runs one pool at a time, so those are the pool's
 * result thread). */
struct idle_set {
    int n;
    char (*dirs)[48];
};

static void idle_set_init(struct idle_set *s, mproc_pool *p, int nworkers) {
    pid_t *pids = malloc((size_t)nworkers * sizeof *pids);
    s->dirs = malloc(((size_t)nworkers + 17) * sizeof *s->dirs);
    if (!pids || !s->dirs)
        bench_die("out of memory");
    if (mproc_pool_worker_pids(p, pids, nworkers) != nworkers)
        bench_die("idle_cpu: fewer than %d live workers", nworkers);
    s->n = 0;
    pid_t server = 0;
    for (int i = 0; i < nworkers; i++) {
        snprintf(s->dirs[s->n++], sizeof *s->dirs, "/proc/%d", (int)pids[i]);
        unsigned long long ticks;
        read_stat(s->dirs[s->n - 1], &ticks, &server);
    }
    snprintf(s->dirs[s->n++], sizeof *s->dirs, "/proc/%d", (int)server);
    DIR *d = opendir("/proc/self/task");
    if (!d)
        bench_die("cannot list /proc/self/task");
    struct dirent *e;
    int threads = 0;
    while ((e = readdir(d))) {
        int tid = atoi(e->d_name);
        if (tid <= 0 || tid == (int)getpid())
            continue;
        if (++threads > 16)
            bench_die("idle_cpu: more threads than one pool has");
        snprintf(s->dirs[s->n++], sizeof *s->dirs, "/proc/%d/task/%d",
                 (int)getpid(), tid);
    }
    closedir(d);
    free(pids);
}

static void idle_set_read(const struct idle_set *s, unsigned long long *ticks,
                          unsigned long long *ns, unsigned long long *slices) {
    *ticks = *ns = *slices = 0;
    for (int i = 0; i < s->n; i++) {
        unsigned long long t, a, b;
        read_stat(s->dirs[i], &t, NULL);
        read_schedstat(s->dirs[i], &a, &b);
        *ticks += t;
        *ns += a;
        *slices += b;
    }
}

/* CPU seconds (utime + stime, all of the set) used by a warm pool of
 * cfg->workers that is given nothing to do for 5 s (0.5 s with --quick).
 * The target is zero: nothing should wake up. */
void bench_idle_cpu(const struct bench_cfg *cfg) {
    double window = cfg->quick ? 0.5 : 5.0;
    double tick = 1.0 / (double)sysconf(_SC_CLK_TCK);
    mproc_pool *p = bench_pool_new(cfg->workers);
    bench_sleep(0.1); /* let the warm-up's last messages settle */
    struct idle_set s;
    idle_set_init(&s, p, cfg->workers);
    for (int rep = 0; rep < cfg->reps; rep++) {
        unsigned long long t0, ns0, sl0, t1, ns1, sl1;
        idle_set_read(&s, &t0, &ns0, &sl0);
        bench_sleep(window);
        idle_set_read(&s, &t1, &ns1, &sl1);
        fprintf(stderr,
                "idle_cpu: %d processes and threads over %.1f s: %.3f ms "
                "on CPU, %llu times scheduled in (schedstat)\n",
                s.n, window, (double)(ns1 - ns0) / 1e6, sl1 - sl0);
        bench_emit("idle_cpu", "mproc", "", "cpu_s", BENCH_LOWER,
                   (double)(t1 - t0) * tick);
    }
    free(s.dirs);
    bench_pool_free(p);
}
