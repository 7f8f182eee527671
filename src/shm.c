/* SPDX-License-Identifier: MIT */
/*
 * Shared objects: segments, the process-wide registry of objects this
 * process can hand out, and attaching references (see shm.h). Also the raw
 * segment type (mproc_shm_*) and mproc_ref_of().
 */
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* ---- the registry ---------------------------------------------------------
 * A short list: a program holds few shared objects, and lookups happen once
 * per attach, not per operation. */

typedef struct reg_entry {
    struct reg_entry *next;
    uint64_t id;
    uint32_t kind;
    int fd;
    int aux_fd; /* fd objects: the handle's own fd (not ours), else -1 */
    const unsigned char *base; /* segments: the creator's mapping */
    size_t size;
} reg_entry;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static reg_entry *reg_head;
static uint64_t id_next; /* guarded by reg_mu */
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

static void reseed(void) {
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
        r = mproc__now_ns() ^ ((uint64_t)getpid() << 32);
    id_next = r | 1;
}

/* A forked child must not inherit a registry lock held by another thread,
 * and must not hand out the same ids as its parent. */
static void reg_prepare(void) {
    pthread_mutex_lock(&reg_mu);
}
static void reg_parent(void) {
    pthread_mutex_unlock(&reg_mu);
}
static void reg_child(void) {
    pthread_mutex_unlock(&reg_mu);
    reseed();
}

static void reg_init(void) {
    reseed();
    (void)pthread_atfork(reg_prepare, reg_parent, reg_child);
}

static uint32_t ref_check(uint64_t id, uint32_t kind) {
    uint64_t h = (id ^ ((uint64_t)kind << 56)) * 0x9e3779b97f4a7c15ull;
    return (uint32_t)(h >> 32) ^ 0x5ad0u;
}

static int reg_add(mproc__obj *o, uint32_t kind, int fd, int aux_fd,
                   const void *base, size_t size) {
    pthread_once(&reg_once, reg_init);
    reg_entry *e = malloc(sizeof *e);
    if (!e)
        return MPROC_ENOMEM;
    pthread_mutex_lock(&reg_mu);
    e->id = id_next;
    id_next += 0x9e3779b97f4a7c15ull; /* odd step: no repeat for 2^64 */
    e->kind = kind;
    e->fd = fd;
    e->aux_fd = aux_fd;
    e->base = base;
    e->size = size;
    e->next = reg_head;
    reg_head = e;
    pthread_mutex_unlock(&reg_mu);
    o->id = e->id;
    o->kind = kind;
    o->fd = fd;
    return 0;
}

