/* SPDX-License-Identifier: MIT */
/*
 * Result handles: what an async call returns. Every item has a status, and
 * for the bytes form its result bytes, and on failure its error message. A
 * handle is ready once every item has an outcome and the call's callbacks
 * have run (Python's order: callbacks first, then ready), so a caller that
 * frees a ready handle never races a callback.
 *
 * Handles use their pool's mutex; once the pool is destroyed a handle is
 * complete and immutable, and needs no lock.
 */
#include <stdlib.h>
#include <string.h>

#include "pool.h"

mproc_result *mproc__result_new(mproc_pool *p, int kind, size_t n,
                                const mproc_call_opts *o) {
    mproc_result *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    size_t m = n ? n : 1;
    r->pool = p;
    r->kind = kind;
    r->n = n;
    r->done_bits = calloc(m / 64 + 1, sizeof *r->done_bits);
    /* Small calls get their codes now; a failure in a huge one allocates
     * them then. */
    if (m <= (1u << 16) && !(r->codes = calloc(m, sizeof *r->codes))) {
        free(r->done_bits);
        r->done_bits = NULL;
    }
    if (kind == MPROC__KIND_BYTES) {
        r->data = calloc(m, sizeof *r->data);
        r->len = calloc(m, sizeof *r->len);
    }
    if (!r->done_bits || (kind == MPROC__KIND_BYTES && (!r->data || !r->len))) {
        mproc__result_destroy(r);
        return NULL;
    }
    long tmo =
        o && o->task_timeout_ms ? o->task_timeout_ms : p->o.task_timeout_ms;
    r->timeout_ns = tmo > 0 ? mproc__ms_to_ns(tmo) : 0;
    int retries = o && o->retries ? o->retries : p->o.retries;
    r->retries = retries > 0 ? MPROC_MIN(retries, 255) : 0;
    if (o) {
        r->on_success = o->on_success;
        r->on_error = o->on_error;
        r->cb_arg = o->cb_arg;
        if (o->progress || o->on_progress) {
            r->want_progress = 1;
            mproc__progress_init(&r->progress, o->progress, o->on_progress,
                                 o->progress_arg, "map");
        }
    }
    /* No callbacks: ready as soon as the last item is in. */
    r->callbacks_done = !r->on_success && !r->on_error && !r->want_progress;
    return r;
}

void mproc__result_destroy(mproc_result *r) {
    if (!r)
        return;
    mproc_pool *p = r->pool;
    if (p) {
        if (r->prev_live)
            r->prev_live->next_live = r->next_live;
        else if (p->live == r)
            p->live = r->next_live;
        if (r->next_live)
            r->next_live->prev_live = r->prev_live;
    }
    for (size_t i = 0; r->errmsg && i < r->n; i++)
        free(r->errmsg[i]);
    for (size_t i = 0; r->data && i < r->n; i++)
        free(r->data[i]);
    free(r->done_bits);
    free(r->codes);
    free(r->errmsg);
    free(r->data);
    free(r->len);
    free(r->attempts);
    free(r->in_buf);
    free(r->in_off);
    free(r);
}

/* The item's error message, kept; the array is made at the first one. */
static void keep_errmsg(mproc_result *r, size_t i, int code, char *msg) {
    if (!r->errmsg)
        r->errmsg = calloc(r->n, sizeof *r->errmsg);
    if (!msg)
        msg = strdup(mproc_strerror(code));
    if (r->errmsg)
        r->errmsg[i] = msg;
    else
        free(msg); /* no memory: mproc_result_errmsg falls back */
}

int mproc__result_set(mproc_result *r, size_t i, int code, void *data,
                      size_t len, char *msg) {
    if (i >= r->n || mproc__item_done(r, i)) {
        free(data);
        free(msg);
        return 0;
    }
    if (code && !r->codes && !(r->codes = calloc(r->n, sizeof *r->codes)))
        r->codes_lost = 1; /* see mproc__item_status */
    r->done_bits[i / 64] |= 1ull << (i % 64);
    if (code && r->codes)
        r->codes[i] = code;
    if (code == 0 && r->data) {
        r->data[i] = data;
        r->len[i] = len;
    } else {
        free(data);
    }
    if (code != 0) {
        keep_errmsg(r, i, code, msg);
        if (!r->first_error)
            r->first_error = code;
        /* A failed item's out slot is zeroed, whatever got there. */
        if (r->kind == MPROC__KIND_TYPED && r->out && r->out_size &&
            !r->user_freed)
            memset(r->out + i * r->out_size, 0, r->out_size);
    } else {
        free(msg);
    }
    r->done++;
    mproc_pool *p = r->pool;
    p->stats.items_done++;
    if (code)
        p->stats.items_failed++;
    if (r->iter)
        mproc__pool_signal(p);
    return r->done == r->n;
}

