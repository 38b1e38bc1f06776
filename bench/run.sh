#!/usr/bin/env bash
# Load figures for the auth service, printed beside their targets.
#
#   bench/run.sh path/to/trellis
#
# Starts `trellis serve auth` (2 workers) on a free loopback port with a
# throw-away data dir, registers a user, and drives it with wrk for DURATION
# each: GET /healthz, GET /api/auth/me (Bearer), POST /api/auth/refresh
# (every request a valid rotation, see bench/lua/refresh.lua) and POST
# /api/auth/login (argon2id bound). Reads the service's RSS from
# /proc/<pid>/status when idle after start and again after the load. When
# nginx is installed it also measures nginx (2 workers, `return 200`) with
# the same wrk settings, for the healthz ratio.
#
# It reports; it never fails because a target was missed. It exits non-zero
# only when it cannot measure (missing wrk, service does not start).
#
# Then the me / refresh / login runs again with auth's database on a
# throwaway PostgreSQL cluster (scripts/pg-cluster.sh; PG=0 skips it,
# DB_POOL sets --db-pool, default 4), reported beside the SQLite figures.
#
# Environment: DURATION (10s), CONNECTIONS (64), THREADS (2), WORKERS (2),
# LOG_LEVEL (info: the service's default; nginx then writes an access log
# too, so the comparison stays like for like), SESSIONS (refresh-token pool,
# default 2 x CONNECTIONS; also the number of accounts).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 path/to/trellis" >&2
  exit 2
fi
BIN=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
LUA="$HERE/lua"
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
LOG_LEVEL=${LOG_LEVEL:-info}
SESSIONS=${SESSIONS:-$((CONNECTIONS * 2))}
PASSWORD="bench password 0123456789"

# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
bench_require "$BIN" wrk curl
bench_tmpdir trellis-bench

