/* SPDX-License-Identifier: MIT */
/* The worker-side task context (mproc_task), shared by worker.c and task.c. */
#ifndef MPROC_TASK_H
#define MPROC_TASK_H

#include "internal.h"

struct mproc_task {
    size_t index;       /* item index within its call */
    size_t max_result;  /* bytes */
    void *out;          /* typed form: the item's output slot */
    unsigned char *res; /* bytes form: result buffer (malloc) */
    size_t res_len, res_cap;
    int failed; /* set by mproc_task_fail */
    int fail_code;
    char msg[1024];
};

#endif
