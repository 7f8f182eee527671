/* SPDX-License-Identifier: MIT */
/*
 * The pool: workers, dispatch, results and faults.
 *
 * One result thread per pool owns the workers. It waits in epoll on
 *   - the wake eventfd (new work, close, terminate),
 *   - the pool's connection to the fork server (SPAWNED and EXITED reports),
 *   - each worker's channel (READY, RESULT, INIT_FAILED, EOF),
 * and, between events, on the earliest task deadline.
 *
 * Every chunk in flight is known by id and worker. When a worker dies, its
 * status page says which item it was running: that item gets the error (or is
 * retried, if asked), the items of the chunk before and after it go back to
 * the queue, and the worker is replaced. More than restart_limit deaths in
 * restart_window_ms break the pool: queued work fails with MPROC_EBROKEN and
 * nothing more is forked.
 *
 * Contents: options and creation; spawning; dispatch; messages from workers;
 * deaths and faults; the thread's loop; close/join/terminate/destroy;
 * submission (apply, map, starmap); queries.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool.h"
#include "shm.h"

enum { EV_WAKE = 1, EV_ZYGOTE, EV_CHAN };
#define EV(type, slot) (((uint64_t)(type) << 32) | (uint32_t)(slot))

static atomic_uint worker_counter; /* N of "PoolWorker-N", program-wide */

/* ---- options and creation --------------------------------------------------
 */

static int fill_defaults(mproc_pool_opts *o) {
    if (o->nworkers < 0 || o->max_tasks_per_child < 0 ||
        o->task_timeout_ms < 0 || o->retries < 0 || o->restart_window_ms < 0 ||
        o->terminate_grace_ms < 0 || (o->initarg_len && !o->initarg) ||
        (o->initarg && !o->initializer))
        return MPROC_EINVAL;
    if (o->initarg_len > (size_t)1 << 30)
        return MPROC_ETOOBIG;
    if (o->nworkers == 0)
        o->nworkers = mproc_cpu_count_available();
    if (o->nworkers > 4096)
        return MPROC_EINVAL;
    if (o->max_result_bytes == 0)
        o->max_result_bytes = (size_t)1 << 30;
    if (o->restart_limit == 0)
        o->restart_limit = MPROC_MAX(16, 4 * o->nworkers);
    if (o->restart_window_ms == 0)
        o->restart_window_ms = 2000;
    if (o->terminate_grace_ms == 0)
        o->terminate_grace_ms = 200;
    return 0;
}

static int epoll_add(mproc_pool *p, int fd, uint64_t tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    return epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void *pool_thread(void *arg);
static int spawn_worker(mproc_pool *p, int slot);

static int pick_cpus(mproc_pool *p) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) < 0)
        return -errno;
    int usable[CPU_SETSIZE], n = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            usable[n++] = c;
    if (n == 0)
        return MPROC_EINVAL;
    p->cpus = calloc((size_t)p->o.nworkers, sizeof *p->cpus);
    if (!p->cpus)
        return MPROC_ENOMEM;
    for (int i = 0; i < p->o.nworkers; i++)
        p->cpus[i] = usable[i % n];
    return 0;
}

static void pool_free(mproc_pool *p) {
    if (!p)
        return;
    mproc__zygote_disconnect(&p->zc);
    mproc__close(p->wake_fd);
    mproc__close(p->epfd);
    for (int i = 0; p->w && i < p->o.nworkers; i++) {
        mproc__mbox_unmap(p->w[i].mb);
        mproc__close(p->w[i].mb_fd);
    }
    free(p->w);
    free(p->ringbuf);
    free(p->deferred.r);
    free(p->deferred.pr);
    free(p->cpus);
    free(p->initarg);
    free(p->rxbuf);
    free(p->deaths);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int mproc_pool_create(mproc_pool **out, const mproc_pool_opts *opts) {
    if (!out)
        return MPROC_EINVAL;
    *out = NULL;
    mproc_pool_opts o = {0};
    if (opts)
        o = *opts;
    int err = fill_defaults(&o);
    if (err)
        return err;

    mproc_pool *p = calloc(1, sizeof *p);
    if (!p)
        return MPROC_ENOMEM;
    p->o = o;
    p->wake_fd = p->epfd = -1;
    p->zc.fd = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);

    p->ncpu = mproc_cpu_count_available();
    p->w = calloc((size_t)o.nworkers, sizeof *p->w);
    p->rxbuf = malloc(MPROC__WIRE_RECV_BUF);
    p->ringbuf = malloc(MPROC__REC_MAX);
    p->ndeaths_ring = o.restart_limit > 0 ? o.restart_limit + 1 : 1;
    p->deaths = calloc((size_t)p->ndeaths_ring, sizeof *p->deaths);
    if (!p->w || !p->rxbuf || !p->ringbuf || !p->deaths) {
        err = MPROC_ENOMEM;
        goto fail;
    }
    if (o.initarg_len) {
        if (!(p->initarg = malloc(o.initarg_len))) {
            err = MPROC_ENOMEM;
            goto fail;
        }
        memcpy(p->initarg, o.initarg, o.initarg_len);
        p->o.initarg = p->initarg;
    }
    if (o.pin_cpus && (err = pick_cpus(p)) < 0)
        goto fail;
    for (int i = 0; i < o.nworkers; i++)
        p->w[i].chan = p->w[i].pidfd = p->w[i].mb_fd = -1;
    for (int i = 0; i < o.nworkers; i++) {
        mproc__worker *w = &p->w[i];
        if ((w->mb_fd = mproc__memfd("mproc-mbox", MPROC__MBOX_BYTES)) < 0) {
            err = w->mb_fd;
            goto fail;
        }
        if (!(w->mb = mproc__mbox_map(w->mb_fd))) {
            err = -errno;
            goto fail;
        }
    }

    p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->wake_fd < 0 || p->epfd < 0) {
        err = -errno;
        goto fail;
    }
    if ((err = mproc__zygote_connect(&p->zc)) < 0)
        goto fail;
    if ((err = epoll_add(p, p->wake_fd, EV(EV_WAKE, 0))) < 0 ||
        (err = epoll_add(p, p->zc.fd, EV(EV_ZYGOTE, 0))) < 0)
        goto fail;

    /* Fork every worker now, so that a failure (no memory, no processes,
     * no descriptors) is reported here and not later. */
    for (int i = 0; i < o.nworkers; i++) {
        if ((err = spawn_worker(p, i)) < 0) {
            p->state = P_TERMINATING;
            break;
        }
    }
    err = err < 0 ? err : -pthread_create(&p->thread, NULL, pool_thread, p);
    if (err < 0 && p->state != P_TERMINATING) {
        p->state = P_TERMINATING; /* the thread did not start */
    }
    if (err == 0) {
        p->thread_started = 1;
        /* Wait for the fork server's answer to every spawn request. */
        pthread_mutex_lock(&p->mu);
        while (p->stats.workers_started + p->spawn_failures <
                   (uint64_t)o.nworkers &&
               !p->broken)
            pthread_cond_wait(&p->cond, &p->mu);
        if (p->spawn_failures || p->broken) {
            err = p->spawn_err     ? p->spawn_err
                  : !p->broken     ? MPROC_EAGAIN
                  : p->broken_code ? p->broken_code
                                   : MPROC_EBROKEN;
            p->o.restart_limit = -1;
        }
        pthread_mutex_unlock(&p->mu);
        if (err == 0) {
            *out = p;
            return 0;
        }
        mproc_pool_terminate(p);
        pthread_join(p->thread, NULL);
        pool_free(p);
        return err;
    }
    /* Creation failed before the thread ran: kill what was forked. The
     * fork server kills a pool's workers when its connection closes, and
     * reports nothing; mproc_shutdown() reaps them. */
    for (int i = 0; i < o.nworkers; i++)
        mproc__close(p->w[i].chan);
