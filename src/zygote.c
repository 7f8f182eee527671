/* SPDX-License-Identifier: MIT */
#include "internal.h"
void mproc_shutdown(void) {}
