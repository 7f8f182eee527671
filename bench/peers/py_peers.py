#!/usr/bin/python3
"""Python peers for mproc's benchmark suite: the same benchmarks as
bench/mproc_bench.c, written with what Debian ships -- multiprocessing (Pool,
Queue, Lock, Value), concurrent.futures.ProcessPoolExecutor and joblib
(python3-joblib) -- plus Python's serial pi loop for reference.

    py_peers.py [--quick] [--reps R] [--workers N] [--pi-steps S] [BENCH ...]
    py_peers.py --list

Output protocol (shared with the C programs): one JSON object per line on
stdout, one line per repetition sample, nothing else on stdout:

    {"bench":..,"impl":..,"param":..,"unit":..,"better":"lower"|"higher","value":..}

Diagnostics go to stderr.  Every pool is created and warmed up (each worker
has run a task) before its clock starts, as in the project's performance baselines;
pool_start measures the cold cost separately.  Start method: fork (Python
3.11's default on Linux) unless the impl name says otherwise.
"""

import json
import math
import os
import sys
import time

import multiprocessing as mp

PI_STEPS_FULL = 100_000_000     # as mproc_bench's pi
PI_STEPS_QUICK = 1_000_000

out = sys.stdout


def emit(bench, impl, param, unit, better, value):
    out.write(json.dumps({"bench": bench, "impl": impl, "param": param,
                          "unit": unit, "better": better,
                          "value": float(value)},
                         separators=(",", ":")) + "\n")
    out.flush()


def note(msg):
    print("py_peers: " + msg, file=sys.stderr, flush=True)


def usable_cpus():
    """CPUs this process may use: affinity mask, capped by a cgroup v2 quota,
    overridden by MPROC_CPU_COUNT (as mproc_cpu_count_available)."""
    env = os.environ.get("MPROC_CPU_COUNT")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    n = len(os.sched_getaffinity(0))
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


# --- task functions (module level, so every start method can find them) ---

def square(x):
    return x * x


def partial_pi(rank, nprocs, nsteps, dx):
    """Midpoint rule for 4/(1+x^2) on [0,1], strided split (the seed's)."""
    s = 0.0
    for i in range(rank, nsteps, nprocs):
        x = (i + 0.5) * dx
        s += 4.0 / (1.0 + x * x)
    return s


_TABLE = bytes((i + 1) & 255 for i in range(256))


def transform(chunk):
    return chunk.translate(_TABLE)    # a transformed copy, byte by byte


def warm_pool(pool, n):
    """Make sure each of the n workers has run a task: n tasks that each wait
    until all n have started (a Pool hands a free worker one task at a time,
    so n blocking tasks land on n distinct workers)."""
    pool.map(_warm_task, [n] * n, chunksize=1)


_warm_barrier = None


def _init_barrier(b):
    global _warm_barrier
    _warm_barrier = b


def _warm_task(n):
    if _warm_barrier is not None:
        _warm_barrier.wait(timeout=10)
    return os.getpid()


def make_pool(ctx, n):
    """Pool(n) with a barrier so warm_pool reaches every worker."""
    b = ctx.Barrier(n)
    p = ctx.Pool(n, initializer=_init_barrier, initargs=(b,))
    warm_pool(p, n)
    return p


