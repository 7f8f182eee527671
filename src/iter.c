/* SPDX-License-Identifier: MIT */
/*
 * imap and imap_unordered: a lazy map over a source of inputs. Inputs are
 * pulled on the caller's thread, a chunk at a time, and submitted as small
 * batches (each an ordinary result handle), keeping at most max_in_flight
 * items submitted but not yet handed back. A huge input therefore never sits
 * in memory, and results stream back as they come.
 */
#include <stdlib.h>
#include <string.h>

#include "pool.h"

static int pull_batch(mproc_iter *it);

int mproc_pool_imap(mproc_pool *p, mproc_fn fn, mproc_source_fn source,
                    void *source_arg, const mproc_call_opts *o,
                    mproc_iter **out) {
    if (out)
        *out = NULL;
    if (!p || !fn || !source || !out)
        return MPROC_EINVAL;
    if (o && (o->on_success || o->on_error))
        return MPROC_EINVAL; /* items come back through mproc_iter_next */
    mproc_iter *it = calloc(1, sizeof *it);
    if (!it)
        return MPROC_ENOMEM;
    it->pool = p;
    it->fn = fn;
    it->source = source;
    it->source_arg = source_arg;
    if (o)
        it->o = *o;
    it->chunksize = it->o.chunksize ? it->o.chunksize : 1; /* Python's */
    size_t dflt = 32 * (size_t)mproc_pool_size(p) * it->chunksize;
    it->max_in_flight = it->o.max_in_flight ? it->o.max_in_flight : dflt;
    if (it->max_in_flight < it->chunksize)
        it->max_in_flight = it->chunksize;
    it->o.chunksize = it->chunksize;
    /* Start the work now, as Python's imap does: fill the window. An error
     * from the source or the submission is kept for mproc_iter_next. */
    while (pull_batch(it) == 1)
        ;
    *out = it;
    return 0;
}

/* Pull one batch from the source and submit it. 1 if one was submitted,
 * 0 if there is no room or no more input, < 0 on error. */
static int pull_batch(mproc_iter *it) {
    if (it->source_done || it->err || it->in_flight >= it->max_in_flight)
        return 0;
    size_t want = MPROC_MIN(it->chunksize, it->max_in_flight - it->in_flight);
    mproc_buf *items = calloc(want, sizeof *items);
    if (!items)
        return MPROC_ENOMEM;
    size_t k = 0;
    int err = 0, src_err = 0;
    for (; k < want; k++) {
        const void *d = NULL;
        size_t len = 0;
        int rc = it->source(it->source_arg, it->pulled + k, &d, &len);
        if (rc <= 0 || (len && !d)) {
            /* The items pulled before the end (or the source's error) are
             * still submitted; the error comes after them. */
            it->source_done = 1;
            src_err = rc < 0 ? rc : (rc > 0 ? MPROC_EINVAL : 0);
            break;
        }
        void *copy = malloc(len ? len : 1);
        if (!copy) {
            err = MPROC_ENOMEM;
            break;
        }
        if (len)
            memcpy(copy, d, len);
        items[k] = (mproc_buf){copy, len};
    }
    if (k > 0 && it->nb == it->capb) {
        size_t cap = it->capb ? 2 * it->capb : 8;
        mproc__batch *nb = realloc(it->b, cap * sizeof *nb);
        if (!nb)
            err = MPROC_ENOMEM;
        else {
            it->b = nb;
            it->capb = cap;
        }
    }
    mproc_result *r = NULL;
    if (k > 0 && !err) {
        mproc_call_opts bo = it->o;
        bo.progress = 0;
        bo.on_progress = NULL;
        r = mproc__result_new(it->pool, MPROC__KIND_BYTES, k, &bo);
        uint8_t *taken = it->o.unordered ? calloc(k, 1) : NULL;
        if (!r || (it->o.unordered && !taken) ||
            (err = mproc__result_copy_inputs(r, items, k)) != 0) {
            err = err ? err : MPROC_ENOMEM;
            free(taken);
            mproc__result_destroy(r);
            r = NULL;
        } else {
            r->fn = it->fn;
            r->iter = it;
            r->index_base = it->pulled;
            if ((err = mproc__pool_submit(it->pool, r, it->chunksize)) != 0) {
                free(taken);
                mproc__result_destroy(r);
                r = NULL;
            } else {
                it->b[it->nb++] = (mproc__batch){.r = r, .taken = taken};
                it->pulled += k;
                it->in_flight += k;
            }
        }
    }
    for (size_t i = 0; i < k; i++)
        free((void *)items[i].data);
    free(items);
    if (!err)
        err = src_err;
    if (err)
        it->err = err;
    return r ? 1 : err;
}

