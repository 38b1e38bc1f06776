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
"$BIN" serve auth --port 0 --data "$TMP/data" --workers "$WORKERS" --log-level "$LOG_LEVEL" \
  2>"$TMP/auth.log" &
AUTH_PID=$!
PIDS+=("$AUTH_PID")
PORT=$(listening_port "$TMP/auth.log" "$AUTH_PID") || PORT=0
URL="http://127.0.0.1:$PORT"
if [ "$PORT" = 0 ] || ! wait_ok "$URL/readyz"; then
  echo "bench: trellis serve auth did not become ready; its log:" >&2
  cat "$TMP/auth.log" >&2
  exit 1
fi
echo "bench: trellis auth pid $AUTH_PID on $URL" >&2
sleep 1
RSS_IDLE_KB=$(rss_kb "$AUTH_PID")

# Accounts: the login run rotates over them (see bench/lua/login.lua) and
# each registration opens the session whose refresh token starts one chain of
# the refresh run (see bench/lua/refresh.lua).
echo "bench: registering $SESSIONS users" >&2
seq 1 "$SESSIONS" | xargs -P 8 -I{} curl -fsS -o "$TMP/user.{}.json" \
  -H 'Content-Type: application/json' \
  -d "{\"email\":\"bench{}@example.test\",\"password\":\"$PASSWORD\"}" "$URL/api/auth/register" || {
  echo "bench: registering the bench users failed" >&2
  exit 1
}
for i in $(seq 1 "$SESSIONS"); do echo "bench$i@example.test"; done >"$TMP/users.txt"
# (printf: the answers end without a newline, which sed keeps.)
for f in "$TMP"/user.*.json; do printf '%s\n' "$(json_field refresh_token <"$f")"; done >"$TMP/refresh_tokens.txt"
ACCESS=$(json_field access_token <"$TMP/user.1.json")
if [ -z "$ACCESS" ] || [ "$(wc -l <"$TMP/refresh_tokens.txt")" -ne "$SESSIONS" ]; then
  echo "bench: registration failed: $(cat "$TMP/user.1.json")" >&2
  exit 1
fi

echo "bench: wrk -t $THREADS -c $CONNECTIONS -d $DURATION" >&2
run_wrk healthz "$URL/healthz" healthz.lua
run_wrk me "$URL" me.lua "$ACCESS"
run_wrk refresh "$URL" refresh.lua "$TMP/refresh_tokens.txt" "$THREADS"
run_wrk login "$URL" login.lua "$TMP/users.txt" "$PASSWORD" "$THREADS"

sleep 2
RSS_AFTER_KB=$(rss_kb "$AUTH_PID")

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
idle_mb=$(awk -v k="$RSS_IDLE_KB" 'BEGIN {printf "%.1f", k / 1024}')
after_mb=$(awk -v k="$RSS_AFTER_KB" 'BEGIN {printf "%.1f", k / 1024}')
idle_ok=$(awk -v k="$RSS_IDLE_KB" 'BEGIN {print (k < 10240) ? "met" : "MISSED"}')
printf '%-28s %12s %9s %9s %8s   %-22s %s\n' "RSS idle after start" "${idle_mb} MB" "" "" "" "< 10 MB" "$idle_ok"
printf '%-28s %12s %9s %9s %8s   %-22s %s\n' "RSS after the load" "${after_mb} MB" "" "" "" "(reported)" "-"
if [ "$(field refresh 4)" != "0" ]; then
  echo "note: refresh errors include rotations lost to non-200 answers; each shrinks the token pool." >&2
fi
