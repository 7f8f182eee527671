/* SPDX-License-Identifier: MIT */
/*
 * Process: one function in one child process, Python's multiprocessing.Process
 * with the "fork" start method. The child is forked directly from the calling
 * thread (not from the fork server in zygote.c), so it sees the caller's
 * memory as it is at mproc_process_start(). The parent tracks each child with
 * a pidfd (sys.c): join polls it, terminate and kill signal through it, and
 * waitid(P_PIDFD) reaps it, so a recycled pid can never be signalled or
 * reaped by mistake.
 *
 * A process-wide registry lists every child that was started here and is not
 * yet reaped. It exists for three reasons:
 *   - daemon children still running when the program exits normally are
 *     SIGKILLed and reaped by an atexit handler (parent death by a signal is
 *     covered by PR_SET_PDEATHSIG in the child instead);
 *   - a handle destroyed while its non-daemon child runs leaves the child
 *     running, as Python does; its entry stays in the registry (the handle
 *     memory is the entry) and later calls reap it once it has ended, so it
 *     does not stay a zombie for the life of the program;
 *   - a forked child must forget its parent's children: the fork handlers
 *     below close the inherited pidfds, so a Process body, a pool worker or
 *     the fork server never holds, signals or reaps its siblings.
 * ident.c gives the child its name; sys.c resets its signals.
 *
 * Threads: every function may be called from any thread, on the same handle
 * too (several threads may join one process), except that destroy must be
 * the last call on a handle.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

/* ident.c keeps names in buffers of this size; longer names are cut there. */
#define PARENT_NAME_CAP 64

enum proc_state {
    ST_NEW,      /* created, never started (or a failed start) */
    ST_STARTING, /* a thread is inside mproc_process_start() */
    ST_RUNNING,  /* forked, not yet reaped; listed in the registry */
    ST_ENDED     /* reaped; exitcode (or wait_err) is final */
};

struct mproc_process {
    /* Set by create, read-only afterwards. */
    mproc_process_fn fn;
    void *arg; /* malloc'ed copy, NULL when len is 0 */
    size_t len;
    char *name;
    int daemon;

    /* Everything below is guarded by reg_lock. */
    enum proc_state state;
    pid_t pid;   /* 0 before start */
    pid_t owner; /* the process that forked the child; only it may wait */
    int pidfd;   /* -1 when not started, after the reap, or when disowned */
    int exitcode;
    int wait_err;  /* nonzero: the status was lost (see reap_locked) */
    int waiters;   /* threads polling pidfd without the lock (join) */
    bool orphaned; /* handle destroyed, child still running */
    bool listed;
    struct mproc_process *prev, *next; /* registry links */
};

/*
 * The registry lock also guards every handle's mutable state, so that join
 * in one thread and is_alive or kill in another agree on who reaps and when
 * the pidfd is closed. It is never held across a fork (the fork handlers take
 * it instead) and never across a wait, except the short waits for a child
 * that was just sent SIGKILL.
 */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static mproc_process *reg_head;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

static void reg_link_locked(mproc_process *p) {
    p->prev = NULL;
    p->next = reg_head;
    if (reg_head)
        reg_head->prev = p;
    reg_head = p;
    p->listed = true;
}

static void reg_unlink_locked(mproc_process *p) {
    if (!p->listed)
        return;
    if (p->prev)
        p->prev->next = p->next;
    else
        reg_head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    p->listed = false;
}

/* A handle that this process did not fork (it was inherited across a fork,
 * or its start is still in progress) must not be waited for or signalled. */
static bool is_foreign_locked(const mproc_process *p) {
    return p->state != ST_NEW && p->owner != getpid();
}

static void close_pidfd_if_idle_locked(mproc_process *p) {
    /* A joiner polls the pidfd without the lock; closing it under its feet
     * could make it poll an unrelated fd that reused the number. The last
     * joiner closes it instead. */
    if (p->state == ST_ENDED && p->waiters == 0 && p->pidfd >= 0) {
        mproc__close(p->pidfd);
        p->pidfd = -1;
    }
}

