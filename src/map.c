/* SPDX-License-Identifier: MIT */
/*
 * The calls that submit work: apply, map (bytes form), map_array (typed
 * fast path) and starmap, each sync and async. They check arguments, build a
 * result handle with the inputs, and hand it to the pool's queue; the sync
 * forms then wait on it.
 */
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "shm.h"

/* Submit r, or free it and report why not. */
static int submit(mproc_pool *p, mproc_result *r, const mproc_call_opts *o,
                  mproc_result **out) {
    int err = mproc__pool_submit(p, r, o ? o->chunksize : 0);
    if (err) {
        mproc__result_destroy(r);
        return err;
    }
    *out = r;
    return 0;
}

static int wait_sync(mproc_result *r) {
    int err = mproc_result_wait(r, MPROC_FOREVER);
    return err ? err : r->first_error;
}

int mproc__result_copy_inputs(mproc_result *r, const mproc_buf *items,
                              size_t n) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].len && !items[i].data)
            return MPROC_EINVAL;
        if (__builtin_add_overflow(total, items[i].len, &total))
            return MPROC_EOVERFLOW;
    }
    r->in_buf = malloc(total ? total : 1);
    r->in_off = malloc((n + 1) * sizeof *r->in_off);
    if (!r->in_buf || !r->in_off)
        return MPROC_ENOMEM;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        r->in_off[i] = off;
        if (items[i].len)
            memcpy(r->in_buf + off, items[i].data, items[i].len);
        off += items[i].len;
    }
    r->in_off[n] = off;
    return 0;
}

int mproc_pool_map_async(mproc_pool *p, mproc_fn fn, const mproc_buf *items,
                         size_t n, const mproc_call_opts *o,
                         mproc_result **out) {
    if (out)
        *out = NULL;
    if (!p || !fn || !out || (n && !items) || n > UINT32_MAX)
        return MPROC_EINVAL;
    mproc_result *r = mproc__result_new(p, MPROC__KIND_BYTES, n, o);
    if (!r)
        return MPROC_ENOMEM;
    r->fn = fn;
    int err = mproc__result_copy_inputs(r, items, n);
    if (err) {
        mproc__result_destroy(r);
        return err;
    }
    return submit(p, r, o, out);
}

int mproc_pool_map(mproc_pool *p, mproc_fn fn, const mproc_buf *items, size_t n,
                   const mproc_call_opts *o, mproc_result **out) {
    int err = mproc_pool_map_async(p, fn, items, n, o, out);
    return err ? err : wait_sync(*out);
}

int mproc_pool_apply_async(mproc_pool *p, mproc_fn fn, const void *arg,
                           size_t len, const mproc_call_opts *o,
                           mproc_result **out) {
    if (len && !arg) {
        if (out)
            *out = NULL;
        return MPROC_EINVAL;
    }
    mproc_buf b = {arg, len};
    mproc_call_opts oo = o ? *o : (mproc_call_opts){0};
    oo.chunksize = 1;
    return mproc_pool_map_async(p, fn, &b, 1, &oo, out);
}

int mproc_pool_apply(mproc_pool *p, mproc_fn fn, const void *arg, size_t len,
                     const mproc_call_opts *o, mproc_result **out) {
    int err = mproc_pool_apply_async(p, fn, arg, len, o, out);
    return err ? err : wait_sync(*out);
}

int mproc_pool_map_array_async(mproc_pool *p, mproc_elem_fn fn, const void *in,
                               size_t n, size_t in_size, void *out,
                               size_t out_size, const mproc_call_opts *o,
                               mproc_result **res) {
    if (res)
        *res = NULL;
    if (!p || !fn || !res)
        return MPROC_EINVAL;
    /* An overflowing size is reported as such, before the item limit. */
    size_t ib, ob;
    if (__builtin_mul_overflow(n, in_size, &ib) ||
        __builtin_mul_overflow(n, out_size, &ob))
        return MPROC_EOVERFLOW;
    if (n > UINT32_MAX || (ib && !in) || (ob && !out))
        return MPROC_EINVAL;
    if (out_size > p->o.max_result_bytes)
        return MPROC_ETOOBIG;
    mproc_result *r = mproc__result_new(p, MPROC__KIND_TYPED, n, o);
    if (!r)
        return MPROC_ENOMEM;
    r->efn = fn;
    r->in = in;
    r->in_size = in_size;
    r->out = out;
    r->out_size = out_size;
    /* Arrays in shared memory made here (mproc_array, mproc_shm) are not
     * copied at all: workers attach the segment and work in place. */
    r->in_shm = ib && mproc__registry_find_addr(in, ib, &r->in_id, &r->in_kind,
                                                &r->in_soff);
    r->out_shm = ob && mproc__registry_find_addr(out, ob, &r->out_id,
                                                 &r->out_kind, &r->out_soff);
    /* No need to zero out first: every slot gets written, by the worker
     * (zeroed before the task runs) or, for an item that fails on the way,
     * by mproc__result_set. */
    return submit(p, r, o, res);
}

int mproc_pool_map_array(mproc_pool *p, mproc_elem_fn fn, const void *in,
                         size_t n, size_t in_size, void *out, size_t out_size,
                         const mproc_call_opts *o, mproc_result **res) {
    int err = mproc_pool_map_array_async(p, fn, in, n, in_size, out, out_size,
                                         o, res);
    return err ? err : wait_sync(*res);
}

int mproc_pool_starmap_async(mproc_pool *p, mproc_elem_fn fn, const void *args,
                             size_t n, size_t args_size, void *out,
                             size_t out_size, const mproc_call_opts *o,
                             mproc_result **res) {
    return mproc_pool_map_array_async(p, fn, args, n, args_size, out, out_size,
                                      o, res);
}

int mproc_pool_starmap(mproc_pool *p, mproc_elem_fn fn, const void *args,
                       size_t n, size_t args_size, void *out, size_t out_size,
                       const mproc_call_opts *o, mproc_result **res) {
    return mproc_pool_map_array(p, fn, args, n, args_size, out, out_size, o,
                                res);
}
