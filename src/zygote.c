/* SPDX-License-Identifier: MIT */
/*
 * The fork server ("zygote"). Forking a multi-threaded program is unsafe:
 * locks that other threads hold at that moment stay locked in the child for
 * ever. So pool workers are never forked from the caller. One helper
 * process, forked once (at mproc_init() or on first use) and single-threaded
 * for its whole life, forks every worker, replacements included.
 *
 * Wiring:
 *   program --ctl socket--> zygote        one per program; carries new pool
 *                                         connections (an fd) and, by EOF,
 *                                         the order to shut down
 *   pool    --pool conn---> zygote        one per pool: SPAWN requests in,
 *                                         SPAWNED (pid + pidfd) and EXITED
 *                                         (wait status) reports out
 *
 * The zygote is the workers' parent, so it reaps them and reports each exit
 * status to the pool that owns the worker. It watches the program through a
 * pidfd: when the program dies (even by SIGKILL) the zygote SIGKILLs every
 * worker and exits, and workers also carry PR_SET_PDEATHSIG(SIGKILL) on the
 * zygote. A pidfd, unlike PR_SET_PDEATHSIG, follows the whole program and not
 * the thread that happened to fork the zygote.
 *
 * The zygote and its workers live in their own process group, so a
 * terminal's Ctrl-C reaches the program only; the program decides.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "shm.h"

/* ---- the program's side ---------------------------------------------------
 */

static pthread_mutex_t zy_lock = PTHREAD_MUTEX_INITIALIZER;
static int zy_ctl = -1;
static pid_t zy_pid;

static void zygote_main(int ctl, pid_t parent) __attribute__((noreturn));

int mproc_init(void) {
    int err = 0;
    pthread_mutex_lock(&zy_lock);
    if (zy_ctl >= 0)
        goto out;
    int sv[2];
    if ((err = mproc__socketpair_seqpacket(sv)) < 0)
        goto out;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        err = -errno;
        mproc__close(sv[0]);
        mproc__close(sv[1]);
        goto out;
    }
    if (pid == 0) {
        mproc__close(sv[0]);
        mproc__registry_drop_fd_objects();
        zygote_main(sv[1], parent);
    }
    mproc__close(sv[1]);
    zy_ctl = sv[0];
    zy_pid = pid;
out:
    pthread_mutex_unlock(&zy_lock);
    return err;
}

void mproc_shutdown(void) {
    pthread_mutex_lock(&zy_lock);
    if (zy_ctl >= 0 && zy_pid > 0) {
        /* EOF on the control socket tells the zygote to kill and reap every
         * worker it still has and to exit; then we reap the zygote. */
        mproc__close(zy_ctl);
        while (waitpid(zy_pid, NULL, 0) < 0 && errno == EINTR)
            ;
        zy_ctl = -1;
        zy_pid = 0;
    }
    pthread_mutex_unlock(&zy_lock);
}

void mproc__zygote_forget(void) {
    /* In a child forked directly from the program (a Process): the
     * program's fork server is not ours. Close our copy of its control
     * socket; a pool made in this child starts a server of its own. */
    if (zy_ctl >= 0)
        mproc__close(zy_ctl);
    zy_ctl = -1;
    zy_pid = 0;
    pthread_mutex_init(&zy_lock, NULL);
}

int mproc__zygote_connect(mproc__zconn *zc) {
    zc->fd = -1;
    int err = mproc_init();
    if (err < 0)
        return err;
    int sv[2];
    if ((err = mproc__socketpair_seqpacket(sv)) < 0)
        return err;
    pthread_mutex_lock(&zy_lock);
    char c = 'C';
    ssize_t n =
        zy_ctl >= 0 ? mproc__send_msg(zy_ctl, &c, 1, &sv[1], 1) : -ECHILD;
    pthread_mutex_unlock(&zy_lock);
    mproc__close(sv[1]);
    if (n < 0) {
        mproc__close(sv[0]);
        return n == -EPIPE || n == -ECONNRESET ? -ECHILD : (int)n;
    }
    zc->fd = sv[0];
    return 0;
}

