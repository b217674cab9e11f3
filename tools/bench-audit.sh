#!/usr/bin/env bash
# Encrypt throughput with the audit log on vs off, in one run: two kmsd on the same dev
# state (SoftHSM2 token, certificates), each with its own SQLite file, one with
# audit.enabled=true and one with false; encrypt_load (bench/encrypt_load.cc) drives both
# in interleaved rounds and prints each one's rate (docs/benchmarks.md).
# Usage: tools/bench-audit.sh [BUILD_DIR] [-- encrypt_load options]
#   ENCRYPT_LOAD=path overrides BUILD_DIR/bench/encrypt_load.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shift || true
[[ "${1:-}" == "--" ]] && shift
load=${ENCRYPT_LOAD:-$build/bench/encrypt_load}
work=$(mktemp -d /tmp/kmsd-bench-audit.XXXXXX)
# start_kmsd runs in a command substitution (a subshell): pids go through a file.
cleanup() {
  local p
  for p in $(cat "$work/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  for p in $(cat "$work/pids" 2>/dev/null); do
    while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT

state=$work/state
"$build/src/exe/kmsd" --dev --state-dir "$state" --grpc-listen 127.0.0.1:0 --http-listen "" \
  >"$work/setup.out" 2>"$work/setup.log" &
setup=$!
for _ in $(seq 120); do grep -q "kmsd ready" "$work/setup.out" && break; sleep 0.5; done
kill "$setup"; wait "$setup" || true

start_kmsd() {  # NAME AUDIT_ENABLED -> prints host:port
  local name=$1 enabled=$2
  python3 - "$state" "$work/$name.db" "$enabled" >"$work/$name.json" <<'PY'
import json, sys
state, db, enabled = sys.argv[1], sys.argv[2], sys.argv[3] == "true"
print(json.dumps({
  "node_id": "bench", "grpc": {"listen": "127.0.0.1:0"}, "http": {"listen": ""},
  "tls": {"cert_file": f"{state}/pki/server.pem", "key_file": f"{state}/pki/server.key",
          "client_ca_file": f"{state}/pki/ca.pem"},
  "hsm": {"token_label": "kmsd-dev", "pin_file": f"{state}/secrets/hsm-user.pin",
          "softhsm2_conf": f"{state}/softhsm2.conf"},
  "store": {"backend": "sqlite", "sqlite": {"path": db}},
  "policy_file": f"{state}/policy.json",
  "tenants": {"auto_create": True},
  "audit": {"enabled": enabled}}))
PY
  "$build/src/exe/kmsd" --config "$work/$name.json" >"$work/$name.out" 2>"$work/$name.log" &
  echo $! >>"$work/pids"
  for _ in $(seq 240); do grep -q "kmsd ready" "$work/$name.out" && break; sleep 0.5; done
  sed -n 's/.*kmsd ready: grpc=\([^ ]*\).*/\1/p' "$work/$name.out"
}
on=$(start_kmsd audit-on true)
off=$(start_kmsd audit-off false)
[[ -n $on && -n $off ]] || { echo "kmsd did not start; logs in $work" >&2; trap - EXIT; exit 1; }
"$load" --ca "$state/pki/ca.pem" --cert "$state/pki/clients/operator.pem" \
  --key "$state/pki/clients/operator.key" "$@" "audit-off=$off" "audit-on=$on"
records=$(sqlite3 "$work/audit-on.db" "SELECT COUNT(*), COALESCE(SUM(calls), 0) FROM audit_log WHERE operation = 'Encrypt'")
echo "audit-on wrote ${records%%|*} Encrypt records covering ${records##*|} calls"
