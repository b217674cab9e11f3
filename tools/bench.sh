#!/usr/bin/env bash
# The benchmark suite of issue 12 (docs/benchmarks.md): kmsd on the dev state (SoftHSM2
# token, dev PKI and policy) with audit and metrics on, as a user runs it, on SQLite and,
# with --pg, on PostgreSQL (tools/test-services.sh); build/bench/kms-bench drives it over
# mTLS. Prints markdown tables with the machine and the exact kms-bench command of every
# figure; the ratios come from alternating windows in one run (kms-bench --compare).
#
# Usage: tools/bench.sh [--quick] [--pg] [--tenants N] [--out FILE]
#   --quick      short windows (a check that the suite runs, not figures)
#   --pg         also run the PostgreSQL rows
#   --tenants N  the many-tenant rows' tenant count [100000]
#   --out FILE   also write the report to FILE
# Environment: KMS_BUILD_DIR (default build/); BENCH_SECONDS, BENCH_WINDOWS (5, 6). Benchmarks, not tests: nothing here
# asserts a time. On a machine shared with other work, say so beside every figure.
set -euo pipefail
# shellcheck source=tools/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"
quick=false pg=false tenants=100000 out=
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=true ;;
    --pg) pg=true ;;
    --tenants) tenants=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--quick] [--pg] [--tenants N] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
bench_init bench "${KMS_BUILD_DIR:-}"
root=$BENCH_ROOT bench=$BENCH_KMS_BENCH work=$BENCH_WORK
[[ -x $bench ]] || { echo "build first: $bench (tools/build.sh -DKMS_BUILD_TESTS=ON)" >&2; exit 2; }
if $quick; then secs=1 windows=2 warm=0.5; [[ $tenants -gt 2000 ]] && tenants=2000
else secs=${BENCH_SECONDS:-5} windows=${BENCH_WINDOWS:-6} warm=2; fi
report=$work/report.md
bench_dev_state

