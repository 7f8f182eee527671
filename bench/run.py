#!/usr/bin/python3
"""The benchmark suite's driver: runs mproc_bench, pi_omp and the Python
peers side by side and prints one table.

    python3 bench/run.py [--quick] [--reps R] [--out DIR] [--build DIR]
                         [--workers N]

Every sample is a separate, fresh run of a program for one benchmark
(`PROG --reps 1 BENCH`), as for the baselines in PERF-BASELINES.md: round by
round, benchmark by benchmark, the programs that have the benchmark take
turns (in an order that rotates each round), so that noise on this shared
machine lands on all sides alike.  Before each run in full mode the driver
waits (up to 15 s per run, 120 s in all) for the machine to be under 25%
busy, and counts the samples taken on a busy machine anyway.

The aggregate of a figure is the median and min-max of its samples.  The
table puts each mproc figure beside its peer's, with the ratio ("Nx faster"
or "Nx slower" for mproc) and the issue's target with a pass/MISS mark.  A
missed target never fails the run; a program that fails, times out or
prints a line outside the protocol does (exit status 1), and so does, with
--quick (the CI check), a program that is not built.

Writes DIR/results.json (every sample, the aggregates, the table, the
machine), DIR/table.md, and with gnuplot DIR/pi_speedup.svg and
DIR/latency.svg.  DIR defaults to bench/results (bench/results/quick with
--quick, so that a quick run does not overwrite the published figures).
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench", "peers"))
from py_peers import usable_cpus  # noqa: E402  (one definition for both)


def portable(path):
    """A path inside the checkout, relative to its root, so results do not
    carry the machine's layout; anything else as it is."""
    if os.path.isabs(path) and path.startswith(ROOT + os.sep):
        return os.path.relpath(path, ROOT)
    return path
PEERS = os.path.join(ROOT, "bench", "peers", "py_peers.py")

PROTOCOL_KEYS = {"bench", "impl", "param", "unit", "better", "value"}
IMPLS = {"mproc", "c_serial", "openmp", "c", "py_mp", "py_mp_forkserver",
         "py_cf", "py_serial", "joblib"}

# Row order of the table, and which peers each mproc figure is set against.
PAIRS = [
    ("apply_rtt", ["py_mp", "py_cf"]),
    ("map_default", ["py_mp", "joblib"]),
    ("map_chunk1", ["py_mp"]),
    ("imap", ["py_mp"]),
    ("imap_unordered", ["py_mp"]),
    ("pi", ["openmp", "py_mp"]),
    ("pool_start", ["py_mp", "py_mp_forkserver"]),
    ("idle_mem", ["py_mp"]),
    ("idle_cpu", ["py_mp"]),
    ("large_map", ["c", "py_mp"]),      # c = memcpy, the ceiling
    ("queue_small", ["py_mp"]),
    ("lock_handoff", ["py_mp"]),
]
# The unit each benchmark is measured in (the protocol); a sample in another
# unit is a malformed line.
UNITS = {"apply_rtt": "us", "map_default": "us", "map_chunk1": "us",
         "imap": "us", "imap_unordered": "us", "pi": "s", "pool_start": "ms",
         "idle_mem": "KiB", "idle_cpu": "cpu_s", "large_map": "GB/s",
         "memcpy": "GB/s", "queue_small": "msg/s", "lock_handoff": "us"}
BETTER = {"large_map": "higher", "memcpy": "higher", "queue_small": "higher"}
# Where a peer has no figure with mproc's param, it is set against the
# peer's figure with the param named here (mproc's bytes-form map against
# Python's only map), or else with the param's first part ("MiB=256" for
# mproc's "MiB=256,item=64KiB").
PARAM_FALLBACK = {"bytes": ""}
# Fewer fresh runs for the slowest figures, to keep the full suite well
# under 10 minutes on 2 cores: Python's pi (~20 s a run at 1e8 steps) and
# the idle pools (5 s windows).  {bench: {program or "*": rounds}}
ROUND_CAPS = {"pi": {"py_peers": 3}, "idle_cpu": {"*": 3}}
PEER_NAMES = {"c": "c memcpy", "py_mp_forkserver": "py_mp forkserver"}
JOBLIB_IMPLS = {"joblib"}


