/* SPDX-License-Identifier: MIT */
/* Error strings and version: the library's most basic promises. */
#include <string.h>

#include "harness.h"

TEST(error_strings) {
    ck_assert_str_eq(mproc_err_name(MPROC_ETASK), "MPROC_ETASK");
    ck_assert_str_eq(mproc_strerror(MPROC_ETASKTIMEOUT),
                     "task ran past its timeout");
    ck_assert_str_eq(mproc_err_name(MPROC_EINVAL), "MPROC_EINVAL");
    ck_assert_int_eq(MPROC_ENOMEM, -ENOMEM);
    /* Any code gets a readable sentence, never NULL. */
    ck_assert_ptr_nonnull(mproc_strerror(-99999));
    ck_assert_ptr_nonnull(mproc_strerror(-EBADF));
    ck_assert_str_eq(mproc_strerror(0), "success");
    ck_assert_str_eq(mproc_err_name(12345), "MPROC_E?");
}

TEST(version_agrees) {
    ck_assert_uint_eq(mproc_version(), MPROC_VERSION_HEX);
    ck_assert_ptr_nonnull(strchr(mproc_version_string(), '.'));
}