# start_kmsd NAME BACKEND [MAX_ENTRIES]: kmsd on the dev state with audit and metrics on
# (the Vault door on the HTTPS listener, as by default). Sets KMSD_PID and KMSCTL_JSON.
start_kmsd() {
  local name=$1 backend=$2 max_entries=${3:-500000} store
  store='{}'
  if [[ $backend == postgres ]]; then
    store=$(python3 -c 'import json,sys; print(json.dumps({"backend": "postgres", "postgres": {"conninfo": sys.argv[1], "password_file": sys.argv[2], "schema": sys.argv[3].replace("-", "_")}}))' \
      "$KMS_TEST_PG_CONNINFO" "$KMS_TEST_PG_PASSWORD_FILE" "bench_$name")
  fi
  bench_config "$name" "{\"store\": $store, \"dek_cache\": {\"max_entries\": $max_entries},
    \"metrics\": {\"enabled\": true}, \"audit\": {\"enabled\": true}}"
  bench_start_kmsd "$name"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

n=0
# runj TITLE ARGS...: one kms-bench run (JSON kept in WORK); its command and table go to
# the report.
runj() {
  local title=$1; shift
  n=$((n + 1))
  local args=(--config "$KMSCTL_JSON" --server-pid "$KMSD_PID" --seconds "$secs" --warmup "$warm" "$@")
  {
    echo "### $title"
    echo '```'
    echo "kms-bench ${args[*]}" | sed "s#$work#\$WORK#g"
  } >>"$report"
  "$bench" "${args[@]}" --format json >"$work/run$n.json"
  python3 - "$work/run$n.json" >>"$report" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
def row(w):
    cpu = w.get("server_cpu_us_per_request")
    return (f"{w['workload']:<18} {w['rps']:>10.0f} req/s  p50 {w['p50_us']:>7.0f} us  "
            f"p99 {w['p99_us']:>7.0f} us  p99.9 {w['p999_us']:>7.0f} us  errors {w['errors']}"
            + (f"  cpu {cpu:.1f} us/req" if cpu is not None else ""))
if "result" in r:
    print(row(r["result"]))
else:
    for w in r["windows"]:
        print(row(w["baseline"])); print(row(w["workload"]))
    q = r["ratio"]
    print(f"ratio {r['workload']}/{r['baseline']}: req/s {q['rps_mean']:.3f} "
          f"(min {q['rps_min']:.3f}, max {q['rps_max']:.3f}, stdev {q['rps_stdev']:.3f}); "
          f"p99 {q['p99_mean']:.2f} (min {q['p99_min']:.2f}, max {q['p99_max']:.2f})")
PY
  echo '```' >>"$report"
  tail -n +1 "$report" | tail -n 20 >&2
}

{
  echo "## Machine"
  echo '```'
  echo "date: $(date -u +%FT%TZ)   commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo ?)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') x $(nproc)   kernel: $(uname -r)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "openssl: $(openssl version)"
  openssl speed -seconds 2 ecdsap256 2>/dev/null | grep -E "^ *256 bits ecdsa" || true
  echo '```'
  echo
  echo "WORK is a temporary directory; kmsd runs with audit and metrics on, on the dev"
  echo "state. Every ratio is from alternating windows within one kms-bench run."
  echo
} >"$report"
cat "$report"

echo "## SQLite" >>"$report"
start_kmsd sqlite sqlite
echo "start-up to ready (empty store): ${KMSD_READY_SECONDS} s" >>"$report"
for inflight in 16 64; do
  runj "Encrypt vs null RPC, one cached tenant, N=$inflight" --workload encrypt --compare health \
    --inflight "$inflight" --connections 4 --windows "$windows"
  runj "Decrypt vs null RPC, one cached tenant, N=$inflight" --workload decrypt --compare health \
    --inflight "$inflight" --connections 4 --windows "$windows"
done
# The Vault door (HTTPS + mTLS, JSON, X-Vault-Token; one keep-alive connection per
# request in flight) against gRPC Encrypt/Decrypt on the same kmsd and tenant: what the
# door costs over gRPC.
for payload in 32 1024; do
  for inflight in 16 64; do
    runj "Vault door encrypt vs gRPC Encrypt, one cached tenant, N=$inflight, $payload B" \
      --workload vault-encrypt --compare encrypt --payload "$payload" --inflight "$inflight" \
      --connections 4 --windows "$windows"
  done
done
runj "Vault door decrypt vs gRPC Decrypt, one cached tenant, N=16, 32 B" --workload vault-decrypt \
  --compare decrypt --inflight 16 --connections 4 --windows "$windows"
runj "SignJwt vs null RPC (floor: null RPC + one P-256 signature, above)" --workload sign-jwt \
  --compare health --inflight 16 --connections 4 --windows "$windows"
runj "VerifyJwt vs null RPC" --workload verify-jwt --compare health --inflight 16 \
  --connections 4 --windows "$windows"
runj "EncryptBatch 1000 x 32 B (server CPU per item = cpu us/req / 1000)" --workload encrypt-batch \
  --batch 1000 --payload 32 --inflight 4 --connections 2 --tenants 1
runj "Mix (encrypt 50%, decrypt 40%, sign 5%, verify 5%), 16 tenants" --workload mix --tenants 16 \
  --inflight 16 --connections 4
rss0=$(rss_kib "$KMSD_PID")
runj "Encrypt, $tenants cached tenants (uniform) vs 1 tenant, N=16" --workload encrypt \
  --tenants "$tenants" --compare encrypt --baseline-tenants 1 --inflight 16 --connections 4 \
  --windows "$windows"
rss1=$(rss_kib "$KMSD_PID")
{
  echo "resident memory: ${rss0} KiB before the $tenants-tenant run, ${rss1} KiB after"
  echo "per cached DEK: $(( (rss1 - rss0) * 1024 / tenants )) bytes (RSS delta / tenants; includes the"
  echo "allocator's retained memory from set-up)"
} >>"$report"
bench_stop_kmsd "$KMSD_PID"
copy_db() { for f in "$1" "$1-wal" "$1-shm"; do [[ -e $f ]] && cp "$f" "${2}${f#"$1"}"; done; return 0; }
copy_db "$work/sqlite.db" "$work/sqlite-full.db"
start_kmsd sqlite-full sqlite
echo "start-up to ready with the $tenants tenants of that run in the store: ${KMSD_READY_SECONDS} s" >>"$report"
bench_stop_kmsd "$KMSD_PID"

# A working set twice the cache bound: about every other request misses (store read +
# HSM unwrap) and evicts; the tail is what the target bounds.
half=$((tenants / 2))
copy_db "$work/sqlite.db" "$work/sqlite-small.db"
start_kmsd sqlite-small sqlite "$half"
runj "Encrypt, working set $tenants tenants, cache bound $half" --workload encrypt \
  --tenants "$tenants" --no-create --inflight 16 --connections 4
bench_stop_kmsd "$KMSD_PID"

if $pg; then
  bench_services_start
  # tools/test-services.sh runs PostgreSQL with fsync=off (tests); a benchmark runs it as
  # a user does: restarted with fsync on.
  $KMS_TEST_PG_CTL -w -m fast -o "-c listen_addresses=127.0.0.1 -p $KMS_TEST_PG_PORT -k $KMS_SERVICES_DIR/pg/sock -c fsync=on" \
    restart >/dev/null
  echo "## PostgreSQL 15 (tools/test-services.sh, restarted with fsync=on)" >>"$report"
  start_kmsd postgres postgres
  echo "start-up to ready (empty store): ${KMSD_READY_SECONDS} s" >>"$report"
  runj "PostgreSQL: Encrypt vs null RPC, one cached tenant, N=16" --workload encrypt \
    --compare health --inflight 16 --connections 4 --windows "$windows"
  runj "PostgreSQL: Vault door encrypt vs gRPC Encrypt, one cached tenant, N=16, 32 B" \
    --workload vault-encrypt --compare encrypt --inflight 16 --connections 4 --windows "$windows"
  runj "PostgreSQL: Encrypt, $((tenants / 10)) cached tenants vs 1 tenant, N=16" \
    --workload encrypt --tenants $((tenants / 10)) --compare encrypt --baseline-tenants 1 \
    --inflight 16 --connections 4 --windows "$windows"
  bench_stop_kmsd "$KMSD_PID"
fi

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$report"
cat "$report"
[[ -z $out ]] || cp "$report" "$out"
