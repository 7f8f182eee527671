/* SPDX-License-Identifier: MIT */
/* Bounded spinning (see spin.h). */
#include "spin.h"

#include <sched.h>

#include "internal.h"

void mproc__spin_start(mproc__spin *s, uint64_t budget_ns, uint64_t deadline) {
    uint64_t now = mproc__now_ns();
    s->pure_end = now + MPROC_MIN(budget_ns, MPROC__SPIN_PURE_NS);
    s->end = MPROC_MIN(now + budget_ns, deadline);
    s->pauses = 0;
    s->started = 1;
    s->yielding = 0;
    s->spent = 0;
}

int mproc__spin_pause(mproc__spin *s, unsigned n) {
    while (!s->spent) {
        if (!s->yielding) {
            while (n > 0 && s->pauses < MPROC__SPIN_CHECK) {
                mproc__cpu_relax();
                s->pauses++;
                n--;
            }
            if (n == 0)
                return 1;
        }
        s->pauses = 0;
        uint64_t now = mproc__now_ns();
        if (now >= s->end) {
            s->spent = 1;
        } else if (now >= s->pure_end) {
            /* The one we wait for may be on this CPU: let it run. */
            s->yielding = 1;
            sched_yield();
            return 1;
        }
    }
    return 0;
}

int mproc__spin_until(int (*check)(void *), void *arg, uint64_t budget_ns) {
    mproc__spin s;
    mproc__spin_start(&s, budget_ns, UINT64_MAX);
    do {
        int v = check(arg);
        if (v)
            return v;
    } while (mproc__spin_pause(&s, 1));
    return 0;
}
