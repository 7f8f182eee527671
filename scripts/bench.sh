#!/bin/sh
# Builds and runs the benchmark suite beside its peers and prints one table
# (see bench/README.md):
#   sh scripts/bench.sh            the full suite (a few minutes)
#   sh scripts/bench.sh --quick    tiny sizes, one run each: checks that
#                                  everything runs (CI), in well under a minute
# Other arguments go to bench/run.py (--reps R, --out DIR, --workers N).
# Installs the peers from Debian's packages when they are missing: Python 3
# with joblib, and gnuplot for the plots; packages already present are
# skipped. OpenMP (libgomp) comes with gcc.
set -eu
cd "$(dirname "$0")/.."
need=""
for pkg in python3 python3-joblib; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
command -v gnuplot >/dev/null 2>&1 || need="$need gnuplot-nox"
if [ -n "$need" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "mproc: installing$need" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release \
    -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=OFF -DMPROC_BUILD_BENCH=ON >/dev/null
cmake --build build-bench -j"$(nproc)" >/dev/null
exec /usr/bin/python3 bench/run.py --build build-bench "$@"
