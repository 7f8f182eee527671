/* SPDX-License-Identifier: MIT */
/*
 * Process: start, join, exit codes, signals, names, daemons and misuse.
 * Children report back through pipes created before start (the fork is
 * direct, so they inherit them); nothing waits by sleeping. Child bodies
 * cannot use ck_assert (they are other processes), so they report through
 * their exit code or a pipe, and the test asserts on that.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static void make_pipe(int fds[2]) {
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
}

static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read exactly len bytes; returns how many came before EOF or an error. */
static size_t read_all(int fd, void *buf, size_t len) {
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

static int arg_int(const void *arg, size_t len) {
    int v = -1;
    if (len == sizeof v)
        memcpy(&v, arg, sizeof v);
    return v;
}

static int exitcode_of(mproc_process *p) {
    int code = 12345;
    ASSERT_OK(mproc_process_exitcode(p, &code));
    return code;
}

/* Assert that pid is no longer our child: already reaped (by mproc). */
static void assert_reaped(pid_t pid) {
    errno = 0;
    ck_assert_int_eq(waitpid(pid, NULL, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
}

/* ---- child bodies ---------------------------------------------------- */

static int body_zero(void *arg, size_t len) {
    (void)arg;
    (void)len;
    return 0;
}

static int body_return_int(void *arg, size_t len) {
    return arg_int(arg, len);
}

/* Reads one byte from the fd in arg and exits with it. */
static int body_wait_byte(void *arg, size_t len) {
    unsigned char c = 0;
    if (read_all(arg_int(arg, len), &c, 1) != 1)
        return 200;
    return c;
}

/* Writes one byte to the fd in arg (ready), then waits for a signal. */
static int body_ready_then_pause(void *arg, size_t len) {
    char c = 'r';
    if (write_all(arg_int(arg, len), &c, 1) < 0)
        return 201;
    for (;;)
        pause();
}

static void wait_ready(int fd) {
    char c = 0;
    ck_assert_uint_eq(read_all(fd, &c, 1), 1);
    ck_assert_int_eq(c, 'r');
}

/* ---- start, join, exit codes ----------------------------------------- */

TEST(process_basic) {
    mproc_process *p = NULL;
    ASSERT_OK(mproc_process_create(&p, body_zero, NULL, 0, NULL));
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(mproc_process_pid(p), 0);
    ck_assert_int_eq(mproc_process_daemon(p), 0);
    ASSERT_OK(mproc_process_start(p));
    pid_t pid = mproc_process_pid(p);
    ck_assert_int_gt(pid, 0);
    ck_assert_int_ne(pid, getpid());
    ASSERT_OK(mproc_process_join(p, MPROC_FOREVER));
    ck_assert_int_eq(exitcode_of(p), 0);
    ck_assert_int_eq(mproc_process_is_alive(p), 0);
    /* Joining an ended process again is fine, as in Python. */
    ASSERT_OK(mproc_process_join(p, 0));
    ASSERT_OK(mproc_process_join(p, MPROC_FOREVER));
    ck_assert_int_eq(mproc_process_pid(p), pid);
    assert_reaped(pid);
    mproc_process_destroy(p);
}

struct echo_arg {
    int wfd;
    unsigned char data[300];
};

/* Sends back len and the bytes it got. */
static int body_echo(void *arg, size_t len) {
    const struct echo_arg *a = arg;
    if (len != sizeof *a)
        return 1;
    if (write_all(a->wfd, &len, sizeof len) < 0 ||
        write_all(a->wfd, a->data, sizeof a->data) < 0)
        return 2;
    return 0;
}

TEST(process_args) {
    int fds[2];
    make_pipe(fds);
    struct echo_arg a = {.wfd = fds[1]};
    for (size_t i = 0; i < sizeof a.data; i++)
        a.data[i] = (unsigned char)(i * 7 + 3);
    struct echo_arg orig = a;

    mproc_process *p;
    ASSERT_OK(mproc_process_create(&p, body_echo, &a, sizeof a, NULL));
    /* create copied the bytes: changing ours now must not reach the child */
    memset(a.data, 0xee, sizeof a.data);
    ASSERT_OK(mproc_process_start(p));
    close(fds[1]);

    size_t len = 0;
    unsigned char got[sizeof a.data];
    ck_assert_uint_eq(read_all(fds[0], &len, sizeof len), sizeof len);
    ck_assert_uint_eq(len, sizeof a);
    ck_assert_uint_eq(read_all(fds[0], got, sizeof got), sizeof got);
    ck_assert_mem_eq(got, orig.data, sizeof got);
    close(fds[0]);

    ASSERT_OK(mproc_process_join(p, MPROC_FOREVER));
    ck_assert_int_eq(exitcode_of(p), 0);
    mproc_process_destroy(p);
}

TEST(process_exit_code) {
    /* The return value becomes the exit status, cut to 8 bits. */
    static const int rets[] = {7, 0, 255, 256 + 3, -1};
    static const int want[] = {7, 0, 255, 3, 255};
    enum { N = sizeof rets / sizeof rets[0] };
    mproc_process *p[N];
    for (int i = 0; i < N; i++) {
        ASSERT_OK(mproc_process_create(&p[i], body_return_int, &rets[i],
                                       sizeof rets[i], NULL));
        ASSERT_OK(mproc_process_start(p[i]));
    }
    for (int i = N - 1; i >= 0; i--) {
        ASSERT_OK(mproc_process_join(p[i], MPROC_FOREVER));
        ck_assert_int_eq(exitcode_of(p[i]), want[i]);
        mproc_process_destroy(p[i]);
    }
}

TEST(process_many) {
    enum { N = 24 };
    mproc_process *p[N];
    for (int i = 0; i < N; i++) {
        ASSERT_OK(
            mproc_process_create(&p[i], body_return_int, &i, sizeof i, NULL));
        ASSERT_OK(mproc_process_start(p[i]));
    }
    /* Join in an order unrelated to the start order. */
    for (int k = 0; k < N; k++) {
        int i = (k * 7) % N;
        ASSERT_OK(mproc_process_join(p[i], MPROC_FOREVER));
        ck_assert_int_eq(exitcode_of(p[i]), i);
        mproc_process_destroy(p[i]);
    }
}

/* ---- signals ---------------------------------------------------------- */

static int body_segv(void *arg, size_t len) {
    (void)arg;
    (void)len;
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none); /* no core file from this test */
    /* A real fault, not raise(): write to a page that allows no access. */
    volatile char *page =
        mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return 3;
    page[0] = 1;
    return 4;
}

TEST(process_segfault) {
    mproc_process *p;
    ASSERT_OK(mproc_process_create(&p, body_segv, NULL, 0, NULL));
    ASSERT_OK(mproc_process_start(p));
    ASSERT_OK(mproc_process_join(p, MPROC_FOREVER));
    ck_assert_int_eq(exitcode_of(p), -SIGSEGV);
    mproc_process_destroy(p);
}

/* Start a child that reports ready and then waits for a signal. */
static mproc_process *start_pauser(const mproc_process_opts *o) {
    int fds[2];
    make_pipe(fds);
    mproc_process *p;
    ASSERT_OK(mproc_process_create(&p, body_ready_then_pause, &fds[1],
                                   sizeof fds[1], o));
    ASSERT_OK(mproc_process_start(p));
    close(fds[1]);
    wait_ready(fds[0]);
    close(fds[0]);
    return p;
}

TEST(process_terminate) {
    mproc_process *p = start_pauser(NULL);
    ck_assert_int_eq(mproc_process_is_alive(p), 1);
    ASSERT_OK(mproc_process_terminate(p));
    ASSERT_OK(mproc_process_join(p, MPROC_FOREVER));
    ck_assert_int_eq(exitcode_of(p), -SIGTERM);
    /* Signalling an ended process is not an error. */
    ASSERT_OK(mproc_process_terminate(p));
    ASSERT_OK(mproc_process_kill(p));
    ck_assert_int_eq(exitcode_of(p), -SIGTERM);
    mproc_process_destroy(p);
}

TEST(process_kill) {
    mproc_process *p = start_pauser(NULL);
    ASSERT_OK(mproc_process_kill(p));
    ASSERT_OK(mproc_process_join(p, MPROC_FOREVER));
    ck_assert_int_eq(exitcode_of(p), -SIGKILL);
    ASSERT_OK(mproc_process_kill(p));
    mproc_process_destroy(p);
}

static void on_usr1(int sig) {
    (void)sig;
}

/* Exit code bits: what the child found not at its default. */
static int body_check_signals(void *arg, size_t len) {
    (void)arg;
    (void)len;
    int bad = 0;
    struct sigaction sa;
    if (sigaction(SIGUSR1, NULL, &sa) < 0 || sa.sa_handler != SIG_DFL)
        bad |= 1;
    if (sigaction(SIGTERM, NULL, &sa) < 0 || sa.sa_handler != SIG_DFL)
        bad |= 2;
    sigset_t mask;
    if (sigprocmask(SIG_SETMASK, NULL, &mask) < 0 ||
        sigismember(&mask, SIGUSR2) || sigismember(&mask, SIGINT))
        bad |= 4;
    return bad;
}

TEST(process_child_signals_default) {
    /* The parent's handlers, ignores and mask do not reach the child. */
    struct sigaction sa = {.sa_handler = on_usr1}, old_usr1, old_term;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, &old_usr1), 0);
    sa.sa_handler = SIG_IGN;
    ck_assert_int_eq(sigaction(SIGTERM, &sa, &old_term), 0);
    sigset_t block, old_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    sigaddset(&block, SIGINT);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &block, &old_mask), 0);

    mproc_process *p;
    ASSERT_OK(mproc_process_create(&p, body_check_signals, NULL, 0, NULL));
    ASSERT_OK(mproc_process_start(p));
    ASSERT_OK(mproc_process_join(p, MPROC_FOREVER));
    ck_assert_int_eq(exitcode_of(p), 0);
    mproc_process_destroy(p);

    /* ... and the parent keeps its own. */
    sigset_t now;
    ck_assert_int_eq(pthread_sigmask(SIG_SETMASK, &old_mask, &now), 0);
    ck_assert(sigismember(&now, SIGUSR2));
    ck_assert_int_eq(sigaction(SIGTERM, &old_term, &sa), 0);
    ck_assert_ptr_eq((void *)sa.sa_handler, (void *)SIG_IGN);
    ck_assert_int_eq(sigaction(SIGUSR1, &old_usr1, NULL), 0);
}

