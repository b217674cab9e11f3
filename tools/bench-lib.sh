# shellcheck shell=bash disable=SC2034  # sets variables for the scripts that source it
# What the benchmark scripts share (tools/bench.sh, bench-audit.sh, bench-metrics.sh,
# bench-xks.sh): a work directory removed on exit, a dev state (SoftHSM2 token, dev PKI,
# policy) made by `kmsd --dev`, kmsd started from a config on that state and awaited
# until ready, and the cleanup that stops every kmsd started (and the test services,
# when bench_services_start started them). Sourced, not run:
#
#   source "$(dirname "$0")/bench-lib.sh"
#   bench_init NAME BUILD_DIR      # BENCH_ROOT, BENCH_BUILD, BENCH_WORK, BENCH_STATE; trap
#   bench_dev_state                # the dev state in $BENCH_STATE
#   bench_config NAME [JSON]       # $BENCH_WORK/NAME.json: kmsd on the dev state, SQLite
#                                  # $BENCH_WORK/NAME.db, JSON merged over it (objects
#                                  # key by key)
#   bench_start_kmsd NAME          # kmsd --config $BENCH_WORK/NAME.json, awaited; sets
#                                  # KMSD_PID, KMSD_GRPC, KMSD_HTTPS, KMSD_XKS,
#                                  # KMSD_READY_SECONDS and KMSCTL_JSON (a kmsctl.json
#                                  # for it, with "https" when the listener is on)
#   bench_stop_kmsd [PID]          # stops one kmsd (default: the last started)
#   bench_services_start           # PostgreSQL and Redis (tools/test-services.sh)
#   bench_on_off SECTION [ARGS]    # Encrypt with SECTION.enabled true vs false (two kmsd)
# The scripts print nothing of the work directory's secrets; it is private (mktemp -d).

