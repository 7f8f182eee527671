/* SPDX-License-Identifier: MIT */
/*
 * The pool worker: the body the fork server runs in each new worker.
 *
 * Life of a worker: read INIT (settings and the initializer's argument),
 * apply the settings (name, memory limit, CPU pinning), run the initializer,
 * say READY, then loop: read a TASK chunk, run its items one by one, send one
 * RESULT with every item's outcome. EOF on the channel means the pool is
 * closing: exit 0. After max_tasks items the worker exits by itself and the
 * pool replaces it.
 *
 * Before each item the worker writes the chunk id, item index and start time
 * to its status page, shared with the pool. If the worker dies, the pool
 * reads there which item killed it: that item gets the error, the items
 * around it are run again elsewhere.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdio_ext.h>

#include "mbox.h"
#include "shm.h"
#include "task.h"
#include "wire.h"

/* How long an idle worker spins on its task ring before it sleeps. */
#define IDLE_SPIN_NS 50000u

static mproc__mbox *W_mb;
static mproc__ring W_tasks, W_results;
static int W_chan = -1; /* this worker's channel; -1 outside a worker */
static pthread_mutex_t W_fetch_mu = PTHREAD_MUTEX_INITIALIZER;

/* Runs when a task crashes while a memory limit is set. If the faulting
 * code had just seen ENOMEM (typically malloc returning NULL under
 * RLIMIT_AS, then a NULL dereference or abort()), tell the pool, so that
 * the error names the memory limit. SA_RESETHAND restored the default
 * action: returning re-runs the fault, which then kills us. */
static void fault_handler(int sig) {
    MPROC_UNUSED(sig);
    if (errno == ENOMEM && W_mb)
        atomic_store(&W_mb->mem_exhausted, 1);
}

static void set_mem_limit(uint64_t limit) {
    struct rlimit rl = {(rlim_t)limit, (rlim_t)limit};
    (void)setrlimit(RLIMIT_AS, &rl);
    static char altstack[64 * 1024];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    (void)sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fault_handler;
    sa.sa_flags = SA_RESETHAND | SA_ONSTACK | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGABRT, &sa, NULL);
}

/* Block until a message other than WAKE arrives (a WAKE left over from an
 * earlier sleep means nothing now). 1 with *m, 0 at EOF, < 0 on error. */
static int recv_blocking(int chan, void *buf, mproc__msg *m) {
    for (;;) {
        int r = mproc__wire_recv(chan, buf, SIZE_MAX, m);
        if (r == 1 && m->hdr.type == MPROC__MSG_WAKE) {
            mproc__wire_release(m);
            continue;
        }
        if (r != -EAGAIN)
            return r;
        struct pollfd pf = {.fd = chan, .events = POLLIN};
        if (poll(&pf, 1, -1) < 0 && errno != EINTR)
            return -errno;
    }
}

/* Ask the pool for a shared object's fd (see shm.h). The pool sends
 * nothing else to a worker while it runs a task or its initializer, so the
 * next message is the answer. A thread of the task may ask at any time, so
 * the exchange is serialised; it has its own buffer because the task's
 * arguments live in the main one. */
int mproc__worker_fetch_fd(uint64_t id, uint32_t kind, int *fd) {
    *fd = -1;
    if (W_chan < 0)
        return MPROC_ENOENT;
    static void *rx;
    pthread_mutex_lock(&W_fetch_mu);
    int err = 0;
    if (!rx && !(rx = malloc(MPROC__WIRE_RECV_BUF)))
        err = MPROC_ENOMEM;
    mproc__fdreq q = {.id = id, .kind = kind};
    if (!err)
        err = mproc__wire_send(W_chan, MPROC__MSG_FDREQ, id, 0, &q, sizeof q,
                               NULL, 0);
    mproc__msg m;
    int r = err ? err : recv_blocking(W_chan, rx, &m);
    if (r == 1) {
        int32_t code;
        if (m.hdr.type != MPROC__MSG_FDREP || m.hdr.id != id ||
            m.hdr.len != sizeof code) {
            err = MPROC_EPROTO;
        } else {
            memcpy(&code, m.payload, sizeof code);
            err = code;
            if (!err && m.fd < 0)
                err = MPROC_EPROTO;
            if (!err) {
                *fd = m.fd;
                m.fd = -1;
            }
        }
        mproc__wire_release(&m);
    } else if (!err) {
        err = r == 0 ? MPROC_EPIPE : r;
    }
    pthread_mutex_unlock(&W_fetch_mu);
    return err;
}

