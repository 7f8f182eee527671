/* SPDX-License-Identifier: MIT */
/*
 * Error names and messages, generated from MPROC_ERRNO_MAP in mproc/errno.h,
 * plus the version queries (too small for a file of their own).
 */
#include <string.h>

#include "internal.h"

const char *mproc_strerror(int err) {
    switch (err) {
    case 0:
        return "success";
#define MPROC_STRERROR_CASE_(name, value, msg)                                 \
    case MPROC_##name:                                                         \
        return msg;
        MPROC_ERRNO_MAP(MPROC_STRERROR_CASE_)
#undef MPROC_STRERROR_CASE_
    default:
        break;
    }
    /* Any other -errno: the C library knows it. strerror() is not
     * guaranteed thread-safe, but glibc's returns a static string for known
     * codes, and an unknown-code sentence otherwise. */
    if (err < 0 && err > -4000)
        return strerror(-err);
    return "unknown error";
}

const char *mproc_err_name(int err) {
    switch (err) {
    case 0:
        return "0";
#define MPROC_ERRNAME_CASE_(name, value, msg)                                  \
    case MPROC_##name:                                                         \
        return "MPROC_" #name;
        MPROC_ERRNO_MAP(MPROC_ERRNAME_CASE_)
#undef MPROC_ERRNAME_CASE_
    default:
        return "MPROC_E?";
    }
}

unsigned mproc_version(void) {
    return MPROC_VERSION_HEX;
}

#define MPROC_STR_(x)  #x
#define MPROC_XSTR_(x) MPROC_STR_(x)
const char *mproc_version_string(void) {
    return MPROC_XSTR_(MPROC_VERSION_MAJOR) "." MPROC_XSTR_(
        MPROC_VERSION_MINOR) "." MPROC_XSTR_(MPROC_VERSION_PATCH);
}