/* ---- join with a timeout, is_alive ------------------------------------ */

TEST(process_join_timeout) {
    int fds[2];
    make_pipe(fds);
    mproc_process *p;
    ASSERT_OK(
        mproc_process_create(&p, body_wait_byte, &fds[0], sizeof fds[0], NULL));
    ASSERT_OK(mproc_process_start(p));
    close(fds[0]);

    ASSERT_ERR(mproc_process_join(p, 0), MPROC_ETIMEDOUT);
    uint64_t t0 = test_now_ms();
    ASSERT_ERR(mproc_process_join(p, 100), MPROC_ETIMEDOUT);
    uint64_t took = test_now_ms() - t0;
    ck_assert_uint_ge(took, 99); /* whole ms on both ends: allow 1 off */
    ck_assert_uint_lt(took, (uint64_t)test_ms(5000));
    ck_assert_int_eq(mproc_process_is_alive(p), 1);
    int code = 12345;
    ASSERT_ERR(mproc_process_exitcode(p, &code), MPROC_ENOTREADY);
    ck_assert_int_eq(code, 12345);

    ASSERT_OK(mproc_process_kill(p));
    ASSERT_OK(mproc_process_join(p, test_ms(10000)));
    ck_assert_int_eq(exitcode_of(p), -SIGKILL);
    close(fds[1]);
    mproc_process_destroy(p);
}