static void reg_remove(uint64_t id, int fd) {
    pthread_mutex_lock(&reg_mu);
    for (reg_entry **pp = &reg_head; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id && (*pp)->fd == fd) {
            reg_entry *e = *pp;
            *pp = e->next;
            free(e);
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
}

void mproc__registry_drop_fd_objects(void) {
    pthread_mutex_lock(&reg_mu);
    for (reg_entry **pp = &reg_head; *pp;) {
        reg_entry *e = *pp;
        if (e->aux_fd < 0) {
            pp = &e->next;
            continue;
        }
        mproc__close(e->fd);
        mproc__close(e->aux_fd);
        *pp = e->next;
        free(e);
    }
    pthread_mutex_unlock(&reg_mu);
}

int mproc__registry_find_addr(const void *p, size_t len, uint64_t *id,
                              uint32_t *kind, size_t *off) {
    const unsigned char *a = p;
    int found = 0;
    pthread_mutex_lock(&reg_mu);
    for (reg_entry *e = reg_head; e && !found; e = e->next) {
        if (e->base && a >= e->base + sizeof(mproc__seghdr) &&
            a <= e->base + e->size && len <= (size_t)(e->base + e->size - a)) {
            *id = e->id;
            *kind = e->kind;
            *off = (size_t)(a - e->base);
            found = 1;
        }
    }
    pthread_mutex_unlock(&reg_mu);
    return found;
}

int mproc__registry_dup(uint64_t id, uint32_t kind, int *fd) {
    int err = MPROC_ENOENT;
    pthread_mutex_lock(&reg_mu);
    for (reg_entry *e = reg_head; e; e = e->next) {
        if (e->id == id && e->kind == kind) {
            int d = fcntl(e->fd, F_DUPFD_CLOEXEC, 0);
            err = d < 0 ? -errno : 0;
            *fd = d;
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
    return err;
}

/* ---- objects -------------------------------------------------------------
 */

int mproc__obj_ok(const void *h, uint32_t kind) {
    const mproc__obj *o = h;
    return o && o->magic == MPROC__OBJ_MAGIC && o->kind == kind;
}

int mproc__obj_create(mproc__obj *o, uint32_t kind, size_t size) {
    memset(o, 0, sizeof *o);
    o->fd = -1;
    if (size < sizeof(mproc__seghdr))
        return MPROC_EINVAL;
    int fd = mproc__memfd("mproc-shared", size);
    if (fd < 0)
        return fd;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int err = -errno;
        mproc__close(fd);
        return err;
    }
    int err = reg_add(o, kind, fd, -1, p, size);
    if (err) {
        munmap(p, size);
        mproc__close(fd);
        o->fd = -1;
        return err;
    }
    o->base = p;
    o->size = size;
    mproc__seghdr *h = p;
    h->kind = kind;
    h->id = o->id;
    h->size = size;
    h->magic = MPROC__SEG_MAGIC;
    o->magic = MPROC__OBJ_MAGIC;
    return 0;
}

int mproc__obj_register_fd(mproc__obj *o, uint32_t kind, int fd) {
    memset(o, 0, sizeof *o);
    o->fd = -1;
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        return -errno;
    int err = reg_add(o, kind, d, fd, NULL, 0);
    if (err) {
        mproc__close(d);
        o->fd = -1;
        return err;
    }
    o->magic = MPROC__OBJ_MAGIC;
    return 0;
}

static int ref_valid(const mproc_ref *ref, uint32_t kind) {
    if (!ref || ref->kind != kind || ref->check != ref_check(ref->id, kind))
        return 0;
    return 1;
}

/* A new fd for (id, kind): from the registry here, or from the pool. */
static int find_fd(uint64_t id, uint32_t kind, int *fd) {
    pthread_once(&reg_once, reg_init);
    int err = mproc__registry_dup(id, kind, fd);
    if (err == MPROC_ENOENT)
        err = mproc__worker_fetch_fd(id, kind, fd);
    return err;
}

int mproc__obj_attach_fd(mproc__obj *o, const mproc_ref *ref, uint32_t kind,
                         int *fd) {
    memset(o, 0, sizeof *o);
    o->fd = -1;
    *fd = -1;
    if (!ref_valid(ref, kind))
        return MPROC_EINVAL;
    int err = find_fd(ref->id, kind, fd);
    if (err)
        return err;
    o->id = ref->id;
    o->kind = kind;
    o->magic = MPROC__OBJ_MAGIC;
    return 0;
}

int mproc__obj_attach(mproc__obj *o, const mproc_ref *ref, uint32_t kind,
                      size_t min_size) {
    memset(o, 0, sizeof *o);
    o->fd = -1;
    if (!ref_valid(ref, kind))
        return MPROC_EINVAL;
    int fd;
    int err = find_fd(ref->id, kind, &fd);
    if (err)
        return err;
    /* The segment must be sealed at its size (else a peer could turn our
     * accesses into SIGBUS) and carry the header we expect. */
    struct stat st;
    int seals = fcntl(fd, F_GET_SEALS);
    if (fstat(fd, &st) < 0 || seals < 0 || !(seals & F_SEAL_SHRINK) ||
        st.st_size < (off_t)sizeof(mproc__seghdr) ||
        (uint64_t)st.st_size < min_size) {
        mproc__close(fd);
        return MPROC_EPROTO;
    }
    size_t size = (size_t)st.st_size;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    err = p == MAP_FAILED ? -errno : 0;
    mproc__close(fd);
    if (err)
        return err;
    const mproc__seghdr *h = p;
    if (h->magic != MPROC__SEG_MAGIC || h->kind != kind || h->id != ref->id ||
        h->size != size) {
        munmap(p, size);
        return MPROC_EPROTO;
    }
    o->id = ref->id;
    o->kind = kind;
    o->base = p;
    o->size = size;
    o->magic = MPROC__OBJ_MAGIC;
    return 0;
}

int mproc__segment_attach(mproc__obj *o, uint64_t id, uint32_t kind) {
    mproc_ref ref = {.id = id, .kind = kind, .check = ref_check(id, kind)};
    int err = mproc__obj_attach(o, &ref, kind, sizeof(mproc__seghdr));
#ifdef MADV_POPULATE_WRITE
    /* A worker attaches a map's array once and keeps it: map all of it
     * now, in one call, rather than take a fault every 4 KiB later (which
     * costs more than the work on a big array). Best effort: before Linux
     * 5.14 the pages fault in one by one. */
    if (!err)
        (void)madvise(o->base, o->size, MADV_POPULATE_WRITE);
#endif
    return err;
}

void mproc__obj_release(mproc__obj *o) {
    if (!o)
        return;
    if (o->fd >= 0) {
        reg_remove(o->id, o->fd);
        mproc__close(o->fd);
        o->fd = -1;
    }
    if (o->base)
        munmap(o->base, o->size);
    o->base = NULL;
    o->magic = 0;
}

void *mproc__handle_new(size_t hsize, uint32_t kind, size_t state, int *err) {
    mproc__obj *o = calloc(1, hsize);
    if (!o) {
        *err = MPROC_ENOMEM;
        return NULL;
    }
    *err = mproc__obj_create(o, kind, sizeof(mproc__seghdr) + state);
    if (*err) {
        free(o);
        return NULL;
    }
    return o;
}

void *mproc__handle_attach(size_t hsize, const mproc_ref *ref, uint32_t kind,
                           size_t state, int *err) {
    mproc__obj *o = calloc(1, hsize);
    if (!o) {
        *err = MPROC_ENOMEM;
        return NULL;
    }
    *err = mproc__obj_attach(o, ref, kind, sizeof(mproc__seghdr) + state);
    if (*err) {
        free(o);
        return NULL;
    }
    return o;
}

void mproc__handle_free(void *h) {
    if (!h)
        return;
    mproc__obj_release(h);
    free(h);
}

int mproc_ref_of(const void *handle, mproc_ref *out) {
    const mproc__obj *o = handle;
    if (!o || !out || o->magic != MPROC__OBJ_MAGIC || o->kind == 0 ||
        o->kind >= MPROC__K_MAX_)
        return MPROC_EINVAL;
    out->id = o->id;
    out->kind = o->kind;
    out->check = ref_check(o->id, o->kind);
    return 0;
}

/* ---- raw segments ----------------------------------------------------------
 */

struct mproc_shm {
    mproc__obj obj;
};

#define SHM_DATA_OFF sizeof(mproc__seghdr) /* 64: keeps data 64-aligned */

int mproc_shm_create(mproc_shm **out, size_t size) {
    if (!out)
        return MPROC_EINVAL;
    *out = NULL;
    if (size == 0)
        return MPROC_EINVAL;
    if (size > SIZE_MAX - SHM_DATA_OFF)
        return MPROC_EOVERFLOW;
    int err;
    *out = mproc__handle_new(sizeof **out, MPROC__K_SHM, size, &err);
    return *out ? 0 : err;
}

int mproc_shm_attach(mproc_shm **out, const mproc_ref *ref) {
    if (!out)
        return MPROC_EINVAL;
    int err;
    *out = mproc__handle_attach(sizeof **out, ref, MPROC__K_SHM, 1, &err);
    return *out ? 0 : err;
}

void *mproc_shm_ptr(const mproc_shm *s) {
    if (!mproc__obj_ok(s, MPROC__K_SHM))
        return NULL;
    return (char *)s->obj.base + SHM_DATA_OFF;
}

size_t mproc_shm_size(const mproc_shm *s) {
    if (!mproc__obj_ok(s, MPROC__K_SHM))
        return 0;
    return s->obj.size - SHM_DATA_OFF;
}

void mproc_shm_free(mproc_shm *s) {
    if (!s)
        return;
    mproc__obj_release(&s->obj);
    free(s);
}
