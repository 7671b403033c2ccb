#!/usr/bin/env bash
# A throwaway PostgreSQL server for lowrank's Postgres storage tests.
#
#   scripts/pg-test-server.sh start   # start it (idempotent) and print its URL on stdout
#   scripts/pg-test-server.sh url     # print the URL
#   scripts/pg-test-server.sh status  # exit 0 if it is running
#   scripts/pg-test-server.sh stop    # stop it and delete its data
#
# Typical use:  export LOWRANK_TEST_POSTGRES=$(scripts/pg-test-server.sh start) && cargo test
#
# It listens on 127.0.0.1 only (port LOWRANK_PG_PORT, default 54329) with trust authentication, keeps its
# data in LOWRANK_PG_DIR (default /tmp/lowrank-pg-PORT), and has a database named lowrank_test. As root it
# runs the server as the `postgres` user, since PostgreSQL refuses to run as root. If PostgreSQL is not
# installed it installs Debian's `postgresql` package (as root). Progress goes to stderr.
set -euo pipefail

PORT="${LOWRANK_PG_PORT:-54329}"
DATA="${LOWRANK_PG_DIR:-/tmp/lowrank-pg-$PORT}"
DB=lowrank_test
URL="postgres://postgres@127.0.0.1:$PORT/$DB"

say() { echo "pg-test-server: $*" >&2; }
die() { say "$*"; exit 1; }

# The newest installed server's bin folder (Debian: /usr/lib/postgresql/VERSION/bin), or empty.
find_bin() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$d" && -x "$d/initdb" ]]; then
        echo "$d"
    elif command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then
        pg_config --bindir
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}

BIN="$(find_bin)"

ensure_installed() {
    [[ -n "$BIN" ]] && return 0
    [[ "$(id -u)" == 0 ]] || die "PostgreSQL is not installed; install it (Debian: sudo apt-get install -y postgresql) and rerun"
    say "PostgreSQL is not installed: installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    BIN="$(find_bin)"
    [[ -n "$BIN" ]] || die "installed postgresql but found no initdb under /usr/lib/postgresql/*/bin"
}

# Runs a server binary as the user that owns the data: `postgres` when we are root, else ourselves.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

is_running() {
    [[ -n "$BIN" && -f "$DATA/PG_VERSION" ]] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

psql_q() {
    as_owner "$BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -tA -c "$1"
}

start() {
    ensure_installed
    if [[ "$(id -u)" == 0 ]] && ! id postgres >/dev/null 2>&1; then
        say "creating the postgres system user"
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi
    if ! is_running; then
        if [[ ! -f "$DATA/PG_VERSION" ]]; then
            say "initialising a cluster in $DATA"
            rm -rf "$DATA"
            mkdir -p "$DATA"
            [[ "$(id -u)" == 0 ]] && chown postgres: "$DATA"
            chmod 700 "$DATA"
            as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C >"$DATA.initdb.log" 2>&1 \
                || { cat "$DATA.initdb.log" >&2; die "initdb failed (log above)"; }
            rm -f "$DATA.initdb.log"
        fi
        say "starting PostgreSQL ($BIN) on 127.0.0.1:$PORT"
        # The socket lives in the data folder, so no system folder (/var/run/postgresql) is needed.
        as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
            -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100" start >&2 \
            || { tail -n 30 "$DATA/server.log" >&2 || true; die "the server did not start (log above); is port $PORT taken? set LOWRANK_PG_PORT"; }
    fi
    local i
    for i in $(seq 1 60); do
        if as_owner "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then break; fi
        [[ "$i" == 60 ]] && die "the server on port $PORT is not accepting connections after 30 s; see $DATA/server.log"
        sleep 0.5
    done
    if [[ "$(psql_q "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]]; then
        say "creating database $DB"
        psql_q "CREATE DATABASE $DB"
    fi
    echo "$URL"
}

stop() {
    if is_running; then
        say "stopping the server in $DATA"
        as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2
    fi
    rm -rf "$DATA"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    url) echo "$URL" ;;
    status) is_running ;;
    *) die "usage: $0 start|stop|url|status" ;;
esac
