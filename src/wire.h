/* SPDX-License-Identifier: MIT */
/*
 * The messages between a pool and its workers, over one SOCK_SEQPACKET
 * socketpair per worker. A message is a fixed header and a payload. Small
 * payloads travel inline, so a message arrives whole or not at all; large
 * ones travel in a sealed memfd passed with the header, so there is no size
 * limit and a writer that dies mid-way produces no message at all.
 *
 * The pool treats every byte from a worker as untrusted: wire.c checks the
 * header, and pool.c checks the payload layout before it reads any of it.
 */
#ifndef MPROC_WIRE_H
#define MPROC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define MPROC__WIRE_MAGIC   0x4d505243u /* "MPRC" */
#define MPROC__WIRE_VERSION 1
/* Payloads up to this size travel inline; the socket buffer (about 208 KiB
 * by default) holds a whole message of this size. */
#define MPROC__WIRE_INLINE_MAX (96u * 1024u)

enum {
    MPROC__MSG_INIT = 1,    /* pool -> worker: settings, initializer arg */
    MPROC__MSG_TASK,        /* pool -> worker: a chunk of items */
    MPROC__MSG_READY,       /* worker -> pool: initialised */
    MPROC__MSG_RESULT,      /* worker -> pool: outcome of a chunk */
    MPROC__MSG_INIT_FAILED, /* worker -> pool: initializer failed (text) */
    MPROC__MSG_FDREQ,       /* worker -> pool: fd of a shared object */
    MPROC__MSG_FDREP,       /* pool -> worker: int32 code, fd attached */
    MPROC__MSG_DATA,        /* Pipe connections: one user message */
    MPROC__MSG_WAKE,        /* either way: look at the mailbox (mbox.h) */
    MPROC__MSG_MAX_
};

#define MPROC__WIRE_F_MEMFD 1u /* payload is in the attached memfd */
#define MPROC__WIRE_F_FD    2u /* an fd rides along; the payload is inline */

typedef struct mproc__hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t nitems;
    uint32_t flags;
    uint64_t id;  /* chunk id for TASK and RESULT */
    uint64_t len; /* payload bytes */
} mproc__hdr;

/* A received message; payload points into buf or into a mapping. */
typedef struct mproc__msg {
    mproc__hdr hdr;
    const unsigned char *payload;
    void *map; /* memfd mapping to unmap, or NULL */
    size_t map_len;
    int fd; /* the F_FD fd, or -1; take it by setting -1 */
} mproc__msg;

/* FDREQ payload: which object. */
typedef struct mproc__fdreq {
    uint64_t id;
    uint32_t kind;
    uint32_t pad_;
} mproc__fdreq;

/* Worker settings carried by INIT, followed by initarg_len bytes. */
typedef struct mproc__init_payload {
    uint64_t worker_number; /* N of "PoolWorker-N" */
    uint64_t max_tasks;     /* 0 = unlimited */
    uint64_t mem_limit;     /* bytes, 0 = none */
    int64_t pin_cpu;        /* -1 = no pinning */
    uint64_t max_result;    /* bytes */
    uint64_t initializer;   /* mproc_init_fn, 0 = none */
    uint64_t initarg_len;
    int32_t parent_pid;
    char parent_name[64];
} mproc__init_payload;

enum { MPROC__KIND_BYTES = 1, MPROC__KIND_TYPED = 2 };

#define MPROC__TASK_F_TIMED   1u /* stamp each item's start (a timeout) */
#define MPROC__TASK_F_IN_SHM  2u /* typed input is in a shared segment */
#define MPROC__TASK_F_OUT_SHM 4u /* typed output goes to a shared segment */
/* Follows the fixed part of a typed TASK with F_IN_SHM or F_OUT_SHM: where
 * the chunk's first input and output element are. The input bytes are
 * then not in the message, and the outputs are written in place. */
typedef struct mproc__task_segs {
    uint64_t in_id, in_off;
    uint64_t out_id, out_off;
    uint32_t in_kind, out_kind;
} mproc__task_segs;

/* Fixed part of TASK. Bytes form: then uint64 lens[nitems] and the data.
 * Typed form: then nitems * in_size bytes, or, with F_IN_SHM or F_OUT_SHM,
 * a mproc__task_segs and the input bytes only if they are not shared. */
typedef struct mproc__task_payload {
    uint64_t fn;
    uint32_t kind;
    uint32_t flags; /* MPROC__TASK_F_* */
    uint64_t in_size;
    uint64_t out_size;
    uint64_t first_index;
} mproc__task_payload;

/* RESULT: nitems of these, then the data area, then the message area. */
typedef struct mproc__item_hdr {
    int32_t code;
    uint32_t msglen;
    uint64_t datalen;
} mproc__item_hdr;

/* Send a message; the payload is given as up to two pieces (header-ish
 * part and bulk) to avoid a copy. 0 or -errno. */
int mproc__wire_send(int sock, uint16_t type, uint64_t id, uint32_t nitems,
                     const void *a, size_t alen, const void *b, size_t blen);

/* Send an inline message with fd attached (F_FD). */
int mproc__wire_send_fd(int sock, uint16_t type, uint64_t id, const void *a,
                        size_t alen, int fd);

/* Receive one message into buf (at least MPROC__WIRE_RECV_BUF bytes).
 * Returns 1 with *m filled, 0 at EOF, -EAGAIN when nothing is there on a
 * non-blocking socket, MPROC_EPROTO for a malformed message or a payload
 * larger than max_payload, or another -errno. */
#define MPROC__WIRE_RECV_BUF (sizeof(mproc__hdr) + MPROC__WIRE_INLINE_MAX)
int mproc__wire_recv(int sock, void *buf, size_t max_payload, mproc__msg *m);
/* Unmap the payload and close an fd still in the message. */
void mproc__wire_release(mproc__msg *m);

#endif