typedef struct growbuf {
    unsigned char *p;
    size_t len, cap;
} growbuf;

static int gb_reserve(growbuf *g, size_t more) {
    if (more > SIZE_MAX - g->len)
        return -1;
    if (g->len + more <= g->cap)
        return 0;
    size_t cap = g->cap ? g->cap : 4096;
    while (cap < g->len + more)
        cap = cap > SIZE_MAX / 2 ? g->len + more : cap * 2;
    void *p = realloc(g->p, cap);
    if (!p)
        return -1;
    g->p = p;
    g->cap = cap;
    return 0;
}

static int gb_append(growbuf *g, const void *d, size_t n) {
    if (gb_reserve(g, n) < 0)
        return -1;
    if (n)
        memcpy(g->p + g->len, d, n);
    g->len += n;
    return 0;
}

typedef struct wstate {
    int chan;
    uint64_t mem_limit;
    uint64_t max_result;
    mproc_task task;
    growbuf out, msgs;
} wstate;

/* Shared segments that typed maps read or write in place, attached on
 * first use and kept for the next chunks: a few, least recently used out.
 * (A kept mapping keeps its memory alive after the owner frees it, until
 * it is pushed out or the worker exits.) */
#define SEG_CACHE 8
static struct seg {
    mproc__obj o;
    uint64_t used;
} W_segs[SEG_CACHE];
static uint64_t W_seg_clock;

/* The bytes [off, off + len) of segment (id, kind), or NULL with *err. */
static unsigned char *segment_span(uint64_t id, uint32_t kind, uint64_t off,
                                   size_t len, int *err) {
    struct seg *s = NULL, *lru = &W_segs[0];
    for (int i = 0; i < SEG_CACHE; i++) {
        if (W_segs[i].o.base && W_segs[i].o.id == id &&
            W_segs[i].o.kind == kind)
            s = &W_segs[i];
        if (W_segs[i].used < lru->used)
            lru = &W_segs[i];
    }
    if (!s) {
        mproc__obj_release(&lru->o);
        memset(lru, 0, sizeof *lru);
        if ((*err = mproc__segment_attach(&lru->o, id, kind)) != 0)
            return NULL;
        s = lru;
    }
    s->used = ++W_seg_clock;
    if (off < sizeof(mproc__seghdr) || off > s->o.size ||
        len > s->o.size - off) {
        *err = MPROC_EPROTO;
        return NULL;
    }
    return (unsigned char *)s->o.base + off;
}

/* The outcome of the item that just ran (rc, and errno right after it)
 * in hdr, its bytes in w->out or, on failure, its message in w->msgs. The
 * task context is left clean for the next item. */
static void item_outcome(wstate *w, const mproc__task_payload *tp, int rc,
                         int saved_errno, void *typed_out,
                         mproc__item_hdr *hdr) {
    mproc_task *t = &w->task;
    memset(hdr, 0, sizeof *hdr);
    if (rc == 0 && !t->failed) {
        if (tp->kind == MPROC__KIND_TYPED) {
            hdr->datalen = tp->out_size;
        } else if (gb_append(&w->out, t->res, t->res_len) == 0) {
            hdr->datalen = t->res_len;
        } else {
            hdr->code = MPROC_ENOMEM;
        }
        return;
    }
    hdr->code = t->failed ? t->fail_code : MPROC_ETASK;
    char msg[1200];
    if (t->msg[0])
        snprintf(msg, sizeof msg, "%s", t->msg);
    else
        snprintf(msg, sizeof msg, "task returned %d (%s)", rc,
                 mproc_strerror(rc));
    if (w->mem_limit && saved_errno == ENOMEM) {
        /* The task failed right after an allocation did: that is the
         * memory limit talking, and the caller should hear so. */
        char m2[1400];
        snprintf(m2, sizeof m2, "memory limit of %llu bytes reached: %s",
                 (unsigned long long)w->mem_limit, msg);
        memcpy(msg, m2, sizeof msg - 1);
        msg[sizeof msg - 1] = '\0';
        hdr->code = MPROC_EMEMLIMIT;
    }
    if (typed_out)
        memset(typed_out, 0, (size_t)tp->out_size);
    size_t ml = strlen(msg);
    if (gb_append(&w->msgs, msg, ml) == 0)
        hdr->msglen = (uint32_t)ml;
    t->failed = 0;
    t->msg[0] = '\0';
}

