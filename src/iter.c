/* SPDX-License-Identifier: MIT */
#include "pool.h"
