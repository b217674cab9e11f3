#!/usr/bin/env bash
# One command for a fresh Debian 12 machine: install what is missing, build, and run
# every test (unit, integration against SoftHSM2/SQLite/PostgreSQL/Redis, end to end
# against kmsd processes over mTLS). Ends with ctest's summary.
#
# Services the tests need are started here, on 127.0.0.1 with ports chosen now, in a
# temp dir, and stopped on exit (also when tests fail): see tools/test-services.sh.
# Extra arguments go to ctest (e.g. -L unit, -R Dek).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KMS_BUILD_DIR:-$root/build}

"$root/tools/install-deps.sh" --test
"$root/tools/build.sh" -DKMS_BUILD_TESTS=ON
# jose, the JWT library outside this project that verifies kmsd's tokens (e2e).
npm ci --silent --no-audit --no-fund --prefix "$root/tests/e2e/jwt" >/dev/null

# shellcheck source=tools/test-services.sh
source "$root/tools/test-services.sh"
kms_services_start
trap kms_services_stop EXIT

export KMS_BIN_DIR="$build"
ctest --test-dir "$build" --output-on-failure -j"${KMS_TEST_JOBS:-2}" --timeout 600 "$@"
