/* SPDX-License-Identifier: MIT */
/* Leak checks and small utilities for the tests; see harness.h. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 256

static int fds_before[MAX_FDS];
static int nfds_before;
static int shm_before;

long test_ms(long ms) {
    const char *m = getenv("MPROC_TEST_TIMEOUT_MULTIPLIER");
    long k = m ? atol(m) : 1;
    return ms * (k > 0 ? k : 1);
}

uint64_t test_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int list_fds(int *out, int cap) {
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int self = dirfd(d), n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd != self && n < cap)
            out[n++] = fd;
    }
    closedir(d);
    return n;
}

int test_fd_count(void) {
    int fds[MAX_FDS];
    return list_fds(fds, MAX_FDS);
}

static int count_shm(void) {
    DIR *d = opendir("/dev/shm");
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, "mproc"))
            n++;
    closedir(d);
    return n;
}

/* State letter of /proc/<pid>/stat, parsed after the last ')' because the
 * command name may hold spaces or parentheses. 0 if the process is gone. */
static char proc_state(pid_t pid, pid_t *ppid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    char st = 0;
    int pp = 0;
    if (sscanf(p + 1, " %c %d", &st, &pp) != 2)
        return 0;
    if (ppid)
        *ppid = pp;
    return st;
}

int test_pid_alive(pid_t pid) {
    char st = proc_state(pid, NULL);
    return st != 0 && st != 'Z' && st != 'X';
}

int test_wait_gone(pid_t pid, long timeout_ms) {
    /* A pidfd turns readable when the process exits, child of ours or not;
     * a zombie has exited. */
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return errno == ESRCH || !test_pid_alive(pid);
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int r;
    do
        r = poll(&pf, 1, (int)test_ms(timeout_ms));
    while (r < 0 && errno == EINTR);
    close(fd);
    return r == 1;
}

pid_t test_spawn(int (*fn)(void *arg), void *arg) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(fn(arg));
    return pid;
}

int test_reap(pid_t pid) {
    int st;
    pid_t r;
    do
        r = waitpid(pid, &st, 0);
    while (r < 0 && errno == EINTR);
    ck_assert_int_eq(r, pid);
    return WIFSIGNALED(st) ? -WTERMSIG(st) : WEXITSTATUS(st);
}

int test_read_byte(int fd) {
    unsigned char c;
    ssize_t n;
    do
        n = read(fd, &c, 1);
    while (n < 0 && errno == EINTR);
    return n == 1 ? c : -1;
}

/* Children of this process, alive or zombie, as listed in /proc. */
static int list_children(pid_t *out, int cap) {
    DIR *d = opendir("/proc");
    ck_assert_ptr_nonnull(d);
    pid_t self = getpid();
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        pid_t pid = (pid_t)atoi(e->d_name);
        pid_t ppid = 0;
        if (pid <= 0 || !proc_state(pid, &ppid) || ppid != self)
            continue;
        if (n < cap)
            out[n++] = pid;
    }
    closedir(d);
    return n;
}

void test_leak_setup(void) {
    /* Orphans of the library must land here, where the teardown sees them. */
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    nfds_before = list_fds(fds_before, MAX_FDS);
    shm_before = count_shm();
}

void test_leak_teardown(void) {
    mproc_shutdown();

    pid_t kids[64];
    int nk = list_children(kids, 64);
    char desc[512] = "";
    for (int i = 0; i < nk; i++) {
        char one[48];
        snprintf(one, sizeof one, " %d(%c)", (int)kids[i],
                 proc_state(kids[i], NULL));
        strncat(desc, one, sizeof desc - strlen(desc) - 1);
        kill(kids[i], SIGKILL);
        waitpid(kids[i], NULL, 0);
    }
    ck_assert_msg(nk == 0, "child processes left behind:%s", desc);

    int fds[MAX_FDS];
    int n = list_fds(fds, MAX_FDS);
    for (int i = 0; i < n; i++) {
        int known = 0;
        for (int j = 0; j < nfds_before && !known; j++)
            known = fds[i] == fds_before[j];
        if (!known) {
            char path[64], target[256] = "?";
            snprintf(path, sizeof path, "/proc/self/fd/%d", fds[i]);
            ssize_t k = readlink(path, target, sizeof target - 1);
            if (k > 0)
                target[k] = '\0';
            ck_abort_msg("fd %d leaked (%s)", fds[i], target);
        }
    }
    ck_assert_msg(n == nfds_before, "fd count %d, was %d", n, nfds_before);
    ck_assert_int_eq(count_shm(), shm_before);
}