void mproc__zygote_disconnect(mproc__zconn *zc) {
    mproc__close(zc->fd);
    zc->fd = -1;
}

int mproc__zygote_request_spawn(mproc__zconn *zc, uint32_t slot, int chan_fd,
                                int page_fd) {
    mproc__zmsg m = {.type = MPROC__ZMSG_SPAWN, .slot = slot};
    int fds[2] = {chan_fd, page_fd};
    ssize_t n = mproc__send_msg(zc->fd, &m, sizeof m, fds, 2);
    return n < 0 ? (int)n : 0;
}

/* ---- the zygote's side ----------------------------------------------------
 */

/* Everything below runs in the zygote process, which has one thread. */

typedef struct zchild {
    pid_t pid;
    int conn; /* index into conns, -1 once the pool has gone */
    uint32_t slot;
} zchild;

static struct {
    int ctl, parent_pidfd, sigfd;
    int *conns; /* fds, -1 for a free entry */
    int nconns;
    zchild *kids;
    int nkids, capkids;
} Z;

static void z_kill_all(int conn_or_all) {
    for (int i = 0; i < Z.nkids; i++)
        if (conn_or_all < 0 || Z.kids[i].conn == conn_or_all)
            kill(Z.kids[i].pid, SIGKILL);
}

static void z_exit(void) __attribute__((noreturn));
static void z_exit(void) {
    /* Kill and reap every worker before leaving, so that nothing we started
     * is left behind as an orphan or a zombie. */
    z_kill_all(-1);
    for (int i = 0; i < Z.nkids; i++)
        while (waitpid(Z.kids[i].pid, NULL, 0) < 0 && errno == EINTR)
            ;
    _exit(0);
}

static void z_reap(void) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        for (int i = 0; i < Z.nkids; i++) {
            if (Z.kids[i].pid != pid)
                continue;
            zchild k = Z.kids[i];
            Z.kids[i] = Z.kids[--Z.nkids];
            if (k.conn >= 0 && Z.conns[k.conn] >= 0) {
                mproc__zmsg m = {.type = MPROC__ZMSG_EXITED,
                                 .slot = k.slot,
                                 .pid = pid,
                                 .status = status};
                (void)mproc__send_msg(Z.conns[k.conn], &m, sizeof m, NULL, 0);
            }
            break;
        }
    }
}

static void z_child(int chan, int page) __attribute__((noreturn));
static void z_child(int chan, int page) {
    pid_t zpid = getppid();
    /* Drop the zygote's own descriptors: a worker must not keep the
     * program's control socket or another pool's connection open. */
    mproc__close(Z.ctl);
    mproc__close(Z.parent_pidfd);
    mproc__close(Z.sigfd);
    for (int i = 0; i < Z.nconns; i++)
        mproc__close(Z.conns[i]);
    mproc__child_reset_signals();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != zpid)
        _exit(127);
    mproc__worker_main(chan, page);
    _exit(0);
}

static void z_spawn(int ci) {
    int conn = Z.conns[ci];
    mproc__zmsg req;
    int fds[2] = {-1, -1}, nfd = 0;
    ssize_t n = mproc__recv_msg(conn, &req, sizeof req, fds, 2, &nfd, 0);
    if (n <= 0 || (size_t)n != sizeof req || req.type != MPROC__ZMSG_SPAWN ||
        nfd != 2) {
        for (int i = 0; i < nfd; i++)
            mproc__close(fds[i]);
        if (n == 0 || (n < 0 && n != -EAGAIN && n != -EINTR)) {
            /* The pool has gone: its workers have no one to serve. */
            z_kill_all(ci);
            for (int i = 0; i < Z.nkids; i++)
                if (Z.kids[i].conn == ci)
                    Z.kids[i].conn = -1;
            mproc__close(conn);
            Z.conns[ci] = -1;
        }
        return;
    }
    mproc__zmsg rep = {.slot = req.slot};
    int pidfd = -1;
    if (Z.nkids == Z.capkids) {
        int cap = Z.capkids ? 2 * Z.capkids : 16;
        zchild *k = realloc(Z.kids, (size_t)cap * sizeof *k);
        if (!k) {
            rep.type = MPROC__ZMSG_SPAWN_FAILED;
            rep.status = -ENOMEM;
            goto reply;
        }
        Z.kids = k;
        Z.capkids = cap;
    }
    pid_t pid = fork();
    if (pid < 0) {
        rep.type = MPROC__ZMSG_SPAWN_FAILED;
        rep.status = -errno;
        goto reply;
    }
    if (pid == 0)
        z_child(fds[0], fds[1]);
    Z.kids[Z.nkids++] = (zchild){.pid = pid, .conn = ci, .slot = req.slot};
    /* We are the parent and have not reaped it: the pidfd is race-free. */
    pidfd = mproc__pidfd_open(pid);
    rep.type = MPROC__ZMSG_SPAWNED;
    rep.pid = pid;
reply:
    (void)mproc__send_msg(conn, &rep, sizeof rep, pidfd >= 0 ? &pidfd : NULL,
                          pidfd >= 0 ? 1 : 0);
    mproc__close(pidfd);
    mproc__close(fds[0]);
    mproc__close(fds[1]);
}

