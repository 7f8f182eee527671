#!/bin/sh
# Sets up, builds (Release) and runs the demo: pi by midpoint integration,
# serial and with the pool at 1..N workers. Extra arguments go to the demo
# (e.g. the number of steps: sh scripts/demo.sh 100000000).
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DMPROC_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target pi_demo >/dev/null
exec ./build-release/examples/pi_demo "$@"
