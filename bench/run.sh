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

for tool in wrk curl; do
  if ! command -v "$tool" >/dev/null; then
    echo "bench: $tool is not installed (./scripts/deps.sh bench)" >&2
    exit 1
  fi
done
if [ ! -x "$BIN" ]; then
  echo "bench: $BIN is not an executable" >&2
  exit 1
fi

TMP=$(mktemp -d /tmp/trellis-bench.XXXXXX)
AUTH_PID=""
NGINX_PID=""
cleanup() {
  for pid in $AUTH_PID $NGINX_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nothing listens on: bind port 0, read what the kernel chose, let go.
free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# Waits until URL answers 200 (at most ~20 s).
wait_ok() {
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

rss_kb() {
  awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

json_field() { # json_field NAME < json
  sed -n "s/.*\"$1\" *: *\"\\([^\"]*\\)\".*/\\1/p"
}

# run_wrk NAME URL SCRIPT [script args...]: stores "rps p50 p99 bad errors".
declare -A RESULT
run_wrk() {
  local name=$1 url=$2 script=$3
  shift 3
  local out
  out=$(wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --timeout 5s -s "$LUA/$script" "$url" -- "$@" 2>&1) || {
    echo "bench: wrk failed for $name:" >&2
    echo "$out" >&2
    RESULT[$name]="0 0 0 0 0"
    return 0
  }
  local line
  line=$(grep '^BENCH ' <<<"$out" | tail -1)
  if [ -z "$line" ]; then
    echo "bench: no result from wrk for $name:" >&2
    echo "$out" >&2
    RESULT[$name]="0 0 0 0 0"
    return 0
  fi
  # shellcheck disable=SC2001
  RESULT[$name]=$(sed 's/.*rps=\([^ ]*\) p50_ms=\([^ ]*\) p99_ms=\([^ ]*\) bad_status=\([^ ]*\) socket_errors=\([^ ]*\).*/\1 \2 \3 \4 \5/' <<<"$line")
  echo "  $name: $line" >&2
}

# ------------------------------------------------------------------ trellis
PORT=$(free_port)
"$BIN" serve auth --port "$PORT" --data "$TMP/data" --workers "$WORKERS" --log-level "$LOG_LEVEL" \
  2>"$TMP/auth.log" &
AUTH_PID=$!
URL="http://127.0.0.1:$PORT"
if ! wait_ok "$URL/readyz"; then
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
  NPORT=$(free_port)
  mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
  access_log="access_log off;"
  if [ "$LOG_LEVEL" = "debug" ] || [ "$LOG_LEVEL" = "info" ]; then
    access_log="access_log $TMP/nginx/logs/access.log;"
  fi
  user_line=""
  if [ "$(id -u)" -eq 0 ]; then user_line="user root;"; fi
  cat >"$TMP/nginx/nginx.conf" <<EOF
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
    listen 127.0.0.1:$NPORT;
    location / { return 200; }
  }
}
EOF
  nginx -p "$TMP/nginx" -e "$TMP/nginx/logs/error.log" -c "$TMP/nginx/nginx.conf" &
  NGINX_PID=$!
  if wait_ok "http://127.0.0.1:$NPORT/"; then
    run_wrk nginx "http://127.0.0.1:$NPORT/" healthz.lua
  else
    echo "bench: nginx did not start:" >&2
    cat "$TMP/nginx/logs/error.log" >&2 || true
    NGINX_VERSION=""
  fi
else
  NGINX_VERSION=""
fi

# ------------------------------------------------------------------ report
field() { # field NAME INDEX(1-5)
  awk -v i="$2" '{print $i}' <<<"${RESULT[$1]:-0 0 0 0 0}"
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a + 0 >= b + 0)}'; }
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
