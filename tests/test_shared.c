/* SPDX-License-Identifier: MIT */
/*
 * Shared memory: Value, Array, raw segments and references. How objects
 * reach pool workers (fetched over the worker's channel, or inherited from
 * before the fork server started), what an attach refuses, and that
 * segments are sealed memfds that vanish with their last handle.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* ---- Value ----------------------------------------------------------------
 */

TEST(shared_value_types) {
    static const struct {
        mproc_type t;
        size_t size;
    } types[] = {
        {MPROC_T_CHAR, sizeof(char)},
        {MPROC_T_INT, sizeof(int)},
        {MPROC_T_UINT, sizeof(unsigned)},
        {MPROC_T_LONG, sizeof(long)},
        {MPROC_T_DOUBLE, sizeof(double)},
        {MPROC_T_INT8, 1},
        {MPROC_T_UINT16, 2},
        {MPROC_T_INT32, 4},
        {MPROC_T_UINT64, 8},
        {MPROC_T_SIZE, sizeof(size_t)},
        {MPROC_T_BOOL, sizeof(_Bool)},
        {MPROC_T_FLOAT, sizeof(float)},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        ck_assert_uint_eq(mproc_type_size(types[i].t), types[i].size);
        mproc_value *v;
        unsigned char init[16], got[16];
        memset(init, 0x5a, sizeof init);
        ASSERT_OK(mproc_value_create(&v, types[i].t, 0, init, 0));
        ck_assert_int_eq(mproc_value_type(v), types[i].t);
        ASSERT_OK(mproc_value_get(v, got, types[i].size));
        ck_assert_int_eq(memcmp(got, init, types[i].size), 0);
        /* The size is the type check. */
        ASSERT_ERR(mproc_value_get(v, got, types[i].size + 1), MPROC_EINVAL);
        ASSERT_ERR(mproc_value_set(v, got, types[i].size * 2), MPROC_EINVAL);
        mproc_value_free(v);
    }
    ck_assert_uint_eq(mproc_type_size(MPROC_T_BYTES), 0);
    ck_assert_uint_eq(mproc_type_size(MPROC_T_MAX_), 0);
    ck_assert_uint_eq(mproc_type_size((mproc_type)-1), 0);
}

TEST(shared_value_basics) {
    mproc_value *v;
    double d = 2.5, got = 0;
    ASSERT_OK(mproc_value_create(&v, MPROC_T_DOUBLE, sizeof d, &d, 0));
    ASSERT_OK(mproc_value_get(v, &got, sizeof got));
    ck_assert(got == 2.5);
    d = -1;
    ASSERT_OK(mproc_value_set(v, &d, sizeof d));
    ck_assert(*(double *)mproc_value_ptr(v) == -1);
    /* The built-in lock is recursive and belongs to the value. */
    mproc_lock *l = mproc_value_lock(v);
    ck_assert_ptr_nonnull(l);
    ASSERT_OK(mproc_lock_acquire(l, 0));
    ASSERT_OK(mproc_value_get(v, &got, sizeof got)); /* nested: fine */
    ASSERT_OK(mproc_lock_release(l));
    ck_assert_int_eq(mproc_lock_held(l), 0);
    mproc_lock_free(l); /* not ours to free: a no-op */
    ASSERT_OK(mproc_value_get(v, &got, sizeof got));
    mproc_value_free(v);

    /* Zero by default; a raw value has no lock. */
    int zero = -1;
    ASSERT_OK(mproc_value_create(&v, MPROC_T_INT, 0, NULL, MPROC_NOLOCK));
    ck_assert_ptr_null(mproc_value_lock(v));
    ASSERT_OK(mproc_value_get(v, &zero, sizeof zero));
    ck_assert_int_eq(zero, 0);
    mproc_value_free(v);

    /* A struct as MPROC_T_BYTES. */
    struct pt {
        int x, y;
    } p = {3, 4}, q;
    ASSERT_OK(mproc_value_create(&v, MPROC_T_BYTES, sizeof p, &p, 0));
    ASSERT_OK(mproc_value_get(v, &q, sizeof q));
    ck_assert(q.x == 3 && q.y == 4);
    mproc_value_free(v);
}