TEST(process_is_alive) {
    int fds[2];
    make_pipe(fds);
    mproc_process *p;
    ASSERT_OK(
        mproc_process_create(&p, body_wait_byte, &fds[0], sizeof fds[0], NULL));
    ck_assert_int_eq(mproc_process_is_alive(p), 0); /* not started */
    ASSERT_OK(mproc_process_start(p));
    close(fds[0]);
    pid_t pid = mproc_process_pid(p);
    ck_assert_int_eq(mproc_process_is_alive(p), 1);

    unsigned char c = 5;
    ck_assert_int_eq(write_all(fds[1], &c, 1), 0);
    close(fds[1]);
    /* Once the child is a zombie, is_alive alone reaps it: no join. */
    ck_assert(test_wait_gone(pid, 10000));
    ck_assert_int_eq(mproc_process_is_alive(p), 0);
    assert_reaped(pid);
    ck_assert_int_eq(exitcode_of(p), 5);
    ck_assert_int_eq(mproc_process_is_alive(p), 0);
    ASSERT_OK(mproc_process_join(p, 0));
    mproc_process_destroy(p);
}

struct joiner {
    mproc_process *p;
    int rc;
};

static void *join_thread(void *arg) {
    struct joiner *j = arg;
    j->rc = mproc_process_join(j->p, MPROC_FOREVER);
    return NULL;
}