def log(msg):
    print("run.py: " + msg, file=sys.stderr, flush=True)


def python_exe():
    """Debian's interpreter (so that Debian's python3-* packages import),
    unless PY says otherwise."""
    if os.environ.get("PY"):
        return os.environ["PY"]
    if os.access("/usr/bin/python3", os.X_OK):
        return "/usr/bin/python3"
    return sys.executable


# --- the machine --------------------------------------------------------

def cpu_busy(interval=0.2):
    """Fraction of CPU time not idle over interval seconds (/proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)
    t0, i0 = snap()
    time.sleep(interval)
    t1, i1 = snap()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


class QuietWait:
    """Wait for the machine to be under 25% busy: up to 15 s per run, as for
    the baselines, and 120 s in all (the baselines allowed 240 s; half keeps
    the whole suite under 10 minutes on a machine that stays busy)."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.budget = 120.0
        self.waited = 0.0

    def wait(self):
        if not self.enabled:
            return False
        t0 = time.monotonic()
        while True:
            busy = cpu_busy() > 0.25
            spent = time.monotonic() - t0
            if not busy or spent > 15 or self.waited + spent > self.budget:
                self.waited += spent
                return busy


def machine_info(py):
    info = {"kernel": platform.release(), "nproc": os.cpu_count(),
            "usable_cpus": usable_cpus()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            info["mem_gib"] = round(kib / 2**20, 1)
    except OSError:
        pass
    try:
        with open("/etc/debian_version") as f:
            info["debian"] = f.read().strip()
    except OSError:
        pass
    for key, cmd in (("python", [py, "--version"]), ("gcc", ["gcc", "--version"])):
        try:
            o = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            info[key] = (o.stdout or o.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.SubprocessError):
            info[key] = None
    try:
        o = subprocess.run([py, "-c", "import joblib; print(joblib.__version__)"],
                           capture_output=True, text=True, timeout=30)
        info["joblib"] = o.stdout.strip() if o.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        info["joblib"] = None
    return info


# --- running the programs -----------------------------------------------

class Program:
    def __init__(self, name, argv, path, fixed=None):
        self.name = name
        self.argv = argv
        self.path = path
        self.benches = []
        self.missing = False
        # pi_omp has one benchmark (pi), no --list and no BENCH arguments
        self.fixed = fixed


def find_built(build, name):
    for cand in (os.path.join(build, "bench", name), os.path.join(build, name)):
        if os.access(cand, os.X_OK) and os.path.isfile(cand):
            return cand
    for dirpath, _dirs, files in os.walk(build):
        if name in files and os.access(os.path.join(dirpath, name), os.X_OK):
            return os.path.join(dirpath, name)
    return None


def parse_line(line):
    """A sample from one stdout line, or an error string."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        return "not JSON (%s)" % e
    if not isinstance(obj, dict) or set(obj) != PROTOCOL_KEYS:
        return "wrong keys (want exactly %s)" % sorted(PROTOCOL_KEYS)
    for k in ("bench", "impl", "param", "unit"):
        if not isinstance(obj[k], str):
            return "%s is not a string" % k
    if not obj["bench"] or not obj["impl"] or not obj["unit"]:
        return "empty bench, impl or unit"
    if obj["better"] not in ("lower", "higher"):
        return "better is neither lower nor higher"
    v = obj["value"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "value is not a finite number"
    if obj["impl"] not in IMPLS:
        return "unknown impl %r" % obj["impl"]
    b = obj["bench"]
    if b not in UNITS:
        return "unknown bench %r" % b
    if obj["unit"] != UNITS[b]:
        return "%s is measured in %s, not %s" % (b, UNITS[b], obj["unit"])
    if obj["better"] != BETTER.get(b, "lower"):
        return "%s: better is %s, not %s" % (b, BETTER.get(b, "lower"), obj["better"])
    return obj


def run_group(argv, timeout):
    """subprocess.run in a process group of its own, so that on a timeout
    the program's workers and helpers are killed with it."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT, start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            out, err = p.communicate()
            raise subprocess.TimeoutExpired(argv, timeout, out, err)
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


class Runner:
    def __init__(self, args):
        self.args = args
        self.samples = []
        self.failures = []
        self.runs = []
        self.quiet = QuietWait(not args.quick)
        self.busy_samples = 0

    def fail(self, msg):
        self.failures.append(msg)
        log("FAIL: " + msg)

    def list_benches(self, prog):
        try:
            o = subprocess.run(prog.argv + ["--list"], capture_output=True,
                               text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            self.fail("%s --list: %s" % (prog.name, e))
            return []
        if o.returncode != 0:
            self.fail("%s --list exited with %d: %s" % (prog.name, o.returncode,
                                                         o.stderr.strip()[-500:]))
            return []
        return [w for w in (l.strip() for l in o.stdout.splitlines()) if w]

    def run(self, prog, bench, rnd):
        args = self.args
        argv = list(prog.argv)
        if args.quick:
            argv.append("--quick")
        argv += ["--reps", "1", "--workers", str(args.workers)]
        if not prog.fixed:
            argv.append(bench)
        busy = self.quiet.wait()
        t0 = time.monotonic()
        try:
            o = run_group(argv, args.timeout)
        except subprocess.TimeoutExpired as e:
            self.fail("%s timed out after %d s; its stderr ends:\n%s"
                      % (" ".join(argv), args.timeout, (e.stderr or "")[-2000:]))
            return
        except OSError as e:
            self.fail("%s: %s" % (" ".join(argv), e))
            return
        wall = time.monotonic() - t0
        self.runs.append({"prog": prog.name, "bench": bench, "round": rnd,
                          "rc": o.returncode, "wall_s": round(wall, 3),
                          "busy": busy})
        if o.returncode != 0:
            self.fail("%s exited with status %d; its stderr ends:\n%s"
                      % (" ".join(argv), o.returncode, o.stderr[-2000:]))
        n = bad = 0
        for i, line in enumerate(o.stdout.split("\n")):
            if line == "" and i == len(o.stdout.split("\n")) - 1:
                continue
            s = parse_line(line)
            if isinstance(s, str):
                self.fail("%s: stdout line %d: %s: %r" % (" ".join(argv), i + 1,
                                                          s, line[:200]))
                bad += 1
                continue
            s.update({"prog": prog.name, "round": rnd, "busy": busy})
            self.samples.append(s)
            n += 1
        if n == 0 and bad == 0 and o.returncode == 0:
            self.fail("%s printed no samples" % " ".join(argv))
        self.busy_samples += n if busy else 0
        log("round %d %-11s %-15s %3d samples %6.1f s%s"
            % (rnd + 1, prog.name, bench, n, wall, "  (machine busy)" if busy else ""))


# --- aggregation ---------------------------------------------------------

def aggregate(samples, failures):
    groups = {}
    for s in samples:
        key = (s["bench"], s["impl"], s["param"])
        g = groups.setdefault(key, {"bench": s["bench"], "impl": s["impl"],
                                    "param": s["param"], "unit": s["unit"],
                                    "better": s["better"], "values": [],
                                    "busy": 0})
        if (g["unit"], g["better"]) != (s["unit"], s["better"]):
            failures.append("%s/%s/%s: unit or better differs between samples"
                            % key)
        g["values"].append(s["value"])
        g["busy"] += 1 if s.get("busy") else 0
    aggs = {}
    for key, g in groups.items():
        v = g.pop("values")
        g.update({"n": len(v), "median": statistics.median(v),
                  "min": min(v), "max": max(v)})
        aggs[key] = g
    return aggs


def fmt(v):
    if v is None:
        return "?"
    a = abs(v)
    if a >= 10000:
        return "{:,.0f}".format(v)
    if a >= 100:
        return "%.0f" % v
    if a == 0:
        return "0"
    if a < 0.001:
        return "%.2g" % v
    return "%.3g" % v


def fig(a, reps):
    """median (min–max), and n where fewer runs than --reps were made."""
    if a["n"] == 1:
        f = fmt(a["median"])
    else:
        f = "%s (%s–%s)" % (fmt(a["median"]), fmt(a["min"]), fmt(a["max"]))
    return f + (" n=%d" % a["n"] if a["n"] != reps else "")


def ratio_text(r):
    """r > 1: mproc is better."""
    if r >= 1:
        return "%sx faster" % fmt(r)
    return "%sx slower" % fmt(1 / r)


def better_ratio(m, p):
    """How many times better mproc's median is than the peer's."""
    if m["median"] <= 0 or p["median"] <= 0:
        return None
    if m["better"] == "lower":
        return p["median"] / m["median"]
    return m["median"] / p["median"]


def mark(ok):
    return "pass" if ok else "MISS"


def build_rows(aggs, missing_note, reps):
    """The table: a list of dicts with the cells as text."""
    rows = []
    used = set()
    benches_seen = [b for b, _ in PAIRS]
    for b in sorted({k[0] for k in aggs}):
        if b not in benches_seen and b != "memcpy":
            benches_seen.append(b)
    pairs = dict(PAIRS)

    def peer_agg(bench, impl, param):
        if impl == "c" and bench == "large_map":
            cands = [k for k in aggs if k[0] == "memcpy" and k[1] == "c"]
            same = [k for k in cands if k[2] == param]
            k = (same or sorted(cands) or [None])[0]
            return k, aggs.get(k) if k else None
        for cand in (param, PARAM_FALLBACK.get(param), param.split(",")[0]):
            k = (bench, impl, cand)
            if cand is not None and k in aggs:
                return k, aggs[k]
        return (bench, impl, param), None

    # c_serial's time for pi speedups
    cs = aggs.get(("pi", "c_serial", "workers=1"))

    for bench in benches_seen:
        peers = pairs.get(bench, [])
        mkeys = sorted(k for k in aggs if k[0] == bench and k[1] == "mproc")
        if mkeys:
            params = [k[2] for k in mkeys]
        else:
            params = sorted({k[2] for k in aggs if k[0] == bench and k[1] in peers})
        params.sort(key=param_order)
        for param in params:
            m = aggs.get((bench, "mproc", param))
            if m:
                used.add((bench, "mproc", param))
            first = True
            # targets on the mproc figure alone go on the first row
            abs_t = absolute_targets(bench, param, m)
            plist = peers or [None]
            fastest_py = None
            if bench == "pool_start":
                c = [(aggs[(bench, i, param)]["median"], i)
                     for i in ("py_mp", "py_mp_forkserver") if (bench, i, param) in aggs]
                fastest_py = min(c)[1] if c else None
            units = [a["unit"] for k, a in sorted(aggs.items())
                     if k[0] == bench and k[2] == param]
            for impl in plist:
                row = {"bench": bench, "param": param,
                       "unit": (m or {}).get("unit") or (units or [""])[0],
                       "mproc": fig(m, reps) if m else missing_note("mproc"),
                       "peer": "", "peer_fig": "", "ratio": "",
                       "target": [], "result": []}
                if not first:
                    row["mproc"] = "″"
                if impl is not None:
                    key, p = peer_agg(bench, impl, param)
                    row["peer"] = PEER_NAMES.get(impl, impl)
                    if p:
                        used.add(key)
                        row["peer_fig"] = fig(p, reps)
                        if key[0] == "memcpy":
                            row["peer_fig"] += " " + p["unit"]
                    else:
                        row["peer_fig"] = missing_note(impl)
                    if m and p:
                        r = better_ratio(m, p)
                        if r is None:
                            row["ratio"] = "—"
                        elif impl == "c" and bench == "large_map":
                            row["ratio"] = "%s of memcpy" % fmt(r)
                        elif bench == "pi" and impl == "openmp" and cs:
                            row["ratio"] = ("speedup %sx vs %sx (%s)"
                                            % (fmt(cs["median"] / m["median"]),
                                               fmt(cs["median"] / p["median"]),
                                               fmt(r)))
                        else:
                            row["ratio"] = ratio_text(r)
                    for text, ok in peer_targets(bench, param, impl, m, p, fastest_py):
                        row["target"].append(text)
                        row["result"].append(ok)
                if first:
                    for text, ok in abs_t:
                        row["target"].insert(0, text)
                        row["result"].insert(0, ok)
                first = False
                rows.append(row)
    # everything not shown yet: reference figures (c_serial, py_serial, ...)
    for key in sorted(aggs, key=lambda k: (bench_index(k[0], benches_seen),
                                            param_order(k[2]), k[1])):
        if key in used:
            continue
        a = aggs[key]
        rows.append({"bench": key[0], "param": key[2], "unit": a["unit"],
                     "mproc": "—", "peer": PEER_NAMES.get(key[1], key[1]),
                     "peer_fig": fig(a, reps), "ratio": reference_note(key, aggs),
                     "target": [], "result": []})
    for r in rows:
        r["target"] = "; ".join(r["target"])
        r["result"] = "; ".join(x for x in r["result"])
    return rows


def bench_index(b, order):
    return order.index(b) if b in order else len(order)


def param_order(p):
    """"" first, then by parts, numbers as numbers: workers=2 < workers=10,
    MiB=256 < MiB=256,item=64KiB."""
    key = []
    for part in p.split(",") if p else []:
        m = re.match(r"^(\w+)=(\d+)(\D*)$", part)
        key.append((m.group(1), int(m.group(2)), m.group(3)) if m else (part, -1, ""))
    return key


def reference_note(key, aggs):
    bench, impl, param = key
    if bench == "pi" and impl in ("py_mp", "joblib"):
        ps = aggs.get(("pi", "py_serial", "workers=1"))
        if ps:
            return "speedup %sx over py_serial" % fmt(ps["median"] / aggs[key]["median"])
    if bench == "pi" and impl == "openmp":
        cs = aggs.get(("pi", "c_serial", "workers=1"))
        if cs:
            return "speedup %sx" % fmt(cs["median"] / aggs[key]["median"])
    if bench == "pool_start" and param == "first":
        return "first Pool in the interpreter"
    return ""


def absolute_targets(bench, param, m):
    """[(text, "pass"|"MISS"|"n/a"|"info")] for figures judged alone."""
    def judge(text, ok_fn):
        return [(text, mark(ok_fn(m["median"])) if m else "n/a")]
    if bench == "apply_rtt" and param == "":
        return judge("< 5 us", lambda v: v < 5)
    if bench == "map_chunk1" and param == "":
        return judge("< 1 us", lambda v: v < 1)
    if bench == "pool_start" and param == "":
        return judge("< 1 ms", lambda v: v < 1)
    if bench == "idle_mem" and param == "":
        return judge("< 1024 KiB USS", lambda v: v < 1024)
    if bench == "idle_cpu":
        return [("≈ 0 (reported)", "info" if m else "n/a")]
    return []


def peer_targets(bench, param, impl, m, p, fastest_py):
    def judge(text, need):
        if not (m and p):
            return [(text, "n/a")]
        r = better_ratio(m, p)
        return [(text, mark(r is not None and r >= need))]
    if bench == "apply_rtt" and param == "" and impl == "py_mp":
        return judge("≥ 30x vs py_mp", 30)
    if bench == "map_default" and param == "" and impl == "py_mp":
        return judge("≥ 20x vs py_mp", 20)
    if bench == "pi" and impl == "openmp":
        return judge("speedup within 5% of OpenMP", 0.95)
    if bench == "pool_start" and param == "" and impl == fastest_py:
        return judge("≥ 5x vs fastest Python", 5)
    if bench == "large_map" and impl == "c":
        return judge("≥ 0.5x memcpy", 0.5)
    if bench == "queue_small" and param == "1x1" and impl == "py_mp":
        return judge("≥ 20x vs py_mp", 20)
    return []


COLUMNS = [("bench", "benchmark"), ("param", "param"), ("unit", "unit"),
           ("mproc", "mproc median (min–max)"), ("peer", "peer"),
           ("peer_fig", "peer median (min–max)"), ("ratio", "mproc vs peer"),
           ("target", "target"), ("result", "result")]


def text_table(rows):
    cells = [[h for _k, h in COLUMNS]] + [[r[k] for k, _h in COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    right = {"mproc", "peer_fig"}
    out = []
    for n, c in enumerate(cells):
        parts = []
        for i, (k, _h) in enumerate(COLUMNS):
            parts.append(c[i].rjust(widths[i]) if k in right and n else c[i].ljust(widths[i]))
        out.append("  ".join(parts).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def md_table(rows):
    def esc(s):
        return s.replace("|", "\\|")
    out = ["| " + " | ".join(h for _k, h in COLUMNS) + " |",
           "|" + "|".join("---:" if k in ("mproc", "peer_fig") else "---"
                          for k, _h in COLUMNS) + "|"]
    for r in rows:
        out.append("| " + " | ".join(esc(r[k]) for k, _h in COLUMNS) + " |")
    return "\n".join(out)


# --- plots ----------------------------------------------------------------

def plot(outdir, aggs, workers, gnuplot, steps):
    made = []
    cs = aggs.get(("pi", "c_serial", "workers=1"))
    ps = aggs.get(("pi", "py_serial", "workers=1"))
    series = [("mproc", cs, "mproc Pool"), ("openmp", cs, "OpenMP"),
              ("py_mp", ps, "Python Pool (fork)"), ("joblib", ps, "joblib")]
    blocks, plots = [], []
    for idx, (impl, base, title) in enumerate(series):
        if not base:
            continue
        pts = []
        for n in range(1, workers + 1):
            a = aggs.get(("pi", impl, "workers=%d" % n))
            if a:
                pts.append("%d %g %g %g" % (n, base["median"] / a["median"],
                                            base["median"] / a["max"],
                                            base["median"] / a["min"]))
        if pts:
            blocks.append("$s%d << EOD\n%s\nEOD" % (idx, "\n".join(pts)))
            style = "points pt 7 ps 1.2" if len(pts) == 1 else "linespoints pt 7"
            plots.append("$s%d using 1:2:3:4 with yerrorbars lc %d pt 7 ps 0.6 notitle, "
                         "$s%d using 1:2 with %s lc %d title '%s'"
                         % (idx, idx + 1, idx, style, idx + 1, title))
    if plots:
        script = "\n".join(blocks + [
            "set terminal svg size 640,440 dynamic font 'sans,12'",
            "set output '%s'" % os.path.join(outdir, "pi_speedup.svg"),
            "set termoption noenhanced",
            "set title 'pi, %s steps: speedup over the serial loop of the same "
            "language'" % steps,
            "set xlabel 'workers (processes or threads)'",
            "set ylabel 'speedup'",
            "set xrange [0.5:%g]" % (workers + 0.5),
            "set yrange [0:%g]" % (workers + 0.5),
            "set xtics 1", "set key left top", "set grid",
            "plot x with lines dt 2 lc rgb 'gray' title 'ideal', " + ", ".join(plots),
        ])
        if run_gnuplot(gnuplot, script):
            made.append("pi_speedup.svg")
    benches = ["apply_rtt", "map_default", "map_chunk1", "imap", "imap_unordered"]
    impls = ["mproc", "py_mp", "py_cf", "joblib"]
    lines = []
    for b in benches:
        cols = []
        for i in impls:
            a = aggs.get((b, i, ""))
            cols += (["%g" % a["median"], "%g" % a["min"], "%g" % a["max"]]
                     if a and a["median"] > 0 else ["?", "?", "?"])
        lines.append(b + " " + " ".join(cols))
    present = [j for j, i in enumerate(impls)
               if any((b, i, "") in aggs for b in benches)]
    if present:
        using = ", ".join(
            "$lat using %d:%d:%d%s title '%s'"
            % (2 + 3 * j, 3 + 3 * j, 4 + 3 * j, ":xtic(1)" if n == 0 else "", impls[j])
            for n, j in enumerate(present))
        script = "\n".join([
            "$lat << EOD", "\n".join(lines), "EOD",
            "set terminal svg size 720,440 dynamic font 'sans,12'",
            "set output '%s'" % os.path.join(outdir, "latency.svg"),
            "set termoption noenhanced",
            "set title 'round trip and per-task cost, %d workers (median, min-max)'" % workers,
            "set datafile missing '?'",
            "set style data histograms",
            "set style histogram errorbars gap 1 lw 1",
            "set style fill solid 0.8 border -1",
            "set logscale y", "set ylabel 'microseconds (log scale)'",
            "set yrange [0.001:*]", "set grid ytics", "set key top right",
            "set xtics noenhanced",
            "plot " + using,
        ])
        if run_gnuplot(gnuplot, script):
            made.append("latency.svg")
    return made


def run_gnuplot(gnuplot, script):
    try:
        o = subprocess.run([gnuplot], input=script, capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        log("gnuplot: %s" % e)
        return False
    if o.returncode != 0:
        log("gnuplot failed: %s" % o.stderr.strip()[-1000:])
        return False
    return True


def write_json(f, obj):
    """JSON with one line per key, and per element of a list: small and
    diff-friendly."""
    c = (",", ":")
    f.write("{\n")
    for i, (k, v) in enumerate(obj.items()):
        f.write(json.dumps(k) + ":")
        if isinstance(v, list) and v:
            f.write("[\n" + ",\n".join(" " + json.dumps(x, ensure_ascii=False,
                                                           separators=c)
                                        for x in v) + "\n]")
        else:
            f.write(json.dumps(v, ensure_ascii=False, separators=c))
        f.write(",\n" if i < len(obj) - 1 else "\n")
    f.write("}\n")


# --- main -----------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, 1 rep: checks that everything runs")
    ap.add_argument("--reps", type=int, default=None,
                    help="samples per figure (default 5, 1 with --quick)")
    ap.add_argument("--out", default=None,
                    help="output folder (default bench/results, "
                    "bench/results/quick with --quick)")
    ap.add_argument("--build", default="build-bench",
                    help="build folder with the C programs (default build-bench)")
    ap.add_argument("--workers", type=int, default=None,
                    help="pool size; pi runs 1..N (default: usable CPUs)")
    ap.add_argument("--timeout", type=int, default=None,
                    help="seconds one program run may take (default 300, 120 quick)")
    args = ap.parse_args()
    if args.reps is None:
        args.reps = 1 if args.quick else 5
    if args.reps < 1:
        ap.error("--reps wants at least 1")
    if args.workers is None:
        args.workers = usable_cpus()
    if args.timeout is None:
        args.timeout = 120 if args.quick else 300
    out = args.out or os.path.join(ROOT, "bench", "results", "quick" if args.quick else "")
    out = os.path.abspath(out)
    build = args.build if os.path.isabs(args.build) else os.path.join(ROOT, args.build)
    os.makedirs(out, exist_ok=True)
    t_start = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    py = python_exe()
    info = machine_info(py)
    runner = Runner(args)
    progs = []
    for name in ("mproc_bench", "pi_omp"):
        path = find_built(build, name)
        p = Program(name, [path] if path else [], path,
                    ["pi"] if name == "pi_omp" else None)
        if not path:
            p.missing = True
            msg = "%s is not built (looked in %s)" % (name, build)
            if args.quick:
                runner.fail(msg)
            else:
                log("warning: " + msg + "; its rows are reported as missing")
        progs.append(p)
    progs.append(Program("py_peers", [py, PEERS], PEERS))
    for p in progs:
        if not p.missing:
            p.benches = p.fixed or runner.list_benches(p)

    def missing_note(impl):
        if impl in JOBLIB_IMPLS and not info.get("joblib"):
            return "n/a (not installed)"
        if impl == "mproc" and progs[0].missing:
            return "n/a (not built)"
        if impl in ("openmp", "c_serial") and progs[1].missing:
            return "n/a (not built)"
        if impl == "c" and progs[0].missing:
            return "n/a (not built)"
        return "n/a"

    order = []
    for p in progs:
        for b in p.benches:
            if b not in order:
                order.append(b)
    log("%d workers, %d rep(s)%s; programs: %s" % (
        args.workers, args.reps, ", quick" if args.quick else "",
        ", ".join(p.name for p in progs if not p.missing)))
    for rnd in range(args.reps):
        for bi, bench in enumerate(order):
            caps = ROUND_CAPS.get(bench, {})
            have = [p for p in progs if bench in p.benches
                    and rnd < caps.get(p.name, caps.get("*", args.reps))]
            k = (rnd + bi) % len(have) if have else 0
            for p in have[k:] + have[:k]:
                runner.run(p, bench, rnd)

    aggs = aggregate(runner.samples, runner.failures)
    rows = build_rows(aggs, missing_note, args.reps)
    wall = time.monotonic() - t_start
    table = text_table(rows)
    head = ("%d workers; %d fresh run(s) per figure (n= where fewer)%s; %s; %s, %s"
            % (args.workers, args.reps, " (quick: sizes too small to mean anything)"
               if args.quick else "", info.get("cpu", "?"), info.get("python"),
               info.get("gcc")))
    print(head)
    print(table)
    ratio_note = ("Ratios compare medians: \"Nx faster\" means mproc's figure is N times "
                  "better than the peer's (lower time, or higher rate).")
    print(ratio_note)
    if runner.busy_samples:
        print("%d sample(s) were taken while the machine was more than 25%% busy."
              % runner.busy_samples)

    gp = shutil.which("gnuplot")
    plots = []
    if gp:
        plots = plot(out, aggs, args.workers, gp, "1e6" if args.quick else "1e8")
    else:
        log("gnuplot is not installed (Debian: gnuplot-nox): no plots")

    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("<!-- written by bench/run.py on %s -->\n" % started)
        f.write(head + "\n\n" + md_table(rows) + "\n\n" + ratio_note + "\n")
        if runner.busy_samples:
            f.write("\n%d sample(s) were taken while the machine was more than "
                    "25%% busy.\n" % runner.busy_samples)
    result = {
        "started": started, "wall_s": round(wall, 1), "quick": args.quick,
        "reps": args.reps, "workers": args.workers, "machine": info,
        "programs": {p.name: (None if p.missing else [portable(a) for a in p.argv])
                     for p in progs},
        "aggregates": sorted(aggs.values(), key=lambda a: (a["bench"], a["impl"], a["param"])),
        "table": rows, "plots": plots, "failures": runner.failures,
        "busy_samples": runner.busy_samples, "runs": runner.runs,
        "samples": runner.samples,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        write_json(f, result)
    log("wrote %s (results.json, table.md%s) in %.0f s"
        % (out, "".join(", " + p for p in plots), wall))
    if runner.failures:
        log("%d failure(s):" % len(runner.failures))
        for msg in runner.failures:
            log("  " + msg.splitlines()[0])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