fail:
    pool_free(p);
    return err;
}

/* ---- spawning
 * ----------------------------------------------------------------- */

static int send_init(mproc_pool *p, int chan, int slot) {
    mproc__init_payload ip;
    memset(&ip, 0, sizeof ip);
    ip.worker_number = atomic_fetch_add(&worker_counter, 1) + 1;
    ip.max_tasks = (uint64_t)p->o.max_tasks_per_child;
    ip.mem_limit = p->o.mem_limit_bytes;
    ip.pin_cpu = p->cpus ? p->cpus[slot] : -1;
    ip.max_result = p->o.max_result_bytes;
    ip.initializer = (uint64_t)(uintptr_t)p->o.initializer;
    ip.initarg_len = p->o.initarg_len;
    ip.parent_pid = (int32_t)getpid();
    snprintf(ip.parent_name, sizeof ip.parent_name, "%s", mproc_current_name());
    return mproc__wire_send(chan, MPROC__MSG_INIT, 0, 0, &ip, sizeof ip,
                            p->initarg, p->o.initarg_len);
}

/* Forget the slot's worker; its mailbox stays. */
static void worker_clear(mproc__worker *w) {
    /* mb and mb_fd come first and are never written after creation:
     * spinning callers read mb without the lock. */
    size_t from = offsetof(mproc__worker, tasks);
    memset((char *)w + from, 0, sizeof *w - from);
    w->chan = w->pidfd = -1;
    w->state = W_EMPTY;
}

/* Ask the fork server for a worker in slot. Called with mu held (or before
 * the thread exists). */
static int spawn_worker(mproc_pool *p, int slot) {
    mproc__worker *w = &p->w[slot];
    int sv[2] = {-1, -1}, err;
    if ((err = mproc__socketpair_seqpacket(sv)) < 0)
        return err;
    /* The slot's last worker is dead and reaped: its mailbox is ours. */
    mproc__mbox_reset(w->mb);
    /* INIT goes first, so the worker finds it waiting when it starts. */
    if ((err = send_init(p, sv[0], slot)) < 0 ||
        (err = mproc__set_nonblock(sv[0], true)) < 0 ||
        (err = mproc__zygote_request_spawn(&p->zc, (uint32_t)slot, sv[1],
                                           w->mb_fd)) < 0 ||
        (err = epoll_add(p, sv[0], EV(EV_CHAN, slot))) < 0) {
        mproc__close(sv[0]);
        mproc__close(sv[1]);
        return err;
    }
    mproc__close(sv[1]);
    worker_clear(w);
    mproc__mbox_rings(w->mb, &w->tasks, &w->results);
    w->state = W_SPAWNING;
    w->chan = sv[0];
    return 0;
}
/* ---- queue and dispatch
 * ------------------------------------------------------- */

static void q_push_back(mproc_pool *p, mproc__chunk *c) {
    c->next = NULL;
    if (p->qtail)
        p->qtail->next = c;
    else
        p->qhead = c;
    p->qtail = c;
}

static void q_push_front(mproc_pool *p, mproc__chunk *c) {
    c->next = p->qhead;
    p->qhead = c;
    if (!p->qtail)
        p->qtail = c;
}

static mproc__chunk *q_pop(mproc_pool *p) {
    mproc__chunk *c = p->qhead;
    if (c) {
        p->qhead = c->next;
        if (!p->qhead)
            p->qtail = NULL;
    }
    return c;
}

typedef mproc__cbq cbq;

static int vec_push(mproc_result ***v, size_t *n, size_t *cap,
                    mproc_result *r) {
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 16;
        mproc_result **nv = realloc(*v, c * sizeof *nv);
        if (!nv)
            return -1;
        *v = nv;
        *cap = c;
    }
    (*v)[(*n)++] = r;
    return 0;
}

static void note_done(cbq *q, mproc_result *r) {
    if (vec_push(&q->r, &q->n, &q->cap, r) < 0) {
        /* No memory to queue the callbacks: skip them rather than leave
         * the result unready for ever. */
        r->callbacks_done = 1;
        r->on_success = r->on_error = NULL;
    }
}

static void note_progress(cbq *q, mproc_result *r) {
    if (r->want_progress && !r->progress_queued && r->done < r->n &&
        vec_push(&q->pr, &q->pn, &q->pcap, r) == 0)
        r->progress_queued = 1;
}

/* Give every item of c the same outcome. */
static void fail_chunk(mproc_pool *p, cbq *q, mproc__chunk *c, int code,
                       const char *msg) {
    for (size_t i = 0; i < c->n; i++) {
        char *m = msg ? strdup(msg) : NULL;
        if (mproc__result_set(c->res, c->first + i, code, NULL, 0, m))
            note_done(q, c->res);
    }
    MPROC_UNUSED(p);
    free(c);
}

static void fail_queue(mproc_pool *p, cbq *q, int code, const char *msg) {
    mproc__chunk *c;
    while ((c = q_pop(p)) != NULL)
        fail_chunk(p, q, c, code, msg);
}

/* ---- in-flight chunks, per worker */

static void inflight_push(mproc__worker *w, mproc__chunk *c) {
    c->next = NULL;
    if (w->fl_tail)
        w->fl_tail->next = c;
    else {
        w->fl_head = c;
        w->head_since = c->sent_ns;
    }
    w->fl_tail = c;
    w->fl_chunks++;
    w->fl_items += c->n;
}

/* Take the chunk with this id out of the worker's list (NULL: none). */
static mproc__chunk *inflight_take(mproc__worker *w, uint64_t id) {
    mproc__chunk *prev = NULL, *c = w->fl_head;
    while (c && c->id != id) {
        prev = c;
        c = c->next;
    }
    if (!c)
        return NULL;
    if (prev)
        prev->next = c->next;
    else {
        w->fl_head = c->next;
        w->head_since = mproc__now_ns();
    }
    if (w->fl_tail == c)
        w->fl_tail = prev;
    c->next = NULL;
    w->fl_chunks--;
    w->fl_items -= c->n;
    return c;
}

/* ---- sending work */

/* The worker sleeps: tell it to look at its task ring. The check comes
 * after the record's seq_cst publication, pairing with the worker's
 * announce-then-recheck (mbox.h). */
static void wake_worker(mproc__worker *w) {
    if (atomic_load(&w->mb->w_sleep) && atomic_exchange(&w->mb->w_sleep, 0))
        (void)mproc__wire_send(w->chan, MPROC__MSG_WAKE, 0, 0, NULL, 0, NULL,
                               0);
}

/* Chunks in flight per worker: one running and one waiting, or, for
 * chunks that take little time, as many as make about 100 us of work, so
 * that a worker never waits for the pool. */
static size_t window(const mproc_pool *p) {
    uint64_t avg = p->avg_chunk_ns;
    if (avg == 0 || avg >= 50000)
        return 2;
    return MPROC_MIN(64, MPROC_MAX(2, 100000 / (avg + 1)));
}

/* The head of a TASK payload (wire.h): the fixed part, then the typed
 * form's segments (when it has lens_len of them) or the bytes form's item
 * lengths. */
static void put_head(unsigned char *d, const mproc__chunk *c,
                     const mproc__task_payload *tp,
                     const mproc__task_segs *segs, size_t lens_len) {
    const mproc_result *r = c->res;
    memcpy(d, tp, sizeof *tp);
    d += sizeof *tp;
    if (r->kind == MPROC__KIND_TYPED) {
        if (lens_len)
            memcpy(d, segs, sizeof *segs);
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        uint64_t l = r->in_off[c->first + i + 1] - r->in_off[c->first + i];
        memcpy(d + i * sizeof l, &l, sizeof l);
    }
}

/* Put chunk c in w's task ring, or on its channel when too big for the
 * ring (a CHAN record keeps the order). 0 when sent, 1 when there is no
 * room now, < 0 on error. */
