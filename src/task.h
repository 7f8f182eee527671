/* SPDX-License-Identifier: MIT */
/* The worker-side task context (mproc_task), shared by worker.c and task.c. */
#ifndef MPROC_TASK_H
#define MPROC_TASK_H

#include "internal.h"

struct mproc_task {
    /* The item's index within its call: base plus the index within the
     * chunk, which the worker keeps in its mailbox anyway (one store per
     * item, not two). */
    size_t base;
    const _Atomic uint64_t *item;
    size_t max_result;  /* bytes */
    unsigned char *res; /* bytes form: result buffer (malloc) */
    size_t res_len, res_cap;
    int failed; /* set by mproc_task_fail */
    int fail_code;
    char msg[1024];
};

#endif