rss_kb() {
  awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# run_wrk NAME URL SCRIPT [script args...]: stores "rps p50 p99 bad errors".
run_wrk() {
  local name=$1
  shift
  bench_wrk "$name" "$name" "$CONNECTIONS" "$@"
}

# ------------------------------------------------------------------ trellis
# start_auth LOG ARGS...: starts auth on a port the kernel picks (read back
# from its "listening" line), sets AUTH_PID and URL;
# fails when it does not become ready.
start_auth() {
  local log=$1
  shift
  local port
  "$BIN" serve auth --port 0 --admin-port 0 --workers "$WORKERS" --log-level "$LOG_LEVEL" "$@" \
    2>"$log" &
  AUTH_PID=$!
  PIDS+=("$AUTH_PID")
  port=$(listening_port "$log" "$AUTH_PID") || return 1
  URL="http://127.0.0.1:$port"
  wait_ok "$URL/readyz"
}

# register_users PREFIX: registers $SESSIONS accounts on $URL and leaves
# $TMP/PREFIXusers.txt, $TMP/PREFIXrefresh_tokens.txt and ACCESS. The login
# run rotates over the accounts (see bench/lua/login.lua) and each
# registration opens the session whose refresh token starts one chain of the
# refresh run (see bench/lua/refresh.lua).
register_users() {
  local prefix=$1 f
  echo "bench: registering $SESSIONS users" >&2
  seq 1 "$SESSIONS" | xargs -P 8 -I{} curl -fsS -o "$TMP/${prefix}user.{}.json" \
    -H 'Content-Type: application/json' \
    -d "{\"email\":\"bench{}@example.test\",\"password\":\"$PASSWORD\"}" "$URL/api/auth/register" ||
    return 1
  for i in $(seq 1 "$SESSIONS"); do echo "bench$i@example.test"; done >"$TMP/${prefix}users.txt"
  # (printf: the answers end without a newline, which sed keeps.)
  for f in "$TMP/${prefix}"user.*.json; do printf '%s\n' "$(json_field refresh_token <"$f")"; done \
    >"$TMP/${prefix}refresh_tokens.txt"
  ACCESS=$(json_field access_token <"$TMP/${prefix}user.1.json")
  [ -n "$ACCESS" ] && [ "$(wc -l <"$TMP/${prefix}refresh_tokens.txt")" -eq "$SESSIONS" ]
}

# auth_runs PREFIX: the me / refresh / login runs, results named PREFIXme...
auth_runs() {
  local prefix=$1
  run_wrk "${prefix}me" "$URL" me.lua "$ACCESS"
  run_wrk "${prefix}refresh" "$URL" refresh.lua "$TMP/${prefix}refresh_tokens.txt" "$THREADS"
  run_wrk "${prefix}login" "$URL" login.lua "$TMP/${prefix}users.txt" "$PASSWORD" "$THREADS"
}

if ! start_auth "$TMP/auth.log" --data "$TMP/data"; then
  echo "bench: trellis serve auth did not become ready; its log:" >&2
  cat "$TMP/auth.log" >&2
  exit 1
fi
echo "bench: trellis auth pid $AUTH_PID on $URL" >&2
sleep 1
RSS_IDLE_KB=$(rss_kb "$AUTH_PID")
if ! register_users ""; then
  echo "bench: registering the bench users failed: $(cat "$TMP/user.1.json" 2>/dev/null)" >&2
  exit 1
fi

echo "bench: wrk -t $THREADS -c $CONNECTIONS -d $DURATION" >&2
run_wrk healthz "$URL/healthz" healthz.lua
auth_runs ""

sleep 2
RSS_AFTER_KB=$(rss_kb "$AUTH_PID")
kill -TERM "$AUTH_PID" 2>/dev/null || true
wait "$AUTH_PID" 2>/dev/null || true

# ------------------------------------------------------------------ trellis on PostgreSQL
# The same runs with auth's database on a throwaway PostgreSQL cluster
# (scripts/pg-cluster.sh, loopback, fsync off) and its --db-pool. PG=0 skips.
PG_STATUS=""
PG_DIR=""
stop_pg() {
  if [ -n "$PG_DIR" ]; then "$HERE/../scripts/pg-cluster.sh" stop "$PG_DIR/cluster" >/dev/null 2>&1 || true; fi
  if [ -n "$PG_DIR" ]; then rm -rf "$PG_DIR"; fi
  cleanup
}
if [ "${PG:-1}" = "0" ]; then
  PG_STATUS="skipped (PG=0)"
elif ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  PG_STATUS="skipped (PostgreSQL not installed: scripts/deps.sh)"
else
  PG_DIR=$(mktemp -d /tmp/trellis-bench-pg.XXXXXX)
  chmod 755 "$PG_DIR" # the cluster runs as the postgres user when we are root
  trap stop_pg EXIT
  if ! PG_URL=$("$HERE/../scripts/pg-cluster.sh" start "$PG_DIR/cluster"); then
    PG_STATUS="not measured: the cluster did not start"
  elif ! start_auth "$TMP/auth-pg.log" --data "$TMP/data-pg" --db "${PG_URL}bench_auth" \
    --db-pool "${DB_POOL:-4}"; then
    PG_STATUS="not measured: auth on PostgreSQL did not become ready"
    tail -20 "$TMP/auth-pg.log" >&2
  elif ! register_users "pg_"; then
    PG_STATUS="not measured: registration failed on PostgreSQL (auth's handlers need tr_store_run)"
    tail -5 "$TMP/auth-pg.log" >&2
  else
    echo "bench: trellis auth on PostgreSQL, pid $AUTH_PID on $URL, pool ${DB_POOL:-4}" >&2
    auth_runs "pg_"
  fi
fi

# ------------------------------------------------------------------ nginx
NGINX_VERSION=""
if command -v nginx >/dev/null && NGINX_VERSION=$(nginx -v 2>&1); then
  mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
  access_log="access_log off;"
  if [ "$LOG_LEVEL" = "debug" ] || [ "$LOG_LEVEL" = "info" ]; then
    access_log="access_log $TMP/nginx/logs/access.log;"
  fi
  user_line=""
  if [ "$(id -u)" -eq 0 ]; then user_line="user root;"; fi
  cat >"$TMP/nginx/nginx.conf.in" <<EOF
$user_line
worker_processes 2;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log;
events { worker_connections 4096; }
http {
  $access_log
  client_body_temp_path $TMP/nginx/tmp/body;
  proxy_temp_path $TMP/nginx/tmp/proxy;
  fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:@PORT@;
    location / { return 200; }
  }
}
EOF
  if nginx_start "$TMP/nginx" /; then
    run_wrk nginx "http://127.0.0.1:$NGINX_PORT/" healthz.lua
  else
    echo "bench: nginx did not start:" >&2
    cat "$TMP/nginx/logs/error.log" >&2 || true
    NGINX_VERSION=""
  fi