/* Say which item runs (and since when, if the chunk has a timeout). */
static inline void stamp_item(int timed, size_t i) {
    atomic_store_explicit(&W_mb->item, (uint64_t)i, memory_order_relaxed);
    if (timed)
        atomic_store_explicit(&W_mb->item_start_ns, mproc__now_ns(),
                              memory_order_release);
}

/* Run one item and record its outcome in hdr (and its bytes in out). */
static void run_item(wstate *w, const mproc__task_payload *tp, size_t i,
                     const void *arg, size_t len, void *typed_out,
                     mproc__item_hdr *hdr) {
    mproc_task *t = &w->task;
    t->base = (size_t)tp->first_index;
    t->res_len = 0;
    stamp_item(tp->flags & MPROC__TASK_F_TIMED, i);
    errno = 0;
    int rc;
    if (tp->kind == MPROC__KIND_TYPED)
        rc = ((mproc_elem_fn)(uintptr_t)tp->fn)(t, arg, typed_out);
    else
        rc = ((mproc_fn)(uintptr_t)tp->fn)(t, arg, len);
    item_outcome(w, tp, rc, errno, typed_out, hdr);
}

/* Tell the pool that a result is in the ring, if it sleeps and nobody
 * spins on the ring in its place (the order of the checks pairs with
 * the pool's: see mbox.h). */
static void notify_pool(int chan) {
    if (atomic_load(&W_mb->p_sleep) && !atomic_load(&W_mb->spinners) &&
        atomic_exchange(&W_mb->p_sleep, 0))
        (void)mproc__wire_send(chan, MPROC__MSG_WAKE, 0, 0, NULL, 0, NULL, 0);
}

/* Send a chunk's outcome: through the result ring when it fits, else on
 * the channel (which wakes the pool by itself). */
static int deliver(wstate *w, uint64_t id, uint32_t n, uint64_t run_ns) {
    mproc__rec *rec = mproc__ring_reserve(&W_results, w->out.len + w->msgs.len);
    if (!rec)
        return mproc__wire_send(w->chan, MPROC__MSG_RESULT, id, n, w->out.p,
                                w->out.len, w->msgs.p, w->msgs.len);
    unsigned char *d = (unsigned char *)(rec + 1);
    if (w->out.len)
        memcpy(d, w->out.p, w->out.len);
    if (w->msgs.len)
        memcpy(d + w->out.len, w->msgs.p, w->msgs.len);
    rec->type = MPROC__REC_RESULT;
    rec->nitems = n;
    rec->id = id;
    rec->aux = run_ns;
    mproc__ring_commit(&W_results, rec);
    notify_pool(w->chan);
    return 0;
}

/* A typed chunk whose outputs can go straight into the result ring (or,
 * dest not NULL, into the caller's shared array): run it there. Returns 1 when
 * every item succeeded and the record is sent, 0 when an item failed (the
 * outcome is then in w->out and w->msgs, in the full layout, for deliver()), -1
 * when there is no room. */
