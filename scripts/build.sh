#!/usr/bin/env bash
# Configures and builds one flavour of mailvault with CMake + Ninja.
#   scripts/build.sh release|debug|asan   -> build/<flavour>
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-release}
case $flavour in
  release) args=(-DCMAKE_BUILD_TYPE=Release) ;;
  debug) args=(-DCMAKE_BUILD_TYPE=Debug) ;;
  asan) args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAILVAULT_SANITIZE=ON) ;;
  *) echo "usage: $0 release|debug|asan" >&2; exit 2 ;;
esac
cmake -S . -B "build/$flavour" -G Ninja "${args[@]}" >/dev/null
ninja -C "build/$flavour" ${MAILVAULT_BUILD_QUIET:+--quiet}