static int send_chunk(mproc_pool *p, mproc__worker *w, mproc__chunk *c) {
    mproc_result *r = c->res;
    mproc__task_payload tp = {.kind = (uint32_t)r->kind,
                              .flags = r->timeout_ns ? MPROC__TASK_F_TIMED : 0,
                              .in_size = r->in_size,
                              .out_size = r->out_size,
                              .first_index = r->index_base + c->first};
    int typed = r->kind == MPROC__KIND_TYPED;
    const unsigned char *bulk;
    size_t lens_len = 0, bulk_len;
    mproc__task_segs segs = {0};
    if (typed && (r->in_shm || r->out_shm)) {
        /* The segments part rides where the lengths would. */
        tp.fn = (uint64_t)(uintptr_t)r->efn;
        tp.flags |= (r->in_shm ? MPROC__TASK_F_IN_SHM : 0) |
                    (r->out_shm ? MPROC__TASK_F_OUT_SHM : 0);
        segs =
            (mproc__task_segs){.in_id = r->in_id,
                               .in_off = r->in_soff + c->first * r->in_size,
                               .out_id = r->out_id,
                               .out_off = r->out_soff + c->first * r->out_size,
                               .in_kind = r->in_kind,
                               .out_kind = r->out_kind};
        lens_len = sizeof segs;
        bulk = r->in_shm ? NULL : r->in + c->first * r->in_size;
        bulk_len = r->in_shm ? 0 : c->n * r->in_size;
    } else if (typed) {
        tp.fn = (uint64_t)(uintptr_t)r->efn;
        bulk = r->in ? r->in + c->first * r->in_size : NULL;
        bulk_len = c->n * r->in_size;
    } else {
        tp.fn = (uint64_t)(uintptr_t)r->fn;
        lens_len = c->n * sizeof(uint64_t);
        size_t a = r->in_off[c->first], b = r->in_off[c->first + c->n];
        bulk = r->in_buf + a;
        bulk_len = b - a;
    }
    size_t len = sizeof tp + lens_len + bulk_len;
    mproc__rec *rec = mproc__ring_reserve(&w->tasks, len);
    if (!rec && mproc__ring_broken(&w->tasks))
        return MPROC_EPROTO; /* the worker wrote nonsense in its tail */
    if (!rec && len <= MPROC__REC_MAX)
        return 1;
    uint64_t id = p->next_chunk_id + 1;
    if (rec) {
        unsigned char *d = (unsigned char *)(rec + 1);
        put_head(d, c, &tp, &segs, lens_len);
        if (bulk_len)
            memcpy(d + sizeof tp + lens_len, bulk, bulk_len);
        rec->type = MPROC__REC_TASK;
    } else {
        /* Too big for the ring: the TASK goes on the channel, and a CHAN
         * record after it tells the worker to read it. */
        if (!(rec = mproc__ring_reserve(&w->tasks, 0)))
            return 1;
        unsigned char *h = malloc(sizeof tp + lens_len);
        if (!h)
            return MPROC_ENOMEM;
        put_head(h, c, &tp, &segs, lens_len);
        int err = mproc__wire_send(w->chan, MPROC__MSG_TASK, id, (uint32_t)c->n,
                                   h, sizeof tp + lens_len, bulk, bulk_len);
        free(h);
        if (err < 0)
            return err;
        rec = mproc__ring_reserve(&w->tasks, 0);
        rec->type = MPROC__REC_CHAN;
    }
    rec->nitems = (uint32_t)c->n;
    rec->id = id;
    c->ring_pos = w->tasks.rec_at;
    mproc__ring_commit(&w->tasks, rec);
    if (rec->type == MPROC__REC_TASK)
        wake_worker(w);
    c->id = ++p->next_chunk_id;
    return 0;
}

static int can_take(const mproc_pool *p, const mproc__worker *w) {
    return (w->state == W_IDLE || w->state == W_BUSY) && !w->ring_bad &&
           w->killed == KILL_NONE && w->chan >= 0 &&
           !(p->o.max_tasks_per_child &&
             w->items_sent >= (uint64_t)p->o.max_tasks_per_child);
}

/* Who gets the next chunk: the idle worker that went idle last (it is the
 * likeliest to be still spinning), else the least loaded one with room. */
static mproc__worker *pick_worker(mproc_pool *p, size_t win) {
    mproc__worker *idle = NULL, *busy = NULL;
    for (int i = 0; i < p->o.nworkers; i++) {
        mproc__worker *w = &p->w[i];
        if (!can_take(p, w))
            continue;
        if (w->fl_chunks == 0) {
            if (!idle || w->idle_since > idle->idle_since)
                idle = w;
        } else if (w->fl_chunks < win &&
                   (!busy || w->fl_chunks < busy->fl_chunks)) {
            busy = w;
        }
    }
    return idle ? idle : busy;
}

/* A worker is idle and the queue is empty, while another has chunks
 * waiting behind the one it runs: take its last one back (unless it has
 * just started it) and put it in the queue. 1 if one was taken. */
static int steal(mproc_pool *p) {
    mproc__worker *victim = NULL;
    int idle = 0;
    for (int i = 0; i < p->o.nworkers; i++) {
        mproc__worker *w = &p->w[i];
        idle |= can_take(p, w) && w->fl_chunks == 0;
        if (w->fl_chunks >= 2 && w->killed == KILL_NONE && !w->ring_bad &&
            (!victim || w->fl_chunks > victim->fl_chunks))
            victim = w;
    }
    if (!idle || !victim)
        return 0;
    mproc__chunk *c = victim->fl_tail;
    /* Its record is still in the ring until the worker's tail passes it;
     * we are the only writer, so nothing else is there meanwhile. */
    uint64_t tail = atomic_load(&victim->mb->task.tail);
    if (tail > c->ring_pos)
        return 0;
    mproc__rec *rec = (mproc__rec *)(victim->tasks.data +
                                     (c->ring_pos & (MPROC__RING_BYTES - 1)));
    uint32_t free_ = MPROC__CLAIM_FREE;
    if (!atomic_compare_exchange_strong(&rec->claim, &free_,
                                        MPROC__CLAIM_STOLEN))
        return 0;
    inflight_take(victim, c->id);
    victim->items_sent -= c->n;
    q_push_front(p, c);
    return 1;
}

static void broke_protocol(mproc_pool *p, mproc__worker *w, int err);

static void dispatch(mproc_pool *p, cbq *q) {
    if (p->broken) {
        fail_queue(p, q, p->broken_code ? p->broken_code : MPROC_EBROKEN,
                   p->broken_why);
        return;
    }
    size_t win = window(p);
    while (p->qhead) {
        mproc__chunk *c = p->qhead;
        if (c->res->user_freed && c->res->kind == MPROC__KIND_TYPED) {
            /* The caller gave up on this map; its arrays may be gone. */
            fail_chunk(p, q, q_pop(p), MPROC_ECANCELLED, "result freed");
            continue;
        }
        mproc__worker *w = pick_worker(p, win);
        if (!w)
            break;
        int err = send_chunk(p, w, c);
        if (err == 1) {
            /* Its ring is full: try the others once, then wait. */
            win = w->fl_chunks;
            if (win == 0)
                return;
            continue;
        }
        if (err == MPROC_EPROTO) {
            broke_protocol(p, w, err);
            continue;
        }
        if (err < 0) {
            /* The worker is going away (or memory is short); its exit
             * report will follow. */
            if (err != MPROC_ENOMEM)
                w->state = W_EXITING;
            return;
        }
        q_pop(p);
        c->sent_ns = mproc__now_ns();
        inflight_push(w, c);
        w->state = W_BUSY;
        w->items_sent += c->n;
    }
    if (!p->qhead && steal(p))
        dispatch(p, q);
}

/* ---- results from workers
 * ---------------------------------------------------- */

