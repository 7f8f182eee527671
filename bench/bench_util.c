/* SPDX-License-Identifier: MIT */
/*
 * The clock, the JSON lines and the stderr summary, argument parsing and
 * the pi kernel, shared by mproc_bench and pi_omp (see bench_util.h).
 */
#define _GNU_SOURCE /* program_invocation_short_name */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void bench_sleep(double secs) {
    double end = bench_now() + secs;
    for (double left = secs; left > 0; left = end - bench_now()) {
        struct timespec ts = {(time_t)left,
                              (long)((left - (double)(time_t)left) * 1e9)};
        nanosleep(&ts, NULL); /* EINTR: the loop sleeps the rest */
    }
}

void bench_die(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s: ", program_invocation_short_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* ---- samples ----------------------------------------------------------- */

/* Every sample emitted, for the summary. Names point to string literals or
 * to copies owned here. */
struct sample {
    const char *bench, *impl, *unit;
    char *param;
    double value;
};

static struct sample *samples;
static size_t nsamples, cap_samples;

/* The names are ours (letters, digits, "=_,x."), but escape anyway so that
 * the line is always valid JSON. */
static void put_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", (unsigned)(unsigned char)*s);
        else
            putchar(*s);
    }
    putchar('"');
}

void bench_emit(const char *bench, const char *impl, const char *param,
                const char *unit, enum bench_better better, double value) {
    if (!isfinite(value))
        bench_die("%s/%s/%s: value is not a number", bench, impl, param);
    fputs("{\"bench\":", stdout);
    put_json_string(bench);
    fputs(",\"impl\":", stdout);
    put_json_string(impl);
    fputs(",\"param\":", stdout);
    put_json_string(param);
    fputs(",\"unit\":", stdout);
    put_json_string(unit);
    printf(",\"better\":\"%s\",\"value\":%.9g}\n",
           better == BENCH_HIGHER ? "higher" : "lower", value);
    fflush(stdout);

    if (nsamples == cap_samples) {
        size_t cap = cap_samples ? 2 * cap_samples : 64;
        struct sample *s = realloc(samples, cap * sizeof *s);
        if (!s)
            bench_die("out of memory");
        samples = s;
        cap_samples = cap;
    }
    char *p = strdup(param);
    if (!p)
        bench_die("out of memory");
    samples[nsamples++] = (struct sample){bench, impl, unit, p, value};
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int same_key(const struct sample *a, const struct sample *b) {
    return !strcmp(a->bench, b->bench) && !strcmp(a->impl, b->impl) &&
           !strcmp(a->param, b->param);
}

void bench_summary(void) {
    double *v = malloc((nsamples ? nsamples : 1) * sizeof *v);
    char *done = calloc(nsamples ? nsamples : 1, 1);
    if (!v || !done)
        bench_die("out of memory");
    for (size_t i = 0; i < nsamples; i++) {
        if (done[i])
            continue;
        size_t n = 0;
        for (size_t j = i; j < nsamples; j++)
            if (!done[j] && same_key(&samples[i], &samples[j])) {
                v[n++] = samples[j].value;
                done[j] = 1;
            }
        qsort(v, n, sizeof *v, cmp_double);
        double med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
        char key[96];
        snprintf(key, sizeof key, "%s %s%s%s", samples[i].bench,
                 samples[i].impl, *samples[i].param ? " " : "",
                 samples[i].param);
        fprintf(stderr, "  %-40s %12.4g %-8s (min %.4g, max %.4g, n %zu)\n",
                key, med, samples[i].unit, v[0], v[n - 1], n);
    }
    for (size_t i = 0; i < nsamples; i++)
        free(samples[i].param);
    free(samples);
    samples = NULL;
    nsamples = cap_samples = 0;
    free(v);
    free(done);
}

/* ---- arguments and the kernel ------------------------------------------ */

long bench_parse_count(const char *s, long max) {
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || end == s || *end || !(d >= 1 && d <= (double)max) ||
        d != floor(d))
        return -1;
    return (long)d;
}

double bench_pi_sum(long start, long end, double dx) {
    double sum = 0.0;
    for (long i = start; i < end; i++) {
        double x = ((double)i + 0.5) * dx;
        sum += 4.0 / (1.0 + x * x);
    }
    return sum;
}
