/* SPDX-License-Identifier: MIT */
/*
 * Bounded spinning, shared by the pool's mailboxes and the Queue.
 *
 * On these machines a wake-up through the kernel costs tens of
 * microseconds across CPUs, a hand-off through shared memory well under
 * one. So a waiter first spins: pause instructions for the first
 * MPROC__SPIN_PURE_NS, then sched_yield() between looks (the one it waits
 * for may share its CPU, and must be let run), until its budget is spent;
 * then it sleeps in the kernel as before. The clock is read every few
 * pauses, so a budget holds whatever a pause costs on the CPU.
 */
#ifndef MPROC_SPIN_H
#define MPROC_SPIN_H

#include <stdatomic.h>
#include <stdint.h>

#define MPROC__SPIN_PURE_NS 2000u
#define MPROC__SPIN_CHECK   16u /* pauses between looks at the clock */

/* Tell the CPU that this is a busy-wait loop: it saves power and, on x86,
 * leaves the pipeline to the sibling hyperthread. */
static inline void mproc__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || (defined(__arm__) && __ARM_ARCH >= 7)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* One spin: pure until pure_end, yielding until end. */
typedef struct mproc__spin {
    uint64_t pure_end, end;
    unsigned pauses; /* since the clock was last read */
    int started, yielding, spent;
} mproc__spin;

/* Start a spin of budget_ns, cut short at deadline (monotonic ns). */
void mproc__spin_start(mproc__spin *s, uint64_t budget_ns, uint64_t deadline);
/* Let n pauses go by (or one yield, once past the pure phase) before the
 * caller looks again: 1, or 0 once the budget is spent (then for good). */
int mproc__spin_pause(mproc__spin *s, unsigned n);
/* Call check(arg) until it returns nonzero (returned) or budget_ns have
 * passed (0). */
int mproc__spin_until(int (*check)(void *), void *arg, uint64_t budget_ns);

#endif
