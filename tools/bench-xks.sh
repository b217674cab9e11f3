#!/usr/bin/env bash
# XKS Encrypt latency at AWS's default external key store rate (1,800 requests/s): kmsd
# on a dev state (SoftHSM2 token, certificates) in config-file mode with the XKS door on,
# one XKS key (a tenant), and build/bench/xks_load sending SigV4-signed Encrypt requests
# at a fixed rate over keep-alive TLS connections (docs/benchmarks.md).
# Usage: tools/bench-xks.sh [BUILD_DIR] [-- xks_load options, e.g. --rate 1800 --seconds 30]
set -euo pipefail
# shellcheck source=tools/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"
bench_init bench-xks "${1:-}"
shift || true
[[ "${1:-}" == "--" ]] && shift
bench_dev_state
work=$BENCH_WORK state=$BENCH_STATE

access_key=AKIAXKSBENCHKEY234567
openssl rand -base64 32 >"$work/xks-secret"
chmod 600 "$work/xks-secret"
python3 - "$state" "$work" <<'PY'
import json, sys
state, work = sys.argv[1:3]
policy = json.load(open(f"{state}/policy.json"))
policy["identities"].append({"identity": "aws-kms-xks", "operations": ["encrypt", "decrypt", "get_tenant"],
                             "tenants": ["xks-*"]})
json.dump(policy, open(f"{work}/policy.json", "w"))
PY
bench_config kmsd "$(python3 -c 'import json,sys; s,w,k=sys.argv[1:4]; print(json.dumps({
  "http": {"listen": ""}, "policy_file": f"{w}/policy.json", "log_level": "warn",
  "xks": {"listen": "127.0.0.1:0", "region": "us-east-1",
          "tls": {"cert_file": f"{s}/pki/server.pem", "key_file": f"{s}/pki/server.key"},
          "credentials": [{"access_key_id": k, "secret_access_key_file": f"{w}/xks-secret"}]}}))' \
  "$state" "$work" "$access_key")"
bench_start_kmsd kmsd
[[ -n $KMSD_XKS ]] || { echo "kmsd has no XKS listener:" >&2; cat "$work/kmsd.log" >&2; exit 1; }
"$BENCH_BUILD/src/cli/kmsctl" --config "$KMSCTL_JSON" tenant create xks-bench >/dev/null
"$BENCH_BUILD/bench/xks_load" --port "${KMSD_XKS##*:}" --ca "$state/pki/ca.pem" \
  --access-key-id "$access_key" --secret-file "$work/xks-secret" --key xks-bench "$@"
