#!/bin/sh
# Installs what building and testing mproc needs on Debian 12, beyond gcc,
# make and cmake: pkg-config, the Check test framework, and clang (the suite
# also builds with clang to keep both compilers warning-clean). Packages that
# are already present are skipped, so a second run does nothing.
set -eu
need=""
for pkg in pkg-config check clang; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
[ -z "$need" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "mproc: installing$need" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