/*
 * Collect the child's status if it has ended (block: wait until it has).
 * Returns 1 when the child has ended (now or earlier), 0 while it runs, or
 * -errno when waiting failed for a reason that says nothing about the child.
 */
static int reap_locked(mproc_process *p, bool block) {
    if (p->state == ST_ENDED)
        return 1;
    if (p->state != ST_RUNNING || p->pidfd < 0)
        return 0;
    siginfo_t si;
    int rc;
    do {
        memset(&si, 0, sizeof si);
        rc = waitid(P_PIDFD, (id_t)p->pidfd, &si,
                    WEXITED | (block ? 0 : WNOHANG));
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        if (errno != ECHILD)
            return -errno;
        /* Someone else reaped our child: SIGCHLD set to SIG_IGN (the kernel
         * then reaps by itself) or a waitpid(-1) elsewhere in the program.
         * The child is gone and its status is lost; say so in exitcode. */
        p->wait_err = MPROC_ECHILD;
        p->exitcode = 0;
    } else if (si.si_pid == 0) {
        return 0; /* WNOHANG and still running */
    } else {
        /* Python's convention: the exit status, or minus the signal. */
        p->exitcode = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
    }
    p->state = ST_ENDED;
    reg_unlink_locked(p);
    close_pidfd_if_idle_locked(p);
    return 1;
}

static void free_handle(mproc_process *p) {
    free(p->arg);
    free(p->name);
    free(p);
}

/* Reap the children whose handles were destroyed while they ran, if they
 * have ended since. Cheap when there are none: the registry is short. */
static void sweep_orphans_locked(void) {
    pid_t self = getpid();
    mproc_process *next;
    for (mproc_process *p = reg_head; p; p = next) {
        next = p->next;
        if (p->orphaned && p->owner == self && reap_locked(p, false) == 1)
            free_handle(p);
    }
}

/* SIGKILL a running child and wait for it. Used for daemons, whose promise
 * is to die with their parent; SIGKILL cannot be caught, so the wait is
 * short unless the child sits in an uninterruptible sleep. */
static void kill_and_reap_locked(mproc_process *p) {
    if (reap_locked(p, false) != 0)
        return;
    (void)mproc__pidfd_send_signal(p->pidfd, SIGKILL);
    (void)reap_locked(p, true);
}

/*
 * At normal exit: kill and reap the daemon children still running (Python
 * terminates daemonic children in its exit function), and reap orphans that
 * have ended. Unlike Python, running non-daemon children are not joined: a
 * program that exits does not hang on a child, and the child is re-parented
 * (to init or a subreaper), which reaps it.
 */
static void process_atexit(void) {
    pthread_mutex_lock(&reg_lock);
    pid_t self = getpid();
    mproc_process *next;
    for (mproc_process *p = reg_head; p; p = next) {
        next = p->next;
        if (p->owner != self)
            continue;
        if (p->daemon)
            kill_and_reap_locked(p);
        else
            (void)reap_locked(p, false);
        if (p->orphaned && p->state == ST_ENDED)
            free_handle(p);
    }
    pthread_mutex_unlock(&reg_lock);
}

/*
 * Fork handlers. Every fork in the program (ours, the fork server's, the
 * user's) takes reg_lock first, so the child never inherits it locked. In
 * the child the listed children are the parent's, not ours: close their
 * pidfds and forget them. Handles the child still holds stay valid memory
 * but are foreign there (owner != getpid()). Orphan entries are leaked in the
 * child on purpose: only async-signal-safe calls belong in a child of a
 * multithreaded fork, and free() is not one.
 */
static void atfork_prepare(void) {
    pthread_mutex_lock(&reg_lock);
}

static void atfork_parent(void) {
    pthread_mutex_unlock(&reg_lock);
}

