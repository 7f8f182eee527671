/* SPDX-License-Identifier: MIT */
/*
 * Value and Array: typed elements in a shared segment, with a built-in
 * recursive lock (or none, for the Raw variants). A Value is an array of
 * one element with its own kind, so that a reference to one cannot be
 * attached as the other.
 *
 * Segment: header, state (the lock, type, sizes), then the elements at a
 * 64-byte boundary. Attach checks that the sizes recorded in the segment
 * fit inside it before any element is touched.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "sync.h"

#define ARR_MAGIC 0x41525259u /* "ARRY" */

typedef struct arrstate {
    mproc__lockstate lock;
    uint32_t magic;
    uint32_t type;
    uint32_t flags;
    uint32_t pad_;
    uint64_t elem_size;
    uint64_t n;
} arrstate;

/* Elements start here, from the segment's base. */
#define DATA_OFF ((sizeof(mproc__seghdr) + sizeof(arrstate) + 63) / 64 * 64)

typedef struct arr {
    mproc__obj obj;
    arrstate *s;
    unsigned char *data;
    size_t elem_size, n;
    bool locked;
    struct mproc_lock lockh; /* borrowed handle on s->lock */
} arr;

struct mproc_value {
    arr a;
};
struct mproc_array {
    arr a;
};

static const unsigned char type_sizes[MPROC_T_MAX_] = {
    [MPROC_T_BYTES] = 0,
    [MPROC_T_CHAR] = sizeof(char),
    [MPROC_T_SCHAR] = sizeof(signed char),
    [MPROC_T_UCHAR] = sizeof(unsigned char),
    [MPROC_T_SHORT] = sizeof(short),
    [MPROC_T_USHORT] = sizeof(unsigned short),
    [MPROC_T_INT] = sizeof(int),
    [MPROC_T_UINT] = sizeof(unsigned),
    [MPROC_T_LONG] = sizeof(long),
    [MPROC_T_ULONG] = sizeof(unsigned long),
    [MPROC_T_LLONG] = sizeof(long long),
    [MPROC_T_ULLONG] = sizeof(unsigned long long),
    [MPROC_T_FLOAT] = sizeof(float),
    [MPROC_T_DOUBLE] = sizeof(double),
    [MPROC_T_INT8] = sizeof(int8_t),
    [MPROC_T_UINT8] = sizeof(uint8_t),
    [MPROC_T_INT16] = sizeof(int16_t),
    [MPROC_T_UINT16] = sizeof(uint16_t),
    [MPROC_T_INT32] = sizeof(int32_t),
    [MPROC_T_UINT32] = sizeof(uint32_t),
    [MPROC_T_INT64] = sizeof(int64_t),
    [MPROC_T_UINT64] = sizeof(uint64_t),
    [MPROC_T_SIZE] = sizeof(size_t),
    [MPROC_T_BOOL] = sizeof(_Bool),
};

size_t mproc_type_size(mproc_type t) {
    if ((unsigned)t >= MPROC_T_MAX_)
        return 0;
    return type_sizes[t];
}

/* The element size for (type, size), or 0 when they do not agree. */
static size_t elem_size_of(mproc_type type, size_t size) {
    if ((unsigned)type >= MPROC_T_MAX_)
        return 0;
    if (type == MPROC_T_BYTES)
        return size;
    if (size != 0 && size != type_sizes[type])
        return 0;
    return type_sizes[type];
}

static void arr_setup(arr *a) {
    a->s = mproc__obj_state(&a->obj);
    a->data = (unsigned char *)a->obj.base + DATA_OFF;
    a->elem_size = (size_t)a->s->elem_size;
    a->n = (size_t)a->s->n;
    a->locked = !(a->s->flags & MPROC_NOLOCK);
    if (a->locked)
        mproc__lock_borrow(&a->lockh, &a->s->lock);
}

static int arr_create(arr **out, size_t hsize, uint32_t kind, mproc_type type,
                      size_t size, size_t n, const void *init, unsigned flags) {
    if (!out)
        return MPROC_EINVAL;
    *out = NULL;
    size_t es = elem_size_of(type, size);
    if (es == 0 || n == 0 || (flags & ~MPROC_NOLOCK))
        return MPROC_EINVAL;
    size_t bytes, total;
    if (__builtin_mul_overflow(es, n, &bytes) ||
        __builtin_add_overflow(bytes, DATA_OFF, &total))
        return MPROC_EOVERFLOW;
    int err;
    arr *a =
        mproc__handle_new(hsize, kind, total - sizeof(mproc__seghdr), &err);
    if (!a)
        return err;
    arrstate *s = mproc__obj_state(&a->obj);
    s->magic = ARR_MAGIC;
    s->type = (uint32_t)type;
    s->flags = flags;
    s->elem_size = es;
    s->n = n;
    if (!(flags & MPROC_NOLOCK)) {
        err = mproc__lockstate_init(&s->lock, 1);
        if (err) {
            mproc__handle_free(a);
            return err;
        }
    }
    arr_setup(a);
    if (init)
        memcpy(a->data, init, bytes);
    *out = a;
    return 0;
}

