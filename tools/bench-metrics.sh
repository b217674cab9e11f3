#!/usr/bin/env bash
# Encrypt throughput with metrics on vs off, in one run: two kmsd on the same dev state
# (SoftHSM2 token, certificates), each with its own SQLite file, one with
# metrics.enabled=true and one with false; kms-bench drives both in alternating windows
# (--compare encrypt --baseline-config: metrics off is the baseline) and prints the
# ratio on ÷ off with its spread (docs/benchmarks.md).
# Usage: tools/bench-metrics.sh [BUILD_DIR] [-- kms-bench options, e.g. --inflight 8
#        --connections 8 --seconds 2 --windows 10]
set -euo pipefail
# shellcheck source=tools/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"
bench_init bench-metrics "${1:-}"
shift || true
[[ "${1:-}" == "--" ]] && shift
bench_on_off metrics "$@"
