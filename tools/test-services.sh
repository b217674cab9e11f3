# Sourced by tools/test.sh: starts and stops the services integration tests use.
# Everything binds to 127.0.0.1 (or a unix socket) on ports picked at run time.
# Exports for the tests:
#   KMS_TEST_PG_CONNINFO      libpq connection string of a fresh database (password auth)
#   KMS_TEST_PG_PASSWORD_FILE file holding that password (mode 0600)
#   KMS_TEST_PG_CTL           "runuser -u postgres -- pg_ctl -D <dir>" to stop/start it
#   KMS_TEST_REDIS_ADDR       host:port of a private Redis; KMS_TEST_REDIS_PID its pid

kms_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# kms_services_start [DIR]: DIR (created) or a new temp dir holds the services' data.
kms_services_start() {
  if [[ -n "${1:-}" ]]; then
    KMS_SERVICES_DIR=$1
    mkdir -p "$KMS_SERVICES_DIR"
  else
    KMS_SERVICES_DIR=$(mktemp -d /tmp/kmsd-services.XXXXXX)
  fi
  chmod 755 "$KMS_SERVICES_DIR"
  local pgbin=/usr/lib/postgresql/15/bin
  if [[ -x $pgbin/initdb ]]; then
    # Everything the server writes lives in a directory the postgres user owns.
    local pgroot=$KMS_SERVICES_DIR/pg port pw
    local pgdata=$pgroot/data
    mkdir -p "$pgdata" "$pgroot/sock"
    chown -R postgres:postgres "$pgroot"
    pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    printf '%s' "$pw" > "$KMS_SERVICES_DIR/pg.pw"
    chmod 600 "$KMS_SERVICES_DIR/pg.pw"
    cp "$KMS_SERVICES_DIR/pg.pw" "$KMS_SERVICES_DIR/pg.pw.init"
    chown postgres "$KMS_SERVICES_DIR/pg.pw.init"
    runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -U kmsd --auth=scram-sha-256 \
      --pwfile="$KMS_SERVICES_DIR/pg.pw.init" >"$KMS_SERVICES_DIR/initdb.log" 2>&1
    rm -f "$KMS_SERVICES_DIR/pg.pw.init"
    port=$(kms_free_port)
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -l "$pgroot/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $pgroot/sock -c fsync=off" start >/dev/null
    export KMS_TEST_PG_CONNINFO="host=127.0.0.1 port=$port dbname=postgres user=kmsd"
    export KMS_TEST_PG_PASSWORD_FILE=$KMS_SERVICES_DIR/pg.pw
    export KMS_TEST_PG_CTL="runuser -u postgres -- $pgbin/pg_ctl -D $pgdata"
    export KMS_TEST_PG_PORT=$port
    echo "test services: PostgreSQL on 127.0.0.1:$port"
  fi
  if command -v redis-server >/dev/null; then
    local rport
    rport=$(kms_free_port)
    redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly no \
      --daemonize yes --pidfile "$KMS_SERVICES_DIR/redis.pid" --logfile "$KMS_SERVICES_DIR/redis.log"
    for _ in $(seq 50); do [[ -s $KMS_SERVICES_DIR/redis.pid ]] && break; sleep 0.1; done
    export KMS_TEST_REDIS_ADDR=127.0.0.1:$rport
    echo "test services: Redis on 127.0.0.1:$rport"
  fi
}

kms_services_stop() {
  local rc=$?
  [[ -n "${KMS_SERVICES_DIR:-}" ]] || return $rc
  if [[ -n "${KMS_TEST_PG_CTL:-}" ]]; then
    $KMS_TEST_PG_CTL -m immediate stop >/dev/null 2>&1 || true
  fi
  if [[ -s $KMS_SERVICES_DIR/redis.pid ]]; then
    kill "$(cat "$KMS_SERVICES_DIR/redis.pid")" 2>/dev/null || true
  fi
  rm -rf "$KMS_SERVICES_DIR"
  return $rc
}

# Writes the variables above to FILE, for a later shell to source.
kms_services_save() {
  {
    printf 'export KMS_SERVICES_DIR=%q\n' "$KMS_SERVICES_DIR"
    printf 'export KMS_TEST_PG_CONNINFO=%q\n' "$KMS_TEST_PG_CONNINFO"
    printf 'export KMS_TEST_PG_PASSWORD_FILE=%q\n' "$KMS_TEST_PG_PASSWORD_FILE"
    printf 'export KMS_TEST_PG_CTL=%q\n' "$KMS_TEST_PG_CTL"
    printf 'export KMS_TEST_REDIS_ADDR=%q\n' "$KMS_TEST_REDIS_ADDR"
  } > "$1"
}
