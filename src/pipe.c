/* SPDX-License-Identifier: MIT */
/*
 * Pipe: Python's multiprocessing.Pipe. A connection is one end of an
 * AF_UNIX SOCK_SEQPACKET socketpair. SEQPACKET keeps message boundaries,
 * and a writer killed mid-send delivers nothing. Each user message is one
 * MPROC__MSG_DATA message of the wire layer (wire.h): small payloads go
 * inline, large ones in a sealed memfd, so any size works.
 *
 * The socket stays blocking, so a send waits while the peer's queue is
 * full. Receives never block in the kernel: they poll, then read with
 * MSG_DONTWAIT, so timeouts hold and several threads may wait at once.
 *
 * One-way pipes. End a is shut for writing and end b for reading, so the
 * kernel itself refuses the wrong direction (EPIPE, EOF). The handle also
 * knows its direction, to answer MPROC_EBADF. An attached handle gets a
 * new fd of the same socket and learns the direction from the socket's
 * SO_PRIORITY, which mproc_pipe() sets to mark one-way ends. AF_UNIX does
 * not use the priority for anything else, and it is a property of the
 * socket, so every fd of it, in any process, reads the same mark.
 *
 * recv_into leaves a message that does not fit in the socket: it peeks
 * the header first (without a control buffer, so no fd is installed).
 * Another process reading the same end may take that message between the
 * peek and the read; if the message read instead does not fit, the handle
 * holds it, and the next receive on this handle returns it.
 *
 * EOF needs every copy of the other end closed. The creator's registry
 * entry (shm.c) holds a dup of each end, so mproc_conn_close releases it
 * too. A forked child holds copies of both ends until it closes them or
 * exits. The fork server drops every end it inherits (see
 * mproc__registry_drop_fd_objects), so workers never hold one unless they
 * attach it.
 *
 * A peer that closes with our messages unread makes the kernel report
 * ECONNRESET once, before the messages it sent us. A receive reads on
 * past it; a send reports MPROC_EPIPE.
 *
 * Threads: any thread may send, receive or poll on a handle; close must be
 * the last call. A receive holds the handle's lock only while it takes a
 * message that is already there, never while it waits; a Process forked
 * at that moment would find the lock taken in its copy of the handle.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "shm.h"
#include "wire.h"

/* Directions, also the SO_PRIORITY mark of the socket (0 is the kernel's
 * default, so a duplex end needs no mark). */
enum { DIR_DUPLEX = 0, DIR_RECV_ONLY = 1, DIR_SEND_ONLY = 2 };

struct mproc_conn {
    mproc__obj obj; /* first: mproc_ref_of() reads it */
    int fd;         /* this handle's own fd of the socket */
    int dir;
    pthread_mutex_t rx_mu; /* guards everything below */
    unsigned char *rxbuf;  /* MPROC__WIRE_RECV_BUF bytes, made on first use */
    unsigned char *held;   /* a message taken that recv_into could not fit */
    size_t held_len;
    bool has_held;
};

static int conn_new(mproc_conn **out) {
    mproc_conn *c = calloc(1, sizeof *c);
    if (!c)
        return MPROC_ENOMEM;
    c->fd = -1;
    c->obj.fd = -1; /* nothing registered yet: release must not close 0 */
    int err = pthread_mutex_init(&c->rx_mu, NULL);
    if (err) {
        free(c);
        return -err;
    }
    *out = c;
    return 0;
}

static void conn_free(mproc_conn *c) {
    mproc__obj_release(&c->obj);
    mproc__close(c->fd);
    pthread_mutex_destroy(&c->rx_mu);
    free(c->rxbuf);
    free(c->held);
    free(c);
}

/* A handle for end fd of a new pipe; takes fd, also on failure. */
static int conn_make_end(mproc_conn **out, int fd, int dir) {
    mproc_conn *c;
    int err = conn_new(&c);
    if (err) {
        mproc__close(fd);
        return err;
    }
    c->fd = fd;
    c->dir = dir;
    err = mproc__obj_register_fd(&c->obj, MPROC__K_CONN, fd);
    if (err) {
        conn_free(c);
        return err;
    }
    *out = c;
    return 0;
}

/* Shut end a for writing and end b for reading, and mark both. Either
 * shutdown alone would do (the kernel applies the matching half to the
 * peer); both say what is meant. */
static int make_one_way(int a, int b) {
    int ra = DIR_RECV_ONLY, sb = DIR_SEND_ONLY;
    if (shutdown(a, SHUT_WR) < 0 || shutdown(b, SHUT_RD) < 0 ||
        setsockopt(a, SOL_SOCKET, SO_PRIORITY, &ra, sizeof ra) < 0 ||
        setsockopt(b, SOL_SOCKET, SO_PRIORITY, &sb, sizeof sb) < 0)
        return -errno;
    return 0;
}