static void drop_batch(mproc_iter *it, size_t bi) {
    mproc_result_free(it->b[bi].r);
    free(it->b[bi].taken);
    memmove(&it->b[bi], &it->b[bi + 1], (it->nb - bi - 1) * sizeof *it->b);
    it->nb--;
}

/* With the pool's lock: find an item ready to hand out. */
static int find_ready(mproc_iter *it, size_t *bi, size_t *ii) {
    if (!it->o.unordered) {
        if (it->nb == 0)
            return 0;
        mproc_result *r = it->b[0].r;
        size_t i = it->b[0].handed;
        if (!mproc__item_done(r, i))
            return 0;
        *bi = 0;
        *ii = i;
        return 1;
    }
    for (size_t b = 0; b < it->nb; b++) {
        mproc_result *r = it->b[b].r;
        for (size_t i = 0; i < r->n; i++) {
            if (!it->b[b].taken[i] && mproc__item_done(r, i)) {
                *bi = b;
                *ii = i;
                return 1;
            }
        }
    }
    return 0;
}

static int any_ready(void *arg) {
    size_t bi, ii;
    return find_ready(arg, &bi, &ii);
}

int mproc_iter_next(mproc_iter *it, long timeout_ms, mproc_item *item) {
    if (!it || !item)
        return MPROC_EINVAL;
    memset(item, 0, sizeof *item);
    /* Batches whose every item was handed out by an earlier call can go:
     * their data was valid until this call. */
    for (size_t b = 0; b < it->nb;) {
        if (it->b[b].handed == it->b[b].r->n)
            drop_batch(it, b);
        else
            b++;
    }
    while (pull_batch(it) == 1)
        ;
    if (it->nb == 0) {
        if (it->err) {
            int e = it->err;
            it->err = 0;
            it->source_done = 1;
            return e;
        }
        return MPROC_EOF;
    }
    mproc_pool *p = it->pool;
    uint64_t deadline = mproc__deadline(timeout_ms);
    size_t bi = 0, ii = 0;
    int spun = 0;
    pthread_mutex_lock(&p->mu);
    while (!find_ready(it, &bi, &ii)) {
        if (p->thread_started && pthread_equal(pthread_self(), p->thread)) {
            /* A callback waiting for the pool that would run its items. */
            pthread_mutex_unlock(&p->mu);
            return MPROC_EDEADLK;
        }
        if (!spun++ && mproc__pool_spin_locked(p, any_ready, it))
            continue;
        if (deadline == UINT64_MAX) {
            pthread_cond_wait(&p->cond, &p->mu);
        } else {
            struct timespec ts = mproc__ts_from_ns(deadline);
            if (pthread_cond_timedwait(&p->cond, &p->mu, &ts) != 0 &&
                !find_ready(it, &bi, &ii)) {
                pthread_mutex_unlock(&p->mu);
                return MPROC_ETIMEDOUT;
            }
        }
    }
    mproc__batch *b = &it->b[bi];
    mproc_result *r = b->r;
    item->index = r->index_base + ii;
    item->status = mproc__item_status(r, ii);
    if (item->status == 0) {
        item->data = r->data[ii];
        item->len = r->len[ii];
    } else {
        item->errmsg = r->errmsg && r->errmsg[ii]
                           ? r->errmsg[ii]
                           : mproc_strerror(item->status);
    }
    if (b->taken)
        b->taken[ii] = 1;
    b->handed++;
    it->in_flight--;
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void mproc_iter_free(mproc_iter *it) {
    if (!it)
        return;
    while (it->nb)
        drop_batch(it, it->nb - 1);
    free(it->b);
    free(it);
}