static int run_typed_in_ring(wstate *w, const mproc__task_payload *tp,
                             uint64_t id, size_t n, const unsigned char *in,
                             unsigned char *dest, uint64_t t0) {
    size_t outb = n * (size_t)tp->out_size;
    mproc__rec *rec = mproc__ring_reserve(&W_results, dest ? 0 : outb);
    if (!rec)
        return -1;
    unsigned char *out = dest ? dest : (unsigned char *)(rec + 1);
    /* Slots in the ring start zeroed; slots in the caller's shared array
     * keep what was there until the task writes them (they may be its own
     * input: a map in place). */
    if (!dest)
        memset(out, 0, outb);
    mproc_task *t = &w->task;
    mproc_elem_fn fn = (mproc_elem_fn)(uintptr_t)tp->fn;
    size_t failed = 0;
    mproc__item_hdr *h = NULL;
    /* The hot loop: one call per item, with what the call may change
     * (anything reachable from a global) read before it. */
    const size_t in_size = (size_t)tp->in_size, out_size = (size_t)tp->out_size;
    const int timed = tp->flags & MPROC__TASK_F_TIMED, limit = !!w->mem_limit;
    t->base = (size_t)tp->first_index;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *a = in + i * in_size;
        unsigned char *o = out + i * out_size;
        stamp_item(timed, i);
        if (limit)
            errno = 0; /* item_outcome looks for ENOMEM */
        int rc = fn(t, a, o);
        if (__builtin_expect(rc == 0 && !t->failed && !failed, 1))
            continue;
        mproc__item_hdr one = {.datalen = out_size};
        if (rc != 0 || t->failed)
            item_outcome(w, tp, rc, limit ? errno : 0, o, &one);
        if (!failed++) {
            /* The first failure: switch to the full layout, with a header
             * per item, built in w->out (the outputs so far are copied). */
            size_t hsize = n * sizeof *h;
            if (gb_reserve(&w->out, hsize + outb))
                return -2; /* no memory, after running some items */
            w->out.len = hsize + outb;
            memset(w->out.p, 0, hsize);
            memcpy(w->out.p + hsize, out, outb);
            h = (mproc__item_hdr *)w->out.p;
            for (size_t j = 0; j < i; j++)
                h[j].datalen = tp->out_size;
        }
        memcpy(w->out.p + n * sizeof *h + i * (size_t)tp->out_size,
               out + i * (size_t)tp->out_size, (size_t)tp->out_size);
        memcpy(&h[i], &one, sizeof one);
    }
    if (failed)
        return 0;
    rec->type = MPROC__REC_TYPED_OK;
    rec->nitems = (uint32_t)n;
    rec->id = id;
    rec->aux = mproc__now_ns() - t0;
    mproc__ring_commit(&W_results, rec);
    notify_pool(w->chan);
    return 1;
}

/* Every item of a typed chunk fails with code, before any ran (a shared
 * array the worker cannot reach). The full layout of a typed result has
 * its fixed data area (outb bytes, zeroed here) even when items failed. */
static int fail_all(wstate *w, uint64_t id, size_t n, size_t outb, int code) {
    char msg[160];
    int ml = snprintf(msg, sizeof msg,
                      "the worker could not attach the shared array: %s",
                      mproc_strerror(code));
    w->out.len = w->msgs.len = 0;
    for (size_t i = 0; i < n; i++) {
        mproc__item_hdr h = {.code = code, .msglen = (uint32_t)ml};
        if (gb_append(&w->out, &h, sizeof h) || gb_append(&w->msgs, msg, ml))
            return -1;
    }
    if (gb_reserve(&w->out, outb))
        return -1;
    memset(w->out.p + w->out.len, 0, outb);
    w->out.len += outb;
    int err = deliver(w, id, (uint32_t)n, 0);
    atomic_store_explicit(&W_mb->chunk_id, 0, memory_order_release);
    return err;
}

/* Run every item of a TASK payload and send the outcome. Returns the number
 * of items run, or -1 if the payload is malformed or the send failed. */
