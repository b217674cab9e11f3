#!/usr/bin/env bash
# One command for a fresh Debian 12 machine: install what is missing, build, and run
# every test (unit, integration against SoftHSM2/SQLite/PostgreSQL/Redis, end to end
# against kmsd processes over mTLS). Ends with ctest's summary and the minutes each stage
# took.
#
# Stages: install, build (gcc, $KMS_BUILD_DIR, default build/), clang build (one clang
# tree, $KMS_CLANG_BUILD_DIR, default build-clang/: -Wthread-safety -Werror=thread-safety,
# AddressSanitizer + UndefinedBehaviorSanitizer, and the libFuzzer executables), tsan
# build ($KMS_TSAN_BUILD_DIR, default build-tsan/: ThreadSanitizer, only the targets of
# the concurrent tests), services, ctest (every test against the gcc tree), asan ctest
# (unit and integration tests from the clang tree), tsan ctest (the concurrent tests:
# caches, session pool, scheduler, coordination), fuzz (every libFuzzer target for
# $KMS_FUZZ_RUNS (5000) runs from its checked-in corpus). Any failing stage fails the run;
# a sanitizer report fails its test. The stages after ctest run only when clang is there.
# Suppressions for Debian's uninstrumented libraries: tools/sanitizers/.
#
# Services the tests need are started here, on 127.0.0.1 with ports chosen now, in a
# temp dir, and stopped on exit (also when tests fail): see tools/test-services.sh.
# Extra arguments go to ctest (e.g. -L unit, -R Dek).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KMS_BUILD_DIR:-$root/build}
clang_build=${KMS_CLANG_BUILD_DIR:-$root/build-clang}
tsan_build=${KMS_TSAN_BUILD_DIR:-$root/build-tsan}
fuzz_runs=${KMS_FUZZ_RUNS:-5000}
have_clang=0
if command -v clang++ >/dev/null; then have_clang=1; fi
supp=$root/tools/sanitizers
# Sanitizer reports fail the test that produced them (exit code, abort on the first).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp"
tsan_options="halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp"
# The concurrent tests TSan runs (ctest -R against the TSan tree): DekCache, KeyManager's
# concurrent paths, the scheduler, the HSM session pool and concurrent HSM use, the local
# and the Redis rate limiters, the invalidation bus, the in-flight budget, the backend
# executor (pools, deadlines, circuits).
tsan_targets=(keys_test key_manager_test sched_test sched_key_jobs_test coord_test
  coord_integration_test hsm_contract_fake_test hsm_integration_test server_door_limits_test)
tsan_tests='DekCache|BackendExecutor|KeyManager|Scheduler|KeyJobs|LocalRateLimiter|RedisRateLimiter|RedisBus|RedisInvalidation|HsmContract.*Concurrent|SessionPool|InflightBudget'

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

if ((have_clang)); then
  # One clang tree: compile-time lock checks (thread-safety errors fatal), ASan+UBSan for
  # every unit and integration test, and the libFuzzer executables.
  stage_begin "clang build"
  CC=clang CXX=clang++ KMS_BUILD_DIR="$clang_build" "$root/tools/build.sh" \
    -DKMS_BUILD_TESTS=ON -DKMS_THREAD_SAFETY_ANALYSIS=ON -DKMS_SANITIZE=address,undefined \
    -DKMS_BUILD_FUZZERS=ON
  stage_end

  # ThreadSanitizer: a separate tree (it excludes ASan), only the concurrent tests.
  stage_begin "tsan build"
  CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=true CC=clang CXX=clang++ cmake -S "$root" \
    -B "$tsan_build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKMS_BUILD_TESTS=ON \
    -DKMS_SANITIZE=thread >/dev/null
  CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=true cmake --build "$tsan_build" \
    -j"${KMS_JOBS:-2}" --target "${tsan_targets[@]}"
  stage_end
else
  echo "clang++ not found: no lock analysis, sanitizer or fuzzer stages" >&2
fi

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

if ((have_clang)) && (($# == 0)); then
  # e2e stays on the gcc tree (time); unit and integration run again instrumented.
  stage_begin "asan ctest"
  # ASan intercepts mlock as a no-op, so the page-locking test runs on the gcc tree only.
  ctest --test-dir "$clang_build" --output-on-failure -j"${KMS_TEST_JOBS:-2}" --timeout 900 \
    -L 'unit|integration' -E 'PagesStayLockedUntilTheLastSecretOnThemIsFreed'
  stage_end

  stage_begin "tsan ctest"
  TSAN_OPTIONS=$tsan_options ctest --test-dir "$tsan_build" --output-on-failure \
    -j"${KMS_TEST_JOBS:-2}" --timeout 900 -R "$tsan_tests" -E '_NOT_BUILT'
  stage_end

  # Bounded libFuzzer runs from the checked-in corpus; new inputs go to a scratch dir,
  # crashes to $clang_build/fuzz-artifacts/ (a crash fails the stage).
  stage_begin fuzz
  mkdir -p "$clang_build/fuzz-artifacts"
  for corpus in "$root"/tests/fuzz/corpus/*/; do
    name=$(basename "$corpus")
    scratch=$(mktemp -d)
    "$clang_build/tests/fuzz/fuzz_$name" -runs="$fuzz_runs" -max_len=8192 -timeout=20 \
      -rss_limit_mb=2048 -artifact_prefix="$clang_build/fuzz-artifacts/$name-" \
      "$scratch" "$corpus" 2>"$clang_build/fuzz-artifacts/$name.log" ||
      { tail -40 "$clang_build/fuzz-artifacts/$name.log"; rm -rf "$scratch"; exit 1; }
    echo "  fuzz_$name: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' \
      "$clang_build/fuzz-artifacts/$name.log" | tail -1)"
    rm -rf "$scratch"
  done
  stage_end
fi
