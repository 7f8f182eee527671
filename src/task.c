/* SPDX-License-Identifier: MIT */
/*
 * What a task function can call while it runs in a worker: set its result,
 * fail with a message, learn its index.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task.h"

void *mproc_task_result_buf(mproc_task *t, size_t len) {
    if (!t || len > t->max_result)
        return NULL;
    if (len > t->res_cap) {
        void *p = realloc(t->res, len);
        if (!p)
            return NULL;
        t->res = p;
        t->res_cap = len;
    }
    t->res_len = len;
    return len ? t->res : (void *)t;
}

int mproc_task_return(mproc_task *t, const void *data, size_t len) {
    if (!t || (len && !data))
        return MPROC_EINVAL;
    if (len > t->max_result) {
        /* The item fails whatever the task returns next: a result that
         * cannot be delivered is not a success. */
        t->failed = 1;
        t->fail_code = MPROC_ETOOBIG;
        snprintf(t->msg, sizeof t->msg,
                 "result of %zu bytes exceeds the limit of %zu bytes", len,
                 t->max_result);
        return MPROC_ETOOBIG;
    }
    void *p = mproc_task_result_buf(t, len);
    if (!p)
        return MPROC_ENOMEM;
    if (len)
        memcpy(p, data, len);
    return 0;
}

int mproc_task_fail(mproc_task *t, const char *fmt, ...) {
    if (!t)
        return MPROC_EINVAL;
    t->failed = 1;
    t->fail_code = MPROC_ETASK;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->msg, sizeof t->msg, fmt, ap);
        va_end(ap);
    }
    return MPROC_ETASK;
}

size_t mproc_task_index(const mproc_task *t) {
    return t ? t->base +
                   (size_t)atomic_load_explicit(t->item, memory_order_relaxed)
             : 0;
}
