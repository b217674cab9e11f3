#!/usr/bin/env bash
# kms-bench smoke test (ctest kms_bench_smoke): a dev-mode kmsd on a run-time port, then
# kms-bench for ~1 s per workload through the kmsctl.json that dev mode writes (the Vault
# door's workloads through its HTTPS listener, from the ready line). Passes when every
# workload reports requests > 0 and errors == 0. Times nothing.
# Usage: kms_bench_smoke.sh KMSD KMS_BENCH
set -euo pipefail
kmsd=$1 bench=$2
work=$(mktemp -d /tmp/kms-bench-smoke.XXXXXX)
pid=
cleanup() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$kmsd" --dev --state-dir "$work/state" --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  >"$work/kmsd.out" 2>"$work/kmsd.log" &
pid=$!
for _ in $(seq 600); do
  grep -q "kmsd ready" "$work/kmsd.out" && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/kmsd.log" >&2; exit 1; }
  sleep 0.2
done
grep -q "kmsd ready" "$work/kmsd.out" || { echo "kmsd not ready" >&2; cat "$work/kmsd.log" >&2; exit 1; }
https=$(sed -n 's/.*kmsd ready:.* https=\([^ ]*\).*/\1/p' "$work/kmsd.out")
[[ -n $https ]] || { echo "no HTTPS listener in: $(cat "$work/kmsd.out")" >&2; exit 1; }
check() {  # JSON_FILE: requests > 0 in every measured window, errors == 0
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
wins = [r["result"]] if "result" in r else [w[k] for w in r["windows"] for k in ("baseline", "workload")]
bad = [w for w in wins if w["requests"] <= 0 or w["errors"] != 0]
print(r["workload"], [(w["workload"], w["requests"], w["errors"]) for w in wins])
sys.exit(1 if bad or r["errors"] != 0 else 0)
PY
}
common=(--config "$work/state/kmsctl.json" --https "$https" --seconds 1 --warmup 0.2 --inflight 4 --connections 2
        --server-pid "$pid" --format json)
for w in health encrypt decrypt sign-jwt verify-jwt mix vault-encrypt vault-decrypt; do
  "$bench" "${common[@]}" --workload "$w" --tenants 3 >"$work/$w.json"
  check "$work/$w.json"
done
"$bench" "${common[@]}" --workload encrypt-batch --batch 10 --tenants 2 >"$work/batch.json"
check "$work/batch.json"
"$bench" "${common[@]}" --workload encrypt --compare health --windows 2 --seconds 0.5 >"$work/cmp.json"
check "$work/cmp.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["ratio"]["rps_mean"] > 0' "$work/cmp.json"
# The Vault door against gRPC in one run (the figure docs/benchmarks.md reports), 1 KiB.
"$bench" "${common[@]}" --workload vault-encrypt --compare encrypt --payload 1024 --windows 2 \
  --seconds 0.5 >"$work/vault-cmp.json"
check "$work/vault-cmp.json"
# The table output prints the ratio line.
"$bench" --config "$work/state/kmsctl.json" --seconds 0.5 --warmup 0.1 --workload encrypt \
  --compare health --windows 1 | grep -q "encrypt / health: req/s ratio"
echo "kms-bench smoke: ok"
