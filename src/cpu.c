/* SPDX-License-Identifier: MIT */
/*
 * CPU counts: how many CPUs the machine has online, and how many this process
 * can really keep busy, which is what a pool should default to. The second is
 * the affinity mask (what taskset and cpusets allow) cut down to the cgroup's
 * CPU quota (what docker --cpus and systemd CPUQuota= allow), since a pool
 * with more workers than the quota only adds throttling and memory.
 *
 * The cgroup parsing takes its file locations as arguments so the tests can
 * run it on a fake tree. Anything missing or malformed means "no quota":
 * the count must never fail, only be less precise.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

/* Large enough for /proc/self/cgroup with every v1 controller listed. */
#define CGROUP_FILE_CAP 8192

int mproc_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* Read a small file whole into buf as a string; its length, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = mproc__read_full(fd, buf, cap - 1);
    mproc__close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return n;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Parse a decimal integer at *s, moving *s past it. 0 if there is none. */
static int parse_ll(const char **s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(*s, &end, 10);
    if (end == *s || errno == ERANGE)
        return 0;
    *s = end;
    *out = v;
    return 1;
}

/* Whole CPUs a quota of quota microseconds per period amounts to, rounded
 * up (a 1.5 CPU quota can keep two workers busy three quarters of the
 * time, better than one worker all of it); 0 for no quota. */
static int ceil_cpus(long long quota, long long period) {
    if (quota <= 0 || period <= 0)
        return 0;
    long long n = quota / period + (quota % period != 0);
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* cgroup v2: dir/cpu.max holds "max PERIOD" or "QUOTA PERIOD". */
static int quota_v2(const char *dir) {
    char path[PATH_MAX], buf[128];
    if (snprintf(path, sizeof path, "%s/cpu.max", dir) >= (int)sizeof path)
        return 0;
    if (read_small(path, buf, sizeof buf) <= 0)
        return 0;
    const char *s = buf;
    long long quota, period;
    if (!parse_ll(&s, &quota) || !parse_ll(&s, &period))
        return 0; /* "max ..." lands here too */
    return ceil_cpus(quota, period);
}

/* cgroup v1: cpu.cfs_quota_us (-1 for none) and cpu.cfs_period_us. */
static int quota_v1(const char *dir) {
    char path[PATH_MAX], buf[64];
    long long quota, period;
    const char *s;
    if (snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir) >=
        (int)sizeof path)
        return 0;
    if (read_small(path, buf, sizeof buf) <= 0)
        return 0;
    s = buf;
    if (!parse_ll(&s, &quota) || quota <= 0)
        return 0;
    if (snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir) >=
        (int)sizeof path)
        return 0;
    if (read_small(path, buf, sizeof buf) <= 0)
        return 0;
    s = buf;
    if (!parse_ll(&s, &period))
        return 0;
    return ceil_cpus(quota, period);
}

/* Smallest quota on the way from mount/rel up to mount, 0 if none. A quota
 * on any ancestor limits the whole subtree, hence the walk. When mount/rel
 * does not exist (a container that sees its own cgroup at the mount root
 * but the host's path in /proc/self/cgroup), only the mount root is read. */
static int walk_up(const char *mount, const char *rel,
                   int (*reader)(const char *)) {
    char dir[PATH_MAX];
    size_t root_len = strlen(mount);
    if (root_len >= sizeof dir)
        return 0;
    memcpy(dir, mount, root_len + 1);
    /* A path outside our cgroup namespace shows as "/../..."; we cannot
     * follow it, so the mount root is the best guess. */
    if (rel[0] == '/' && !strstr(rel, "/..")) {
        int n = snprintf(dir, sizeof dir, "%s%s", mount, rel);
        if (n >= (int)sizeof dir || !is_dir(dir))
            dir[root_len] = '\0';
    }
    int best = 0;
    for (;;) {
        size_t len = strlen(dir);
        while (len > root_len && dir[len - 1] == '/')
            dir[--len] = '\0';
        int q = reader(dir);
        if (q > 0 && (best == 0 || q < best))
            best = q;
        if (len <= root_len)
            break;
        char *slash = strrchr(dir + root_len, '/');
        if (!slash)
            break;
        *slash = '\0';
    }
    return best;
}