static long run_chunk(wstate *w, uint64_t id, size_t n, const unsigned char *p,
                      size_t len) {
    mproc__task_payload tp;
    if (len < sizeof tp)
        return -1;
    memcpy(&tp, p, sizeof tp);
    p += sizeof tp;
    len -= sizeof tp;
    uint64_t t0 = mproc__now_ns();
    size_t hsize = n * sizeof(mproc__item_hdr);
    w->out.len = 0;
    w->msgs.len = 0;
    atomic_store_explicit(&W_mb->chunk_id, id, memory_order_release);
    int sent = 0;

    if (tp.kind == MPROC__KIND_TYPED) {
        size_t need, outb;
        unsigned char *dest = NULL;
        mproc__task_segs segs;
        int shm = tp.flags & (MPROC__TASK_F_IN_SHM | MPROC__TASK_F_OUT_SHM);
        if (shm) {
            if (len < sizeof segs)
                return -1;
            memcpy(&segs, p, sizeof segs);
            p += sizeof segs;
            len -= sizeof segs;
        }
        if (__builtin_mul_overflow(n, (size_t)tp.in_size, &need) ||
            ((tp.flags & MPROC__TASK_F_IN_SHM) ? len != 0 : need != len) ||
            __builtin_mul_overflow(n, (size_t)tp.out_size, &outb))
            return -1;
        int serr = 0;
        if (tp.flags & MPROC__TASK_F_IN_SHM)
            p = segment_span(segs.in_id, segs.in_kind, segs.in_off, need,
                             &serr);
        if (!serr && (tp.flags & MPROC__TASK_F_OUT_SHM))
            dest = segment_span(segs.out_id, segs.out_kind, segs.out_off, outb,
                                &serr);
        if (serr)
            return fail_all(w, id, n, outb, serr) < 0 ? -1 : (long)n;
        int k = run_typed_in_ring(w, &tp, id, n, p, dest, t0);
        if (k == -2)
            return -1;
        if (k == 1) {
            sent = 1;
        } else if (k < 0) {
            if (n > SIZE_MAX / sizeof(mproc__item_hdr) ||
                gb_reserve(&w->out, hsize + outb))
                return -1;
            memset(w->out.p, 0, hsize + outb);
            w->out.len = hsize + outb;
            for (size_t i = 0; i < n; i++) {
                mproc__item_hdr h;
                unsigned char *slot =
                    w->out.p + hsize + i * (size_t)tp.out_size;
                run_item(w, &tp, i, p + i * (size_t)tp.in_size,
                         (size_t)tp.in_size, slot, &h);
                memcpy(w->out.p + i * sizeof h, &h, sizeof h);
            }
        }
    } else {
        if (n > len / sizeof(uint64_t) ||
            n > SIZE_MAX / sizeof(mproc__item_hdr) ||
            gb_reserve(&w->out, hsize))
            return -1;
        memset(w->out.p, 0, hsize);
        w->out.len = hsize;
        const unsigned char *lens = p;
        const unsigned char *data = p + n * sizeof(uint64_t);
        size_t left = len - n * sizeof(uint64_t), off = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t l;
            memcpy(&l, lens + i * sizeof l, sizeof l);
            if (l > left - off)
                return -1;
            mproc__item_hdr h;
            run_item(w, &tp, i, data + off, (size_t)l, NULL, &h);
            memcpy(w->out.p + i * sizeof h, &h, sizeof h);
            off += (size_t)l;
        }
    }
    /* What the tasks printed appears as they finish. */
    if (__fpending(stdout))
        fflush(stdout);
    int err = sent ? 0 : deliver(w, id, (uint32_t)n, mproc__now_ns() - t0);
    atomic_store_explicit(&W_mb->chunk_id, 0, memory_order_release);
    return err < 0 ? -1 : (long)n;
}

static void worker_exit(int code) __attribute__((noreturn));
static void worker_exit(int code) {
    fflush(NULL);
    _exit(code);
}

static void apply_init(wstate *w, const mproc__init_payload *ip) {
    char name[64];
    snprintf(name, sizeof name, "PoolWorker-%llu",
             (unsigned long long)ip->worker_number);
    char pname[sizeof ip->parent_name + 1];
    memcpy(pname, ip->parent_name, sizeof ip->parent_name);
    pname[sizeof ip->parent_name] = '\0';
    mproc__ident_set_child(name, (pid_t)ip->parent_pid, pname);
    w->mem_limit = ip->mem_limit;
    w->max_result = ip->max_result;
    w->task.max_result = (size_t)ip->max_result;
    if (ip->mem_limit)
        set_mem_limit(ip->mem_limit);
    if (ip->pin_cpu >= 0 && ip->pin_cpu < CPU_SETSIZE) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((int)ip->pin_cpu, &set);
        (void)sched_setaffinity(0, sizeof set, &set);
    }
}

static int task_waiting(void *arg) {
    MPROC_UNUSED(arg);
    return mproc__ring_nonempty(&W_tasks);
}

/* Nothing in the task ring: spin a while, then sleep until the pool sends
 * a WAKE (or a TASK on the channel, or EOF). Returns 0 at EOF. */