int mproc__result_set_ok_range(mproc_result *r, size_t first, size_t n) {
    size_t k = 0, end = MPROC_MIN(first + n, r->n);
    for (size_t i = first; i < end;) {
        uint64_t *word = &r->done_bits[i / 64];
        if (i % 64 == 0 && end - i >= 64 && *word == 0) {
            *word = ~0ull; /* a whole word at once */
            k += 64;
            i += 64;
            continue;
        }
        if (!(*word >> (i % 64) & 1)) {
            *word |= 1ull << (i % 64);
            k++;
        }
        i++;
    }
    r->done += k;
    r->pool->stats.items_done += k;
    if (r->iter && k)
        mproc__pool_signal(r->pool);
    return k && r->done == r->n;
}

int mproc__result_attempts(const mproc_result *r, size_t i) {
    return r->attempts && i < r->n ? r->attempts[i] : 0;
}

int mproc__result_count_attempt(mproc_result *r, size_t i) {
    if (!r->attempts && !(r->attempts = calloc(r->n ? r->n : 1, 1)))
        return MPROC_ENOMEM;
    r->attempts[i]++;
    return 0;
}

static int is_ready(const mproc_result *r) {
    return r->done == r->n && r->callbacks_done;
}

static int ready_pred(void *arg) {
    return is_ready(arg);
}

int mproc__result_wait_locked(mproc_result *r, uint64_t deadline) {
    mproc_pool *p = r->pool;
    int spun = 0;
    while (!is_ready(r)) {
        if (p->thread_started && pthread_equal(pthread_self(), p->thread))
            return MPROC_EDEADLK; /* a callback waiting for the pool */
        if (!spun++ && mproc__pool_spin_locked(p, ready_pred, r))
            break;
        if (deadline == UINT64_MAX) {
            pthread_cond_wait(&p->cond, &p->mu);
        } else {
            struct timespec ts = mproc__ts_from_ns(deadline);
            if (pthread_cond_timedwait(&p->cond, &p->mu, &ts) != 0 &&
                !is_ready(r))
                return MPROC_ETIMEDOUT;
        }
    }
    return 0;
}

int mproc_result_wait(mproc_result *r, long timeout_ms) {
    if (!r)
        return MPROC_EINVAL;
    mproc_pool *p = r->pool;
    if (!p)
        return 0;
    pthread_mutex_lock(&p->mu);
    int err = mproc__result_wait_locked(r, mproc__deadline(timeout_ms));
    pthread_mutex_unlock(&p->mu);
    return err;
}

int mproc_result_get(mproc_result *r, long timeout_ms) {
    int err = mproc_result_wait(r, timeout_ms);
    return err ? err : r->first_error;
}

int mproc_result_ready(mproc_result *r) {
    if (!r)
        return 0;
    mproc_pool *p = r->pool;
    if (!p)
        return 1;
    pthread_mutex_lock(&p->mu);
    int ready = is_ready(r);
    pthread_mutex_unlock(&p->mu);
    return ready;
}

int mproc_result_successful(mproc_result *r) {
    if (!r)
        return MPROC_EINVAL;
    if (!mproc_result_ready(r))
        return MPROC_ENOTREADY;
    return r->first_error == 0;
}

size_t mproc_result_count(const mproc_result *r) {
    return r ? r->n : 0;
}

/* Per-item accessors: an item's fields never change once it has its
 * outcome, so only the status needs the lock. */
int mproc_result_status(mproc_result *r, size_t i) {
    if (!r || i >= r->n)
        return MPROC_EINVAL;
    mproc_pool *p = r->pool;
    if (p)
        pthread_mutex_lock(&p->mu);
    int st = mproc__item_status(r, i);
    if (p)
        pthread_mutex_unlock(&p->mu);
    return st;
}

const void *mproc_result_data(mproc_result *r, size_t i, size_t *len) {
    if (len)
        *len = 0;
    if (!r || i >= r->n || !r->data || mproc_result_status(r, i) != 0)
        return NULL;
    if (len)
        *len = r->len[i];
    return r->data[i];
}

const char *mproc_result_errmsg(mproc_result *r, size_t i) {
    if (!r || i >= r->n)
        return NULL;
    int st = mproc_result_status(r, i);
    if (st == 0 || st == MPROC_ENOTREADY)
        return NULL;
    return r->errmsg && r->errmsg[i] ? r->errmsg[i] : mproc_strerror(st);
}

void mproc_result_free(mproc_result *r) {
    if (!r)
        return;
    mproc_pool *p = r->pool;
    if (!p) {
        mproc__result_destroy(r);
        return;
    }
    pthread_mutex_lock(&p->mu);
    if (is_ready(r)) {
        mproc__result_destroy(r);
    } else {
        /* Still running: the result thread frees it when it completes. */
        r->user_freed = 1;
    }
    pthread_mutex_unlock(&p->mu);
}
