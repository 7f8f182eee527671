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
    free(p->w);
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

    p->w = calloc((size_t)o.nworkers, sizeof *p->w);
    p->rxbuf = malloc(MPROC__WIRE_RECV_BUF);
    p->ndeaths_ring = o.restart_limit > 0 ? o.restart_limit + 1 : 1;
    p->deaths = calloc((size_t)p->ndeaths_ring, sizeof *p->deaths);
    if (!p->w || !p->rxbuf || !p->deaths) {
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
        p->w[i].chan = p->w[i].pidfd = -1;

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
    for (int i = 0; i < o.nworkers; i++) {
        mproc__worker *w = &p->w[i];
        mproc__close(w->chan);
        if (w->page)
            munmap(w->page, sizeof *w->page);
    }
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

/* Ask the fork server for a worker in slot. Called with mu held (or before
 * the thread exists). */
static int spawn_worker(mproc_pool *p, int slot) {
    mproc__worker *w = &p->w[slot];
    int sv[2] = {-1, -1}, page_fd = -1, err;
    if ((err = mproc__socketpair_seqpacket(sv)) < 0)
        return err;
    if ((page_fd = mproc__memfd("mproc-page", sizeof(mproc__page))) < 0) {
        err = page_fd;
        goto fail;
    }
    void *page = mmap(NULL, sizeof(mproc__page), PROT_READ | PROT_WRITE,
                      MAP_SHARED, page_fd, 0);
    if (page == MAP_FAILED) {
        err = -errno;
        goto fail;
    }
    /* INIT goes first, so the worker finds it waiting when it starts. */
    if ((err = send_init(p, sv[0], slot)) < 0 ||
        (err = mproc__set_nonblock(sv[0], true)) < 0 ||
        (err = mproc__zygote_request_spawn(&p->zc, (uint32_t)slot, sv[1],
                                           page_fd)) < 0 ||
        (err = epoll_add(p, sv[0], EV(EV_CHAN, slot))) < 0) {
        munmap(page, sizeof(mproc__page));
        goto fail;
    }
    mproc__close(sv[1]);
    mproc__close(page_fd);
    memset(w, 0, sizeof *w);
    w->state = W_SPAWNING;
    w->chan = sv[0];
    w->pidfd = -1;
    w->page = page;
    return 0;
fail:
    mproc__close(sv[0]);
    mproc__close(sv[1]);
    mproc__close(page_fd);
    return err;
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

/* Results completed during one pass of the loop, for callbacks. */
typedef struct cbq {
    mproc_result **r; /* completed: callbacks to run */
    size_t n, cap;
    mproc_result **pr; /* with a progress report due */
    size_t pn, pcap;
} cbq;

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

static int send_chunk(mproc_pool *p, mproc__worker *w, mproc__chunk *c) {
    mproc_result *r = c->res;
    mproc__task_payload tp = {.kind = (uint32_t)r->kind,
                              .in_size = r->in_size,
                              .out_size = r->out_size,
                              .first_index = r->index_base + c->first};
    c->id = ++p->next_chunk_id;
    if (r->kind == MPROC__KIND_TYPED) {
        tp.fn = (uint64_t)(uintptr_t)r->efn;
        return mproc__wire_send(
            w->chan, MPROC__MSG_TASK, c->id, (uint32_t)c->n, &tp, sizeof tp,
            r->in ? r->in + c->first * r->in_size : NULL, c->n * r->in_size);
    }
    tp.fn = (uint64_t)(uintptr_t)r->fn;
    size_t hl = sizeof tp + c->n * sizeof(uint64_t);
    unsigned char *h = malloc(hl);
    if (!h)
        return MPROC_ENOMEM;
    memcpy(h, &tp, sizeof tp);
    for (size_t i = 0; i < c->n; i++) {
        uint64_t l = r->in_off[c->first + i + 1] - r->in_off[c->first + i];
        memcpy(h + sizeof tp + i * sizeof l, &l, sizeof l);
    }
    size_t a = r->in_off[c->first], b = r->in_off[c->first + c->n];
    int err = mproc__wire_send(w->chan, MPROC__MSG_TASK, c->id, (uint32_t)c->n,
                               h, hl, r->in_buf + a, b - a);
    free(h);
    return err;
}

static void dispatch(mproc_pool *p, cbq *q) {
    if (p->broken) {
        fail_queue(p, q, p->broken_code ? p->broken_code : MPROC_EBROKEN,
                   p->broken_why);
        return;
    }
    for (int i = 0; i < p->o.nworkers && p->qhead; i++) {
        mproc__worker *w = &p->w[i];
        if (w->state != W_IDLE)
            continue;
        mproc__chunk *c = q_pop(p);
        if (c->res->user_freed && c->res->kind == MPROC__KIND_TYPED) {
            /* The caller gave up on this map; its arrays may be gone. */
            fail_chunk(p, q, c, MPROC_ECANCELLED, "result freed");
            i--;
            continue;
        }
        int err = send_chunk(p, w, c);
        if (err < 0) {
            /* The worker is going away (or memory is short): put the
             * chunk back; the worker's exit report will follow. */
            q_push_front(p, c);
            if (err != MPROC_ENOMEM)
                w->state = W_EXITING;
            return;
        }
        w->chunk = c;
        w->state = W_BUSY;
        w->sent_ns = mproc__now_ns();
        w->items_sent += c->n;
    }
}

/* ---- messages from workers
 * ---------------------------------------------------- */

/* Check and store a RESULT. 0, or MPROC_EPROTO if the worker lied. */
static int take_result(mproc_pool *p, cbq *q, mproc__worker *w,
                       const mproc__msg *m) {
    mproc__chunk *c = w->chunk;
    if (w->state != W_BUSY || !c || m->hdr.id != c->id || m->hdr.nitems != c->n)
        return MPROC_EPROTO;
    mproc_result *r = c->res;
    size_t n = c->n, len = (size_t)m->hdr.len;
    const unsigned char *pl = m->payload;
    if (n > len / sizeof(mproc__item_hdr))
        return MPROC_EPROTO;
    /* First pass: the layout must add up exactly, without overflow. The
     * typed form has a fixed data area, out_size bytes per item; the bytes
     * form concatenates each item's result. */
    int typed = r->kind == MPROC__KIND_TYPED;
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
    note_progress(q, r);
    free(c);
    w->chunk = NULL;
    w->state = W_IDLE;
    if (p->o.max_tasks_per_child &&
        w->items_sent >= (uint64_t)p->o.max_tasks_per_child)
        w->state = W_EXITING; /* it leaves by itself now */
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

/* Read everything the worker has sent. */
static void drain_chan(mproc_pool *p, cbq *q, int slot) {
    mproc__worker *w = &p->w[slot];
    while (w->chan >= 0) {
        mproc__msg m;
        size_t cap = SIZE_MAX;
        if (w->chunk) {
            /* No honest result is bigger than this. */
            size_t per = sizeof(mproc__item_hdr) + 4096;
            size_t lim = p->o.max_result_bytes + per;
            cap = w->chunk->n > SIZE_MAX / lim ? SIZE_MAX : w->chunk->n * lim;
        }
        int r = mproc__wire_recv(w->chan, p->rxbuf, cap, &m);
        if (r == -EAGAIN)
            return;
        if (r <= 0) {
            if (r < 0) {
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
                p->init_fail_streak = 0;
            } else {
                err = MPROC_EPROTO;
            }
            break;
        case MPROC__MSG_RESULT:
            err = take_result(p, q, w, &m);
            break;
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
            mproc_log(MPROC_LOG_WARNING,
                      "worker %d sent a malformed message; killing it",
                      (int)w->pid);
            kill_worker(w, KILL_PROTO, SIGKILL);
            close_chan(p, w);
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
        if (w->page && atomic_load(&w->page->mem_exhausted)) {
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

/* The worker died holding chunk c: decide every item's fate. */
static void fault_chunk(mproc_pool *p, cbq *q, mproc__worker *w, int status) {
    mproc__chunk *c = w->chunk;
    mproc_result *r = c->res;
    w->chunk = NULL;
    int code;
    char msg[256];
    describe_death(p, w, c, status, &code, msg, sizeof msg);
    if (code == MPROC_ECANCELLED || code == MPROC_EPROTO) {
        fail_chunk(p, q, c, code, msg);
        return;
    }
    /* Which item was running? The page says, if the worker got that far. */
    size_t k = SIZE_MAX;
    if (w->page && atomic_load(&w->page->chunk_id) == c->id) {
        uint64_t it = atomic_load(&w->page->item);
        if (it < c->n)
            k = (size_t)it;
    }
    if (k == SIZE_MAX && w->killed != KILL_TIMEOUT) {
        /* Died before starting the chunk (killed while idle, say): no
         * item is to blame; run them all again. */
        q_push_front(p, c);
        return;
    }
    if (k == SIZE_MAX)
        k = 0;
    /* Items after k never ran; items before k ran but their results died
     * with the worker. Both go back to the queue, ahead of other work. */
    mproc__chunk *after = sub_chunk(c, c->first + k + 1, c->n - k - 1);
    mproc__chunk *before = sub_chunk(c, c->first, k);
    if (after)
        q_push_front(p, after);
    size_t idx = c->first + k;
    int may_retry = code != MPROC_EMEMLIMIT && r->attempts[idx] < r->retries &&
                    !p->broken && p->state != P_TERMINATING;
    if (may_retry) {
        r->attempts[idx]++;
        p->stats.items_retried++;
        mproc__chunk *one = sub_chunk(c, idx, 1);
        if (one)
            q_push_front(p, one);
        mproc_log(MPROC_LOG_INFO, "item %zu: %s; retrying (%d of %d)", idx, msg,
                  r->attempts[idx], r->retries);
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
        (w->state == W_EXITING && !w->chunk && w->killed == KILL_NONE &&
         WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
        w->killed == KILL_TERMINATE;
    if (w->chunk)
        fault_chunk(p, q, w, status);
    if (!expected)
        count_death(p);
    close_chan(p, w);
    mproc__close(w->pidfd);
    if (w->page)
        munmap(w->page, sizeof *w->page);
    memset(w, 0, sizeof *w);
    w->chan = w->pidfd = -1;
    w->state = W_EMPTY;
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
            if (w->page)
                munmap(w->page, sizeof *w->page);
            memset(w, 0, sizeof *w);
            w->chan = w->pidfd = -1;
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
        if (w->state != W_BUSY || !w->chunk || !w->chunk->res->timeout_ns ||
            w->killed != KILL_NONE)
            continue;
        uint64_t start = w->sent_ns;
        if (atomic_load(&w->page->chunk_id) == w->chunk->id) {
            uint64_t s = atomic_load(&w->page->item_start_ns);
            if (s > start)
                start = s;
        }
        uint64_t dl = start + w->chunk->res->timeout_ns;
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
        pthread_cond_broadcast(&p->cond);
    q->n = 0;
}

static void *pool_thread(void *arg) {
    mproc_pool *p = arg;
    cbq q = {0};
    pthread_mutex_lock(&p->mu);
    for (;;) {
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
            pthread_cond_broadcast(&p->cond);
            break;
        }
        int timeout = check_deadlines(p);
        pthread_mutex_unlock(&p->mu);

        struct epoll_event ev[16];
        int n = epoll_wait(p->epfd, ev, 16, timeout);

        pthread_mutex_lock(&p->mu);
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
        pthread_cond_broadcast(&p->cond);
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
    for (size_t first = 0; first < r->n; first += chunksize) {
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
        c->n = MPROC_MIN(chunksize, r->n - first);
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
    pthread_mutex_unlock(&p->mu);
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
