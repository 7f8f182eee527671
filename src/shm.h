/* SPDX-License-Identifier: MIT */
/*
 * Shared objects: the common part of every handle in the "shared state"
 * section of mproc.h.
 *
 * An object is a segment of a sealed memfd, mapped MAP_SHARED, that starts
 * with a mproc__seghdr; its type's state follows. (A Pipe connection is the
 * exception: its object is a socket, and it has no mapping.) Every handle
 * struct starts with a mproc__obj, so mproc_ref_of() can take any of them.
 *
 * The process that creates an object keeps its fd in a process-wide
 * registry, keyed by a random 64-bit id. Attaching a reference first looks
 * there (the creator itself, a forked Process child, or a worker that
 * inherited the registry from the fork server); failing that, a pool worker
 * fetches the fd from the process that owns its pool over its channel
 * (worker.c asks, pool.c answers from this registry).
 */
#ifndef MPROC_SHM_H
#define MPROC_SHM_H

#include <stddef.h>
#include <stdint.h>

#include "mproc.h"

enum {
    MPROC__K_SHM = 1,
    MPROC__K_VALUE,
    MPROC__K_ARRAY,
    MPROC__K_LOCK,
    MPROC__K_SEM,
    MPROC__K_COND,
    MPROC__K_EVENT,
    MPROC__K_BARRIER,
    MPROC__K_QUEUE,
    MPROC__K_CONN,
    MPROC__K_MAX_
};

#define MPROC__SEG_MAGIC 0x4d505348u /* "MPSH" */
#define MPROC__OBJ_MAGIC 0x6f626a21u /* live handle */

/* The first 64 bytes of every segment. */
typedef struct mproc__seghdr {
    uint32_t magic;
    uint32_t kind;
    uint64_t id;
    uint64_t size; /* bytes of the whole segment */
    uint64_t reserved_[5];
} mproc__seghdr;

/* The head of every shared handle. */
typedef struct mproc__obj {
    uint32_t magic; /* MPROC__OBJ_MAGIC while the handle is live */
    uint32_t kind;
    uint64_t id;
    void *base;  /* the segment's mapping; NULL for an fd object */
    size_t size; /* its length */
    int fd;      /* registered fd (creator), or -1 */
} mproc__obj;

/* Create a zeroed segment of size bytes (header included, so size >=
 * sizeof(mproc__seghdr)), map it, fill the header, and register it.
 * o->base points at the header; the type's state starts after it. */
int mproc__obj_create(mproc__obj *o, uint32_t kind, size_t size);

/* Attach a reference of the given kind: find or fetch the fd, map it and
 * check the header. MPROC_EINVAL for a malformed ref or a kind mismatch,
 * MPROC_ENOENT when the object cannot be found from here, MPROC_EPROTO when
 * the segment is not what it should be. min_size: the least size the
 * caller's state needs (it must still check its own fields). */
int mproc__obj_attach(mproc__obj *o, const mproc_ref *ref, uint32_t kind,
                      size_t min_size);

/* fd objects (Pipe connections). register: record fd under a new id (the
 * registry keeps its own dup, closed on release). attach_fd: a new fd for
 * the referenced object, found or fetched like a segment. */
int mproc__obj_register_fd(mproc__obj *o, uint32_t kind, int fd);
int mproc__obj_attach_fd(mproc__obj *o, const mproc_ref *ref, uint32_t kind,
                         int *fd);

/* Unregister (if registered here), close, unmap; the handle is dead after
 * this. Safe on a zeroed or half-built obj. */
void mproc__obj_release(mproc__obj *o);

/* The type's state, right after the segment header. */
static inline void *mproc__obj_state(const mproc__obj *o) {
    return (char *)o->base + sizeof(mproc__seghdr);
}

/* Allocate a handle of hsize bytes (a struct starting with mproc__obj) and
 * create or attach its segment with room for state bytes after the header.
 * NULL with *err set on failure. mproc__handle_free releases and frees. */
void *mproc__handle_new(size_t hsize, uint32_t kind, size_t state, int *err);
void *mproc__handle_attach(size_t hsize, const mproc_ref *ref, uint32_t kind,
                           size_t state, int *err);
void mproc__handle_free(void *h);

/* Is h a live handle of this kind? (NULL-safe.) */
int mproc__obj_ok(const void *h, uint32_t kind);

/* Is [p, p + len) inside the data of a segment this process created? Then
 * 1, with its id, kind and the offset of p from the segment's start. */
int mproc__registry_find_addr(const void *p, size_t len, uint64_t *id,
                              uint32_t *kind, size_t *off);
/* Attach a segment by id and kind, as mproc__obj_attach does a ref. */
int mproc__segment_attach(mproc__obj *o, uint64_t id, uint32_t kind);

/* Pool side of a worker's fetch: a dup of the registered fd of (id, kind),
 * or MPROC_ENOENT. */
int mproc__registry_dup(uint64_t id, uint32_t kind, int *fd);

/* In the fork server, just forked: close every fd object (Pipe end) the
 * program had, both the registry's dup and the handle's own fd, so that
 * workers never hold a Pipe end and EOF reaches the peer when the program
 * closes it. The fd numbers are still the program's: a handle removes its
 * registry entry before it closes its own fd. */
void mproc__registry_drop_fd_objects(void);

/* worker.c: inside a pool worker, ask the pool for the fd of (id, kind).
 * MPROC_ENOENT outside a worker or when the pool does not have it. */
int mproc__worker_fetch_fd(uint64_t id, uint32_t kind, int *fd);

#endif
