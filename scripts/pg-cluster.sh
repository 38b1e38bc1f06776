#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks.
#
#   pg-cluster.sh start DIR      creates DIR (must not exist), initdb's a
#                                cluster in it, starts it and prints its URL
#                                (postgres://postgres@127.0.0.1:PORT/)
#   pg-cluster.sh stop DIR       stops that cluster and removes DIR
#   pg-cluster.sh run CMD ARGS   start in a fresh temp dir, run CMD with
#                                TRELLIS_TEST_PG_URL exported, stop (also when
#                                CMD fails or is interrupted); exits with CMD's
#                                status
#
# Uses Debian's postgresql binaries (/usr/lib/postgresql/<version>/bin); never
# touches a system cluster. Run as root, the cluster belongs to the
# `postgres` system user (initdb refuses root). Trust authentication,
# listening on 127.0.0.1 only, on a random port below the ephemeral range
# (PostgreSQL cannot be told to listen on port 0), retried when taken; unix
# sockets live in DIR. fsync is off: the data is thrown away.
set -euo pipefail

die() {
  echo "pg-cluster: $*" >&2
  exit 1
}

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
  die "no PostgreSQL server found in /usr/lib/postgresql/*/bin (run scripts/deps.sh)"
}

# Runs a command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cmd_start() {
  local dir="$1" bindir port attempt
  [ -n "$dir" ] || die "usage: pg-cluster.sh start DIR"
  [ ! -e "$dir" ] || die "$dir already exists"
  bindir="$(find_bindir)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if [ "$(id -u)" -eq 0 ]; then
    getent passwd postgres >/dev/null || die "no postgres system user (install postgresql)"
    chown postgres: "$dir"
  fi
  chmod 700 "$dir"
  as_owner "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale \
    >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    die "initdb failed"
  }
  # Loopback only, trust only there.
  cat >"$dir/hba.conf" <<'EOF'
local all all trust
host  all all 127.0.0.1/32 trust
EOF
  [ "$(id -u)" -ne 0 ] || chown postgres: "$dir/hba.conf"
  for attempt in $(seq 1 20); do
    port=$((10000 + RANDOM % 22000))
    if as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-c port=$port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir \
          -c hba_file=$dir/hba.conf -c fsync=off -c synchronous_commit=off \
          -c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB" \
      start >/dev/null 2>&1; then
      echo "$port" >"$dir/port"
      echo "postgres://postgres@127.0.0.1:$port/"
      return 0
    fi
    # Taken port (or another start failure): try another port.
    if ! grep -q "could not bind\|Address already in use" "$dir/server.log" 2>/dev/null; then
      cat "$dir/server.log" >&2 || true
      die "cannot start the cluster"
    fi
    : >"$dir/server.log"
  done
  die "no free port found after 20 attempts"
}

cmd_stop() {
  local dir="$1" bindir
  [ -n "$dir" ] || die "usage: pg-cluster.sh stop DIR"
  [ -d "$dir/data" ] || die "$dir holds no cluster"
  bindir="$(find_bindir)"
  as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

cmd_run() {
  [ $# -gt 0 ] || die "usage: pg-cluster.sh run CMD [ARGS...]"
  local url rc
  # Globals: the EXIT trap runs after this function's locals are gone.
  RUN_BASE="$(mktemp -d "${TMPDIR:-/tmp}/trellis-pg.XXXXXX")"
  chmod 755 "$RUN_BASE"
  RUN_DIR="$RUN_BASE/cluster"
  trap 'if [ -d "$RUN_DIR/data" ]; then cmd_stop "$RUN_DIR" || true; fi; rm -rf "$RUN_BASE"' EXIT
  trap 'exit 130' INT TERM
  url="$(cmd_start "$RUN_DIR")"
  echo "pg-cluster: test cluster at $url" >&2
  set +e
  TRELLIS_TEST_PG_URL="$url" "$@"
  rc=$?
  set -e
  return $rc
}

case "${1:-}" in
start) cmd_start "${2:-}" ;;
stop) cmd_stop "${2:-}" ;;
run)
  shift
  cmd_run "$@"
  ;;
*) die "usage: pg-cluster.sh start DIR | stop DIR | run CMD [ARGS...]" ;;
esac
