/* SPDX-License-Identifier: MIT */
/*
 * What the benchmark programs share (mproc_bench and pi_omp): the clock,
 * the output protocol, a summary on stderr, argument parsing and the pi
 * kernel. Nothing here uses mproc, so pi_omp can do without it.
 *
 * Output protocol: one JSON object per sample on stdout, one line each,
 *   {"bench":"pi","impl":"mproc","param":"workers=2","unit":"s",
 *    "better":"lower","value":0.0512}
 * and nothing else on stdout. Diagnostics go to stderr. bench/run.py reads
 * the lines and computes medians and ranges.
 */
#ifndef MPROC_BENCH_UTIL_H
#define MPROC_BENCH_UTIL_H

#include <stddef.h>

enum bench_better { BENCH_LOWER = 0, BENCH_HIGHER = 1 };

/* CLOCK_MONOTONIC in seconds. */
double bench_now(void);
/* Sleep for secs seconds of wall time, signals or not. */
void bench_sleep(double secs);

/* Print one sample as a JSON line on stdout (flushed at once, so that a
 * crash later loses nothing) and keep it for bench_summary(). A value that
 * is not finite is a bug in the benchmark: it stops the program. */
void bench_emit(const char *bench, const char *impl, const char *param,
                const char *unit, enum bench_better better, double value);
/* Median, min and max of every (bench, impl, param) emitted so far, one
 * line each, on stderr; then forget the samples. */
void bench_summary(void);

/* Print "prog: message" on stderr and exit(1). */
void bench_die(const char *fmt, ...)
    __attribute__((noreturn, format(printf, 1, 2)));

/* Parse a count such as "100000000", "1e8" or "2.5e6": a positive whole
 * number up to max. -1 when s is anything else. */
long bench_parse_count(const char *s, long max);

/* Sum of 4/(1+x^2) at the midpoints x = (i+0.5)*dx, i in [start, end): the
 * seed's loop (seeds/004, examples/pi_demo.c). Multiply by dx for the
 * integral. One definition for every implementation, so that they all run
 * the same machine code. */
double bench_pi_sum(long start, long end, double dx);

#endif