/* Check and store the outcome of chunk id, in the full layout (wire.h:
 * item headers, data, messages) or, for REC_TYPED_OK, the outputs only.
 * The payload is our own copy, except for REC_TYPED_OK whose bytes go
 * straight to the caller's array (a worker that changes them while we copy
 * only spoils its own outputs). 0, or MPROC_EPROTO if the worker lied. */
static int take_result(mproc_pool *p, cbq *q, mproc__worker *w, uint64_t id,
                       size_t n, int type, const unsigned char *pl,
                       size_t len) {
    mproc__chunk *c = w->fl_head;
    while (c && c->id != id)
        c = c->next;
    if (!c || n != c->n)
        return MPROC_EPROTO;
    mproc_result *r = c->res;
    int typed = r->kind == MPROC__KIND_TYPED;
    if (type == MPROC__REC_TYPED_OK) {
        if (!typed || (r->out_shm ? 0 : n * r->out_size) != len)
            return MPROC_EPROTO;
        if (!r->user_freed && len)
            memcpy(r->out + c->first * r->out_size, pl, len);
        inflight_take(w, id);
        if (mproc__result_set_ok_range(r, c->first, n))
            note_done(q, r);
        goto taken;
    }
    if (n > len / sizeof(mproc__item_hdr))
        return MPROC_EPROTO;
    /* First pass: the layout must add up exactly, without overflow. The
     * typed form has a fixed data area, out_size bytes per item; the bytes
     * form concatenates each item's result. */
    size_t rest = len - n * sizeof(mproc__item_hdr), data_total = 0,
           msg_total = 0;
    if (typed && (__builtin_mul_overflow(n, r->out_size, &data_total) ||
                  data_total > rest))
        return MPROC_EPROTO;
    for (size_t i = 0; i < n; i++) {
        mproc__item_hdr h;
        memcpy(&h, pl + i * sizeof h, sizeof h);
        if (h.datalen > p->o.max_result_bytes || h.datalen > rest ||
            h.msglen > 4096 || (h.code == 0 && h.msglen) ||
            (h.code != 0 && h.datalen) || h.code > 0 ||
            (typed && h.code == 0 && h.datalen != r->out_size))
            return MPROC_EPROTO;
        if (!typed)
            data_total += (size_t)h.datalen;
        msg_total += h.msglen;
        if (data_total > rest || msg_total > rest - data_total)
            return MPROC_EPROTO;
    }
    if (data_total + msg_total != rest)
        return MPROC_EPROTO;
    inflight_take(w, id);
    /* Second pass: store. */
    const unsigned char *data = pl + n * sizeof(mproc__item_hdr);
    const unsigned char *msgs = data + data_total;
    size_t doff = 0, moff = 0;
    for (size_t i = 0; i < n; i++) {
        mproc__item_hdr h;
        memcpy(&h, pl + i * sizeof h, sizeof h);
        size_t idx = c->first + i;
        void *d = NULL;
        char *msg = NULL;
        int code = h.code;
        if (typed)
            doff = i * r->out_size;
        if (code == 0 && typed) {
            if (!r->user_freed && r->out_size)
                memcpy(r->out + idx * r->out_size, data + doff, r->out_size);
        } else if (code == 0 && !r->user_freed) {
            d = malloc(h.datalen ? (size_t)h.datalen : 1);
            if (d)
                memcpy(d, data + doff, (size_t)h.datalen);
            else
                code = MPROC_ENOMEM;
        } else if (code != 0) {
            msg = malloc(h.msglen + 1u);
            if (msg) {
                memcpy(msg, msgs + moff, h.msglen);
                msg[h.msglen] = '\0';
            }
        }
        doff += (size_t)h.datalen;
        moff += h.msglen;
        if (mproc__result_set(r, idx, code, d, (size_t)h.datalen, msg))
            note_done(q, r);
    }
taken:
    note_progress(q, r);
    free(c);
    if (w->fl_chunks == 0) {
        w->state = W_IDLE;
        w->idle_since = mproc__now_ns();
        if (p->o.max_tasks_per_child &&
            w->items_sent >= (uint64_t)p->o.max_tasks_per_child)
            w->state = W_EXITING; /* it leaves by itself now */
    }
    return 0;
}

static void kill_worker(mproc__worker *w, enum kill_reason why, int sig) {
    if (w->killed == KILL_NONE || why == KILL_TERMINATE)
        w->killed = w->killed == KILL_NONE ? why : w->killed;
    if (w->pidfd >= 0)
        (void)mproc__pidfd_send_signal(w->pidfd, sig);
}

static void close_chan(mproc_pool *p, mproc__worker *w) {
    if (w->chan < 0)
        return;
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, w->chan, NULL);
    mproc__close(w->chan);
    w->chan = -1;
}

/* An initializer that fails every time, however slowly, must not keep the
 * pool forking for ever (the restart limit only catches fast failures):
 * after max(3, nworkers) failures in a row with no worker ready in between,
 * the pool breaks, and its calls fail with MPROC_EWORKERINIT. */
static void init_failed(mproc_pool *p) {
    int limit = MPROC_MAX(3, p->o.nworkers);
    if (++p->init_fail_streak < limit || p->broken)
        return;
    p->broken = 1;
    p->broken_code = MPROC_EWORKERINIT;
    p->stats.broken = 1;
    p->broken_why = "pool is broken: the worker initializer failed in every "
                    "new worker; no more workers are started";
    mproc_log(MPROC_LOG_ERROR, "%s", p->broken_why);
}

/* A worker's task (or initializer) attaches a shared object: send it the
 * fd from this process's registry, or the reason why not. Only a worker
 * that runs something may ask. */
static int answer_fdreq(mproc__worker *w, const mproc__msg *m) {
    mproc__fdreq q;
    if ((w->state != W_BUSY && w->state != W_STARTING) ||
        m->hdr.len != sizeof q)
        return MPROC_EPROTO;
    memcpy(&q, m->payload, sizeof q);
    int fd = -1;
    int32_t code = mproc__registry_dup(q.id, q.kind, &fd);
    int err;
    if (code == 0) {
        err = mproc__wire_send_fd(w->chan, MPROC__MSG_FDREP, q.id, &code,
                                  sizeof code, fd);
        mproc__close(fd);
    } else {
        err = mproc__wire_send(w->chan, MPROC__MSG_FDREP, q.id, 0, &code,
                               sizeof code, NULL, 0);
    }
    /* A failed send means the worker is gone: its exit report follows. */
    MPROC_UNUSED(err);
    return 0;
}

static void drain_chan_msgs(mproc_pool *p, cbq *q, int slot);

static void broke_protocol(mproc_pool *p, mproc__worker *w, int err) {
    mproc_log(MPROC_LOG_WARNING,
              "worker %d sent a malformed message (%s); killing it",
              (int)w->pid, mproc_strerror(err));
    kill_worker(w, KILL_PROTO, SIGKILL);
    close_chan(p, w);
    w->ring_bad = 1; /* nothing more is taken from it */
}

/* Take in every result in the worker's result ring. */
static void drain_ring(mproc_pool *p, cbq *q, int slot) {
    mproc__worker *w = &p->w[slot];
    if (w->ring_bad || w->state == W_EMPTY)
        return;
    for (;;) {
        mproc__rec h;
        int bad = 0, err = MPROC_EPROTO;
        const mproc__rec *rec = mproc__ring_peek(&w->results, &h, &bad);
        if (rec && h.type == MPROC__REC_TYPED_OK) {
            err = take_result(p, q, w, h.id, h.nitems, h.type,
                              (const unsigned char *)(rec + 1), h.len);
        } else if (rec && h.type == MPROC__REC_RESULT) {
            /* Parse a private copy: the worker can still write there. */
            memcpy(p->ringbuf, rec + 1, h.len);
            err =
                take_result(p, q, w, h.id, h.nitems, h.type, p->ringbuf, h.len);
        } else if (!rec && !bad) {
            return;
        }
        if (err) {
            broke_protocol(p, w, err);
            return;
        }
        mproc__ring_release(&w->results);
        p->avg_chunk_ns = p->avg_chunk_ns ? (7 * p->avg_chunk_ns + h.aux) / 8
                                          : MPROC_MAX(h.aux, 1);
    }
}

