/* SPDX-License-Identifier: MIT */
/*
 * Framing of pool <-> worker messages (see wire.h): inline SEQPACKET
 * messages for small payloads, a sealed memfd for large ones.
 */
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static int send_memfd(int sock, mproc__hdr *h, const void *a, size_t alen,
                      const void *b, size_t blen) {
    int fd = mproc__memfd("mproc-msg", alen + blen);
    if (fd < 0)
        return fd;
    int err = 0;
    if (alen && pwrite(fd, a, alen, 0) != (ssize_t)alen)
        err = errno ? -errno : -EIO;
    /* pwrite may be short for huge buffers; loop on the bulk part. */
    size_t off = 0;
    while (!err && off < blen) {
        ssize_t n =
            pwrite(fd, (const char *)b + off, blen - off, (off_t)(alen + off));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            err = n < 0 ? -errno : -EIO;
        else
            off += (size_t)n;
    }
    if (!err) {
        h->flags |= MPROC__WIRE_F_MEMFD;
        ssize_t n = mproc__send_msg(sock, h, sizeof *h, &fd, 1);
        if (n < 0)
            err = (int)n;
    }
    mproc__close(fd);
    return err;
}

int mproc__wire_send(int sock, uint16_t type, uint64_t id, uint32_t nitems,
                     const void *a, size_t alen, const void *b, size_t blen) {
    mproc__hdr h = {.magic = MPROC__WIRE_MAGIC,
                    .version = MPROC__WIRE_VERSION,
                    .type = type,
                    .nitems = nitems,
                    .id = id,
                    .len = alen + blen};
    if (alen + blen > MPROC__WIRE_INLINE_MAX)
        return send_memfd(sock, &h, a, alen, b, blen);
    struct iovec iov[3] = {
        {&h, sizeof h}, {(void *)a, alen}, {(void *)b, blen}};
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 3};
    for (;;) {
        ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (n >= 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

int mproc__wire_send_fd(int sock, uint16_t type, uint64_t id, const void *a,
                        size_t alen, int fd) {
    if (alen > MPROC__WIRE_INLINE_MAX)
        return MPROC_EINVAL;
    unsigned char buf[sizeof(mproc__hdr) + 64];
    mproc__hdr h = {.magic = MPROC__WIRE_MAGIC,
                    .version = MPROC__WIRE_VERSION,
                    .type = type,
                    .flags = MPROC__WIRE_F_FD,
                    .id = id,
                    .len = alen};
    if (alen > sizeof buf - sizeof h)
        return MPROC_EINVAL;
    memcpy(buf, &h, sizeof h);
    if (alen)
        memcpy(buf + sizeof h, a, alen);
    ssize_t n = mproc__send_msg(sock, buf, sizeof h + alen, &fd, 1);
    return n < 0 ? (int)n : 0;
}

int mproc__wire_recv(int sock, void *buf, size_t max_payload, mproc__msg *m) {
    int fd = -1, nfd = 0;
    memset(m, 0, sizeof *m);
    m->fd = -1;
    ssize_t n = mproc__recv_msg(sock, buf, MPROC__WIRE_RECV_BUF, &fd, 1, &nfd,
                                MSG_DONTWAIT);
    if (n == 0)
        return 0;
    if (n == -EMSGSIZE)
        return MPROC_EPROTO;
    if (n < 0)
        return n == -EWOULDBLOCK ? -EAGAIN : (int)n;
    int err = MPROC_EPROTO;
    if ((size_t)n < sizeof(mproc__hdr))
        goto out;
    memcpy(&m->hdr, buf, sizeof m->hdr);
    const mproc__hdr *h = &m->hdr;
    if (h->magic != MPROC__WIRE_MAGIC || h->version != MPROC__WIRE_VERSION ||
        h->type == 0 || h->type >= MPROC__MSG_MAX_)
        goto out;
    if (h->len > max_payload) {
        err = MPROC_ETOOBIG;
        goto out;
    }
    if (h->flags & MPROC__WIRE_F_FD) {
        if (h->flags != MPROC__WIRE_F_FD || nfd != 1 ||
            (size_t)n - sizeof *h != h->len)
            goto out;
        m->payload = (const unsigned char *)buf + sizeof *h;
        m->fd = fd;
        return 1;
    }
    if (!(h->flags & MPROC__WIRE_F_MEMFD)) {
        if (nfd != 0 || (size_t)n - sizeof *h != h->len)
            goto out;
        m->payload = (const unsigned char *)buf + sizeof *h;
        return 1;
    }
    /* memfd payload: it must be sealed against shrinking (else the sender
     * could turn our reads into SIGBUS) and at least as long as claimed. */
    struct stat st;
    int seals;
    if (nfd != 1 || (size_t)n != sizeof *h || fstat(fd, &st) < 0 ||
        (seals = fcntl(fd, F_GET_SEALS)) < 0 || !(seals & F_SEAL_SHRINK) ||
        (uint64_t)st.st_size < h->len)
        goto out;
    if (h->len > 0) {
        void *p = mmap(NULL, h->len, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            err = -errno;
            goto out;
        }
        m->map = p;
        m->map_len = h->len;
        m->payload = p;
    } else {
        m->payload = (const unsigned char *)buf + sizeof *h;
    }
    mproc__close(fd);
    return 1;
out:
    mproc__close(fd);
    return err;
}

void mproc__wire_release(mproc__msg *m) {
    if (m->map)
        munmap(m->map, m->map_len);
    m->map = NULL;
    if (m->fd >= 0)
        mproc__close(m->fd);
    m->fd = -1;
}
