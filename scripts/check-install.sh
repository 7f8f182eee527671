#!/bin/sh
# Installs the build in build/ into a scratch prefix and builds a consumer
# against it twice: with pkg-config and with CMake's find_package.
set -eu
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install build --prefix "$tmp/prefix" >/dev/null
libdir=$(ls -d "$tmp"/prefix/lib*/pkgconfig | head -n1)
PKG_CONFIG_PATH="$libdir" cc -Wall -Wextra -Werror -o "$tmp/c1" tests/install/consumer.c \
    $(PKG_CONFIG_PATH="$libdir" pkg-config --cflags --libs mproc)
LD_LIBRARY_PATH="$(dirname "$libdir")" "$tmp/c1"
cmake -S tests/install -B "$tmp/b" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/b" >/dev/null
LD_LIBRARY_PATH="$(dirname "$libdir")" "$tmp/b/consumer"
echo "install check: pkg-config and find_package consumers built and ran"