/* Read everything the worker has sent: the channel, then the ring. */
static void drain_chan(mproc_pool *p, cbq *q, int slot) {
    drain_chan_msgs(p, q, slot);
    drain_ring(p, q, slot);
}

static void drain_chan_msgs(mproc_pool *p, cbq *q, int slot) {
    mproc__worker *w = &p->w[slot];
    while (w->chan >= 0) {
        mproc__msg m;
        size_t cap = SIZE_MAX;
        if (w->fl_head) {
            /* No honest result is bigger than this. */
            size_t per = sizeof(mproc__item_hdr) + 4096;
            size_t lim = p->o.max_result_bytes + per;
            cap = w->fl_items > SIZE_MAX / lim ? SIZE_MAX : w->fl_items * lim;
        }
        int r = mproc__wire_recv(w->chan, p->rxbuf, cap, &m);
        if (r == -EAGAIN)
            return;
        /* A worker that dies with messages unread (a WAKE, say) leaves
         * ECONNRESET behind: that is an exit, not a lie. */
        if (r <= 0) {
            if (r < 0 && r != -ECONNRESET) {
                mproc_log(MPROC_LOG_WARNING,
                          "worker %d sent a bad message (%s); killing it",
                          (int)w->pid, mproc_strerror(r));
                kill_worker(w, KILL_PROTO, SIGKILL);
            }
            close_chan(p, w); /* EOF: the exit report will follow */
            return;
        }
        int err = 0;
        switch (m.hdr.type) {
        case MPROC__MSG_READY:
            if (w->state == W_STARTING || w->state == W_SPAWNING) {
                w->state = W_IDLE;
                w->idle_since = mproc__now_ns();
                p->init_fail_streak = 0;
            } else if (w->state == W_EXITING) {
                /* Told to go (the pool closed) while it started up: it
                 * reads EOF next and exits. */
                p->init_fail_streak = 0;
            } else {
                err = MPROC_EPROTO;
            }
            break;
        case MPROC__MSG_RESULT:
            err = take_result(p, q, w, m.hdr.id, m.hdr.nitems,
                              MPROC__REC_RESULT, m.payload, (size_t)m.hdr.len);
            break;
        case MPROC__MSG_WAKE:
            break; /* drain_chan reads the ring next */
        case MPROC__MSG_FDREQ:
            err = answer_fdreq(w, &m);
            break;
        case MPROC__MSG_INIT_FAILED:
            mproc_log(MPROC_LOG_ERROR, "worker %d: %.*s", (int)w->pid,
                      (int)MPROC_MIN(m.hdr.len, 200), (const char *)m.payload);
            w->state = W_EXITING;
            init_failed(p);
            break;
        default:
            err = MPROC_EPROTO;
        }
        mproc__wire_release(&m);
        if (err) {
            broke_protocol(p, w, err);
            return;
        }
    }
}

/* ---- deaths and faults
 * -------------------------------------------------------- */

