#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1 for an MLflow tracking server's backend store.
#
#   scripts/engines/postgres.sh up   STATE_DIR [PORT]  # initdb + start; writes STATE_DIR/env
#   scripts/engines/postgres.sh down STATE_DIR         # fast shutdown of its postmaster, by PID
#
# STATE_DIR/env exports HARNESS_POSTGRES_URI, e.g. postgresql+psycopg2://mlflow@127.0.0.1:5433/mlflow
# (`harness server --backend-store-uri "$HARNESS_POSTGRES_URI"`). Authentication is `trust` on
# loopback only: a test cluster, not a production one (see docs/teams.md). initdb refuses to
# run as root, so the cluster belongs to the `postgres` user (Debian's postgresql package).
set -euo pipefail

action=${1:?usage: postgres.sh up|down STATE_DIR [PORT]}
state=${2:?usage: postgres.sh up|down STATE_DIR [PORT]}
port=${3:-5433}
bin=${POSTGRES_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

down() {
    local file="$state/data/postmaster.pid" pid
    [ -s "$file" ] || return 0
    pid=$(head -n 1 "$file")
    kill -INT "$pid" 2>/dev/null || return 0  # SIGINT: PostgreSQL's fast shutdown
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    kill -QUIT "$pid" 2>/dev/null || true
}

up() {
    [ -x "$bin/initdb" ] || { echo "postgres.sh: no initdb under ${bin:-/usr/lib/postgresql/*/bin}" >&2; exit 1; }
    if [ -s "$state/data/postmaster.pid" ]; then
        echo "postgres.sh: $state already holds a running cluster; run 'postgres.sh down $state' first" >&2
        exit 1
    fi
    mkdir -p "$state"; chmod 0755 "$state"
    state=$(cd "$state" && pwd)
    install -d -m 0700 "$state/data" "$state/run"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$state/data" "$state/run"
    as_postgres "$bin/initdb" -D "$state/data" -U postgres --auth=trust -E UTF8 >"$state/initdb.log"
    as_postgres "$bin/pg_ctl" -D "$state/data" -l "$state/data/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $state/run -c max_connections=200 -c fsync=off" \
        >/dev/null
    as_postgres "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -q -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE mlflow LOGIN" -c "CREATE DATABASE mlflow OWNER mlflow"
    printf 'export HARNESS_POSTGRES_URI=%q\n' \
        "postgresql+psycopg2://mlflow@127.0.0.1:$port/mlflow" >"$state/env"
    echo "postgres.sh: PostgreSQL up on 127.0.0.1:$port (source $state/env)"
}

case $action in
    up) up ;;
    down) down ;;
    *) echo "usage: postgres.sh up|down STATE_DIR [PORT]" >&2; exit 2 ;;
esac