else
  NGINX_VERSION=""
fi

# ------------------------------------------------------------------ report
verdict() { if ge "$1" "$2"; then echo "met"; else echo "MISSED"; fi; }

printf '\nTrellis auth benchmark: wrk %s threads, %s connections, %s per run; auth %s workers, log level %s\n' \
  "$THREADS" "$CONNECTIONS" "$DURATION" "$WORKERS" "$LOG_LEVEL"
printf '%-28s %12s %9s %9s %8s   %-22s %s\n' "run" "req/s" "p50 ms" "p99 ms" "errors" "target" "result"
row() { # row LABEL NAME TARGET_TEXT VERDICT
  local errs
  errs=$(($(field "$2" 4) + $(field "$2" 5)))
  printf '%-28s %12s %9s %9s %8s   %-22s %s\n' "$1" "$(field "$2" 1)" "$(field "$2" 2)" "$(field "$2" 3)" \
    "$errs" "$3" "$4"
}

hz=$(field healthz 1)
if [ -n "$NGINX_VERSION" ]; then
  nx=$(field nginx 1)
  ratio=$(awk -v a="$hz" -v b="$nx" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "0"}')
  row "GET /healthz" healthz ">= 1.0x nginx" "$(verdict "$ratio" 1.0) (${ratio}x)"
  row "nginx return 200" nginx "(reference)" "${NGINX_VERSION#nginx version: }"
else
  row "GET /healthz" healthz ">= 1.0x nginx" "not compared (nginx not installed)"
fi
row "GET /api/auth/me" me ">= 50000 req/s" "$(verdict "$(field me 1)" 50000)"
row "POST /api/auth/refresh" refresh ">= 5000 req/s" "$(verdict "$(field refresh 1)" 5000)"
row "POST /api/auth/login" login "(argon2id bound)" "-"
if [ -z "$PG_STATUS" ]; then
  row "PG GET /api/auth/me" pg_me "(PostgreSQL)" "-"
  row "PG POST /api/auth/refresh" pg_refresh "(PostgreSQL)" "-"
  row "PG POST /api/auth/login" pg_login "(PostgreSQL)" "-"
else
  printf '%-28s %s\n' "PostgreSQL runs" "$PG_STATUS"
fi
idle_mb=$(awk -v k="$RSS_IDLE_KB" 'BEGIN {printf "%.1f", k / 1024}')
after_mb=$(awk -v k="$RSS_AFTER_KB" 'BEGIN {printf "%.1f", k / 1024}')
idle_ok=$(awk -v k="$RSS_IDLE_KB" 'BEGIN {print (k < 10240) ? "met" : "MISSED"}')
printf '%-28s %12s %9s %9s %8s   %-22s %s\n' "RSS idle after start" "${idle_mb} MB" "" "" "" "< 10 MB" "$idle_ok"
printf '%-28s %12s %9s %9s %8s   %-22s %s\n' "RSS after the load" "${after_mb} MB" "" "" "" "(reported)" "-"
if [ "$(field refresh 4)" != "0" ]; then
  echo "note: refresh errors include rotations lost to non-200 answers; each shrinks the token pool." >&2
fi
