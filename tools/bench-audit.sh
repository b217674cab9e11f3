#!/usr/bin/env bash
# Encrypt throughput with the audit log on vs off, in one run: two kmsd on the same dev
# state (SoftHSM2 token, certificates), each with its own SQLite file, one with
# audit.enabled=true and one with false; kms-bench drives both in alternating windows
# (--compare encrypt --baseline-config: audit off is the baseline) and prints each
# window and the ratio on ÷ off with its spread (docs/benchmarks.md).
# Usage: tools/bench-audit.sh [BUILD_DIR] [-- kms-bench options, e.g. --inflight 8
#        --connections 8 --seconds 5 --windows 6]
set -euo pipefail
# shellcheck source=tools/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"
bench_init bench-audit "${1:-}"
shift || true
[[ "${1:-}" == "--" ]] && shift
bench_on_off audit "$@"
records=$(sqlite3 "$BENCH_WORK/audit-on.db" "SELECT COUNT(*), COALESCE(SUM(calls), 0) FROM audit_log WHERE operation = 'Encrypt'")
echo "audit-on wrote ${records%%|*} Encrypt records covering ${records##*|} calls"
