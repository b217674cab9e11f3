#!/usr/bin/env bash
# XKS Encrypt latency at AWS's default external key store rate (1,800 requests/s): kmsd
# on a dev state (SoftHSM2 token, certificates) in config-file mode with the XKS door on,
# one XKS key (a tenant), and build/bench/xks_load sending SigV4-signed Encrypt requests
# at a fixed rate over keep-alive TLS connections (docs/benchmarks.md).
# Usage: tools/bench-xks.sh [BUILD_DIR] [-- xks_load options, e.g. --rate 1800 --seconds 30]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shift || true
[[ "${1:-}" == "--" ]] && shift
work=$(mktemp -d /tmp/kmsd-bench-xks.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

state=$work/state
"$build/src/exe/kmsd" --dev --state-dir "$state" --grpc-listen 127.0.0.1:0 --http-listen "" \
  >"$work/setup.out" 2>"$work/setup.log" &
setup=$!
for _ in $(seq 120); do grep -q "kmsd ready" "$work/setup.out" && break; sleep 0.5; done
kill "$setup"; wait "$setup" || true

access_key=AKIAXKSBENCHKEY234567
openssl rand -base64 32 >"$work/xks-secret"
chmod 600 "$work/xks-secret"
/usr/bin/python3 - "$state" "$work" "$access_key" <<'PY'
import json, sys
state, work, key = sys.argv[1:4]
policy = json.load(open(f"{state}/policy.json"))
policy["identities"].append({"identity": "aws-kms-xks", "operations": ["encrypt", "decrypt", "get_tenant"],
                             "tenants": ["xks-*"]})
json.dump(policy, open(f"{work}/policy.json", "w"))
json.dump({
  "node_id": "bench", "grpc": {"listen": "127.0.0.1:0"}, "http": {"listen": ""},
  "tls": {"cert_file": f"{state}/pki/server.pem", "key_file": f"{state}/pki/server.key",
          "client_ca_file": f"{state}/pki/ca.pem"},
  "hsm": {"token_label": "kmsd-dev", "pin_file": f"{state}/secrets/hsm-user.pin",
          "softhsm2_conf": f"{state}/softhsm2.conf"},
  "store": {"backend": "sqlite", "sqlite": {"path": f"{work}/bench.db"}},
  "policy_file": f"{work}/policy.json",
  "log_level": "warn",
  "xks": {"listen": "127.0.0.1:0", "region": "us-east-1",
          "tls": {"cert_file": f"{state}/pki/server.pem", "key_file": f"{state}/pki/server.key"},
          "credentials": [{"access_key_id": key, "secret_access_key_file": f"{work}/xks-secret"}]}},
  open(f"{work}/kmsd.json", "w"))
PY
"$build/src/exe/kmsd" --config "$work/kmsd.json" >"$work/kmsd.out" 2>"$work/kmsd.log" &
pids+=($!)
for _ in $(seq 240); do grep -q "kmsd ready" "$work/kmsd.out" && break; sleep 0.5; done
grpc=$(sed -n 's/.*kmsd ready: grpc=\([^ ]*\).*/\1/p' "$work/kmsd.out")
xks=$(sed -n 's/.* xks=[^ ]*:\([0-9]*\).*/\1/p' "$work/kmsd.out")
[[ -n $grpc && -n $xks ]] || { echo "kmsd did not start; logs in $work" >&2; trap - EXIT; exit 1; }
"$build/src/cli/kmsctl" --addr "$grpc" --ca "$state/pki/ca.pem" --cert "$state/pki/clients/operator.pem" \
  --key "$state/pki/clients/operator.key" tenant create xks-bench >/dev/null
"$build/bench/xks_load" --port "$xks" --ca "$state/pki/ca.pem" --access-key-id "$access_key" \
  --secret-file "$work/xks-secret" --key xks-bench "$@"