/* Is "cpu" one of the comma-separated controllers in list? */
static int has_cpu_controller(const char *list, size_t len) {
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && list[j] != ',')
            j++;
        if (j - i == 3 && memcmp(list + i, "cpu", 3) == 0)
            return 1;
        i = j + 1;
    }
    return 0;
}

static int quota_v1_line(const char *root, const char *ctrl, size_t ctrl_len,
                         const char *rel) {
    /* The hierarchy is usually mounted under the name of its controller
     * list ("cpu,cpuacct"); distributions also link the usual names. */
    char mount[PATH_MAX];
    char named[256];
    const char *names[] = {named, "cpu,cpuacct", "cpu"};
    if (ctrl_len >= sizeof named)
        ctrl_len = 0;
    memcpy(named, ctrl, ctrl_len);
    named[ctrl_len] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (names[i][0] == '\0')
            continue;
        int n = snprintf(mount, sizeof mount, "%s/%s", root, names[i]);
        if (n < (int)sizeof mount && is_dir(mount))
            return walk_up(mount, rel, quota_v1);
    }
    return 0;
}

int mproc__cpu_quota_from(const char *proc_self_cgroup,
                          const char *sysfs_cgroup_root) {
    char buf[CGROUP_FILE_CAP];
    if (read_small(proc_self_cgroup, buf, sizeof buf) <= 0)
        return 0;
    int best = 0;
    /* Lines are "ID:CONTROLLERS:PATH". On a hybrid system both a v2 line
     * ("0::PATH") and v1 lines appear; the cpu controller lives in only one
     * of them and the other simply has no quota files, so read both. */
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        const char *ctrl = c1 + 1;
        size_t ctrl_len = (size_t)(c2 - ctrl);
        const char *rel = c2 + 1;
        int q = 0;
        if (c1 - line == 1 && line[0] == '0' && ctrl_len == 0)
            q = walk_up(sysfs_cgroup_root, rel, quota_v2);
        else if (has_cpu_controller(ctrl, ctrl_len))
            q = quota_v1_line(sysfs_cgroup_root, ctrl, ctrl_len, rel);
        if (q > 0 && (best == 0 || q < best))
            best = q;
    }
    return best;
}

/* CPUs in this thread's affinity mask; 0 if it cannot be read. The mask
 * may be larger than glibc's fixed cpu_set_t on big machines, so grow it
 * until the kernel accepts the size. */
static int affinity_count(void) {
    for (int ncpu = CPU_SETSIZE; ncpu <= (1 << 22); ncpu *= 2) {
        cpu_set_t *set = CPU_ALLOC(ncpu);
        if (!set)
            return 0;
        size_t size = CPU_ALLOC_SIZE(ncpu);
        CPU_ZERO_S(size, set);
        if (sched_getaffinity(0, size, set) == 0) {
            int n = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return n;
        }
        int err = errno;
        CPU_FREE(set);
        if (err != EINVAL)
            return 0;
    }
    return 0;
}

/* MPROC_CPU_COUNT as a positive int, or 0 when unset or not one. */
static int env_override(void) {
    const char *s = getenv("MPROC_CPU_COUNT");
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end != '\0' || v < 1 || v > INT_MAX)
        return 0;
    return (int)v;
}

int mproc_cpu_count_available(void) {
    int n = env_override();
    if (n > 0)
        return n;
    n = affinity_count();
    if (n < 1)
        n = mproc_cpu_count();
    int quota = mproc__cpu_quota_from("/proc/self/cgroup", "/sys/fs/cgroup");
    if (quota > 0 && quota < n)
        n = quota;
    return n < 1 ? 1 : n;
}