TEST(shared_value_bad_args) {
    mproc_value *v = (mproc_value *)1;
    int x = 0;
    ASSERT_ERR(mproc_value_create(NULL, MPROC_T_INT, 0, NULL, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_value_create(&v, MPROC_T_BYTES, 0, NULL, 0), MPROC_EINVAL);
    ck_assert_ptr_null(v);
    ASSERT_ERR(mproc_value_create(&v, MPROC_T_INT, 8, NULL, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_value_create(&v, MPROC_T_MAX_, 0, NULL, 0), MPROC_EINVAL);
    ASSERT_ERR(mproc_value_create(&v, MPROC_T_INT, 0, NULL, 0x80),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_value_get(NULL, &x, sizeof x), MPROC_EINVAL);
    ASSERT_ERR(mproc_value_set(NULL, &x, sizeof x), MPROC_EINVAL);
    ck_assert_ptr_null(mproc_value_ptr(NULL));
    ck_assert_ptr_null(mproc_value_lock(NULL));
    ck_assert_int_eq(mproc_value_type(NULL), MPROC_T_MAX_);
    ASSERT_OK(mproc_value_create(&v, MPROC_T_INT, 0, NULL, 0));
    ASSERT_ERR(mproc_value_get(v, NULL, sizeof x), MPROC_EINVAL);
    ASSERT_ERR(mproc_value_set(v, NULL, sizeof x), MPROC_EINVAL);
    /* An array handle is not a value handle. */
    mproc_array *a;
    ASSERT_OK(mproc_array_create(&a, MPROC_T_INT, 0, 1, NULL, 0));
    ASSERT_ERR(mproc_value_get((mproc_value *)a, &x, sizeof x), MPROC_EINVAL);
    ASSERT_ERR(mproc_array_get((mproc_array *)v, 0, &x, sizeof x),
               MPROC_EINVAL);
    mproc_array_free(a);
    mproc_value_free(v);
    mproc_value_free(NULL);
}

/* ---- Array ------------------------------------------------------------------
 */

TEST(shared_array_basics) {
    long init[5] = {1, 2, 3, 4, 5}, x;
    mproc_array *a;
    ASSERT_OK(mproc_array_create(&a, MPROC_T_LONG, 0, 5, init, 0));
    ck_assert_uint_eq(mproc_array_len(a), 5);
    ck_assert_uint_eq(mproc_array_elem_size(a), sizeof(long));
    ck_assert_int_eq(mproc_array_type(a), MPROC_T_LONG);
    ck_assert_uint_eq((uintptr_t)mproc_array_data(a) % 64, 0);
    for (size_t i = 0; i < 5; i++) {
        ASSERT_OK(mproc_array_get(a, i, &x, sizeof x));
        ck_assert_int_eq(x, init[i]);
    }
    ASSERT_ERR(mproc_array_get(a, 5, &x, sizeof x), MPROC_ERANGE);
    ASSERT_ERR(mproc_array_set(a, (size_t)-1, &x, sizeof x), MPROC_ERANGE);
    ASSERT_ERR(mproc_array_get(a, 0, &x, sizeof(int)), MPROC_EINVAL);
    x = 42;
    ASSERT_OK(mproc_array_set(a, 4, &x, sizeof x));
    ck_assert_int_eq(((long *)mproc_array_data(a))[4], 42);
    ck_assert_ptr_nonnull(mproc_array_lock(a));
    mproc_array_free(a);

    ASSERT_OK(
        mproc_array_create(&a, MPROC_T_UINT8, 0, 1000, NULL, MPROC_NOLOCK));
    ck_assert_ptr_null(mproc_array_lock(a));
    for (size_t i = 0; i < 1000; i++)
        ck_assert_int_eq(((unsigned char *)mproc_array_data(a))[i], 0);
    mproc_array_free(a);

    /* Bad sizes and arguments. */
    mproc_array *b = (mproc_array *)1;
    ASSERT_ERR(mproc_array_create(&b, MPROC_T_INT, 0, 0, NULL, 0),
               MPROC_EINVAL);
    ck_assert_ptr_null(b);
    ASSERT_ERR(mproc_array_create(&b, MPROC_T_INT, 0, SIZE_MAX / 2, NULL, 0),
               MPROC_EOVERFLOW);
    ASSERT_ERR(mproc_array_create(NULL, MPROC_T_INT, 0, 1, NULL, 0),
               MPROC_EINVAL);
    ASSERT_ERR(mproc_array_get(NULL, 0, &x, sizeof x), MPROC_EINVAL);
    ASSERT_ERR(mproc_array_set(NULL, 0, &x, sizeof x), MPROC_EINVAL);
    ck_assert_ptr_null(mproc_array_data(NULL));
    ck_assert_uint_eq(mproc_array_len(NULL), 0);
    ck_assert_uint_eq(mproc_array_elem_size(NULL), 0);
    ck_assert_ptr_null(mproc_array_lock(NULL));
    mproc_array_free(NULL);
}

/* Each task attaches the array through its reference and fills its slice;
 * the workers already ran when the array was made. */
typedef struct slice {
    mproc_ref ref;
    size_t lo, hi;
} slice;

static int fill_slice(mproc_task *t, const void *arg, size_t len) {
    slice s;
    if (len != sizeof s)
        return mproc_task_fail(t, "bad argument");
    memcpy(&s, arg, sizeof s);
    mproc_array *a;
    int err = mproc_array_attach(&a, &s.ref);
    if (err)
        return mproc_task_fail(t, "attach: %s", mproc_strerror(err));
    if (s.hi > mproc_array_len(a)) {
        mproc_array_free(a);
        return mproc_task_fail(t, "slice past the end");
    }
    uint64_t *d = mproc_array_data(a);
    for (size_t i = s.lo; i < s.hi; i++)
        d[i] = (uint64_t)i * i;
    mproc_array_free(a);
    return 0;
}

static int noop(mproc_task *t, const void *arg, size_t len) {
    (void)t;
    (void)arg;
    (void)len;
    return 0;
}

TEST(shared_array_slices_in_pool) {
    enum { N = 1 << 20, NT = 8 };
    mproc_pool *p;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 2}));
    /* Warm the pool first: the array is made after the workers exist. */
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply(p, noop, NULL, 0, NULL, &r));
    mproc_result_free(r);
    mproc_array *a;
    ASSERT_OK(mproc_array_create(&a, MPROC_T_UINT64, 0, N, NULL, 0));
    slice s[NT];
    mproc_buf items[NT];
    for (int i = 0; i < NT; i++) {
        ASSERT_OK(mproc_ref_of(a, &s[i].ref));
        s[i].lo = (size_t)i * N / NT;
        s[i].hi = (size_t)(i + 1) * N / NT;
        items[i] = (mproc_buf){&s[i], sizeof s[i]};
    }
    ASSERT_OK(mproc_pool_map(p, fill_slice, items, NT,
                             &(mproc_call_opts){.chunksize = 1}, &r));
    mproc_result_free(r);
    const uint64_t *d = mproc_array_data(a);
    size_t bad = 0;
    for (size_t i = 0; i < N; i++)
        bad += d[i] != (uint64_t)i * i;
    ck_assert_uint_eq(bad, 0);
    mproc_array_free(a);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}

