#!/usr/bin/env bash
# One command for a fresh Debian 12 machine: install what is missing, build, and run
# every test (unit, integration against SoftHSM2/SQLite/PostgreSQL/Redis, end to end
# against kmsd processes over mTLS). Ends with ctest's summary and the minutes each stage
# took.
#
# Stages: install, build (gcc, $KMS_BUILD_DIR, default build/), clang build (clang with
# -Wthread-safety -Werror=thread-safety, $KMS_CLANG_BUILD_DIR, default build-clang/: the
# tree that checks the lock annotations, and later hosts the sanitizer and fuzzer builds),
# services, ctest (against the gcc tree). Any failing stage fails the run.
#
# Services the tests need are started here, on 127.0.0.1 with ports chosen now, in a
# temp dir, and stopped on exit (also when tests fail): see tools/test-services.sh.
# Extra arguments go to ctest (e.g. -L unit, -R Dek).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KMS_BUILD_DIR:-$root/build}
clang_build=${KMS_CLANG_BUILD_DIR:-$root/build-clang}

# Stage timings, printed on exit whatever happened.
stage_names=()
stage_seconds=()
stage_name=""
stage_start=0
stage_begin() {
  stage_name=$1
  stage_start=$SECONDS
}
stage_end() {
  stage_names+=("$stage_name")
  stage_seconds+=($((SECONDS - stage_start)))
  stage_name=""
}
print_timings() {
  local i
  if [[ -n "$stage_name" ]]; then  # the stage that was running when the run stopped
    stage_names+=("$stage_name (failed)")
    stage_seconds+=($((SECONDS - stage_start)))
  fi
  echo "== stage timings (minutes)"
  for i in "${!stage_names[@]}"; do
    awk -v n="${stage_names[$i]}" -v s="${stage_seconds[$i]}" \
      'BEGIN { printf "  %-22s %6.1f\n", n, s / 60 }'
  done
}
services_started=0
on_exit() {
  local rc=$?
  if ((services_started)); then
    kms_services_stop || true
  fi
  print_timings
  exit $rc
}
trap on_exit EXIT

stage_begin install
"$root/tools/install-deps.sh" --test
# jose, the JWT library outside this project that verifies kmsd's tokens (e2e).
npm ci --silent --no-audit --no-fund --prefix "$root/tests/e2e/jwt" >/dev/null
# node-vault, a Vault client outside this project, for the Vault door's e2e test.
npm ci --silent --no-audit --no-fund --prefix "$root/tests/e2e/vault" >/dev/null
stage_end

stage_begin build
"$root/tools/build.sh" -DKMS_BUILD_TESTS=ON
stage_end

# Compile-time lock checks: the whole tree with clang, thread-safety errors fatal.
stage_begin "clang build"
CC=clang CXX=clang++ KMS_BUILD_DIR="$clang_build" "$root/tools/build.sh" \
  -DKMS_BUILD_TESTS=ON -DKMS_THREAD_SAFETY_ANALYSIS=ON
stage_end

stage_begin services
# shellcheck source=tools/test-services.sh
source "$root/tools/test-services.sh"
services_started=1
kms_services_start
stage_end

stage_begin ctest
export KMS_BIN_DIR="$build"
ctest --test-dir "$build" --output-on-failure -j"${KMS_TEST_JOBS:-2}" --timeout 600 "$@"
stage_end
