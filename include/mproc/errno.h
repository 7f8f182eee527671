/* SPDX-License-Identifier: MIT */
/*
 * mproc error codes. Every fallible mproc function returns 0 on success and a
 * negative code on failure. System failures are -errno as is; conditions that
 * are mproc's own live in a reserved range at -4000 and below, far from errno.
 * mproc_strerror() and mproc_err_name() are generated from MPROC_ERRNO_MAP, so
 * a code without a message cannot exist.
 */
#ifndef MPROC_ERRNO_H
#define MPROC_ERRNO_H

#include <errno.h>

/* XX(name, value, message) */
#define MPROC_ERRNO_MAP(XX)                                                    \
    XX(EPERM, -EPERM, "operation not permitted")                               \
    XX(EINVAL, -EINVAL, "invalid argument")                                    \
    XX(ENOMEM, -ENOMEM, "out of memory")                                       \
    XX(EAGAIN, -EAGAIN, "resource temporarily unavailable")                    \
    XX(EMFILE, -EMFILE, "too many open files")                                 \
    XX(ENFILE, -ENFILE, "too many open files in system")                       \
    XX(EOVERFLOW, -EOVERFLOW, "size overflows")                                \
    XX(ETIMEDOUT, -ETIMEDOUT, "timed out waiting")                             \
    XX(ESRCH, -ESRCH, "no such process")                                       \
    XX(ECHILD, -ECHILD, "no child process to wait for")                        \
    XX(EDEADLK, -EDEADLK, "waiting here would deadlock")                       \
    XX(ENOSYS, -ENOSYS, "not supported by this kernel")                        \
    XX(EIO, -EIO, "input/output error")                                        \
    XX(EPIPE, -EPIPE, "broken pipe")                                           \
    XX(ENOENT, -ENOENT, "no such shared object here")                          \
    XX(ERANGE, -ERANGE, "index out of range")                                  \
    XX(EBADF, -EBADF, "connection not open for this direction")                \
    XX(EMSGSIZE, -EMSGSIZE, "message larger than the buffer given")            \
    XX(ENOTRECOVERABLE, -ENOTRECOVERABLE, "lock state is not recoverable")     \
    XX(ETASK, -4001, "task reported an error")                                 \
    XX(ECRASHED, -4002,                                                        \
       "worker was killed by a signal while running the task")                 \
    XX(EEXITED, -4003, "worker exited while running the task")                 \
    XX(ETASKTIMEOUT, -4004, "task ran past its timeout")                       \
    XX(EMEMLIMIT, -4005, "task exceeded the worker memory limit")              \
    XX(ECLOSED, -4006, "pool, process or queue is closed")                     \
    XX(EBROKEN, -4007,                                                         \
       "broken: pool after too many worker deaths, or barrier")                \
    XX(ECANCELLED, -4008, "task cancelled")                                    \
    XX(EPROTO, -4009, "malformed message or corrupt shared state")             \
    XX(ETOOBIG, -4010, "result or message larger than the configured limit")   \
    XX(ENOTREADY, -4011, "result is not ready yet")                            \
    XX(EOF, -4012, "end of data: no more results or messages")                 \
    XX(ESTATE, -4013, "operation not valid in the object's current state")     \
    XX(EOWNERDEAD, -4014, "previous owner died while holding the lock")        \
    XX(EWORKERINIT, -4015, "worker initializer failed")

enum mproc_errno {
#define MPROC_ERRNO_ENUM_(name, value, msg) MPROC_##name = (value),
    MPROC_ERRNO_MAP(MPROC_ERRNO_ENUM_)
#undef MPROC_ERRNO_ENUM_
        MPROC_ERRNO_MAX_ = -4096
};

#endif /* MPROC_ERRNO_H */