TEST(process_join_concurrent) {
    /* Several threads may join the same process; each sees it end. */
    int fds[2];
    make_pipe(fds);
    mproc_process *p;
    ASSERT_OK(
        mproc_process_create(&p, body_wait_byte, &fds[0], sizeof fds[0], NULL));
    ASSERT_OK(mproc_process_start(p));
    close(fds[0]);
    enum { T = 4 };
    pthread_t th[T];
    struct joiner j[T];
    for (int i = 0; i < T; i++) {
        j[i] = (struct joiner){.p = p, .rc = 1};
        ck_assert_int_eq(pthread_create(&th[i], NULL, join_thread, &j[i]), 0);
    }
    ck_assert_int_eq(mproc_process_join(p, 0), MPROC_ETIMEDOUT);
    unsigned char c = 9;
    ck_assert_int_eq(write_all(fds[1], &c, 1), 0);
    close(fds[1]);
    for (int i = 0; i < T; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ASSERT_OK(j[i].rc);
    }
    ck_assert_int_eq(exitcode_of(p), 9);
    mproc_process_destroy(p);
}

/* ---- names and identity ----------------------------------------------- */

struct ident_report {
    pid_t pid;
    pid_t parent_pid;
    char name[64];
    char parent_name[64];
};

static void fill_report(struct ident_report *r) {
    memset(r, 0, sizeof *r);
    r->pid = mproc_current_pid();
    r->parent_pid = mproc_parent_pid();
    snprintf(r->name, sizeof r->name, "%s", mproc_current_name());
    const char *pn = mproc_parent_name();
    snprintf(r->parent_name, sizeof r->parent_name, "%s", pn ? pn : "(null)");
}

static int body_ident(void *arg, size_t len) {
    struct ident_report r;
    fill_report(&r);
    return write_all(arg_int(arg, len), &r, sizeof r) < 0 ? 1 : 0;
}

static void run_ident(mproc_process *p, int wfd, int rfd,
                      struct ident_report *r) {
    ASSERT_OK(mproc_process_start(p));
    close(wfd);
    ck_assert_uint_eq(read_all(rfd, r, sizeof *r), sizeof *r);
    close(rfd);
    ASSERT_OK(mproc_process_join(p, MPROC_FOREVER));
    ck_assert_int_eq(exitcode_of(p), 0);
    ck_assert_int_eq(r->pid, mproc_process_pid(p));
}