/* A typed map over arrays in shared memory: the workers attach the
 * segments and work in place, whichever side is shared, from any offset
 * in the segment; a failed item's slot is zeroed there too. */
static int sq_plus_one(mproc_task *t, const void *in, void *out) {
    uint64_t x;
    memcpy(&x, in, sizeof x);
    if (x == 12345)
        return mproc_task_fail(t, "unlucky %llu", (unsigned long long)x);
    x = x * x + 1;
    memcpy(out, &x, sizeof x);
    return 0;
}

static void check_sq_map(mproc_pool *p, const uint64_t *in, uint64_t *out,
                         size_t n) {
    memset(out, 0xff, n * sizeof *out);
    mproc_result *r;
    ASSERT_ERR(mproc_pool_map_array(p, sq_plus_one, in, n, sizeof *in, out,
                                    sizeof *out, NULL, &r),
               MPROC_ETASK);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == 12345) {
            ck_assert_int_eq(mproc_result_status(r, i), MPROC_ETASK);
            ck_assert_str_eq(mproc_result_errmsg(r, i), "unlucky 12345");
            ck_assert_uint_eq(out[i], 0);
        } else {
            bad +=
                mproc_result_status(r, i) != 0 || out[i] != in[i] * in[i] + 1;
        }
    }
    ck_assert_uint_eq(bad, 0);
    mproc_result_free(r);
}