static void atfork_child(void) {
    mproc_process *next;
    for (mproc_process *p = reg_head; p; p = next) {
        next = p->next;
        mproc__close(p->pidfd);
        p->pidfd = -1;
        p->prev = p->next = NULL;
        p->listed = false;
    }
    reg_head = NULL;
    /* The lock is held by the thread that forked, which in the child is
     * this one; a fresh mutex is simpler than reasoning about its owner. */
    pthread_mutex_init(&reg_lock, NULL);
}

static void reg_init_once(void) {
    /* Neither can fail in a way we could do anything about except ENOMEM,
     * and then mproc still works, only without cleanup at exit and with
     * sibling pidfds inherited by children. */
    (void)pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    (void)atexit(process_atexit);
}

int mproc_process_create(mproc_process **out, mproc_process_fn fn,
                         const void *arg, size_t len,
                         const mproc_process_opts *opts) {
    if (!out)
        return MPROC_EINVAL;
    *out = NULL;
    if (!fn || (!arg && len > 0))
        return MPROC_EINVAL;

    mproc_process *p = calloc(1, sizeof *p);
    if (!p)
        return MPROC_ENOMEM;
    p->fn = fn;
    p->len = len;
    p->pidfd = -1;
    p->state = ST_NEW;
    p->daemon = opts && opts->daemon ? 1 : 0;
    if (len > 0) {
        p->arg = malloc(len);
        if (!p->arg)
            goto out_free;
        memcpy(p->arg, arg, len);
    }
    /* Python numbers every Process, named or not, so the default names of
     * later ones do not depend on whether earlier ones had a name. */
    unsigned n = mproc__next_process_number();
    if (opts && opts->name) {
        p->name = strdup(opts->name);
    } else {
        char buf[32];
        snprintf(buf, sizeof buf, "Process-%u", n);
        p->name = strdup(buf);
    }
    if (!p->name)
        goto out_free;

    pthread_mutex_lock(&reg_lock);
    sweep_orphans_locked();
    pthread_mutex_unlock(&reg_lock);
    *out = p;
    return 0;

out_free:
    free_handle(p);
    return MPROC_ENOMEM;
}

/* The child's side of start. Never returns. */
static _Noreturn void child_main(mproc_process *p, pid_t parent,
                                 const char *parent_name, const int gate[2]) {
    /*
     * Every signal is still blocked (the parent blocked them before the
     * fork), so no handler inherited from the parent can run in the child
     * before its dispositions are back to the defaults.
     *
     * A daemon asks to be SIGKILLed when its parent dies. Then it checks
     * that the parent is still the one that forked it: if the parent died
     * between the fork and the prctl, no signal will ever come.
     *
     * Caveat (prctl(2), PR_SET_PDEATHSIG): "parent" means the *thread* that
     * forked. A daemon started from a thread that later exits is killed at
     * that moment even though the program goes on, so start daemons from a
     * long-lived thread (typically the main thread). If the thread exits
     * before the prctl, the check below still passes (same process) and the
     * daemon is tied to no live thread; whether a thread exit kills it is
     * then a race. The setting is also cleared by set-uid exec and by
     * credential changes in the child.
     */
    if (p->daemon) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent) {
            /* Die the way a daemon dies with its parent, so that whoever
             * reaps us sees the same status either way. */
            kill(getpid(), SIGKILL);
            _exit(1);
        }
    }
    /* Wait at the gate until the parent holds our pidfd (see start). EOF
     * means the parent died meanwhile. */
    mproc__close(gate[1]);
    char go = 0;
    ssize_t n = mproc__read_full(gate[0], &go, 1);
    mproc__close(gate[0]);
    if (n != 1 || go != 'y')
        _exit(127);

    /* The program's fork server is not ours: holding its control socket
     * would keep it from seeing the program shut it down. */
    mproc__zygote_forget();
    mproc__ident_set_child(p->name, parent, parent_name);
    /* Default dispositions first, then the empty mask: a signal that
     * arrived since the fork is acted on with the default action. */
    mproc__child_reset_signals();

    int ret = p->fn(p->arg, p->len);

    /* Like Python's child: flush the standard streams and leave with
     * _exit(), so atexit handlers and other stdio buffers that were copied
     * from the parent do not run or get written a second time. */
    fflush(stdout);
    fflush(stderr);
    _exit(ret & 0xff);
}