TEST(process_names) {
    /* Default names count up from one per program: Process-N, N+1. */
    mproc_process *a, *b, *c;
    int fa[2], fc[2];
    make_pipe(fa);
    make_pipe(fc);
    ASSERT_OK(mproc_process_create(&a, body_ident, &fa[1], sizeof fa[1], NULL));
    ASSERT_OK(mproc_process_create(&b, body_zero, NULL, 0, NULL));
    unsigned na = 0, nb = 0;
    int end = 0;
    ck_assert_int_eq(sscanf(mproc_process_name(a), "Process-%u%n", &na, &end),
                     1);
    ck_assert_uint_eq((size_t)end, strlen(mproc_process_name(a)));
    ck_assert_int_eq(sscanf(mproc_process_name(b), "Process-%u", &nb), 1);
    ck_assert_uint_ge(na, 1);
    ck_assert_uint_eq(nb, na + 1);

    /* A custom name is copied at create. */
    char custom[] = "custom-name";
    mproc_process_opts o = {.name = custom};
    ASSERT_OK(mproc_process_create(&c, body_ident, &fc[1], sizeof fc[1], &o));
    custom[0] = 'X';
    ck_assert_str_eq(mproc_process_name(c), "custom-name");
    ck_assert_ptr_null(mproc_process_name(NULL));

    /* Inside the child: its own name, and us as its parent. */
    struct ident_report r;
    run_ident(a, fa[1], fa[0], &r);
    ck_assert_str_eq(r.name, mproc_process_name(a));
    ck_assert_int_eq(r.parent_pid, getpid());
    ck_assert_str_eq(r.parent_name, "MainProcess");
    run_ident(c, fc[1], fc[0], &r);
    ck_assert_str_eq(r.name, "custom-name");
    ck_assert_int_eq(r.parent_pid, getpid());
    ck_assert_str_eq(r.parent_name, "MainProcess");

    /* Our own identity did not change. */
    ck_assert_str_eq(mproc_current_name(), "MainProcess");
    ck_assert_ptr_null(mproc_parent_name());
    mproc_process_destroy(a);
    mproc_process_destroy(b);
    mproc_process_destroy(c);
}

/* The outer child starts an inner one, which reports its identity through
 * the fd in arg; the outer one joins it and exits with its exit code. */
static int body_outer(void *arg, size_t len) {
    int wfd = arg_int(arg, len);
    mproc_process_opts o = {.name = "inner"};
    mproc_process *p;
    if (mproc_process_create(&p, body_ident, &wfd, sizeof wfd, &o) != 0)
        return 101;
    if (mproc_process_start(p) != 0)
        return 102;
    close(wfd);
    if (mproc_process_join(p, MPROC_FOREVER) != 0)
        return 103;
    int code = -1;
    if (mproc_process_exitcode(p, &code) != 0)
        return 104;
    mproc_process_destroy(p);
    return code == 0 ? 42 : 105;
}

TEST(process_nested) {
    int fds[2];
    make_pipe(fds);
    mproc_process *outer;
    mproc_process_opts o = {.name = "outer"};
    ASSERT_OK(
        mproc_process_create(&outer, body_outer, &fds[1], sizeof fds[1], &o));
    ASSERT_OK(mproc_process_start(outer));
    close(fds[1]);
    struct ident_report r;
    ck_assert_uint_eq(read_all(fds[0], &r, sizeof r), sizeof r);
    close(fds[0]);
    ASSERT_OK(mproc_process_join(outer, MPROC_FOREVER));
    ck_assert_int_eq(exitcode_of(outer), 42);
    ck_assert_str_eq(r.name, "inner");
    ck_assert_str_eq(r.parent_name, "outer");
    ck_assert_int_eq(r.parent_pid, mproc_process_pid(outer));
    mproc_process_destroy(outer);
}