TEST(shared_map_array_in_place) {
    enum { N = 300000 }; /* several chunks per worker */
    mproc_pool *p;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 2}));
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply(p, noop, NULL, 0, NULL, &r));
    mproc_result_free(r);
    mproc_array *ain, *aout;
    ASSERT_OK(mproc_array_create(&ain, MPROC_T_UINT64, 0, N, NULL, 0));
    ASSERT_OK(mproc_array_create(&aout, MPROC_T_UINT64, 0, N, NULL, 0));
    uint64_t *sin = mproc_array_data(ain), *sout = mproc_array_data(aout);
    uint64_t *pin = malloc(N * sizeof *pin), *pout = malloc(N * sizeof *pout);
    ck_assert_ptr_nonnull(pin);
    ck_assert_ptr_nonnull(pout);
    for (size_t i = 0; i < N; i++)
        sin[i] = pin[i] = i;
    check_sq_map(p, sin, sout, N);             /* both shared */
    check_sq_map(p, sin, pout, N);             /* input shared */
    check_sq_map(p, pin, sout, N);             /* output shared */
    check_sq_map(p, sin + 7, sout + 3, N - 7); /* inside the segments */
    mproc_array_free(ain);
    mproc_array_free(aout);
    /* New arrays after those are gone: the workers find the new ones. */
    ASSERT_OK(mproc_array_create(&ain, MPROC_T_UINT64, 0, 1000, NULL, 0));
    sin = mproc_array_data(ain);
    for (size_t i = 0; i < 1000; i++)
        sin[i] = i + 12000;
    /* In place over its own input: each task still sees its input. */
    ASSERT_ERR(mproc_pool_map_array(p, sq_plus_one, sin, 1000, sizeof *sin, sin,
                                    sizeof *sin, NULL, &r),
               MPROC_ETASK);
    for (size_t i = 0; i < 1000; i++) {
        uint64_t x = i + 12000;
        ck_assert_uint_eq(sin[i], x == 12345 ? 0 : x * x + 1);
    }
    mproc_result_free(r);
    mproc_array_free(ain);
    free(pin);
    free(pout);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
}

/* ---- raw segments and references -------------------------------------------
 */

static int shm_task(mproc_task *t, const void *arg, size_t len) {
    mproc_ref ref;
    if (len != sizeof ref)
        return mproc_task_fail(t, "bad argument");
    memcpy(&ref, arg, sizeof ref);
    mproc_shm *s;
    int err = mproc_shm_attach(&s, &ref);
    if (err)
        return mproc_task_fail(t, "%s", mproc_err_name(err));
    unsigned char *p = mproc_shm_ptr(s);
    for (size_t i = 0; i < mproc_shm_size(s); i++)
        p[i] = (unsigned char)(i * 7);
    mproc_shm_free(s);
    return 0;
}

TEST(shared_shm_in_pool) {
    /* The pool (and the fork server) first: an object made before the
     * server started would be inherited instead of fetched. */
    mproc_pool *p;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 1}));
    mproc_shm *s;
    ASSERT_OK(mproc_shm_create(&s, 3 << 20));
    ck_assert_uint_eq(mproc_shm_size(s), 3 << 20);
    ck_assert_uint_eq((uintptr_t)mproc_shm_ptr(s) % 64, 0);
    mproc_ref ref;
    ASSERT_OK(mproc_ref_of(s, &ref));
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply(p, shm_task, &ref, sizeof ref, NULL, &r));
    mproc_result_free(r);
    const unsigned char *d = mproc_shm_ptr(s);
    size_t bad = 0;
    for (size_t i = 0; i < mproc_shm_size(s); i++)
        bad += d[i] != (unsigned char)(i * 7);
    ck_assert_uint_eq(bad, 0);
    /* Once the creator has freed it, a worker cannot find it any more. */
    mproc_shm_free(s);
    ASSERT_ERR(mproc_pool_apply(p, shm_task, &ref, sizeof ref, NULL, &r),
               MPROC_ETASK);
    ck_assert_str_eq(mproc_result_errmsg(r, 0), "MPROC_ENOENT");
    mproc_result_free(r);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);

    ASSERT_ERR(mproc_shm_create(&s, 0), MPROC_EINVAL);
    ck_assert_ptr_null(s);
    ASSERT_ERR(mproc_shm_create(&s, SIZE_MAX), MPROC_EOVERFLOW);
    ASSERT_ERR(mproc_shm_create(NULL, 1), MPROC_EINVAL);
    ck_assert_ptr_null(mproc_shm_ptr(NULL));
    ck_assert_uint_eq(mproc_shm_size(NULL), 0);
    mproc_shm_free(NULL);
}