static int wait_for_work(int chan, void *buf) {
    if (mproc__spin_until(task_waiting, NULL, IDLE_SPIN_NS))
        return 1;
    atomic_store(&W_mb->w_sleep, 1);
    if (!mproc__ring_nonempty(&W_tasks)) {
        struct pollfd pf = {.fd = chan, .events = POLLIN};
        if (poll(&pf, 1, -1) < 0 && errno != EINTR)
            worker_exit(125);
    }
    atomic_store(&W_mb->w_sleep, 0);
    if (mproc__ring_nonempty(&W_tasks))
        return 1;
    /* Look at what woke us without taking it: a TASK on the channel is
     * read when its CHAN record, published right after it, comes up. */
    mproc__hdr h;
    ssize_t k = recv(chan, &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
    if (k == 0)
        return 0;
    if (k < 0)
        return errno == EAGAIN || errno == EINTR ? 1 : 0;
    if ((size_t)k == sizeof h && h.type == MPROC__MSG_WAKE) {
        mproc__msg m;
        if (mproc__wire_recv(chan, buf, 0, &m) == 1)
            mproc__wire_release(&m);
        return 1;
    }
    if ((size_t)k == sizeof h && h.type == MPROC__MSG_TASK)
        return 1;
    worker_exit(125);
}

void mproc__worker_main(int chan, int page_fd) {
    wstate w;
    memset(&w, 0, sizeof w);
    w.chan = chan;
    W_chan = chan;
    W_mb = mproc__mbox_map(page_fd);
    mproc__close(page_fd);
    void *buf = malloc(MPROC__WIRE_RECV_BUF);
    if (!W_mb || !buf)
        worker_exit(125);
    mproc__mbox_rings(W_mb, &W_tasks, &W_results);
    w.task.item = &W_mb->item;
    /* The pool reset the rings before asking for us. */
    W_tasks.pos = atomic_load(&W_mb->task.tail);
    W_results.pos = atomic_load(&W_mb->result.head);

    mproc__msg m;
    if (recv_blocking(chan, buf, &m) != 1 || m.hdr.type != MPROC__MSG_INIT)
        worker_exit(125);
    mproc__init_payload ip;
    if (m.hdr.len < sizeof ip)
        worker_exit(125);
    memcpy(&ip, m.payload, sizeof ip);
    if (ip.initarg_len != m.hdr.len - sizeof ip)
        worker_exit(125);
    apply_init(&w, &ip);
    if (ip.initializer) {
        /* The initializer gets its own copy: the payload may be a mapping
         * that goes away with the message. */
        void *arg = malloc(ip.initarg_len ? (size_t)ip.initarg_len : 1);
        if (!arg)
            worker_exit(125);
        memcpy(arg, m.payload + sizeof ip, (size_t)ip.initarg_len);
        int rc = ((mproc_init_fn)(uintptr_t)ip.initializer)(
            arg, (size_t)ip.initarg_len);
        if (rc != 0) {
            char msg[128];
            int ml = snprintf(msg, sizeof msg, "initializer returned %d", rc);
            (void)mproc__wire_send(chan, MPROC__MSG_INIT_FAILED, 0, 0, msg,
                                   (size_t)ml, NULL, 0);
            worker_exit(3);
        }
    }
    mproc__wire_release(&m);
    if (mproc__wire_send(chan, MPROC__MSG_READY, 0, 0, NULL, 0, NULL, 0) < 0)
        worker_exit(0);

    uint64_t done = 0;
    for (;;) {
        mproc__rec h;
        int bad = 0;
        const mproc__rec *rec = mproc__ring_peek(&W_tasks, &h, &bad);
        if (bad)
            worker_exit(125);
        if (!rec) {
            if (!wait_for_work(chan, buf))
                worker_exit(0); /* EOF: the pool is closing, or has gone */
            continue;
        }
        /* The pool may have taken the chunk back for an idle worker. */
        uint32_t free_ = MPROC__CLAIM_FREE;
        int mine = atomic_compare_exchange_strong(&((mproc__rec *)rec)->claim,
                                                  &free_, MPROC__CLAIM_RUN);
        long k = 0;
        if (!mine) {
            if (h.type == MPROC__REC_CHAN) {
                if (recv_blocking(chan, buf, &m) != 1)
                    worker_exit(0);
                mproc__wire_release(&m);
            }
        } else if (h.type == MPROC__REC_TASK) {
            k = run_chunk(&w, h.id, h.nitems, (const unsigned char *)(rec + 1),
                          h.len);
        } else if (h.type == MPROC__REC_CHAN) {
            if (recv_blocking(chan, buf, &m) != 1)
                worker_exit(0);
            if (m.hdr.type != MPROC__MSG_TASK)
                worker_exit(125);
            k = run_chunk(&w, m.hdr.id, m.hdr.nitems, m.payload,
                          (size_t)m.hdr.len);
            mproc__wire_release(&m);
        } else {
            worker_exit(125);
        }
        /* The arguments lived in the ring until now. */
        mproc__ring_release(&W_tasks);
        if (k < 0)
            worker_exit(125);
        done += (uint64_t)k;
        if (ip.max_tasks && done >= ip.max_tasks)
            worker_exit(0);
    }
}