int mproc_pipe(mproc_conn **a, mproc_conn **b, int duplex) {
    if (!a || !b || a == b)
        return MPROC_EINVAL;
    *a = *b = NULL;
    int sv[2];
    int err = mproc__socketpair_seqpacket(sv);
    if (err)
        return err;
    if (!duplex && (err = make_one_way(sv[0], sv[1])) != 0) {
        mproc__close(sv[0]);
        mproc__close(sv[1]);
        return err;
    }
    mproc_conn *ca, *cb;
    err = conn_make_end(&ca, sv[0], duplex ? DIR_DUPLEX : DIR_RECV_ONLY);
    if (err) {
        mproc__close(sv[1]);
        return err;
    }
    err = conn_make_end(&cb, sv[1], duplex ? DIR_DUPLEX : DIR_SEND_ONLY);
    if (err) {
        conn_free(ca);
        return err;
    }
    *a = ca;
    *b = cb;
    return 0;
}

int mproc_conn_attach(mproc_conn **out, const mproc_ref *ref) {
    if (!out)
        return MPROC_EINVAL;
    *out = NULL;
    if (!ref)
        return MPROC_EINVAL;
    mproc_conn *c;
    int err = conn_new(&c);
    if (err)
        return err;
    err = mproc__obj_attach_fd(&c->obj, ref, MPROC__K_CONN, &c->fd);
    if (err) {
        conn_free(c);
        return err;
    }
    /* The fd came from our own registry or from the pool, but check that
     * it is what a connection is before trusting the mark on it. */
    int type = 0, prio = 0;
    socklen_t tl = sizeof type, pl = sizeof prio;
    if (getsockopt(c->fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 ||
        type != SOCK_SEQPACKET ||
        getsockopt(c->fd, SOL_SOCKET, SO_PRIORITY, &prio, &pl) < 0 ||
        prio < DIR_DUPLEX || prio > DIR_SEND_ONLY) {
        conn_free(c);
        return MPROC_EPROTO;
    }
    c->dir = prio;
    *out = c;
    return 0;
}

int mproc_conn_send(mproc_conn *c, const void *data, size_t len) {
    if (!mproc__obj_ok(c, MPROC__K_CONN) || (!data && len))
        return MPROC_EINVAL;
    if (c->dir == DIR_RECV_ONLY)
        return MPROC_EBADF;
    /* The data goes as the "bulk" piece: wire.c writes that part of a
     * memfd in a loop, so even sizes past one write() are whole. */
    int err =
        mproc__wire_send(c->fd, MPROC__MSG_DATA, 0, 0, NULL, 0, data, len);
    switch (err) {
    case -EPIPE:
    case -ECONNRESET: /* the peer closed with our messages unread */
    case -ECONNREFUSED:
    case -ENOTCONN:
        return MPROC_EPIPE;
    default:
        return err;
    }
}

/* Where a received message goes: a malloc'd buffer (recv) or the caller's
 * buffer (recv_into). */
typedef struct sink {
    bool into;
    void *buf; /* recv_into */
    size_t cap;
    void **data; /* recv */
    size_t *len;
} sink;

/* Hand over a copy of a message; recv_into's too-long case is
 * MPROC_EMSGSIZE with *len set. */
static int deliver(sink *s, const void *p, size_t n) {
    if (s->into) {
        *s->len = n;
        if (n > s->cap)
            return MPROC_EMSGSIZE;
        if (n)
            memcpy(s->buf, p, n);
        return 0;
    }
    void *d = malloc(n ? n : 1); /* never NULL, even for 0 bytes */
    if (!d)
        return MPROC_ENOMEM;
    if (n)
        memcpy(d, p, n);
    *s->data = d;
    *s->len = n;
    return 0;
}

/* recv_into: MPROC_EMSGSIZE (and *len) when the next message is longer than
 * cap, leaving it in the socket; 0 to go on and read it; -EAGAIN, MPROC_EOF
 * or -errno as a read would. A header that is not a DATA header is left to
 * the real read, which drops it and reports MPROC_EPROTO. */
static int peek_fits(mproc_conn *c, sink *s) {
    mproc__hdr h;
    ssize_t n;
    do
        n = recv(c->fd, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    if (n == 0)
        return MPROC_EOF;
    if ((size_t)n == sizeof h && h.magic == MPROC__WIRE_MAGIC &&
        h.version == MPROC__WIRE_VERSION && h.type == MPROC__MSG_DATA &&
        h.len > s->cap) {
        *s->len = h.len > SIZE_MAX ? SIZE_MAX : (size_t)h.len;
        return MPROC_EMSGSIZE;
    }
    return 0;
}

/* One attempt, without waiting, under rx_mu. */
static int take_locked(mproc_conn *c, sink *s) {
    if (c->has_held) {
        int err = 0;
        if (s->into) {
            err = deliver(s, c->held, c->held_len);
            if (err == 0)
                free(c->held);
        } else {
            *s->data = c->held; /* malloc'd, never NULL: hand it over */
            *s->len = c->held_len;
        }
        if (err == 0) {
            c->held = NULL;
            c->has_held = false;
        }
        return err;
    }
    if (s->into) {
        int err = peek_fits(c, s);
        if (err)
            return err;
    }
    if (!c->rxbuf && !(c->rxbuf = malloc(MPROC__WIRE_RECV_BUF)))
        return MPROC_ENOMEM;
    mproc__msg m;
    int r = mproc__wire_recv(c->fd, c->rxbuf, SIZE_MAX, &m);
    if (r == 0)
        return MPROC_EOF;
    if (r < 0)
        return r;
    int err = MPROC_EPROTO;
    if (m.hdr.type == MPROC__MSG_DATA && m.fd < 0 && m.hdr.len <= SIZE_MAX) {
        size_t n = (size_t)m.hdr.len;
        err = deliver(s, m.payload, n);
        if (err == MPROC_EMSGSIZE) {
            /* Another reader took the message we peeked: keep this one. */
            unsigned char *keep = malloc(n ? n : 1);
            if (!keep) {
                err = MPROC_ENOMEM;
            } else {
                if (n)
                    memcpy(keep, m.payload, n);
                c->held = keep;
                c->held_len = n;
                c->has_held = true;
            }
        }
    }
    mproc__wire_release(&m);
    return err;
}

/* Wait until the socket is readable. 0, MPROC_ETIMEDOUT or -errno. */
static int wait_readable(int fd, uint64_t deadline) {
    for (;;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int r = poll(&pf, 1, mproc__ms_left(deadline));
        if (r > 0)
            return 0; /* POLLIN, or POLLHUP/POLLERR: the read will tell */
        if (r == 0)
            return MPROC_ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

static int conn_take(mproc_conn *c, sink *s, long timeout_ms) {
    if (c->dir == DIR_SEND_ONLY)
        return MPROC_EBADF;
    uint64_t deadline = mproc__deadline(timeout_ms);
    for (;;) {
        pthread_mutex_lock(&c->rx_mu);
        int r = take_locked(c, s);
        pthread_mutex_unlock(&c->rx_mu);
        /* ECONNRESET: the peer closed with our messages unread. The kernel
         * reports that once, before the messages the peer sent us, and
         * has now cleared it, so read on. */
        if (r == -ECONNRESET)
            continue;
        if (r != -EAGAIN)
            return r;
        /* Nothing yet (or another thread took it): wait for more. */
        if ((r = wait_readable(c->fd, deadline)) != 0)
            return r;
    }
}

int mproc_conn_recv(mproc_conn *c, void **data, size_t *len, long timeout_ms) {
    if (data)
        *data = NULL;
    if (len)
        *len = 0;
    if (!mproc__obj_ok(c, MPROC__K_CONN) || !data || !len)
        return MPROC_EINVAL;
    sink s = {.data = data, .len = len};
    return conn_take(c, &s, timeout_ms);
}

int mproc_conn_recv_into(mproc_conn *c, void *buf, size_t cap, size_t *len,
                         long timeout_ms) {
    size_t ignored;
    if (!len)
        len = &ignored; /* a reader of fixed-size messages may not care */
    *len = 0;
    if (!mproc__obj_ok(c, MPROC__K_CONN) || (!buf && cap))
        return MPROC_EINVAL;
    sink s = {.into = true, .buf = buf, .cap = cap, .len = len};
    int err = conn_take(c, &s, timeout_ms);
    if (err && err != MPROC_EMSGSIZE)
        *len = 0;
    return err;
}

int mproc_conn_poll(mproc_conn *c, long timeout_ms) {
    if (!mproc__obj_ok(c, MPROC__K_CONN))
        return MPROC_EINVAL;
    if (c->dir == DIR_SEND_ONLY)
        return MPROC_EBADF;
    pthread_mutex_lock(&c->rx_mu);
    bool held = c->has_held;
    pthread_mutex_unlock(&c->rx_mu);
    if (held)
        return 1;
    int r = wait_readable(c->fd, mproc__deadline(timeout_ms));
    if (r == MPROC_ETIMEDOUT)
        return 0;
    return r == 0 ? 1 : r;
}

void mproc_conn_close(mproc_conn *c) {
    if (!mproc__obj_ok(c, MPROC__K_CONN))
        return;
    conn_free(c);
}
