#!/usr/bin/env bash
# One command for a fresh Debian 12 machine: install what is missing, build, and run
# kmsd in dev mode (SQLite + a SoftHSM2 token + generated certificates) in .state/dev.
# Extra arguments go to kmsd, e.g. --grpc-listen 127.0.0.1:9443.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/install-deps.sh"
KMS_BUILD_TESTS=OFF "$root/tools/build.sh" -DKMS_BUILD_TESTS=OFF
state=${KMS_STATE_DIR:-$root/.state/dev}
exec "${KMS_BUILD_DIR:-$root/build}/src/exe/kmsd" --dev --state-dir "$state" "$@"