# bench_init NAME BUILD_DIR
bench_init() {
  BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  BENCH_BUILD=${2:-$BENCH_ROOT/build}
  BENCH_KMSD=$BENCH_BUILD/src/exe/kmsd
  BENCH_KMS_BENCH=$BENCH_BUILD/bench/kms-bench
  [[ -x $BENCH_KMSD ]] || { echo "build first: $BENCH_KMSD" >&2; exit 2; }
  BENCH_WORK=$(mktemp -d "/tmp/kmsd-$1.XXXXXX")
  BENCH_STATE=$BENCH_WORK/state
  BENCH_PIDS=()
  BENCH_SERVICES=false
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local p
  for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${BENCH_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if $BENCH_SERVICES; then kms_services_stop >/dev/null 2>&1 || true; fi
  rm -rf "$BENCH_WORK"
}

# bench_wait_ready OUT_FILE PID: until OUT_FILE has kmsd's ready line (2 minutes at most).
bench_wait_ready() {
  local _
  for _ in $(seq 2400); do
    grep -q "kmsd ready" "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# The dev state: what `kmsd --dev` makes on its first start (then it is stopped).
bench_dev_state() {
  "$BENCH_KMSD" --dev --state-dir "$BENCH_STATE" --grpc-listen 127.0.0.1:0 --http-listen "" \
    >"$BENCH_WORK/setup.out" 2>"$BENCH_WORK/setup.log" &
  local setup=$!
  if ! bench_wait_ready "$BENCH_WORK/setup.out" "$setup"; then
    echo "kmsd --dev did not start:" >&2
    cat "$BENCH_WORK/setup.log" >&2
    kill "$setup" 2>/dev/null || true
    exit 1
  fi
  kill "$setup"
  wait "$setup" || true
}

# bench_config NAME [JSON]: kmsd's config on the dev state (SQLite in the work directory,
# gRPC and HTTPS on run-time ports), with JSON merged over it.
bench_config() {
  local extra=${2:-}
  [[ -n $extra ]] || extra='{}'
  python3 - "$BENCH_STATE" "$BENCH_WORK/$1.db" "$extra" >"$BENCH_WORK/$1.json" <<'PY'
import json, sys
state, db, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = {
  "node_id": "bench", "grpc": {"listen": "127.0.0.1:0"}, "http": {"listen": "127.0.0.1:0"},
  "tls": {"cert_file": f"{state}/pki/server.pem", "key_file": f"{state}/pki/server.key",
          "client_ca_file": f"{state}/pki/ca.pem"},
  "hsm": {"token_label": "kmsd-dev", "pin_file": f"{state}/secrets/hsm-user.pin",
          "softhsm2_conf": f"{state}/softhsm2.conf"},
  "store": {"backend": "sqlite", "sqlite": {"path": db}},
  "policy_file": f"{state}/policy.json"}
def merge(into, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v
merge(config, extra)
print(json.dumps(config, indent=2))
PY
}

# bench_start_kmsd NAME: kmsd on $BENCH_WORK/NAME.json, awaited until ready.
bench_start_kmsd() {
  local name=$1 t0 t1
  t0=$(date +%s.%N)
  "$BENCH_KMSD" --config "$BENCH_WORK/$name.json" >"$BENCH_WORK/$name.out" 2>"$BENCH_WORK/$name.log" &
  KMSD_PID=$!
  BENCH_PIDS+=("$KMSD_PID")
  if ! bench_wait_ready "$BENCH_WORK/$name.out" "$KMSD_PID"; then
    echo "kmsd $name did not start:" >&2
    cat "$BENCH_WORK/$name.log" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  KMSD_READY_SECONDS=$(python3 -c "print(f'{$t1-$t0:.2f}')")
  KMSD_GRPC=$(sed -n 's/.*kmsd ready: grpc=\([^ ]*\).*/\1/p' "$BENCH_WORK/$name.out")
  KMSD_HTTPS=$(sed -n 's/.*kmsd ready:.* https=\([^ ]*\).*/\1/p' "$BENCH_WORK/$name.out")
  KMSD_XKS=$(sed -n 's/.*kmsd ready:.* xks=\([^ ]*\).*/\1/p' "$BENCH_WORK/$name.out")
  KMSCTL_JSON=$BENCH_WORK/$name.kmsctl.json
  python3 - "$BENCH_STATE" "$KMSD_GRPC" "$KMSD_HTTPS" >"$KMSCTL_JSON" <<'PY'
import json, sys
state, grpc, https = sys.argv[1:4]
j = {"addr": grpc, "ca": f"{state}/pki/ca.pem", "cert": f"{state}/pki/clients/operator.pem",
     "key": f"{state}/pki/clients/operator.key"}
if https:
    j["https"] = https
print(json.dumps(j))
PY
}

# bench_stop_kmsd [PID]
bench_stop_kmsd() {
  local pid=${1:-$KMSD_PID}
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# PostgreSQL and Redis on 127.0.0.1 (tools/test-services.sh), stopped on exit; exports
# KMS_TEST_PG_CONNINFO and KMS_TEST_PG_PASSWORD_FILE.
bench_services_start() {
  # shellcheck source=tools/test-services.sh
  source "$BENCH_ROOT/tools/test-services.sh"
  BENCH_SERVICES=true
  kms_services_start >/dev/null
}

# bench_on_off SECTION [kms-bench options]: two kmsd on the dev state, each with its own
# SQLite file, one with SECTION.enabled false (the baseline) and one with true; kms-bench
# sends Encrypt to both in alternating windows and prints the ratio on / off with its
# spread. The kmsd with it on is $BENCH_WORK/SECTION-on.
bench_on_off() {
  local section=$1 off_pid off_json
  shift
  [[ -x $BENCH_KMS_BENCH ]] || { echo "build first: $BENCH_KMS_BENCH (tools/build.sh -DKMS_BUILD_TESTS=ON)" >&2; exit 2; }
  bench_dev_state
  bench_config "$section-off" "{\"http\": {\"listen\": \"\"}, \"$section\": {\"enabled\": false}}"
  bench_start_kmsd "$section-off"
  off_pid=$KMSD_PID off_json=$KMSCTL_JSON
  bench_config "$section-on" "{\"http\": {\"listen\": \"\"}, \"$section\": {\"enabled\": true}}"
  bench_start_kmsd "$section-on"
  "$BENCH_KMS_BENCH" --config "$KMSCTL_JSON" --server-pid "$KMSD_PID" --workload encrypt \
    --compare encrypt --baseline-config "$off_json" --baseline-server-pid "$off_pid" \
    --baseline-label "$section-off" --label "$section-on" "$@"
}