static int arr_attach(arr **out, size_t hsize, uint32_t kind,
                      const mproc_ref *ref) {
    if (!out)
        return MPROC_EINVAL;
    *out = NULL;
    int err;
    arr *a = mproc__handle_attach(hsize, ref, kind,
                                  DATA_OFF - sizeof(mproc__seghdr), &err);
    if (!a)
        return err;
    /* Check what the segment claims before trusting any of it. */
    const arrstate *s = mproc__obj_state(&a->obj);
    size_t bytes, total;
    if (s->magic != ARR_MAGIC || s->type >= MPROC_T_MAX_ ||
        (s->flags & ~MPROC_NOLOCK) || s->elem_size == 0 || s->n == 0 ||
        elem_size_of((mproc_type)s->type, (size_t)s->elem_size) == 0 ||
        (kind == MPROC__K_VALUE && s->n != 1) ||
        __builtin_mul_overflow(s->elem_size, s->n, &bytes) ||
        __builtin_add_overflow(bytes, DATA_OFF, &total) ||
        total > a->obj.size) {
        mproc__handle_free(a);
        return MPROC_EPROTO;
    }
    arr_setup(a);
    *out = a;
    return 0;
}

/* Copy element i out (in == NULL) or in (out == NULL), under the lock when
 * there is one. */
static int arr_copy(arr *a, size_t i, void *out, const void *in, size_t size) {
    if (size != a->elem_size)
        return MPROC_EINVAL;
    if (i >= a->n)
        return MPROC_ERANGE;
    int r = 0;
    if (a->locked) {
        r = mproc_lock_acquire(&a->lockh, MPROC_FOREVER);
        if (r != 0 && r != MPROC_EOWNERDEAD)
            return r;
    }
    unsigned char *p = a->data + i * a->elem_size;
    if (in)
        memcpy(p, in, size);
    else if (out)
        memcpy(out, p, size);
    if (a->locked)
        mproc_lock_release(&a->lockh);
    return r;
}

/* ---- Value ----------------------------------------------------------------
 */

static arr *val(mproc_value *v) {
    return mproc__obj_ok(v, MPROC__K_VALUE) ? &v->a : NULL;
}

int mproc_value_create(mproc_value **out, mproc_type type, size_t size,
                       const void *init, unsigned flags) {
    arr *a = NULL;
    int err = arr_create(out ? &a : NULL, sizeof(mproc_value), MPROC__K_VALUE,
                         type, size, 1, init, flags);
    if (out)
        *out = (mproc_value *)a;
    return err;
}

int mproc_value_attach(mproc_value **out, const mproc_ref *ref) {
    arr *a = NULL;
    int err =
        arr_attach(out ? &a : NULL, sizeof(mproc_value), MPROC__K_VALUE, ref);
    if (out)
        *out = (mproc_value *)a;
    return err;
}

int mproc_value_get(mproc_value *v, void *out, size_t size) {
    arr *a = val(v);
    if (!a || !out)
        return MPROC_EINVAL;
    return arr_copy(a, 0, out, NULL, size);
}

int mproc_value_set(mproc_value *v, const void *in, size_t size) {
    arr *a = val(v);
    if (!a || !in)
        return MPROC_EINVAL;
    return arr_copy(a, 0, NULL, in, size);
}

void *mproc_value_ptr(mproc_value *v) {
    arr *a = val(v);
    return a ? a->data : NULL;
}

mproc_lock *mproc_value_lock(mproc_value *v) {
    arr *a = val(v);
    return a && a->locked ? &a->lockh : NULL;
}

mproc_type mproc_value_type(const mproc_value *v) {
    if (!mproc__obj_ok(v, MPROC__K_VALUE))
        return MPROC_T_MAX_;
    return (mproc_type)v->a.s->type;
}

void mproc_value_free(mproc_value *v) {
    if (val(v))
        mproc__handle_free(v);
}

/* ---- Array ----------------------------------------------------------------
 */

static arr *ary(mproc_array *x) {
    return mproc__obj_ok(x, MPROC__K_ARRAY) ? &x->a : NULL;
}

int mproc_array_create(mproc_array **out, mproc_type type, size_t size,
                       size_t n, const void *init, unsigned flags) {
    arr *a = NULL;
    int err = arr_create(out ? &a : NULL, sizeof(mproc_array), MPROC__K_ARRAY,
                         type, size, n, init, flags);
    if (out)
        *out = (mproc_array *)a;
    return err;
}

int mproc_array_attach(mproc_array **out, const mproc_ref *ref) {
    arr *a = NULL;
    int err =
        arr_attach(out ? &a : NULL, sizeof(mproc_array), MPROC__K_ARRAY, ref);
    if (out)
        *out = (mproc_array *)a;
    return err;
}

int mproc_array_get(mproc_array *x, size_t i, void *out, size_t size) {
    arr *a = ary(x);
    if (!a || !out)
        return MPROC_EINVAL;
    return arr_copy(a, i, out, NULL, size);
}

int mproc_array_set(mproc_array *x, size_t i, const void *in, size_t size) {
    arr *a = ary(x);
    if (!a || !in)
        return MPROC_EINVAL;
    return arr_copy(a, i, NULL, in, size);
}

void *mproc_array_data(mproc_array *x) {
    arr *a = ary(x);
    return a ? a->data : NULL;
}

size_t mproc_array_len(const mproc_array *x) {
    return mproc__obj_ok(x, MPROC__K_ARRAY) ? x->a.n : 0;
}

size_t mproc_array_elem_size(const mproc_array *x) {
    return mproc__obj_ok(x, MPROC__K_ARRAY) ? x->a.elem_size : 0;
}

mproc_type mproc_array_type(const mproc_array *x) {
    if (!mproc__obj_ok(x, MPROC__K_ARRAY))
        return MPROC_T_MAX_;
    return (mproc_type)x->a.s->type;
}

mproc_lock *mproc_array_lock(mproc_array *x) {
    arr *a = ary(x);
    return a && a->locked ? &a->lockh : NULL;
}

void mproc_array_free(mproc_array *x) {
    if (ary(x))
        mproc__handle_free(x);
}
