/* SPDX-License-Identifier: MIT */
/*
 * Internals shared by the library's source files. Nothing here is public and
 * nothing here is installed. Internal non-static functions use the mproc__
 * prefix.
 */
#ifndef MPROC_INTERNAL_H
#define MPROC_INTERNAL_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "mproc.h"

#define MPROC_UNUSED(x) ((void)(x))
#define MPROC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MPROC_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- sys.c: system-call discipline -------------------------------------- */

/* EINTR policy: reads, writes and waits are retried; close() never is and
 * EINTR from it counts as success; calls with a deadline recompute the time
 * left before retrying. Every fd is born close-on-exec. */
int mproc__close(int fd); /* keeps errno intact; fd < 0 is a no-op */
ssize_t mproc__read_full(int fd, void *buf, size_t len);
ssize_t mproc__write_full(int fd, const void *buf, size_t len);
int mproc__socketpair_seqpacket(int sv[2]); /* SOCK_SEQPACKET|SOCK_CLOEXEC */
int mproc__set_nonblock(int fd, bool on);
int mproc__pidfd_open(pid_t pid); /* -errno on failure */
int mproc__pidfd_send_signal(int pidfd, int sig);
int mproc__memfd(const char *name, size_t size); /* sealed against resize */

/* Monotonic clock. */
uint64_t mproc__now_ns(void);
static inline uint64_t mproc__ms_to_ns(long ms) {
    return (uint64_t)ms * 1000000ull;
}
/* Deadline helpers: timeout_ms < 0 means forever (deadline UINT64_MAX). */
uint64_t mproc__deadline(long timeout_ms);
/* Milliseconds left until deadline for poll(): -1 forever, 0 when passed. */
int mproc__ms_left(uint64_t deadline);
/* Absolute CLOCK_MONOTONIC timespec for pthread_cond_timedwait (the pool's
 * condition variables use the monotonic clock). */
struct timespec mproc__ts_from_ns(uint64_t ns);

/* Send and receive one SEQPACKET message with up to MPROC__MAX_FDS fds
 * attached. Sends block only if the socket does, and never raise SIGPIPE.
 * mproc__recv_msg returns the message length, 0 at EOF, or -errno; a
 * truncated message is -EMSGSIZE (its fds are closed). */
#define MPROC__MAX_FDS 4
ssize_t mproc__send_msg(int sock, const void *buf, size_t len, const int *fds,
                        int nfds);
ssize_t mproc__recv_msg(int sock, void *buf, size_t cap, int *fds, int maxfds,
                        int *nfds, int flags);

/* ---- ident.c: who am I ----------------------------------------------------
 */

/* Called in a freshly forked child to record its identity (name copied). */
void mproc__ident_set_child(const char *name, pid_t parent_pid,
                            const char *parent_name);
/* Number the next Process ("Process-N"). */
unsigned mproc__next_process_number(void);

/* ---- child setup shared by Process and pool workers -----------------------
 */

/* Reset signal dispositions and the mask to defaults in a new child. */
void mproc__child_reset_signals(void);

/* ---- zygote.c: the fork server --------------------------------------------
 */

/* A connection to the fork server, one per pool. */
typedef struct mproc__zconn {
    int fd; /* SEQPACKET to the server; -1 when closed */
} mproc__zconn;

/* What the server should start: fds to hand to the child, and the body. The
 * worker body runs in the child with the handed fds at the same numbers
 * the server got them at (they are dup'ed into the child's table). */
int mproc__zygote_connect(mproc__zconn *zc);
void mproc__zygote_disconnect(mproc__zconn *zc);
/* In a child forked from the program: drop the program's fork server. */
void mproc__zygote_forget(void);
/* Ask for a worker: chan_fd is the worker's end of its channel, page_fd its
 * mailbox (mbox.h). The reply (pid, pidfd) arrives asynchronously on zc->fd as
 * a mproc__zmsg of type ZMSG_SPAWNED. */
int mproc__zygote_request_spawn(mproc__zconn *zc, uint32_t slot, int chan_fd,
                                int page_fd);

/* Messages from the server on a pool's connection. */
enum {
    MPROC__ZMSG_SPAWN = 1,
    MPROC__ZMSG_SPAWNED,
    MPROC__ZMSG_EXITED,
    MPROC__ZMSG_SPAWN_FAILED
};
typedef struct mproc__zmsg {
    uint32_t type;
    uint32_t slot; /* the pool's worker slot the message is about */
    int32_t pid;
    int32_t status; /* wait status for EXITED; -errno for SPAWN_FAILED */
} mproc__zmsg;

/* worker.c: the body the server runs in each forked worker; never returns.
 */
void mproc__worker_main(int chan_fd, int page_fd) __attribute__((noreturn));

#endif /* MPROC_INTERNAL_H */
