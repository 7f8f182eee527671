/* SPDX-License-Identifier: MIT */
/*
 * The small helpers: the usable CPU count (affinity, cgroup quota parsed
 * from fake trees in a temporary directory, the MPROC_CPU_COUNT override),
 * the logger (off by default, levels, the exact line format, MPROC_LOG,
 * truncation) and the progress reporter (line format, throttling).
 *
 * The logger reads MPROC_LOG once per process. Every test runs in a fresh
 * forked process, so each test sets the environment before its first log
 * call; tests that need several first uses fork a child for each.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/helpers.h"
#include "harness.h"

/* ---- fake cgroup trees ----------------------------------------------------
 */

/* A temporary directory holding "self" (a /proc/self/cgroup) and "fs" (the
 * cgroup mount root). */
typedef struct fake_tree {
    char dir[PATH_MAX / 2];
    char self[PATH_MAX];
    char fs[PATH_MAX];
} fake_tree;

static void fake_init(fake_tree *t) {
    const char *tmp = getenv("TMPDIR");
    snprintf(t->dir, sizeof t->dir, "%s/mproc-helpers-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(t->dir));
    snprintf(t->self, sizeof t->self, "%s/self", t->dir);
    snprintf(t->fs, sizeof t->fs, "%s/fs", t->dir);
    ck_assert_int_eq(mkdir(t->fs, 0700), 0);
}

/* Write content to dir/rel, creating the directories on the way. */
static void put(const char *dir, const char *rel, const char *content) {
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", dir, rel);
    ck_assert_int_lt(n, (int)sizeof path);
    for (char *s = path + strlen(dir) + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        ck_assert_msg(mkdir(path, 0700) == 0 || errno == EEXIST, "mkdir %s",
                      path);
        *s = '/';
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    size_t len = strlen(content);
    ck_assert_int_eq(write(fd, content, len), (ssize_t)len);
    close(fd);
}

static void put_self(fake_tree *t, const char *content) {
    put(t->dir, "self", content);
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw) {
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void fake_destroy(fake_tree *t) {
    ck_assert_int_eq(nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static int quota(fake_tree *t) {
    return mproc__cpu_quota_from(t->self, t->fs);
}

/* ---- CPU counts ------------------------------------------------------------
 */

TEST(cpu_count_sane) {
    unsetenv("MPROC_CPU_COUNT");
    int online = mproc_cpu_count();
    int avail = mproc_cpu_count_available();
    ck_assert_int_ge(online, 1);
    ck_assert_int_ge(avail, 1);
    ck_assert_int_le(avail, online);
    ck_assert_int_eq(mproc_cpu_count_available(), avail);
}

TEST(cpu_count_env_override) {
    unsetenv("MPROC_CPU_COUNT");
    int base = mproc_cpu_count_available();
    setenv("MPROC_CPU_COUNT", "3", 1);
    ck_assert_int_eq(mproc_cpu_count_available(), 3);
    /* An override is an override, even above the machine's size. */
    setenv("MPROC_CPU_COUNT", "1000", 1);
    ck_assert_int_eq(mproc_cpu_count_available(), 1000);
    const char *bad[] = {"0",  "abc", "-3",  "",           "4x",
                         "2 ", "0x4", "1.5", "99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("MPROC_CPU_COUNT", bad[i], 1);
        ck_assert_msg(mproc_cpu_count_available() == base,
                      "MPROC_CPU_COUNT=\"%s\" was not ignored", bad[i]);
    }
}

TEST(cpu_count_affinity_one) {
    unsetenv("MPROC_CPU_COUNT");
    /* The CPU we run on is certainly in our mask; keep only it. This test
     * runs in its own process, so the restriction dies with it. */
    int cpu = sched_getcpu();
    ck_assert_int_ge(cpu, 0);
    cpu_set_t *set = CPU_ALLOC(cpu + 1);
    ck_assert_ptr_nonnull(set);
    size_t size = CPU_ALLOC_SIZE(cpu + 1);
    CPU_ZERO_S(size, set);
    CPU_SET_S(cpu, size, set);
    ck_assert_int_eq(sched_setaffinity(0, size, set), 0);
    CPU_FREE(set);
    ck_assert_int_eq(mproc_cpu_count_available(), 1);
    /* The override still wins over the mask. */
    setenv("MPROC_CPU_COUNT", "4", 1);
    ck_assert_int_eq(mproc_cpu_count_available(), 4);
}

TEST(cpu_quota_v2) {
    fake_tree t;
    fake_init(&t);
    put_self(&t, "0::/a/b\n");
    ck_assert_int_eq(quota(&t), 0); /* no cpu.max anywhere */
    put(t.fs, "a/b/cpu.max", "max 100000\n");
    ck_assert_int_eq(quota(&t), 0);
    put(t.fs, "a/b/cpu.max", "150000 100000\n");
    ck_assert_int_eq(quota(&t), 2);
    put(t.fs, "a/b/cpu.max", "50000 100000\n");
    ck_assert_int_eq(quota(&t), 1);
    put(t.fs, "a/b/cpu.max", "200000 100000\n");
    ck_assert_int_eq(quota(&t), 2);

    /* Ancestors limit too: the smallest quota on the path wins. */
    put(t.fs, "a/cpu.max", "300000 100000\n");
    put(t.fs, "a/b/cpu.max", "max 100000\n");
    ck_assert_int_eq(quota(&t), 3);
    put(t.fs, "a/b/cpu.max", "500000 100000\n");
    ck_assert_int_eq(quota(&t), 3);
    put(t.fs, "a/b/cpu.max", "250000 100000\n");
    ck_assert_int_eq(quota(&t), 3);
    put(t.fs, "a/b/cpu.max", "100000 100000\n");
    ck_assert_int_eq(quota(&t), 1);
    put(t.fs, "a/b/cpu.max", "max 100000\n");
    put(t.fs, "cpu.max", "200000 100000\n"); /* at the mount root */
    ck_assert_int_eq(quota(&t), 2);

    /* A trailing slash changes nothing. */
    put_self(&t, "0::/a/b/\n");
    ck_assert_int_eq(quota(&t), 2);
    /* A path the mount does not show (a container without its own cgroup
     * namespace): the mount root is what applies. */
    put(t.fs, "cpu.max", "400000 100000\n");
    put_self(&t, "0::/docker/0123abcd\n");
    ck_assert_int_eq(quota(&t), 4);
    put_self(&t, "0::/\n");
    ck_assert_int_eq(quota(&t), 4);
    fake_destroy(&t);
}

TEST(cpu_quota_v1) {
    fake_tree t;
    fake_init(&t);
    put_self(&t, "5:memory:/grp\n4:cpuset:/grp\n3:cpu,cpuacct:/grp\n");
    put(t.fs, "cpu,cpuacct/grp/cpu.cfs_quota_us", "-1\n");
    put(t.fs, "cpu,cpuacct/grp/cpu.cfs_period_us", "100000\n");
    ck_assert_int_eq(quota(&t), 0);
    put(t.fs, "cpu,cpuacct/grp/cpu.cfs_quota_us", "250000\n");
    ck_assert_int_eq(quota(&t), 3);
    put(t.fs, "cpu,cpuacct/grp/cpu.cfs_period_us", "50000\n");
    ck_assert_int_eq(quota(&t), 5);
    /* A parent's smaller quota applies. */
    put(t.fs, "cpu,cpuacct/cpu.cfs_quota_us", "100000\n");
    put(t.fs, "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    ck_assert_int_eq(quota(&t), 1);
    /* Not shown under the mount: the mount root applies. */
    put_self(&t, "3:cpu,cpuacct:/elsewhere\n");
    ck_assert_int_eq(quota(&t), 1);
    /* cpuset and cpuacct alone are not the cpu controller. */
    put_self(&t, "4:cpuset:/grp\n2:cpuacct:/grp\n");
    ck_assert_int_eq(quota(&t), 0);
    fake_destroy(&t);

    /* cpu mounted on its own, beside a separate cpuacct. */
    fake_init(&t);
    put_self(&t, "2:cpuacct:/\n1:cpu:/x/y\n0::/\n");
    put(t.fs, "cpu/x/y/cpu.cfs_quota_us", "150000\n");
    put(t.fs, "cpu/x/y/cpu.cfs_period_us", "100000\n");
    put(t.fs, "cpuacct/cpu.cfs_quota_us", "100000\n"); /* not cpu's */
    put(t.fs, "cpuacct/cpu.cfs_period_us", "100000\n");
    ck_assert_int_eq(quota(&t), 2);
    /* Hybrid: a v2 quota too; the smaller one wins. */
    put(t.fs, "cpu.max", "100000 100000\n");
    ck_assert_int_eq(quota(&t), 1);
    fake_destroy(&t);
}

TEST(cpu_quota_malformed) {
    fake_tree t;
    fake_init(&t);
    /* No /proc/self/cgroup at all. */
    ck_assert_int_eq(quota(&t), 0);
    ck_assert_int_eq(mproc__cpu_quota_from("/nonexistent/x", t.fs), 0);

    put_self(&t, "0::/a\n");
    const char *bad_max[] = {"",           "garbage\n",     "100000\n",
                             "0 100000\n", "-5 100000\n",   "150000 0\n",
                             "150000 abc", "max\n",         "\n\n",
                             "1e5 1e5\n",  "150000 -100000"};
    for (size_t i = 0; i < sizeof bad_max / sizeof bad_max[0]; i++) {
        put(t.fs, "a/cpu.max", bad_max[i]);
        ck_assert_msg(quota(&t) == 0, "cpu.max \"%s\" was not ignored",
                      bad_max[i]);
    }
    /* A quota far beyond any machine is capped, not overflowed. */
    put(t.fs, "a/cpu.max", "9223372036854775807 1\n");
    ck_assert_int_eq(quota(&t), INT_MAX);

    put_self(&t, "3:cpu:/g\n");
    put(t.fs, "cpu/g/cpu.cfs_quota_us", "abc\n");
    put(t.fs, "cpu/g/cpu.cfs_period_us", "100000\n");
    ck_assert_int_eq(quota(&t), 0);
    put(t.fs, "cpu/g/cpu.cfs_quota_us", "200000\n");
    put(t.fs, "cpu/g/cpu.cfs_period_us", "0\n");
    ck_assert_int_eq(quota(&t), 0);
    put(t.fs, "cpu/g/cpu.cfs_period_us", "");
    ck_assert_int_eq(quota(&t), 0);

    /* Lines that are not "ID:CONTROLLERS:PATH", and paths we cannot use. */
    const char *bad_self[] = {
        "",      "nonsense\n",    "::\n",        "0:\n",
        "0::\n", "0::relative\n", "0::/../..\n", ":::::\n"};
    put(t.fs, "cpu.max", "max 100000\n");
    for (size_t i = 0; i < sizeof bad_self / sizeof bad_self[0]; i++) {
        put_self(&t, bad_self[i]);
        ck_assert_msg(quota(&t) == 0, "self \"%s\"", bad_self[i]);
    }
    /* A path longer than PATH_MAX. */
    static char longpath[PATH_MAX + 64];
    memcpy(longpath, "0::/", 4);
    memset(longpath + 4, 'a', sizeof longpath - 6);
    longpath[sizeof longpath - 2] = '\n';
    put_self(&t, longpath);
    ck_assert_int_eq(quota(&t), 0);
    fake_destroy(&t);
}

/* ---- logging ---------------------------------------------------------------
 */

/* Capture what the logger writes: start() points it at a pipe, finish()
 * returns everything written since, NUL-terminated. */
static int cap_fds[2];

static void capture_start(void) {
    ck_assert_int_eq(pipe2(cap_fds, O_CLOEXEC), 0);
    mproc__log_set_fd(cap_fds[1]);
}

static size_t capture_finish(char *buf, size_t cap) {
    mproc__log_set_fd(2);
    close(cap_fds[1]);
    size_t got = 0;
    for (;;) {
        ssize_t n = read(cap_fds[0], buf + got, cap - 1 - got);
        ck_assert_int_ge(n, 0);
        if (n == 0)
            break;
        got += (size_t)n;
        ck_assert_uint_lt(got, cap - 1);
    }
    close(cap_fds[0]);
    buf[got] = '\0';
    return got;
}

TEST(log_off_by_default) {
    unsetenv("MPROC_LOG");
    ck_assert_int_eq(mproc_log_get_level(), MPROC_LOG_OFF);
    char out[256];
    capture_start();
    mproc_log(MPROC_LOG_ERROR, "must not appear");
    mproc_log(MPROC_LOG_DEBUG, "must not appear");
    ck_assert_uint_eq(capture_finish(out, sizeof out), 0);
}

TEST(log_format) {
    mproc_log_set_level(MPROC_LOG_INFO);
    char out[512], want[512];
    capture_start();
    errno = EAGAIN;
    mproc_log(MPROC_LOG_INFO, "hello %d", 42);
    ck_assert_int_eq(errno, EAGAIN); /* logging leaves errno alone */
    /* The caller's own newline is not doubled. */
    mproc_log(MPROC_LOG_ERROR, "bye\n");
    capture_finish(out, sizeof out);
    int pid = (int)getpid();
    snprintf(want, sizeof want,
             "[INFO/MainProcess %d] hello 42\n[ERROR/MainProcess %d] bye\n",
             pid, pid);
    ck_assert_str_eq(out, want);
}

TEST(log_level_filter) {
    unsetenv("MPROC_LOG");
    mproc_log_set_level(MPROC_LOG_WARNING);
    ck_assert_int_eq(mproc_log_get_level(), MPROC_LOG_WARNING);
    char out[512], want[512];
    capture_start();
    mproc_log(MPROC_LOG_DEBUG, "d");
    mproc_log(MPROC_LOG_INFO, "i");
    mproc_log(MPROC_LOG_WARNING, "w");
    mproc_log(MPROC_LOG_ERROR, "e");
    mproc_log(MPROC_LOG_OFF, "never");
    mproc_log(-1, "never");
    capture_finish(out, sizeof out);
    int pid = (int)getpid();
    snprintf(want, sizeof want,
             "[WARNING/MainProcess %d] w\n[ERROR/MainProcess %d] e\n", pid,
             pid);
    ck_assert_str_eq(out, want);

    /* Out-of-range levels are clamped. */
    mproc_log_set_level(99);
    ck_assert_int_eq(mproc_log_get_level(), MPROC_LOG_DEBUG);
    mproc_log_set_level(-4);
    ck_assert_int_eq(mproc_log_get_level(), MPROC_LOG_OFF);
}

/* In a fresh child: set MPROC_LOG (NULL: unset), optionally set a level
 * first, and return the level the logger then reports. */
static int level_in_child(const char *env, int set_first) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (env)
            setenv("MPROC_LOG", env, 1);
        else
            unsetenv("MPROC_LOG");
        if (set_first >= 0)
            mproc_log_set_level(set_first);
        _exit(mproc_log_get_level());
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

TEST(log_env_level) {
    static const struct {
        const char *env;
        int level;
    } cases[] = {
        {"debug", MPROC_LOG_DEBUG},  {"DEBUG", MPROC_LOG_DEBUG},
        {"Info", MPROC_LOG_INFO},    {"warning", MPROC_LOG_WARNING},
        {"warn", MPROC_LOG_WARNING}, {"ERROR", MPROC_LOG_ERROR},
        {"0", MPROC_LOG_OFF},        {"1", MPROC_LOG_ERROR},
        {"4", MPROC_LOG_DEBUG},      {"5", MPROC_LOG_OFF},
        {"bogus", MPROC_LOG_OFF},    {"", MPROC_LOG_OFF},
        {NULL, MPROC_LOG_OFF},       {"off", MPROC_LOG_OFF},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(level_in_child(cases[i].env, -1) == cases[i].level,
                      "MPROC_LOG=%s", cases[i].env ? cases[i].env : "(unset)");
    /* mproc_log_set_level() before first use beats the environment. */
    ck_assert_int_eq(level_in_child("debug", MPROC_LOG_ERROR), MPROC_LOG_ERROR);

    /* Here, in the test process itself: the environment is read at first
     * use, and a later mproc_log_set_level() overrides it. */
    setenv("MPROC_LOG", "debug", 1);
    ck_assert_int_eq(mproc_log_get_level(), MPROC_LOG_DEBUG);
    char out[256], want[256];
    capture_start();
    mproc_log(MPROC_LOG_DEBUG, "x=%s", "y");
    capture_finish(out, sizeof out);
    snprintf(want, sizeof want, "[DEBUG/MainProcess %d] x=y\n", (int)getpid());
    ck_assert_str_eq(out, want);
    mproc_log_set_level(MPROC_LOG_ERROR);
    ck_assert_int_eq(mproc_log_get_level(), MPROC_LOG_ERROR);
}

TEST(log_truncates_long) {
    mproc_log_set_level(MPROC_LOG_DEBUG);
    static char msg[3 * PIPE_BUF];
    memset(msg, 'x', sizeof msg - 1);
    static char out[4 * PIPE_BUF];
    capture_start();
    mproc_log(MPROC_LOG_DEBUG, "%s", msg);
    size_t n = capture_finish(out, sizeof out);
    ck_assert_uint_le(n, PIPE_BUF);
    ck_assert_uint_gt(n, PIPE_BUF / 2);
    ck_assert_int_eq(strncmp(out, "[DEBUG/MainProcess ", 19), 0);
    ck_assert_ptr_eq(strchr(out, '\n'), out + n - 1);
    ck_assert_int_eq(memcmp(out + n - 4, "...\n", 4), 0);
}

/* ---- progress --------------------------------------------------------------
 */

static void check_format(const char *label, size_t done, size_t total,
                         double elapsed, const char *want) {
    char buf[256];
    size_t n =
        mproc__progress_format(buf, sizeof buf, label, done, total, elapsed);
    ck_assert_str_eq(buf, want);
    ck_assert_uint_eq(n, strlen(want));
}

TEST(progress_format) {
    check_format("map", 512, 1000, 0.5,
                 "map: 512/1000 (51%) 1024.0/s ETA 0.5s");
    check_format(NULL, 512, 1000, 0.5, "map: 512/1000 (51%) 1024.0/s ETA 0.5s");
    check_format("map", 0, 10, 1.0, "map: 0/10 (0%) 0.0/s ETA ?");
    check_format("map", 5, 10, 0.0, "map: 5/10 (50%) ?/s ETA ?");
    check_format("map", 10, 10, 2.0, "map: 10/10 (100%) 5.0/s ETA 0.0s");
    check_format("map", 999, 1000, 1.0, "map: 999/1000 (99%) 999.0/s ETA 0.0s");
    check_format("map", 0, 0, 0.0, "map: 0/0 (100%) ?/s ETA ?");
    check_format("imap", 1, 1000, 1.0, "imap: 1/1000 (0%) 1.0/s ETA 16m39s");
    check_format("map", 1, 10000, 1.0, "map: 1/10000 (0%) 1.0/s ETA 2h46m");
    check_format("map", 3, 4, 1.5, "map: 3/4 (75%) 2.0/s ETA 0.5s");

    /* Truncation keeps a terminated prefix. */
    char small[10];
    size_t n =
        mproc__progress_format(small, sizeof small, "map", 512, 1000, 0.5);
    ck_assert_uint_eq(n, 9);
    ck_assert_str_eq(small, "map: 512/");
    ck_assert_uint_eq(mproc__progress_format(small, 0, "map", 1, 2, 1.0), 0);

    /* Absurd ETAs stay finite and printable. */
    char buf[256];
    n = mproc__progress_format(buf, sizeof buf, "map", 1, (size_t)-1, 1e6);
    ck_assert_uint_eq(n, strlen(buf));
    ck_assert_ptr_nonnull(strstr(buf, "h"));
}

typedef struct calls {
    int n;
    size_t done, total;
} calls;

static void count_cb(size_t done, size_t total, void *arg) {
    calls *c = arg;
    c->n++;
    c->done = done;
    c->total = total;
}

TEST(progress_throttle) {
    calls c = {0, 0, 0};
    mproc__progress p;
    mproc__progress_init(&p, MPROC_PROGRESS_OFF, count_cb, &c, "map");
    p.interval_ns = 3600ull * 1000000000ull; /* no time-based reports */
    mproc__progress_update(&p, 1, 10);
    ck_assert_int_eq(c.n, 1); /* the first one is reported at once */
    mproc__progress_update(&p, 2, 10);
    mproc__progress_update(&p, 3, 10);
    ck_assert_int_eq(c.n, 1);
    mproc__progress_update(&p, 10, 10);
    ck_assert_int_eq(c.n, 2); /* the end always is */
    ck_assert_uint_eq(c.done, 10);
    ck_assert_uint_eq(c.total, 10);
    mproc__progress_update(&p, 10, 10);
    ck_assert_int_eq(c.n, 2); /* but only once */

    /* With no interval, every update is reported. */
    c.n = 0;
    mproc__progress_init(&p, MPROC_PROGRESS_OFF, count_cb, &c, NULL);
    p.interval_ns = 0;
    for (size_t i = 1; i <= 5; i++)
        mproc__progress_update(&p, i, 5);
    ck_assert_int_eq(c.n, 5);

    /* Off and no callback: nothing to do, nothing done. */
    mproc__progress_init(&p, MPROC_PROGRESS_OFF, NULL, NULL, NULL);
    mproc__progress_update(&p, 1, 2);
    mproc__progress_update(&p, 2, 2);
    ck_assert_uint_eq(p.last_ns, 0);
}

TEST(progress_stderr_line) {
    int fds[2];
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    calls c = {0, 0, 0};
    mproc__progress p;
    mproc__progress_init(&p, MPROC_PROGRESS_STDERR, count_cb, &c, "map");
    ck_assert_int_eq(p.fd, 2);
    p.fd = fds[1];
    p.interval_ns = 3600ull * 1000000000ull;
    mproc__progress_update(&p, 1, 4);
    mproc__progress_update(&p, 2, 4); /* throttled */
    mproc__progress_update(&p, 4, 4);
    mproc__progress_update(&p, 4, 4); /* already said */
    close(fds[1]);
    ck_assert_int_eq(c.n, 2);

    char out[1024];
    size_t got = 0;
    ssize_t n;
    while ((n = read(fds[0], out + got, sizeof out - 1 - got)) > 0)
        got += (size_t)n;
    close(fds[0]);
    out[got] = '\0';
    /* "\rmap: 1/4 (25%) ...\rmap: 4/4 (100%) ...\n", nothing else. */
    ck_assert_uint_gt(got, 0);
    ck_assert_int_eq(strncmp(out, "\rmap: 1/4 (25%) ", 16), 0);
    char *second = strchr(out + 1, '\r');
    ck_assert_ptr_nonnull(second);
    ck_assert_ptr_null(strchr(second + 1, '\r'));
    ck_assert_int_eq(strncmp(second, "\rmap: 4/4 (100%) ", 17), 0);
    ck_assert_ptr_eq(strchr(out, '\n'), out + got - 1);
    /* The final line covers the whole of the first one. */
    size_t first_len = (size_t)(second - out) - 1;
    size_t final_len = (size_t)(out + got - 1 - second) - 1;
    ck_assert_uint_ge(final_len, first_len);
}