int mproc_process_start(mproc_process *p) {
    if (!p)
        return MPROC_EINVAL;
    pthread_once(&reg_once, reg_init_once);

    pthread_mutex_lock(&reg_lock);
    if (p->state != ST_NEW) {
        pthread_mutex_unlock(&reg_lock);
        return MPROC_ESTATE;
    }
    p->state = ST_STARTING;
    sweep_orphans_locked();
    pthread_mutex_unlock(&reg_lock);

    /* The child's parent name is ours; copy it now because the child
     * overwrites our name (the same static buffer) when it renames itself. */
    char parent_name[PARENT_NAME_CAP];
    snprintf(parent_name, sizeof parent_name, "%s", mproc_current_name());
    pid_t self = getpid();

    /* Python flushes the standard streams before forking, so output still
     * buffered here is not written twice (once by the child). */
    fflush(stdout);
    fflush(stderr);

    /*
     * The gate holds the child before it runs anything until we have its
     * pidfd. pidfd_open(pid) is race-free only while the pid cannot have
     * been recycled, that is while the child is not reaped; and when
     * SIGCHLD is ignored (or SA_NOCLDWAIT set) the kernel reaps a child the
     * moment it exits, which a short body does before we get here. Held at
     * the gate it cannot exit, so the pid is surely still ours. It also
     * means that a failed start never ran the body.
     */
    int gate[2];
    if (pipe2(gate, O_CLOEXEC) < 0) {
        int err = -errno;
        pthread_mutex_lock(&reg_lock);
        p->state = ST_NEW;
        pthread_mutex_unlock(&reg_lock);
        return err;
    }

    /* Block every signal across the fork (as libuv does): a handler of the
     * parent must not run in the child before the child resets it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0)
        child_main(p, self, parent_name, gate);
    int err = pid < 0 ? -errno : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    int fd = -1;
    if (pid > 0) {
        fd = mproc__pidfd_open(pid);
        /* Always answer with a byte rather than by closing: a process
         * forked meanwhile by another thread may hold a copy of the write
         * end, and then no EOF would come. The pipe is empty, so the write
         * does not block. */
        char go = fd >= 0 ? 'y' : 'n';
        (void)mproc__write_full(gate[1], &go, 1);
        if (fd < 0) {
            /* Without a pidfd we cannot track the child, so the start
             * fails; the child leaves at the gate and we reap it. ESRCH:
             * something killed it and it was reaped already (SIGCHLD
             * ignored). */
            err = fd;
            if (fd != -ESRCH)
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
                }
        }
    }
    mproc__close(gate[0]);
    mproc__close(gate[1]);

    pthread_mutex_lock(&reg_lock);
    if (err < 0) {
        p->state = ST_NEW; /* as Python: a failed start may be retried */
    } else {
        p->pid = pid;
        p->owner = self;
        p->pidfd = fd;
        p->state = ST_RUNNING;
        reg_link_locked(p);
    }
    pthread_mutex_unlock(&reg_lock);
    return err;
}

