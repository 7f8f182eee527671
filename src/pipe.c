/* SPDX-License-Identifier: MIT */
/* placeholder: being written */
typedef int mproc__placeholder_pipe;
