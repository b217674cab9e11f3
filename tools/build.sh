#!/usr/bin/env bash
# Configures and builds kmsd, kmsctl and the tests into build/ (or $KMS_BUILD_DIR).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KMS_BUILD_DIR:-$root/build}
# ccache hits across checkouts (CI clones elsewhere): paths relative to the source root.
export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=true
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE:-RelWithDebInfo} "$@" >/dev/null
cmake --build "$build" -j"${KMS_JOBS:-2}"
