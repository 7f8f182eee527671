/* SPDX-License-Identifier: MIT */
/* mproc version macros; mproc_version() gives the linked library's. */
#ifndef MPROC_VERSION_H
#define MPROC_VERSION_H

#define MPROC_VERSION_MAJOR      0
#define MPROC_VERSION_MINOR      1
#define MPROC_VERSION_PATCH      0
#define MPROC_VERSION_IS_RELEASE 0

#define MPROC_VERSION_HEX                                                      \
    ((MPROC_VERSION_MAJOR << 16) | (MPROC_VERSION_MINOR << 8) |                \
     (MPROC_VERSION_PATCH))

#endif /* MPROC_VERSION_H */
