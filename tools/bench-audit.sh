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
bench_dev_state
bench_config audit-off '{"http": {"listen": ""}, "audit": {"enabled": false}}'
bench_start_kmsd audit-off
off_pid=$KMSD_PID off_json=$KMSCTL_JSON
bench_config audit-on '{"http": {"listen": ""}, "audit": {"enabled": true}}'
bench_start_kmsd audit-on
"$BENCH_KMS_BENCH" --config "$KMSCTL_JSON" --server-pid "$KMSD_PID" --workload encrypt \
  --compare encrypt --baseline-config "$off_json" --baseline-server-pid "$off_pid" \
  --baseline-label audit-off --label audit-on "$@"
records=$(sqlite3 "$BENCH_WORK/audit-on.db" "SELECT COUNT(*), COALESCE(SUM(calls), 0) FROM audit_log WHERE operation = 'Encrypt'")
echo "audit-on wrote ${records%%|*} Encrypt records covering ${records##*|} calls"
