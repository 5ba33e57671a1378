#!/usr/bin/env bash
# Start a throw-away PostgreSQL cluster on 127.0.0.1 for the store tests and print its URL.
#
#   export MCPFORGE_TEST_POSTGRES_URL="$(.ci/postgres.sh)"
#   .ci/postgres.sh stop
#
# Installs the Debian `postgresql` package with apt-get when no server binaries are found.
# The cluster lives in $MCPFORGE_PG_DIR (default: $TMPDIR/mcpforge-pg) and listens on
# 127.0.0.1:$MCPFORGE_PG_PORT only (default: the first free port from 55432, remembered in
# $MCPFORGE_PG_DIR/port). Idempotent: a running cluster is reused.
# Only the URL goes to stdout; progress goes to stderr.
set -euo pipefail

PG_DIR="${MCPFORGE_PG_DIR:-${TMPDIR:-/tmp}/mcpforge-pg}"
DB_USER="mcpforge"
DB_PASS="mcpforge"
DB_NAME="mcpforge_test"

log() { echo "postgres.sh: $*" >&2; }

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
  done
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"; return 0
  fi
  return 1
}

as_owner() {
  # PostgreSQL refuses to run as root: use the `postgres` system user then.
  if [[ "$(id -u)" == "0" ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

BINDIR="$(find_bindir || true)"
if [[ -z "$BINDIR" ]]; then
  log "installing postgresql from the Debian packages"
  SUDO=""
  [[ "$(id -u)" == "0" ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq postgresql >&2
  BINDIR="$(find_bindir)"
fi

if [[ "${1:-}" == "stop" ]]; then
  as_owner "$BINDIR/pg_ctl" -D "$PG_DIR/data" -m fast stop >&2 || true
  exit 0
fi

mkdir -p "$PG_DIR"
if [[ "$(id -u)" == "0" ]]; then chown postgres: "$PG_DIR"; fi

if [[ ! -f "$PG_DIR/data/PG_VERSION" ]]; then
  log "initialising a cluster in $PG_DIR/data"
  as_owner bash -c "umask 077; printf '%s\n' postgres > '$PG_DIR/pw'"
  as_owner "$BINDIR/initdb" -D "$PG_DIR/data" -U postgres --pwfile="$PG_DIR/pw" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >&2
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running=0
as_owner "$BINDIR/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1 && running=1
if [[ -n "${MCPFORGE_PG_PORT:-}" ]]; then
  PG_PORT="$MCPFORGE_PG_PORT"
elif [[ -f "$PG_DIR/port" ]] && { [[ "$running" == 1 ]] || ! port_busy "$(cat "$PG_DIR/port")"; }; then
  PG_PORT="$(cat "$PG_DIR/port")"
else
  PG_PORT=55432
  while port_busy "$PG_PORT"; do PG_PORT=$((PG_PORT + 1)); done
fi
as_owner bash -c "echo $PG_PORT > '$PG_DIR/port'"

if [[ "$running" == 0 ]]; then
  log "starting on 127.0.0.1:$PG_PORT"
  as_owner "$BINDIR/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR" start >&2
fi

psql_admin() {
  as_owner "$BINDIR/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"
}

if [[ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname='$DB_USER'")" != "1" ]]; then
  psql_admin -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASS'" >&2
fi
if [[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname='$DB_NAME'")" != "1" ]]; then
  psql_admin -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >&2
fi

echo "postgresql://$DB_USER:$DB_PASS@127.0.0.1:$PG_PORT/$DB_NAME"