TEST(process_inherited_handle_is_foreign) {
    /* A handle copied into a child by fork belongs to the parent: the child
     * may not wait for or signal its sibling. */
    mproc_process *sib = start_pauser(NULL);
    pid_t helper = fork();
    ck_assert_int_ge(helper, 0);
    if (helper == 0) {
        int bad = 0;
        if (mproc_process_join(sib, 0) != MPROC_ESTATE)
            bad |= 1;
        if (mproc_process_kill(sib) != MPROC_ESTATE)
            bad |= 2;
        if (mproc_process_is_alive(sib) != 0)
            bad |= 4;
        int code;
        if (mproc_process_exitcode(sib, &code) != MPROC_ENOTREADY)
            bad |= 8;
        mproc_process_destroy(sib); /* frees the copy, kills nothing */
        _exit(bad);
    }
    int st = 0;
    ck_assert_int_eq(waitpid(helper, &st, 0), helper);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    ck_assert_int_eq(mproc_process_is_alive(sib), 1);
    ASSERT_OK(mproc_process_kill(sib));
    ASSERT_OK(mproc_process_join(sib, MPROC_FOREVER));
    ck_assert_int_eq(exitcode_of(sib), -SIGKILL);
    mproc_process_destroy(sib);
}

TEST(process_child_drops_fork_server) {
    /* A Process is forked from the program, fork server connection and
     * all. The child must let go of it: the server exits when the program
     * closes its control socket, and mproc_shutdown() waits for that, so a
     * child still holding a copy would hang the shutdown until it ended. */
    ASSERT_OK(mproc_init());
    int fds[2];
    make_pipe(fds);
    mproc_process *p;
    ASSERT_OK(
        mproc_process_create(&p, body_wait_byte, &fds[0], sizeof fds[0], NULL));
    ASSERT_OK(mproc_process_start(p));
    close(fds[0]);
    mproc_shutdown(); /* while the child runs (it waits for our byte) */
    ck_assert_int_eq(mproc_process_is_alive(p), 1);
    unsigned char c = 3;
    ck_assert_int_eq(write_all(fds[1], &c, 1), 0);
    close(fds[1]);
    ASSERT_OK(mproc_process_join(p, MPROC_FOREVER));
    ck_assert_int_eq(exitcode_of(p), 3);
    mproc_process_destroy(p);
}

/* ---- daemons -------------------------------------------------------- */

/*
 * Runs in an intermediate process forked by the test: start a daemon,
 * report its pid on report_fd once it runs, then leave by _exit() (atexit
 * handlers skipped: only the parent-death signal can kill the daemon) or by
 * exit() (mproc's atexit handler kills and reaps it). Exit codes 10..14 say
 * which step failed.
 */
static _Noreturn void daemon_intermediate(int report_fd, int use_exit) {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        _exit(10);
    mproc_process_opts o = {.daemon = 1};
    mproc_process *p;
    if (mproc_process_create(&p, body_ready_then_pause, &ready[1],
                             sizeof ready[1], &o) != 0)
        _exit(11);
    if (mproc_process_start(p) != 0)
        _exit(12);
    char c;
    if (read_all(ready[0], &c, 1) != 1)
        _exit(13);
    pid_t pid = mproc_process_pid(p);
    if (write_all(report_fd, &pid, sizeof pid) < 0)
        _exit(14);
    if (use_exit)
        exit(0);
    _exit(0);
}

/* Fork the intermediate, get the daemon's pid, and reap the intermediate. */
static pid_t run_intermediate(int use_exit) {
    int fds[2];
    make_pipe(fds);
    pid_t helper = fork();
    ck_assert_int_ge(helper, 0);
    if (helper == 0) {
        close(fds[0]);
        daemon_intermediate(fds[1], use_exit);
    }
    close(fds[1]);
    pid_t daemon = 0;
    size_t got = read_all(fds[0], &daemon, sizeof daemon);
    close(fds[0]);
    int st = 0;
    ck_assert_int_eq(waitpid(helper, &st, 0), helper);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "intermediate failed: status %#x", st);
    ck_assert_uint_eq(got, sizeof daemon);
    ck_assert_int_gt(daemon, 0);
    return daemon;
}