static void describe_death(const mproc_pool *p, const mproc__worker *w,
                           const mproc__chunk *c, int status, int *code,
                           char *msg, size_t cap) {
    int pid = (int)w->pid;
    if (w->killed == KILL_TIMEOUT) {
        *code = MPROC_ETASKTIMEOUT;
        snprintf(msg, cap, "task timed out after %llu ms; worker %d killed",
                 (unsigned long long)(c->res->timeout_ns / 1000000u), pid);
    } else if (w->killed == KILL_TERMINATE) {
        *code = MPROC_ECANCELLED;
        snprintf(msg, cap, "pool terminated");
    } else if (w->killed == KILL_PROTO) {
        *code = MPROC_EPROTO;
        snprintf(msg, cap, "worker %d sent a malformed message and was killed",
                 pid);
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        if (atomic_load(&w->mb->mem_exhausted)) {
            *code = MPROC_EMEMLIMIT;
            snprintf(msg, cap,
                     "worker %d killed by SIG%s after reaching its memory "
                     "limit of %zu bytes",
                     pid, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?",
                     p->o.mem_limit_bytes);
        } else {
            *code = MPROC_ECRASHED;
            snprintf(msg, cap, "worker %d killed by SIG%s (%s)%s", pid,
                     sigabbrev_np(sig) ? sigabbrev_np(sig) : "?",
                     sigdescr_np(sig) ? sigdescr_np(sig) : "unknown signal",
                     sig == SIGKILL ? "; possibly the out-of-memory killer"
                                    : "");
        }
    } else {
        *code = MPROC_EEXITED;
        snprintf(msg, cap,
                 "worker %d exited with status %d while running the task", pid,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
}

static mproc__chunk *sub_chunk(mproc__chunk *c, size_t first, size_t n) {
    if (n == 0)
        return NULL;
    mproc__chunk *s = calloc(1, sizeof *s);
    if (s) {
        s->res = c->res;
        s->first = first;
        s->n = n;
    }
    return s;
}

/* The worker died while chunk c was running (or, killed for its time,
 * was due to run): decide every item's fate. */
static void fault_chunk(mproc_pool *p, cbq *q, mproc__worker *w,
                        mproc__chunk *c, int code, const char *msg) {
    mproc_result *r = c->res;
    if (code == MPROC_EPROTO) {
        fail_chunk(p, q, c, code, msg);
        return;
    }
    /* Which item was running? The mailbox says, if the worker got that
     * far; a worker killed for its time before it started is blamed on
     * the first item. */
    size_t k = 0;
    if (atomic_load(&w->mb->chunk_id) == c->id) {
        uint64_t it = atomic_load(&w->mb->item);
        if (it < c->n)
            k = (size_t)it;
    }
    /* Items after k never ran; items before k ran but their results died
     * with the worker. Both go back to the queue, ahead of other work. */
    mproc__chunk *after = sub_chunk(c, c->first + k + 1, c->n - k - 1);
    mproc__chunk *before = sub_chunk(c, c->first, k);
    if (after)
        q_push_front(p, after);
    size_t idx = c->first + k;
    int may_retry = code != MPROC_EMEMLIMIT &&
                    mproc__result_attempts(r, idx) < r->retries && !p->broken &&
                    p->state != P_TERMINATING &&
                    mproc__result_count_attempt(r, idx) == 0;
    if (may_retry) {
        p->stats.items_retried++;
        mproc__chunk *one = sub_chunk(c, idx, 1);
        if (one)
            q_push_front(p, one);
        mproc_log(MPROC_LOG_INFO, "item %zu: %s; retrying (%d of %d)", idx, msg,
                  mproc__result_attempts(r, idx), r->retries);
    } else {
        mproc_log(MPROC_LOG_INFO, "item %zu: %s", idx, msg);
        if (mproc__result_set(r, idx, code, NULL, 0, strdup(msg)))
            note_done(q, r);
        note_progress(q, r);
    }
    if (before)
        q_push_front(p, before);
    free(c);
}

/* The worker died with chunks in flight (their finished results are
 * already taken in). The one it was running takes the blame; the others
 * never started and go back to the queue. */
static void fault_inflight(mproc_pool *p, cbq *q, mproc__worker *w,
                           int status) {
    mproc__chunk *list = w->fl_head;
    w->fl_head = w->fl_tail = NULL;
    w->fl_chunks = w->fl_items = 0;
    if (!list)
        return;
    uint64_t running = atomic_load(&w->mb->chunk_id);
    mproc__chunk *blame = NULL;
    for (mproc__chunk *c = list; c; c = c->next)
        if (c->id == running)
            blame = c;
    if (!blame && (w->killed == KILL_TIMEOUT || w->killed == KILL_PROTO))
        blame = list;
    int code;
    char msg[256];
    describe_death(p, w, blame ? blame : list, status, &code, msg, sizeof msg);
    /* Back to the queue in their order: the last one first. */
    mproc__chunk *rev = NULL;
    for (mproc__chunk *c = list, *nx; c; c = nx) {
        nx = c->next;
        c->next = rev;
        rev = c;
    }
    for (mproc__chunk *c = rev, *nx; c; c = nx) {
        nx = c->next;
        if (code == MPROC_ECANCELLED)
            fail_chunk(p, q, c, code, msg);
        else if (c != blame)
            q_push_front(p, c);
    }
    if (blame && code != MPROC_ECANCELLED)
        fault_chunk(p, q, w, blame, code, msg);
}

static void count_death(mproc_pool *p) {
    p->stats.workers_died++;
    if (p->o.restart_limit < 0 || p->broken)
        return;
    uint64_t now = mproc__now_ns();
    p->deaths[p->death_pos] = now;
    p->death_pos = (p->death_pos + 1) % p->ndeaths_ring;
    /* The ring holds restart_limit + 1 times; if the oldest of them is
     * within the window, that many deaths happened inside it. */
    uint64_t oldest = p->deaths[p->death_pos];
    if (oldest && now - oldest <= mproc__ms_to_ns(p->o.restart_window_ms)) {
        p->broken = 1;
        p->stats.broken = 1;
        p->broken_why = "pool is broken: too many worker deaths in a short "
                        "time; no more workers are started";
        mproc_log(MPROC_LOG_ERROR, "%s", p->broken_why);
    }
}

static void worker_gone(mproc_pool *p, cbq *q, int slot, int status) {
    mproc__worker *w = &p->w[slot];
    drain_chan(p, q, slot); /* a last RESULT may be waiting */
    int expected =
        (w->state == W_EXITING && !w->fl_head && w->killed == KILL_NONE &&
         WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
        w->killed == KILL_TERMINATE;
    fault_inflight(p, q, w, status);
    if (!expected)
        count_death(p);
    close_chan(p, w);
    mproc__close(w->pidfd);
    worker_clear(w);
}

static void zygote_event(mproc_pool *p, cbq *q) {
    for (;;) {
        mproc__zmsg m;
        int fd = -1, nfd = 0;
        ssize_t n =
            mproc__recv_msg(p->zc.fd, &m, sizeof m, &fd, 1, &nfd, MSG_DONTWAIT);
        if (n == -EAGAIN)
            return;
        if (n <= 0 || (size_t)n != sizeof m ||
            m.slot >= (uint32_t)p->o.nworkers) {
            mproc__close(fd);
            if (n > 0)
                continue;
            /* The fork server is gone, and with it every worker. */
            epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->zc.fd, NULL);
            mproc__zygote_disconnect(&p->zc);
            p->broken = 1;
            p->stats.broken = 1;
            p->broken_why = "pool is broken: the fork server died";
            for (int i = 0; i < p->o.nworkers; i++)
                if (p->w[i].state != W_EMPTY) {
                    kill_worker(&p->w[i], KILL_NONE, SIGKILL);
                    worker_gone(p, q, i, SIGKILL);
                }
            return;
        }
        mproc__worker *w = &p->w[m.slot];
        switch (m.type) {
        case MPROC__ZMSG_SPAWNED:
            w->pid = m.pid;
            w->pidfd = fd;
            fd = -1;
            if (w->state == W_SPAWNING)
                w->state = W_STARTING;
            p->stats.workers_started++;
            if (p->state == P_TERMINATING)
                kill_worker(w, KILL_TERMINATE, SIGKILL);
            break;
        case MPROC__ZMSG_SPAWN_FAILED:
            mproc_log(MPROC_LOG_ERROR, "could not start a worker: %s",
                      mproc_strerror(m.status));
            p->spawn_failures++;
            p->spawn_err = m.status < 0 ? m.status : MPROC_EAGAIN;
            close_chan(p, w);
            worker_clear(w);
            count_death(p);
            break;
        case MPROC__ZMSG_EXITED:
            if (w->state != W_EMPTY && w->pid == m.pid)
                worker_gone(p, q, (int)m.slot, m.status);
            break;
        }
        mproc__close(fd);
    }
}

/* ---- the thread's loop
 * -------------------------------------------------------- */

static int live_workers(const mproc_pool *p) {
    int n = 0;
    for (int i = 0; i < p->o.nworkers; i++)
        n += p->w[i].state != W_EMPTY;
    return n;
}

/* Replace missing workers, close idle ones when the pool is closing. */
static void maintain(mproc_pool *p) {
    int want = !p->broken &&
               (p->state == P_OPEN || (p->state == P_CLOSED && p->qhead));
    for (int i = 0; i < p->o.nworkers; i++) {
        mproc__worker *w = &p->w[i];
        if (w->state == W_EMPTY && want && p->zc.fd >= 0) {
            int err = spawn_worker(p, i);
            if (err < 0) {
                mproc_log(MPROC_LOG_ERROR, "could not start a worker: %s",
                          mproc_strerror(err));
                count_death(p);
            }
        }
        if (p->state == P_CLOSED && !p->qhead &&
            (w->state == W_IDLE || w->state == W_STARTING) && w->chan >= 0) {
            /* EOF tells the worker to exit once it has read what is
             * queued for it. */
            shutdown(w->chan, SHUT_WR);
            w->state = W_EXITING;
        }
    }
}

/* Kill workers past their deadline; return ms until the next deadline. */
static int check_deadlines(mproc_pool *p) {
    uint64_t now = mproc__now_ns(), next = UINT64_MAX;
    if (p->state == P_TERMINATING) {
        if (now >= p->term_deadline) {
            for (int i = 0; i < p->o.nworkers; i++)
                if (p->w[i].state != W_EMPTY)
                    kill_worker(&p->w[i], KILL_TERMINATE, SIGKILL);
        } else {
            next = p->term_deadline;
        }
    }
    for (int i = 0; i < p->o.nworkers; i++) {
        mproc__worker *w = &p->w[i];
        mproc__chunk *c = w->fl_head;
        if (w->state != W_BUSY || !c || !c->res->timeout_ns ||
            w->killed != KILL_NONE)
            continue;
        /* The oldest chunk in flight is the one running (or about to):
         * it started after it was sent and after its predecessor's
         * result came in, and its current item says when it began. */
        uint64_t start = MPROC_MAX(c->sent_ns, w->head_since);
        if (atomic_load(&w->mb->chunk_id) == c->id) {
            uint64_t s = atomic_load(&w->mb->item_start_ns);
            if (s > start)
                start = s;
        }
        uint64_t dl = start + c->res->timeout_ns;
        if (now >= dl)
            kill_worker(w, KILL_TIMEOUT, SIGKILL);
        else if (dl < next)
            next = dl;
    }
    return mproc__ms_left(next);
}

/* Run callbacks and progress reports outside the lock. A result in q is
 * not ready yet (callbacks_done is 0, or it is complete and unfreeable
 * until we say so), so the caller cannot free it under us. */
static void run_callbacks(mproc_pool *p, cbq *q) {
    /* First, without letting go of the lock, the results that have no
     * callbacks: they became ready when their last item came in, and the
     * caller may free them as soon as we unlock. */
    size_t k = 0;
    for (size_t i = 0; i < q->n; i++) {
        mproc_result *r = q->r[i];
        if (!r->callbacks_done)
            q->r[k++] = r;
        else if (r->user_freed)
            mproc__result_destroy(r);
    }
    q->n = k;
    for (size_t i = 0; i < q->pn; i++) {
        mproc_result *r = q->pr[i];
        size_t done = r->done, n = r->n;
        r->progress_queued = 0;
        if (done >= n)
            continue; /* the final report comes with the callbacks */
        pthread_mutex_unlock(&p->mu);
        mproc__progress_update(&r->progress, done, n);
        pthread_mutex_lock(&p->mu);
    }
    q->pn = 0;
    for (size_t i = 0; i < q->n; i++) {
        mproc_result *r = q->r[i];
        pthread_mutex_unlock(&p->mu);
        if (r->want_progress)
            mproc__progress_update(&r->progress, r->n, r->n);
        mproc_result_cb cb = r->first_error ? r->on_error : r->on_success;
        if (cb) {
            int rc = cb(r, r->cb_arg);
            if (rc != 0)
                mproc_log(MPROC_LOG_WARNING,
                          "result callback returned %d; ignored", rc);
        }
        pthread_mutex_lock(&p->mu);
        r->callbacks_done = 1;
        if (r->user_freed)
            mproc__result_destroy(r);
    }
    if (q->n)
        mproc__pool_signal(p);
    q->n = 0;
}

/* Before the thread sleeps: ask every worker for a WAKE with its next
 * result, then look once more (a result posted before the flag was seen
 * gets no WAKE). 1 if there is something to take in after all. */
static int arm_sleep(mproc_pool *p) {
    for (int i = 0; i < p->o.nworkers; i++)
        if (p->w[i].state != W_EMPTY)
            atomic_store(&p->w[i].mb->p_sleep, 1);
    for (int i = 0; i < p->o.nworkers; i++) {
        mproc__worker *w = &p->w[i];
        if (w->state != W_EMPTY && !w->ring_bad &&
            mproc__ring_nonempty(&w->results))
            return 1;
    }
    return 0;
}

static void disarm_sleep(mproc_pool *p) {
    for (int i = 0; i < p->o.nworkers; i++)
        atomic_store_explicit(&p->w[i].mb->p_sleep, 0, memory_order_relaxed);
}

static void drain_rings(mproc_pool *p, cbq *q) {
    for (int i = 0; i < p->o.nworkers; i++)
        drain_ring(p, q, i);
}

/* Move what callers left for the thread (reap_locked) into
 * its own queue. */
static void take_deferred(mproc_pool *p, cbq *q) {
    cbq *d = &p->deferred;
    for (size_t i = 0; i < d->n; i++)
        note_done(q, d->r[i]);
    for (size_t i = 0; i < d->pn; i++)
        if (vec_push(&q->pr, &q->pn, &q->pcap, d->pr[i]) < 0)
            d->pr[i]->progress_queued = 0;
    d->n = d->pn = 0;
}

static void *pool_thread(void *arg) {
    mproc_pool *p = arg;
    cbq q = {0};
    pthread_mutex_lock(&p->mu);
    for (;;) {
        take_deferred(p, &q);
        drain_rings(p, &q);
        if (p->empty_pending) {
            /* Calls over zero items complete here, on this thread, so that
             * their callbacks run where every callback runs. */
            p->empty_pending = 0;
            for (mproc_result *r = p->live; r; r = r->next_live)
                if (r->n == 0 && !r->empty_noted) {
                    r->empty_noted = 1;
                    note_done(&q, r);
                }
        }
        dispatch(p, &q);
        maintain(p);
        dispatch(p, &q);
        run_callbacks(p, &q);
        if ((p->state == P_CLOSED || p->state == P_TERMINATING) && !p->qhead &&
            live_workers(p) == 0) {
            p->state = P_DONE;
            mproc__pool_signal(p);
            break;
        }
        int timeout = check_deadlines(p);
        if (arm_sleep(p)) {
            disarm_sleep(p);
            continue;
        }
        pthread_mutex_unlock(&p->mu);

        struct epoll_event ev[16];
        int n = epoll_wait(p->epfd, ev, 16, timeout);

        pthread_mutex_lock(&p->mu);
        disarm_sleep(p);
        for (int i = 0; i < n; i++) {
            uint32_t type = (uint32_t)(ev[i].data.u64 >> 32);
            int slot = (int)(uint32_t)ev[i].data.u64;
            if (type == EV_WAKE) {
                uint64_t v;
                while (read(p->wake_fd, &v, sizeof v) > 0)
                    ;
            } else if (type == EV_ZYGOTE) {
                zygote_event(p, &q);
            } else if (type == EV_CHAN && p->w[slot].chan >= 0) {
                drain_chan(p, &q, slot);
            }
        }
        if (p->state == P_TERMINATING)
            fail_queue(p, &q, MPROC_ECANCELLED, "pool terminated");
        mproc__pool_signal(p);
    }
    run_callbacks(p, &q);
    pthread_mutex_unlock(&p->mu);
    free(q.r);
    free(q.pr);
    return NULL;
}

void mproc__pool_wake(mproc_pool *p) {
    uint64_t one = 1;
    ssize_t n = write(p->wake_fd, &one, sizeof one);
    MPROC_UNUSED(n); /* EAGAIN: a wake-up is already pending */
}

void mproc__pool_signal(mproc_pool *p) {
    atomic_fetch_add(&p->event_seq, 1);
    pthread_cond_broadcast(&p->cond);
}

/* ---- callers that wait
 * -------------------------------------------------------- */

/* A caller holding mu (about to wait, or submitting): take in results,
 * send queued work, and leave callbacks and progress reports, which run
 * on the result thread only, to the thread. */
static void reap_locked(mproc_pool *p) {
    cbq q = {0};
    drain_rings(p, &q);
    dispatch(p, &q);
    int wake = 0;
    for (size_t i = 0; i < q.n; i++) {
        mproc_result *r = q.r[i];
        if (!r->callbacks_done) {
            if (vec_push(&p->deferred.r, &p->deferred.n, &p->deferred.cap, r) <
                0) {
                r->callbacks_done = 1; /* as note_done does */
                r->on_success = r->on_error = NULL;
            }
            wake = 1;
        } else if (r->user_freed) {
            mproc__result_destroy(r);
        }
    }
    for (size_t i = 0; i < q.pn; i++) {
        if (vec_push(&p->deferred.pr, &p->deferred.pn, &p->deferred.pcap,
                     q.pr[i]) < 0)
            q.pr[i]->progress_queued = 0;
        wake = 1;
    }
    if (q.n)
        mproc__pool_signal(p);
    free(q.r);
    free(q.pr);
    if (wake)
        mproc__pool_wake(p);
}

/* Caller spin budget: long enough to cover a short task's round trip,
 * short enough that a missed guess costs little. */
#define CALLER_SPIN_NS 50000u

/* Spinning pays only when a CPU is free for it: every worker with work in
 * flight runs on one, and so does every other spinning caller. */
static int spin_allowed(const mproc_pool *p) {
    if (p->o.nworkers > 256 || p->state != P_OPEN || p->broken)
        return 0;
    int busy = 0;
    for (int i = 0; i < p->o.nworkers; i++)
        busy += p->w[i].state == W_BUSY;
    return busy + p->nspinners + 1 <= p->ncpu;
}

typedef struct spin_ctx {
    mproc_pool *p;
    uint64_t seq;
} spin_ctx;

/* Without mu: did a worker post a result, or did the thread signal? Only
 * shared words are read here (the mailboxes live as long as the pool). */
static int spin_check(void *arg) {
    spin_ctx *c = arg;
    mproc_pool *p = c->p;
    for (int i = 0; i < p->o.nworkers; i++) {
        mproc__mbox *mb = p->w[i].mb;
        if (atomic_load_explicit(&mb->result.head, memory_order_acquire) !=
            atomic_load_explicit(&mb->result.tail, memory_order_relaxed))
            return 1;
    }
    return atomic_load_explicit(&p->event_seq, memory_order_acquire) != c->seq;
}

int mproc__pool_spin_locked(mproc_pool *p, int (*done)(void *), void *arg) {
    reap_locked(p);
    if (done(arg) || !spin_allowed(p))
        return done(arg);
    /* While registered, workers leave the WAKE out: we take their results
     * in ourselves, here or in the last reap below. */
    p->nspinners++;
    for (int i = 0; i < p->o.nworkers; i++)
        atomic_fetch_add(&p->w[i].mb->spinners, 1);
    uint64_t end = mproc__now_ns() + CALLER_SPIN_NS;
    spin_ctx c = {p, 0};
    for (;;) {
        uint64_t now = mproc__now_ns();
        if (now >= end)
            break;
        c.seq = atomic_load(&p->event_seq);
        pthread_mutex_unlock(&p->mu);
        int hit = mproc__spin_until(spin_check, &c, end - now);
        pthread_mutex_lock(&p->mu);
        reap_locked(p);
        if (!hit || done(arg))
            break;
    }
    for (int i = 0; i < p->o.nworkers; i++)
        atomic_fetch_sub(&p->w[i].mb->spinners, 1);
    p->nspinners--;
    reap_locked(p);
    return done(arg);
}

/* ---- close, join, terminate, destroy
 * -------------------------------------------- */

int mproc_pool_close(mproc_pool *p) {
    if (!p)
        return MPROC_EINVAL;
    pthread_mutex_lock(&p->mu);
    if (p->state == P_OPEN)
        p->state = P_CLOSED;
    pthread_mutex_unlock(&p->mu);
    mproc__pool_wake(p);
    return 0;
}

int mproc_pool_join(mproc_pool *p, long timeout_ms) {
    if (!p)
        return MPROC_EINVAL;
    if (p->thread_started && pthread_equal(pthread_self(), p->thread))
        return MPROC_EDEADLK;
    uint64_t deadline = mproc__deadline(timeout_ms);
    pthread_mutex_lock(&p->mu);
    int err = 0;
    if (p->state == P_OPEN)
        err = MPROC_ESTATE;
    while (!err && p->state != P_DONE) {
        if (deadline == UINT64_MAX) {
            pthread_cond_wait(&p->cond, &p->mu);
        } else {
            struct timespec ts = mproc__ts_from_ns(deadline);
            if (pthread_cond_timedwait(&p->cond, &p->mu, &ts) == ETIMEDOUT &&
                p->state != P_DONE)
                err = MPROC_ETIMEDOUT;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return err;
}

int mproc_pool_terminate(mproc_pool *p) {
    if (!p)
        return MPROC_EINVAL;
    if (p->thread_started && pthread_equal(pthread_self(), p->thread))
        return MPROC_EDEADLK;
    pthread_mutex_lock(&p->mu);
    if (p->state == P_OPEN || p->state == P_CLOSED) {
        p->state = P_TERMINATING;
        p->term_deadline =
            mproc__now_ns() + mproc__ms_to_ns(p->o.terminate_grace_ms);
        for (int i = 0; i < p->o.nworkers; i++) {
            mproc__worker *w = &p->w[i];
            if (w->state != W_EMPTY)
                kill_worker(w, KILL_TERMINATE, SIGTERM);
        }
    }
    pthread_mutex_unlock(&p->mu);
    mproc__pool_wake(p);
    return mproc_pool_join(p, MPROC_FOREVER);
}

void mproc_pool_destroy(mproc_pool *p) {
    if (!p)
        return;
    if (p->thread_started) {
        mproc_pool_terminate(p);
        pthread_join(p->thread, NULL);
    }
    /* Results the caller still holds outlive the pool. */
    pthread_mutex_lock(&p->mu);
    for (mproc_result *r = p->live, *nx; r; r = nx) {
        nx = r->next_live;
        r->pool = NULL;
        r->next_live = r->prev_live = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    pool_free(p);
}

/* ---- submission
 * --------------------------------------------------------------- */

/* Where the chunk that starts at item first ends: at most chunksize
 * items, and no more than MPROC__CHUNK_BYTES of arguments (or of typed
 * outputs) unless a single item is bigger, so that work streams through
 * the workers' rings. */
static size_t chunk_end(const mproc_result *r, size_t first, size_t chunksize) {
    size_t end = first + MPROC_MIN(chunksize, r->n - first);
    if (r->kind == MPROC__KIND_TYPED) {
        /* (Both arrays in shared memory: the message is the same few
         * bytes whatever the chunk's size.) */
        size_t per =
            MPROC_MAX(r->in_shm ? 0 : r->in_size, r->out_shm ? 0 : r->out_size);
        if (per == 0)
            return end;
        size_t most = MPROC_MAX(MPROC__CHUNK_BYTES / per, 1);
        return MPROC_MIN(end, first + most);
    }
    size_t k = first + 1;
    while (k < end && r->in_off[k + 1] - r->in_off[first] <= MPROC__CHUNK_BYTES)
        k++;
    return k;
}

int mproc__pool_submit(mproc_pool *p, mproc_result *r, size_t chunksize) {
    pthread_mutex_lock(&p->mu);
    int err = 0;
    if (p->state != P_OPEN)
        err = MPROC_ECLOSED;
    else if (p->broken)
        err = p->broken_code ? p->broken_code : MPROC_EBROKEN;
    if (err) {
        pthread_mutex_unlock(&p->mu);
        return err;
    }
    if (chunksize == 0) {
        /* Python's heuristic: about four chunks per worker. */
        size_t per = 4 * (size_t)p->o.nworkers;
        chunksize = r->n / per + (r->n % per != 0);
        if (chunksize == 0)
            chunksize = 1;
    }
    mproc__chunk *list = NULL, **tail = &list;
    for (size_t first = 0, end; first < r->n; first = end) {
        end = chunk_end(r, first, chunksize);
        mproc__chunk *c = calloc(1, sizeof *c);
        if (!c) {
            while (list) {
                mproc__chunk *nx = list->next;
                free(list);
                list = nx;
            }
            pthread_mutex_unlock(&p->mu);
            return MPROC_ENOMEM;
        }
        c->res = r;
        c->first = first;
        c->n = end - first;
        *tail = c;
        tail = &c->next;
    }
    r->next_live = p->live;
    if (p->live)
        p->live->prev_live = r;
    p->live = r;
    for (mproc__chunk *c = list, *nx; c; c = nx) {
        nx = c->next;
        q_push_back(p, c);
    }
    if (r->n == 0)
        p->empty_pending = 1; /* the result thread owes the callbacks */
    /* Hand the work to idle workers from here: no thread hop. The thread
     * hears of it only when it has something to do: a deadline to watch,
     * work left in the queue, or an empty call to complete. */
    reap_locked(p);
    int wake = r->timeout_ns || p->qhead || r->n == 0;
    pthread_mutex_unlock(&p->mu);
    if (wake)
        mproc__pool_wake(p);
    return 0;
}

/* ---- queries
 * ------------------------------------------------------------------ */

int mproc_pool_size(const mproc_pool *p) {
    return p ? p->o.nworkers : MPROC_EINVAL;
}

int mproc_pool_worker_pids(mproc_pool *p, pid_t *pids, int cap) {
    if (!p || (cap > 0 && !pids) || cap < 0)
        return MPROC_EINVAL;
    pthread_mutex_lock(&p->mu);
    int n = 0;
    for (int i = 0; i < p->o.nworkers && n < cap; i++)
        if (p->w[i].state != W_EMPTY && p->w[i].pid > 0)
            pids[n++] = p->w[i].pid;
    pthread_mutex_unlock(&p->mu);
    return n;
}

int mproc_pool_get_stats(mproc_pool *p, mproc_pool_stats *st) {
    if (!p || !st)
        return MPROC_EINVAL;
    pthread_mutex_lock(&p->mu);
    *st = p->stats;
    pthread_mutex_unlock(&p->mu);
    return 0;
}