static void z_accept(void) {
    char c;
    int fd = -1, nfd = 0;
    ssize_t n = mproc__recv_msg(Z.ctl, &c, 1, &fd, 1, &nfd, 0);
    if (n == 0 || (n < 0 && n != -EAGAIN && n != -EINTR))
        z_exit(); /* the program closed the control socket, or died */
    if (n < 0 || nfd != 1)
        return;
    for (int i = 0; i < Z.nconns; i++) {
        if (Z.conns[i] < 0) {
            Z.conns[i] = fd;
            return;
        }
    }
    int *c2 = realloc(Z.conns, (size_t)(Z.nconns + 1) * sizeof *c2);
    if (!c2) {
        mproc__close(fd);
        return;
    }
    Z.conns = c2;
    Z.conns[Z.nconns++] = fd;
}

static void zygote_main(int ctl, pid_t parent) {
    /* A copy of the program is running here; the program's atexit handlers
     * and stdio buffers are not ours to run or flush, hence _exit only. */
    Z.ctl = ctl;
    /* Handlers the program installed are not ours: a worker forked before
     * it resets its own would run them if signalled in that instant (a
     * test framework's SIGTERM handler once killed the test that way). */
    mproc__child_reset_signals();
    (void)setpgid(0, 0);
    Z.parent_pidfd = mproc__pidfd_open(parent);
    if (Z.parent_pidfd < 0 || getppid() != parent)
        _exit(0);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    /* SIGINT and SIGTERM keep their defaults: anyone may stop the zygote,
     * and its workers then follow it through PR_SET_PDEATHSIG. */
    sigprocmask(SIG_BLOCK, &chld, NULL);
    Z.sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (Z.sigfd < 0)
        _exit(0);
    /* Workers never need a core dump of the program's memory by default. */
    struct rlimit nocore = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &nocore);

    for (;;) {
        int n = 3 + Z.nconns;
        struct pollfd *pf = calloc((size_t)n, sizeof *pf);
        if (!pf)
            z_exit();
        pf[0] = (struct pollfd){.fd = Z.ctl, .events = POLLIN};
        pf[1] = (struct pollfd){.fd = Z.parent_pidfd, .events = POLLIN};
        pf[2] = (struct pollfd){.fd = Z.sigfd, .events = POLLIN};
        for (int i = 0; i < Z.nconns; i++)
            pf[3 + i] = (struct pollfd){.fd = Z.conns[i], .events = POLLIN};
        int r = poll(pf, (nfds_t)n, -1);
        if (r < 0 && errno != EINTR)
            z_exit();
        if (pf[1].revents)
            z_exit(); /* the program has died */
        if (pf[2].revents) {
            struct signalfd_siginfo si;
            while (read(Z.sigfd, &si, sizeof si) > 0)
                ;
            z_reap();
        }
        for (int i = 0; i < Z.nconns; i++)
            if (pf[3 + i].revents && Z.conns[i] >= 0)
                z_spawn(i);
        if (pf[0].revents)
            z_accept();
        free(pf);
    }
}