TEST(process_daemon_parent_death) {
    pid_t daemon = run_intermediate(0);
    ck_assert(test_wait_gone(daemon, 10000));
    /* Its parent died without running atexit handlers; the daemon was
     * re-parented to us (the fixture makes us a subreaper) and killed by
     * its parent-death signal. Reap it. */
    int st = 0;
    ck_assert_int_eq(waitpid(daemon, &st, 0), daemon);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(WTERMSIG(st), SIGKILL);
}

TEST(process_daemon_atexit) {
    pid_t daemon = run_intermediate(1);
    ck_assert(test_wait_gone(daemon, 10000));
    /* exit() ran mproc's handler, which killed and reaped the daemon in the
     * intermediate: it never became our child. */
    assert_reaped(daemon);
}

TEST(process_destroy_daemon) {
    mproc_process_opts o = {.daemon = 1};
    mproc_process *p = start_pauser(&o);
    ck_assert_int_eq(mproc_process_daemon(p), 1);
    pid_t pid = mproc_process_pid(p);
    /* Destroying the handle of a running daemon kills and reaps it. */
    mproc_process_destroy(p);
    assert_reaped(pid);
}

TEST(process_destroy_running) {
    int fds[2];
    make_pipe(fds);
    mproc_process *p;
    ASSERT_OK(
        mproc_process_create(&p, body_wait_byte, &fds[0], sizeof fds[0], NULL));
    ASSERT_OK(mproc_process_start(p));
    close(fds[0]);
    pid_t pid = mproc_process_pid(p);

    /* A non-daemon child outlives its handle, as in Python ... */
    mproc_process_destroy(p);
    ck_assert(test_pid_alive(pid));
    unsigned char c = 1;
    ck_assert_int_eq(write_all(fds[1], &c, 1), 0);
    close(fds[1]);

    /* ... and once it has ended, a later call reaps it. */
    ck_assert(test_wait_gone(pid, 10000));
    mproc_process *q;
    ASSERT_OK(mproc_process_create(&q, body_zero, NULL, 0, NULL));
    assert_reaped(pid);
    mproc_process_destroy(q);
}

TEST(process_sigchld_ignored) {
    /* With SIGCHLD ignored the kernel reaps children by itself, so the exit
     * status is lost. join still sees the end; exitcode says ECHILD. */
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigemptyset(&ign.sa_mask);
    ck_assert_int_eq(sigaction(SIGCHLD, &ign, &old), 0);
    int five = 5;
    mproc_process *p;
    ASSERT_OK(
        mproc_process_create(&p, body_return_int, &five, sizeof five, NULL));
    ASSERT_OK(mproc_process_start(p));
    int rc = mproc_process_join(p, test_ms(10000));
    ck_assert_int_eq(sigaction(SIGCHLD, &old, NULL), 0);
    ASSERT_OK(rc);
    ck_assert_int_eq(mproc_process_is_alive(p), 0);
    int code = 12345;
    ASSERT_ERR(mproc_process_exitcode(p, &code), MPROC_ECHILD);
    mproc_process_destroy(p);
}