def proc_cpu_s(pid):
    """utime+stime of a process from /proc/PID/stat, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def smaps_rollup(pid):
    vals = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                vals[parts[0][:-1]] = int(parts[1])
    return vals


# --- benchmarks ---

class Cfg:
    quick = False
    reps = 5
    workers = 2
    pi_steps = PI_STEPS_FULL


def bench_apply_rtt(c):
    """One task at a time: submit square(i), wait for its result (us)."""
    n = 300 if c.quick else 10_000
    ctx = mp.get_context("fork")
    p = make_pool(ctx, 2)
    try:
        for _ in range(c.reps):
            t0 = time.perf_counter()
            for i in range(n):
                p.apply_async(square, (i,)).get()
            emit("apply_rtt", "py_mp", "", "us", "lower",
                 (time.perf_counter() - t0) / n * 1e6)
    finally:
        p.close()
        p.join()
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        for f in [ex.submit(square, i) for i in range(20)]:
            f.result()
        for _ in range(c.reps):
            t0 = time.perf_counter()
            for i in range(n):
                ex.submit(square, i).result()
            emit("apply_rtt", "py_cf", "", "us", "lower",
                 (time.perf_counter() - t0) / n * 1e6)


def bench_map_default(c):
    """Pool.map of a trivial task, default chunksize (ceil(N / 4 workers));
    joblib Parallel(n_jobs=N) with its automatic batching (us per task)."""
    n = 100_000 if c.quick else 1_000_000
    p = make_pool(mp.get_context("fork"), c.workers)
    try:
        items = range(n)
        for _ in range(c.reps):
            t0 = time.perf_counter()
            p.map(square, items)
            emit("map_default", "py_mp", "", "us", "lower",
                 (time.perf_counter() - t0) / n * 1e6)
    finally:
        p.close()
        p.join()
    try:
        from joblib import Parallel, delayed
    except ImportError:
        note("joblib is not installed (Debian: python3-joblib); skipping its rows")
        return
    nj = 1_000 if c.quick else 10_000    # as the baseline (B.joblib_n1e4)
    with Parallel(n_jobs=c.workers) as par:
        par(delayed(square)(i) for i in range(4 * c.workers))   # starts loky
        for _ in range(c.reps):
            t0 = time.perf_counter()
            par(delayed(square)(i) for i in range(nj))
            emit("map_default", "joblib", "", "us", "lower",
                 (time.perf_counter() - t0) / nj * 1e6)


def bench_map_chunk1(c):
    """Pool.map(chunksize=1): one message per task each way (us per task)."""
    n = 2_000 if c.quick else 100_000
    p = make_pool(mp.get_context("fork"), c.workers)
    try:
        for _ in range(c.reps):
            t0 = time.perf_counter()
            p.map(square, range(n), chunksize=1)
            emit("map_chunk1", "py_mp", "", "us", "lower",
                 (time.perf_counter() - t0) / n * 1e6)
    finally:
        p.close()
        p.join()


def _bench_imap(c, name):
    n = 2_000 if c.quick else 100_000
    p = make_pool(mp.get_context("fork"), c.workers)
    try:
        for _ in range(c.reps):
            t0 = time.perf_counter()
            for _r in getattr(p, name)(square, range(n), chunksize=1):
                pass
            emit(name, "py_mp", "", "us", "lower",
                 (time.perf_counter() - t0) / n * 1e6)
    finally:
        p.close()
        p.join()


def bench_imap(c):
    """Pool.imap(chunksize=1), results consumed as they come (us per task)."""
    _bench_imap(c, "imap")


def bench_imap_unordered(c):
    """Pool.imap_unordered(chunksize=1) (us per task)."""
    _bench_imap(c, "imap_unordered")


def bench_pi(c):
    """pi by the midpoint rule, c.pi_steps steps: Python's serial loop, and
    Pool(N).starmap over N strided slices (the compute phase, on a warm
    pool), N = 1..workers; joblib at N = workers (wall seconds)."""
    steps = c.pi_steps
    dx = 1.0 / steps
    for _ in range(c.reps):
        t0 = time.perf_counter()
        pi = partial_pi(0, 1, steps, dx) * dx
        emit("pi", "py_serial", "workers=1", "s", "lower",
             time.perf_counter() - t0)
        check_pi(pi, steps)
    ctx = mp.get_context("fork")
    for n in range(1, c.workers + 1):
        p = make_pool(ctx, n)
        try:
            for _ in range(c.reps):
                t0 = time.perf_counter()
                parts = p.starmap(partial_pi,
                                  [(r, n, steps, dx) for r in range(n)])
                emit("pi", "py_mp", "workers=%d" % n, "s", "lower",
                     time.perf_counter() - t0)
                check_pi(sum(parts) * dx, steps)
        finally:
            p.close()
            p.join()
    try:
        from joblib import Parallel, delayed
    except ImportError:
        note("joblib is not installed (Debian: python3-joblib); skipping its rows")
        return
    n = c.workers
    with Parallel(n_jobs=n) as par:
        par(delayed(square)(i) for i in range(4 * n))
        for _ in range(c.reps):
            t0 = time.perf_counter()
            parts = par(delayed(partial_pi)(r, n, steps, dx) for r in range(n))
            emit("pi", "joblib", "workers=%d" % n, "s", "lower",
                 time.perf_counter() - t0)
            check_pi(sum(parts) * dx, steps)


def check_pi(pi, steps):
    if abs(pi - math.pi) > 10.0 / steps:
        raise RuntimeError("pi came out as %.15f" % pi)


def _pool_cycle(ctx):
    t0 = time.perf_counter()
    p = ctx.Pool(2)
    p.apply(square, (3,))
    p.close()
    p.join()
    return (time.perf_counter() - t0) * 1e3


def bench_pool_start(c):
    """Pool(2) creation + one task + close/join (ms).  The first cycle in the
    interpreter (param "first") includes one-time costs, for forkserver the
    start of the server; the figure compared with mproc (param "") is a later
    cycle, so that the faster Python figure is the one compared."""
    for impl, method in (("py_mp", "fork"), ("py_mp_forkserver", "forkserver")):
        ctx = mp.get_context(method)
        emit("pool_start", impl, "first", "ms", "lower", _pool_cycle(ctx))
        for _ in range(c.reps):
            emit("pool_start", impl, "", "ms", "lower", _pool_cycle(ctx))


def bench_idle_mem(c):
    """USS (Private_Clean + Private_Dirty) and PSS of an
    idle, warm Pool(N) worker, mean over the workers (KiB)."""
    p = make_pool(mp.get_context("fork"), c.workers)
    try:
        p.map(square, range(1000))
        time.sleep(0.2)
        pids = [w.pid for w in p._pool]
        for _ in range(c.reps):
            uss, pss = [], []
            for pid in pids:
                v = smaps_rollup(pid)
                uss.append(v.get("Private_Clean", 0) + v.get("Private_Dirty", 0))
                pss.append(v.get("Pss", 0))
            emit("idle_mem", "py_mp", "", "KiB", "lower", sum(uss) / len(uss))
            emit("idle_mem", "py_mp", "pss", "KiB", "lower", sum(pss) / len(pss))
    finally:
        p.close()
        p.join()


def bench_idle_cpu(c):
    """CPU seconds an idle, warm Pool(N) burns over 5 s (0.5 s in --quick):
    utime+stime of its workers (/proc/PID/stat) plus the CPU time of the whole
    parent process, whose main thread sleeps meanwhile; what the parent burns
    is Pool's own threads (worker handler, task handler, result handler),
    which wake up periodically.  Nothing is subtracted."""
    secs = 0.5 if c.quick else 5.0
    p = make_pool(mp.get_context("fork"), c.workers)
    try:
        pids = [w.pid for w in p._pool]
        time.sleep(0.1)
        for _ in range(c.reps):
            w0 = sum(proc_cpu_s(pid) for pid in pids)
            p0 = time.process_time()
            time.sleep(secs)
            p1 = time.process_time()
            w1 = sum(proc_cpu_s(pid) for pid in pids)
            if [w.pid for w in p._pool] != pids:
                raise RuntimeError("a pool worker was replaced while idle")
            emit("idle_cpu", "py_mp", "", "cpu_s", "lower", (w1 - w0) + (p1 - p0))
    finally:
        p.close()
        p.join()


def bench_large_map(c):
    """Pool(N).map over a 256 MiB bytes object split into N chunks (split
    before the clock starts); each task returns a transformed copy
    (bytes.translate, +1 per byte).  GB/s = (bytes in + bytes out) / wall."""
    mib = 4 if c.quick else 256         # as mproc_bench
    size = mib << 20
    n = c.workers
    p = make_pool(mp.get_context("fork"), n)   # before the data: cheap forks
    try:
        data = bytes(range(256)) * (size // 256)
        step = -(-size // n)
        chunks = [data[i:i + step] for i in range(0, size, step)]
        del data
        for _ in range(c.reps):
            t0 = time.perf_counter()
            res = p.map(transform, chunks, chunksize=1)
            dt = time.perf_counter() - t0
            if sum(map(len, res)) != size or res[0][:2] != b"\x01\x02":
                raise RuntimeError("large_map: wrong result")
            del res
            emit("large_map", "py_mp", "MiB=%d" % mib, "GB/s", "higher",
                 2 * size / dt / 1e9)
    finally:
        p.close()
        p.join()


MSG = b"0123456789abcdef"    # 16 bytes


def _q_producer(q, ready, go, m):
    ready.release()
    go.wait()
    put = q.put
    for _ in range(m):
        put(MSG)
    q.put(None)
    q.close()
    q.join_thread()         # flush the feeder thread before exiting


def _q_consumer(q, ready, go, res):
    ready.release()
    go.wait()
    get = q.get
    n = 0
    while get() is not None:
        n += 1
    res.put((n, time.perf_counter()))   # CLOCK_MONOTONIC: system-wide


def bench_queue_small(c):
    """multiprocessing.Queue, P producer and C consumer processes, 16-byte
    bytes messages; clock from the release of all processes to the last
    consumer's last message (messages/s).  Each producer ends its stream
    with one None; each consumer stops at the first None it gets."""
    ctx = mp.get_context("fork")
    total_full = {"1x1": 200_000, "4x4": 200_000}
    for param, (np_, nc) in (("1x1", (1, 1)), ("4x4", (4, 4))):
        total = 4_000 if c.quick else total_full[param]
        per = total // np_
        total = per * np_
        for _ in range(c.reps):
            q = ctx.Queue()
            res = ctx.Queue()
            ready = ctx.Semaphore(0)
            go = ctx.Event()
            procs = [ctx.Process(target=_q_producer, args=(q, ready, go, per))
                     for _ in range(np_)]
            procs += [ctx.Process(target=_q_consumer, args=(q, ready, go, res))
                      for _ in range(nc)]
            for pr in procs:
                pr.start()
            for _ in procs:
                ready.acquire()
            time.sleep(0.02)     # let them all block in go.wait()
            t0 = time.perf_counter()
            go.set()
            got = [res.get(timeout=300) for _ in range(nc)]
            for pr in procs:
                pr.join()
                if pr.exitcode != 0:
                    raise RuntimeError("queue_small: a process failed")
            if sum(g[0] for g in got) != total:
                raise RuntimeError("queue_small: lost messages")
            emit("queue_small", "py_mp", param, "msg/s", "higher",
                 total / (max(g[1] for g in got) - t0))


def _lock_player(me, lock, turn, count, go, k, deadline, res):
    go.wait()
    n = 0
    other = 1 - me
    now = time.perf_counter
    while n < k and now() < deadline.value:
        lock.acquire()
        if turn.value == me:
            turn.value = other
            count.value += 1
            n += 1
        lock.release()
    res.put(now())


def bench_lock_handoff(c):
    """Two processes pass a turn strictly back and forth: each takes the
    multiprocessing.Lock, and if the shared int (a RawValue, guarded by the
    lock) says it is its turn, hands the turn over; us per hand-off.
    Python's Lock is a POSIX semaphore with no fairness: the process that
    has just released it usually takes it again before the woken one runs,
    so a hand-off can wait for the scheduler (milliseconds).  Hence a time
    limit besides the count: 20,000 hand-offs per process or 2 s (0.5 s with
    --quick), whichever comes first; the figure divides by the hand-offs
    actually made."""
    ctx = mp.get_context("fork")
    k = 500 if c.quick else 20_000     # hand-offs per process, at most
    limit = 0.5 if c.quick else 2.0
    for _ in range(c.reps):
        lock = ctx.Lock()
        turn = ctx.RawValue("i", 0)
        count = ctx.RawValue("q", 0)
        deadline = ctx.RawValue("d", float("inf"))
        go = ctx.Event()
        res = ctx.Queue()
        procs = [ctx.Process(target=_lock_player,
                             args=(me, lock, turn, count, go, k, deadline, res))
                 for me in (0, 1)]
        for pr in procs:
            pr.start()
        time.sleep(0.05)
        t0 = time.perf_counter()
        deadline.value = t0 + limit
        go.set()
        t1 = max(res.get(timeout=300) for _ in procs)
        for pr in procs:
            pr.join()
            if pr.exitcode != 0:
                raise RuntimeError("lock_handoff: a process failed")
        if count.value < 2:
            raise RuntimeError("lock_handoff: no hand-off in %g s" % limit)
        emit("lock_handoff", "py_mp", "", "us", "lower",
             (t1 - t0) / count.value * 1e6)


BENCHES = [
    ("apply_rtt", bench_apply_rtt),
    ("map_default", bench_map_default),
    ("map_chunk1", bench_map_chunk1),
    ("imap", bench_imap),
    ("imap_unordered", bench_imap_unordered),
    ("pi", bench_pi),
    ("pool_start", bench_pool_start),
    ("idle_mem", bench_idle_mem),
    ("idle_cpu", bench_idle_cpu),
    ("large_map", bench_large_map),
    ("queue_small", bench_queue_small),
    ("lock_handoff", bench_lock_handoff),
]


def usage(rc):
    (sys.stderr if rc else sys.stdout).write(
        "usage: py_peers.py [--quick] [--reps R] [--workers N] [--pi-steps S] "
        "[BENCH ...]\n       py_peers.py --list\n")
    sys.exit(rc)


def main(argv):
    c = Cfg()
    c.workers = usable_cpus()
    reps = None
    steps = None
    names = []
    i = 0
    try:
        while i < len(argv):
            a = argv[i]
            if a == "--list":
                for name, _f in BENCHES:
                    print(name)
                return 0
            elif a == "--quick":
                c.quick = True
            elif a in ("--reps", "--workers", "--pi-steps"):
                i += 1
                v = int(float(argv[i]))      # accepts 1e8
                if v < 1:
                    raise ValueError(a)
                if a == "--reps":
                    reps = v
                elif a == "--workers":
                    c.workers = v
                else:
                    steps = v
            elif a in ("-h", "--help"):
                usage(0)
            elif a.startswith("-"):
                usage(2)
            else:
                names.append(a)
            i += 1
    except (IndexError, ValueError):
        usage(2)
    c.reps = reps if reps is not None else (1 if c.quick else 5)
    c.pi_steps = steps if steps is not None else (
        PI_STEPS_QUICK if c.quick else PI_STEPS_FULL)
    table = dict(BENCHES)
    for name in names:
        if name not in table:
            note("unknown benchmark %r (try --list)" % name)
            return 2
    for name, fn in BENCHES:
        if not names or name in names:
            fn(c)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
