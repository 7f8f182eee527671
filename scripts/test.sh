#!/bin/sh
# Sets up, builds and runs the whole test suite: the library with gcc and
# -Werror, a second warning-clean build with clang at -O2 (the optimiser
# finds warnings a debug build does not), an install into a scratch
# prefix used by pkg-config and find_package consumers, and every test in its
# own process under ctest (the examples with their expected output included),
# and finally the benchmark suite in --quick mode, which only checks that
# every benchmark and peer runs and reports well-formed figures.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=gcc -DMPROC_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
CC=clang cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DMPROC_WERROR=ON >/dev/null
cmake --build build-clang -j"$jobs"
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=gcc -DMPROC_WERROR=ON -DMPROC_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$jobs"
sh scripts/check-install.sh
cd build
ctest --output-on-failure -j"$jobs" --timeout 300
cd ..
sh scripts/bench.sh --quick