TEST(process_start_fails_cleanly) {
    /* Fault injection by fd limit: with the limit at the lowest free fd
     * number plus k, start runs out of fds at its k-th new fd (the gate pipe
     * before the fork, the pidfd after it). Every failure must be reported,
     * leave no child behind and allow a later start. */
    int lowest = dup(0);
    ck_assert_int_ge(lowest, 0);
    close(lowest);
    struct rlimit old;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    mproc_process *p;
    ASSERT_OK(mproc_process_create(&p, body_zero, NULL, 0, NULL));
    int failures = 0, rc = -1;
    for (int k = 0; k < 16 && rc != 0; k++) {
        struct rlimit low = old;
        low.rlim_cur = (rlim_t)(lowest + k);
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
        rc = mproc_process_start(p);
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
        if (rc == 0)
            break;
        failures++;
        ASSERT_ERR(rc, MPROC_EMFILE);
        ck_assert_int_eq(mproc_process_pid(p), 0);
        ck_assert_int_eq(mproc_process_is_alive(p), 0);
        errno = 0;
        ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1); /* no child */
        ck_assert_int_eq(errno, ECHILD);
    }
    ASSERT_OK(rc);
    ck_assert_int_ge(failures, 3); /* pipe (2 fds), then the pidfd */
    ASSERT_OK(mproc_process_join(p, MPROC_FOREVER));
    ck_assert_int_eq(exitcode_of(p), 0);
    mproc_process_destroy(p);
}

/* ---- misuse ----------------------------------------------------------- */

TEST(process_bad_args) {
    mproc_process *p = (mproc_process *)&p; /* anything but NULL */
    int code = 0;

    ASSERT_ERR(mproc_process_create(NULL, body_zero, NULL, 0, NULL),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_process_create(&p, NULL, NULL, 0, NULL), MPROC_EINVAL);
    ck_assert_ptr_null(p);
    ASSERT_ERR(mproc_process_create(&p, body_zero, NULL, 5, NULL),
               MPROC_EINVAL);
    ck_assert_ptr_null(p);

    ASSERT_ERR(mproc_process_start(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_process_join(NULL, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_process_join(NULL, MPROC_FOREVER), MPROC_EINVAL);
    ck_assert_int_eq(mproc_process_is_alive(NULL), 0);
    ASSERT_ERR(mproc_process_terminate(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_process_kill(NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_process_exitcode(NULL, &code), MPROC_EINVAL);
    ck_assert_int_eq(mproc_process_pid(NULL), 0);
    ck_assert_ptr_null(mproc_process_name(NULL));
    ck_assert_int_eq(mproc_process_daemon(NULL), 0);

    /* Before start. */
    int fds[2];
    make_pipe(fds);
    ASSERT_OK(
        mproc_process_create(&p, body_wait_byte, &fds[0], sizeof fds[0], NULL));
    ASSERT_ERR(mproc_process_exitcode(p, NULL), MPROC_EINVAL);
    ASSERT_ERR(mproc_process_join(p, 0), MPROC_ESTATE);
    ASSERT_ERR(mproc_process_join(p, MPROC_FOREVER), MPROC_ESTATE);
    ASSERT_ERR(mproc_process_exitcode(p, &code), MPROC_ENOTREADY);
    ASSERT_ERR(mproc_process_terminate(p), MPROC_ESTATE);
    ASSERT_ERR(mproc_process_kill(p), MPROC_ESTATE);
    ck_assert_int_eq(mproc_process_is_alive(p), 0);

    /* Running. */
    ASSERT_OK(mproc_process_start(p));
    close(fds[0]);
    ASSERT_ERR(mproc_process_start(p), MPROC_ESTATE);
    ASSERT_ERR(mproc_process_exitcode(p, &code), MPROC_ENOTREADY);
    ASSERT_ERR(mproc_process_exitcode(p, NULL), MPROC_EINVAL);

    /* Ended: still cannot start again. */
    unsigned char c = 0;
    ck_assert_int_eq(write_all(fds[1], &c, 1), 0);
    close(fds[1]);
    ASSERT_OK(mproc_process_join(p, MPROC_FOREVER));
    ASSERT_ERR(mproc_process_start(p), MPROC_ESTATE);
    ck_assert_int_eq(exitcode_of(p), 0);
    mproc_process_destroy(p);
}

TEST(process_destroy_null) {
    mproc_process_destroy(NULL);
    /* A handle that was never started is simply freed. */
    mproc_process *p;
    ASSERT_OK(mproc_process_create(&p, body_zero, "abc", 3, NULL));
    mproc_process_destroy(p);
}
