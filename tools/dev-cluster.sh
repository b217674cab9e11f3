#!/usr/bin/env bash
# A kmsd cluster on one machine, for trying cluster mode out:
#   tools/dev-cluster.sh services     PostgreSQL + Redis on 127.0.0.1, private ports (background)
#   tools/dev-cluster.sh replica N    kmsd --dev replica N (1, 2, 3...): gRPC 127.0.0.1:945N,
#                                     HTTPS 127.0.0.1:946N; start replica 1 first
#   tools/dev-cluster.sh stop         stops PostgreSQL and Redis, removes their data
# Replicas share .state/cluster/state (SoftHSM2 token, dev CA, policy) and the database.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/.state/cluster
env_file=$dir/services.env

case "${1:-}" in
  services)
    "$root/tools/install-deps.sh" --test
    if [[ -f $env_file ]]; then echo "already running (tools/dev-cluster.sh stop first)"; exit 1; fi
    # shellcheck source=tools/test-services.sh
    source "$root/tools/test-services.sh"
    kms_services_start "$dir/services"
    kms_services_save "$env_file"
    echo "services up; now: tools/dev-cluster.sh replica 1 (then 2, 3 in other shells)"
    ;;
  replica)
    n=${2:?replica number, 1-9}
    [[ -f $env_file ]] || { echo "start the services first: tools/dev-cluster.sh services"; exit 1; }
    # shellcheck disable=SC1090
    source "$env_file"
    bin=${KMS_BUILD_DIR:-$root/build}/src/exe/kmsd
    [[ -x $bin ]] || { "$root/tools/install-deps.sh"; "$root/tools/build.sh"; }
    exec "$bin" --dev --state-dir "$dir/state" \
      --grpc-listen "127.0.0.1:945$n" --http-listen "127.0.0.1:946$n" \
      --postgres "$KMS_TEST_PG_CONNINFO" --postgres-password-file "$KMS_TEST_PG_PASSWORD_FILE" \
      --redis "$KMS_TEST_REDIS_ADDR"
    ;;
  stop)
    [[ -f $env_file ]] || exit 0
    # shellcheck disable=SC1090
    source "$env_file"
    # shellcheck source=tools/test-services.sh
    source "$root/tools/test-services.sh"
    kms_services_stop || true
    rm -f "$env_file"
    ;;
  *)
    sed -n '2,8p' "$0"
    exit 2
    ;;
esac
