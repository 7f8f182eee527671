/* SPDX-License-Identifier: MIT */
/* What every example shares: stop with mproc's message when a call fails. */
#ifndef MPROC_EXAMPLE_H
#define MPROC_EXAMPLE_H

#include <stdio.h>
#include <stdlib.h>

#include <mproc.h>

#define CHECK(call)                                                            \
    do {                                                                       \
        int err_ = (call);                                                     \
        if (err_) {                                                            \
            fprintf(stderr, "%s: %s\n", #call, mproc_strerror(err_));          \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

#endif
