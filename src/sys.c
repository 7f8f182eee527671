/* SPDX-License-Identifier: MIT */
/*
 * System-call helpers: EINTR-safe I/O, close-on-exec by construction,
 * SEQPACKET messages with an attached fd, pidfds, sealed memfds, and the
 * monotonic clock. The EINTR policy is stated in internal.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

int mproc__close(int fd) {
    if (fd < 0)
        return 0;
    int saved = errno;
    int rc = close(fd);
    if (rc < 0 && errno == EINTR)
        rc = 0; /* never retry close(): the fd is gone either way */
    errno = saved;
    return rc;
}

ssize_t mproc__read_full(int fd, void *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

ssize_t mproc__write_full(int fd, const void *buf, size_t len) {
    size_t put = 0;
    while (put < len) {
        ssize_t n = write(fd, (const char *)buf + put, len - put);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        put += (size_t)n;
    }
    return (ssize_t)put;
}

int mproc__socketpair_seqpacket(int sv[2]) {
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    return 0;
}

int mproc__set_nonblock(int fd, bool on) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    if (fcntl(fd, F_SETFL, fl) < 0)
        return -errno;
    return 0;
}

int mproc__pidfd_open(pid_t pid) {
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return -errno;
    return (int)fd; /* pidfds are always close-on-exec */
}

int mproc__pidfd_send_signal(int pidfd, int sig) {
    if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0)
        return -errno;
    return 0;
}

int mproc__memfd(const char *name, size_t size) {
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (size > (size_t)LONG_MAX || ftruncate(fd, (off_t)size) < 0)
        goto fail;
    /* A peer that shrinks a shared object turns our next access into
     * SIGBUS; sealing makes the size fixed for everyone. */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        goto fail;
    return fd;
fail:;
    int err = errno ? -errno : -EOVERFLOW;
    mproc__close(fd);
    return err;
}

uint64_t mproc__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t mproc__deadline(long timeout_ms) {
    if (timeout_ms < 0)
        return UINT64_MAX;
    uint64_t now = mproc__now_ns();
    /* A timeout so long that the clock would overflow is no limit. */
    if ((uint64_t)timeout_ms > (UINT64_MAX - 1 - now) / 1000000ull)
        return UINT64_MAX;
    return now + mproc__ms_to_ns(timeout_ms);
}

int mproc__ms_left(uint64_t deadline) {
    if (deadline == UINT64_MAX)
        return -1;
    uint64_t now = mproc__now_ns();
    if (now >= deadline)
        return 0;
    uint64_t ms = (deadline - now + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

struct timespec mproc__ts_from_ns(uint64_t ns) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    return ts;
}

ssize_t mproc__send_msg(int sock, const void *buf, size_t len, const int *fds,
                        int nfds) {
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * MPROC__MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > MPROC__MAX_FDS)
        return -EINVAL;
    if (nfds > 0) {
        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    for (;;) {
        ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -errno;
    }
}

ssize_t mproc__recv_msg(int sock, void *buf, size_t cap, int *fds, int maxfds,
                        int *nfds, int flags) {
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = ctl.buf,
                        .msg_controllen = sizeof ctl.buf};
    int got = 0;
    ssize_t n;
    for (;;) {
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
        if (n >= 0)
            break;
        if (errno != EINTR)
            return -errno;
    }
    /* Take every fd that came and keep at most maxfds: a peer must not be
     * able to make us leak descriptors. */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int f;
            memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
            if (fds && got < maxfds)
                fds[got++] = f;
            else
                mproc__close(f);
        }
    }
    if (nfds)
        *nfds = got;
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        for (int i = 0; i < got; i++)
            mproc__close(fds[i]);
        if (nfds)
            *nfds = 0;
        return -EMSGSIZE;
    }
    return n;
}

void mproc__child_reset_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP)
            continue;
        (void)sigaction(s, &sa, NULL); /* EINVAL for glibc-reserved ones */
    }
    sigset_t none;
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);
}