int mproc_process_join(mproc_process *p, long timeout_ms) {
    if (!p)
        return MPROC_EINVAL;
    uint64_t deadline = mproc__deadline(timeout_ms);

    pthread_mutex_lock(&reg_lock);
    if (p->state == ST_NEW || is_foreign_locked(p)) {
        pthread_mutex_unlock(&reg_lock);
        return MPROC_ESTATE;
    }
    int rc;
    while ((rc = reap_locked(p, false)) == 0) {
        /* Poll outside the lock so other threads can use the handle (and
         * other handles) meanwhile; waiters keeps the pidfd open. */
        int fd = p->pidfd;
        p->waiters++;
        pthread_mutex_unlock(&reg_lock);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n;
        do {
            n = poll(&pfd, 1, mproc__ms_left(deadline));
        } while (n < 0 && errno == EINTR);
        int poll_err = n < 0 ? -errno : 0;
        pthread_mutex_lock(&reg_lock);
        p->waiters--;
        if (n > 0)
            continue; /* readable: the child has ended; reap it */
        close_pidfd_if_idle_locked(p); /* another thread may have reaped */
        if (p->state == ST_ENDED)
            rc = 1;
        else
            rc = n == 0 ? MPROC_ETIMEDOUT : poll_err;
        break;
    }
    pthread_mutex_unlock(&reg_lock);
    return rc == 1 ? 0 : rc;
}

int mproc_process_is_alive(mproc_process *p) {
    if (!p)
        return 0;
    pthread_mutex_lock(&reg_lock);
    /* Like Python, asking reaps a child that has ended. */
    int alive = p->state == ST_RUNNING && !is_foreign_locked(p) &&
                reap_locked(p, false) != 1;
    pthread_mutex_unlock(&reg_lock);
    return alive;
}

static int send_signal(mproc_process *p, int sig) {
    if (!p)
        return MPROC_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&reg_lock);
    if (p->state == ST_NEW || is_foreign_locked(p)) {
        rc = MPROC_ESTATE;
    } else if (p->state == ST_RUNNING) {
        rc = mproc__pidfd_send_signal(p->pidfd, sig);
        if (rc == -ESRCH)
            rc = 0; /* ended and already gone */
    }
    pthread_mutex_unlock(&reg_lock);
    return rc;
}

int mproc_process_terminate(mproc_process *p) {
    return send_signal(p, SIGTERM);
}

int mproc_process_kill(mproc_process *p) {
    return send_signal(p, SIGKILL);
}

int mproc_process_exitcode(mproc_process *p, int *code) {
    if (!p || !code)
        return MPROC_EINVAL;
    int rc;
    pthread_mutex_lock(&reg_lock);
    if (p->state == ST_RUNNING && !is_foreign_locked(p))
        (void)reap_locked(p, false); /* Python's exitcode polls too */
    if (p->state != ST_ENDED) {
        rc = MPROC_ENOTREADY;
    } else {
        *code = p->exitcode;
        rc = p->wait_err;
    }
    pthread_mutex_unlock(&reg_lock);
    return rc;
}

pid_t mproc_process_pid(const mproc_process *p) {
    if (!p)
        return 0;
    pthread_mutex_lock(&reg_lock);
    pid_t pid = p->pid;
    pthread_mutex_unlock(&reg_lock);
    return pid;
}

const char *mproc_process_name(const mproc_process *p) {
    return p ? p->name : NULL;
}

int mproc_process_daemon(const mproc_process *p) {
    return p ? p->daemon : 0;
}

void mproc_process_destroy(mproc_process *p) {
    if (!p)
        return;
    pthread_mutex_lock(&reg_lock);
    bool running = p->state == ST_RUNNING && !is_foreign_locked(p) &&
                   reap_locked(p, false) != 1;
    if (running && p->daemon) {
        /* The header's promise: a daemon does not outlive its handle. */
        kill_and_reap_locked(p);
        running = p->state != ST_ENDED;
    }
    if (running) {
        /* Python lets a running child go on when its Process object goes
         * away. Keep the entry (the handle itself, minus what only the
         * user needed) so that later calls and the exit handler reap it. */
        p->orphaned = true;
        free(p->arg);
        p->arg = NULL;
        sweep_orphans_locked();
        pthread_mutex_unlock(&reg_lock);
        return;
    }
    /* Ended, never started, or foreign (inherited from the parent across a
     * fork: not ours to signal or reap). */
    reg_unlink_locked(p);
    mproc__close(p->pidfd);
    p->pidfd = -1;
    sweep_orphans_locked();
    pthread_mutex_unlock(&reg_lock);
    free_handle(p);
}