TEST(shared_ref_checks) {
    mproc_value *v;
    mproc_array *a;
    ASSERT_OK(mproc_value_create(&v, MPROC_T_INT, 0, NULL, 0));
    mproc_ref ref, bad;
    ASSERT_OK(mproc_ref_of(v, &ref));
    ASSERT_ERR(mproc_ref_of(NULL, &ref), MPROC_EINVAL);
    ASSERT_ERR(mproc_ref_of(v, NULL), MPROC_EINVAL);
    int junk[8] = {0};
    ASSERT_ERR(mproc_ref_of(junk, &bad), MPROC_EINVAL);
    /* Attaching in the creating process gives a second handle on the same
     * memory. */
    mproc_value *v2;
    ASSERT_OK(mproc_value_attach(&v2, &ref));
    int x = 7, y = 0;
    ASSERT_OK(mproc_value_set(v2, &x, sizeof x));
    ASSERT_OK(mproc_value_get(v, &y, sizeof y));
    ck_assert_int_eq(y, 7);
    ck_assert_ptr_ne(mproc_value_ptr(v), mproc_value_ptr(v2));
    /* The wrong kind, a tampered check, an unknown id. */
    a = (mproc_array *)1;
    ASSERT_ERR(mproc_array_attach(&a, &ref), MPROC_EINVAL);
    ck_assert_ptr_null(a);
    mproc_lock *l;
    ASSERT_ERR(mproc_lock_attach(&l, &ref), MPROC_EINVAL);
    bad = ref;
    bad.check ^= 1;
    mproc_value *v3 = (mproc_value *)1;
    ASSERT_ERR(mproc_value_attach(&v3, &bad), MPROC_EINVAL);
    ck_assert_ptr_null(v3);
    ASSERT_ERR(mproc_value_attach(NULL, &ref), MPROC_EINVAL);
    ASSERT_ERR(mproc_value_attach(&v3, NULL), MPROC_EINVAL);
    mproc_value_free(v); /* the creator goes: the attached handle lives on */
    ASSERT_OK(mproc_value_get(v2, &y, sizeof y));
    ck_assert_int_eq(y, 7);
    ASSERT_ERR(mproc_value_attach(&v3, &ref), MPROC_ENOENT);
    ck_assert_ptr_null(v3);
    mproc_value_free(v2);
}

/* Segments are sealed memfds: no /dev/shm name, no resizing, and no
 * mapping or fd left once the last handle is freed. */
static int count_fds_named(const char *needle, int try_resize) {
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, target, sizeof target - 1);
        if (k <= 0)
            continue;
        target[k] = '\0';
        if (!strstr(target, needle))
            continue;
        n++;
        if (try_resize) {
            int fd = atoi(e->d_name);
            errno = 0;
            ck_assert_int_eq(ftruncate(fd, 0), -1);
            ck_assert_int_eq(errno, EPERM);
            ck_assert_int_eq(ftruncate(fd, 1 << 30), -1);
            ck_assert_int_eq(errno, EPERM);
        }
    }
    closedir(d);
    return n;
}

static int count_maps_named(const char *needle) {
    FILE *f = fopen("/proc/self/maps", "re");
    ck_assert_ptr_nonnull(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

TEST(shared_segments_sealed_and_freed) {
    int fds0 = count_fds_named("memfd:mproc-shared", 0);
    mproc_array *a;
    mproc_lock *l;
    ASSERT_OK(mproc_array_create(&a, MPROC_T_INT, 0, 4096, NULL, 0));
    ASSERT_OK(mproc_lock_create(&l));
    ck_assert_int_eq(count_fds_named("memfd:mproc-shared", 1), fds0 + 2);
    ck_assert_int_ge(count_maps_named("mproc-shared"), 2);
    mproc_array_free(a);
    mproc_lock_free(l);
    ck_assert_int_eq(count_fds_named("memfd:mproc-shared", 0), fds0);
    ck_assert_int_eq(count_maps_named("mproc-shared"), 0);
}

/* Made before the fork server started: workers inherit it like a global,
 * and can use the pointer directly. */
static mproc_value *g_early;

static int use_early(mproc_task *t, const void *arg, size_t len) {
    (void)arg;
    (void)len;
    int one = 1;
    if (mproc_value_set(g_early, &one, sizeof one) != 0)
        return mproc_task_fail(t, "set failed");
    return 0;
}

TEST(shared_inherited_by_workers) {
    mproc_shutdown(); /* make sure the server starts after the value */
    ASSERT_OK(mproc_value_create(&g_early, MPROC_T_INT, 0, NULL, 0));
    ASSERT_OK(mproc_init());
    mproc_pool *p;
    ASSERT_OK(mproc_pool_create(&p, &(mproc_pool_opts){.nworkers = 1}));
    mproc_result *r;
    ASSERT_OK(mproc_pool_apply(p, use_early, NULL, 0, NULL, &r));
    mproc_result_free(r);
    int got = 0;
    ASSERT_OK(mproc_value_get(g_early, &got, sizeof got));
    ck_assert_int_eq(got, 1);
    ASSERT_OK(mproc_pool_close(p));
    ASSERT_OK(mproc_pool_join(p, MPROC_FOREVER));
    mproc_pool_destroy(p);
    mproc_value_free(g_early);
}
