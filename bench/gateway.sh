#!/usr/bin/env bash
# The gateway's proxy figures against nginx, side by side in one run.
#
#   bench/gateway.sh path/to/trellis
#
# One kit upstream (`trellis serve auth`), three ways to reach its
# GET /api/auth/me (a Bearer token the upstream verifies on every call):
#   direct   wrk -> auth
#   gateway  wrk -> trellis gateway -> auth, on a route with JWT verification
#            at the edge (auth: required) and a rate-limit policy keyed by
#            user with a limit far above what wrk can send (so every request
#            pays for the check and none is refused)
#   nginx    wrk -> nginx -> auth: proxy_pass to an upstream block with
#            keepalive connections, HTTP/1.1 to the upstream, no auth
# The gateway and nginx run the same number of workers (WORKERS).
#
# Saturation: each target for DURATION with CONNECTIONS connections; req/s,
# p50 and p99 of each, and gateway/nginx throughput.
#
# Added latency at half of saturation: Debian's wrk has no -R (constant
# rate; that is wrk2), so bench/lua/gateway_paced.lua makes each connection
# pause PACE_MS on average (uniform in 0..2*PACE_MS, so the connections do
# not fall into step) after every answer; with R = half the gateway's saturated
# req/s, R * (PACE_MS + 1) / 1000 connections offer about R req/s (the 1 ms
# stands for the answer itself). The direct and the gateway path are both
# driven that way and the report gives each one's p99, their difference, and
# the rate each actually reached.
#
# It reports; it never fails because a target was missed. It exits non-zero
# only when it cannot measure (wrk, curl or nginx missing, a server that does
# not start). Everything it starts is stopped and its temp dir removed on
# exit, also on Ctrl-C.
#
# Environment: DURATION (10s), CONNECTIONS (64), THREADS (2), WORKERS (2),
# LOG_LEVEL (info: the services' default; nginx then writes an access log
# too, so the comparison stays like for like), PACE_MS (10: the mean pause,
# long against an answer, so the direct and the gateway runs reach nearly the
# same rate).
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
PACE_MS=${PACE_MS:-10}
PASSWORD="bench password 0123456789"

# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
bench_require "$BIN" wrk curl nginx
bench_tmpdir trellis-gwbench

# run_wrk NAME CONNECTIONS URL SCRIPT [script args...]: stores "rps p50 p99 bad errors".
run_wrk() {
  bench_wrk "$1 (-c $2)" "$@"
}

# ------------------------------------------------------------------ upstream: trellis serve auth
"$BIN" serve auth --port 0 --admin-port 0 --data "$TMP/data" --workers "$WORKERS" --log-level "$LOG_LEVEL" \
  2>"$TMP/auth.log" &
PIDS+=($!)
AUTH_PORT=$(listening_port "$TMP/auth.log" "$!") || AUTH_PORT=0
AUTH="http://127.0.0.1:$AUTH_PORT"
if [ "$AUTH_PORT" = 0 ] || ! wait_ok "$AUTH/readyz"; then
  echo "bench: trellis serve auth did not become ready; its log:" >&2
  cat "$TMP/auth.log" >&2
  exit 1
fi
curl -fsS -o "$TMP/user.json" -H 'Content-Type: application/json' \
  -d "{\"email\":\"gwbench@example.test\",\"password\":\"$PASSWORD\"}" "$AUTH/api/auth/register" || {
  echo "bench: registering the bench user failed" >&2
  exit 1
}
TOKEN=$(json_field access_token <"$TMP/user.json")
if [ -z "$TOKEN" ]; then
  echo "bench: no access token in $(cat "$TMP/user.json")" >&2
  exit 1
fi

# ------------------------------------------------------------------ the gateway
# Same data dir as auth: the gateway verifies tokens with auth's secret.
cat >"$TMP/routes.json" <<EOF
{
  "upstreams": {
    "auth": { "instances": ["127.0.0.1:$AUTH_PORT"] }
  },
  "rate_limits": {
    "bench": { "rate": 1000000, "burst": 1000000, "key": "user" }
  },
  "routes": [
    { "path": "/api/auth/me", "methods": ["GET"], "upstream": "auth",
      "auth": "required", "rate_limit": "bench" }
  ]
}
EOF
"$BIN" serve gateway --port 0 --admin-port 0 --data "$TMP/data" --workers "$WORKERS" --log-level "$LOG_LEVEL" \
  --routes "$TMP/routes.json" 2>"$TMP/gateway.log" &
PIDS+=($!)
GW_PORT=$(listening_port "$TMP/gateway.log" "$!") || GW_PORT=0
GW="http://127.0.0.1:$GW_PORT"
if [ "$GW_PORT" = 0 ] || ! wait_ok "$GW/api/auth/me" -H "Authorization: Bearer $TOKEN"; then
  echo "bench: the gateway did not proxy GET /api/auth/me; its log:" >&2
  tail -50 "$TMP/gateway.log" >&2
  exit 1
fi

# ------------------------------------------------------------------ nginx
mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
access_log="access_log off;"
if [ "$LOG_LEVEL" = "debug" ] || [ "$LOG_LEVEL" = "info" ]; then
  access_log="access_log $TMP/nginx/logs/access.log;"
fi
user_line=""
if [ "$(id -u)" -eq 0 ]; then user_line="user root;"; fi
cat >"$TMP/nginx/nginx.conf.in" <<EOF
$user_line
worker_processes $WORKERS;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log;
events { worker_connections 4096; }
http {
  $access_log
  client_body_temp_path $TMP/nginx/tmp/body;
  proxy_temp_path $TMP/nginx/tmp/proxy;
  fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
  uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
  scgi_temp_path $TMP/nginx/tmp/scgi;
  keepalive_requests 1000000;
  upstream auth {
    server 127.0.0.1:$AUTH_PORT;
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:@PORT@;
    location / {
      proxy_pass http://auth;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
if ! nginx_start "$TMP/nginx" /api/auth/me -H "Authorization: Bearer $TOKEN"; then
  echo "bench: nginx did not proxy GET /api/auth/me:" >&2
  cat "$TMP/nginx/logs/error.log" >&2 || true
  exit 1
fi
NGINX="http://127.0.0.1:$NGINX_PORT"

# ------------------------------------------------------------------ saturation
echo "bench: saturation, wrk -t $THREADS -c $CONNECTIONS -d $DURATION, GET /api/auth/me" >&2
run_wrk direct "$CONNECTIONS" "$AUTH" me.lua "$TOKEN"
run_wrk gateway "$CONNECTIONS" "$GW" me.lua "$TOKEN"
run_wrk nginx "$CONNECTIONS" "$NGINX" me.lua "$TOKEN"

# ------------------------------------------------------------------ half of saturation
GW_RPS=$(field gateway 1)
HALF=$(awk -v r="$GW_RPS" 'BEGIN {printf "%d", r / 2}')
# Each connection's cycle is the pause plus one answer (~1 ms when not saturated).
PACED_CONNS=$(awk -v r="$HALF" -v p="$PACE_MS" 'BEGIN {c = int(r * (p + 1) / 1000 + 0.5); if (c < 1) c = 1; if (c > 2000) c = 2000; print c}')
if [ "$PACED_CONNS" -lt "$THREADS" ]; then PACED_CONNS=$THREADS; fi
echo "bench: half of saturation: ~$HALF req/s = $PACED_CONNS connections pausing ~$PACE_MS ms" >&2
run_wrk direct_half "$PACED_CONNS" "$AUTH" gateway_paced.lua "$TOKEN" "$PACE_MS"
run_wrk gateway_half "$PACED_CONNS" "$GW" gateway_paced.lua "$TOKEN" "$PACE_MS"

# ------------------------------------------------------------------ report
lt() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a + 0 < b + 0)}'; }

printf '\nTrellis gateway benchmark: GET /api/auth/me on trellis serve auth; wrk %s threads, %s per run;\n' \
  "$THREADS" "$DURATION"
printf 'gateway and nginx %s workers each, log level %s; %s; %s cores shared by wrk, proxy and upstream\n' "$WORKERS" "$LOG_LEVEL" "$(nginx -v 2>&1 | sed 's/.*version: //')" "$(nproc)"
printf '%-34s %6s %11s %9s %9s %8s\n' "run" "conns" "req/s" "p50 ms" "p99 ms" "errors"
row() { # row LABEL NAME CONNS
  local errs
  errs=$(($(field "$2" 4) + $(field "$2" 5)))
  printf '%-34s %6s %11s %9s %9s %8s\n' "$1" "$3" "$(field "$2" 1)" "$(field "$2" 2)" "$(field "$2" 3)" "$errs"
}
row "direct (no proxy)" direct "$CONNECTIONS"
row "gateway (JWT + rate limit)" gateway "$CONNECTIONS"
row "nginx (proxy_pass keepalive)" nginx "$CONNECTIONS"
row "direct at ~half saturation" direct_half "$PACED_CONNS"
row "gateway at ~half saturation" gateway_half "$PACED_CONNS"

NX_RPS=$(field nginx 1)
ratio=$(awk -v a="$GW_RPS" -v b="$NX_RPS" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "0"}')
added=$(awk -v g="$(field gateway_half 3)" -v d="$(field direct_half 3)" 'BEGIN {printf "%.3f", g - d}')
printf '\n%-34s %-14s %-12s %s\n' "figure" "value" "target" "result"
if ge "$ratio" 1.0; then v=met; else v=MISSED; fi
printf '%-34s %-14s %-12s %s\n' "gateway / nginx throughput" "${ratio}x" ">= 1.0x" "$v"
if lt "$added" 1.0; then v=met; else v=MISSED; fi
printf '%-34s %-14s %-12s %s\n' "p99 added at ~half saturation" "${added} ms" "< 1 ms" "$v"
printf '%-34s %s\n' "~half rate offered / reached" "$HALF / direct $(field direct_half 1), gateway $(field gateway_half 1) req/s"
if [ "$(field gateway 4)" != "0" ] || [ "$(field gateway 5)" != "0" ]; then
  echo "note: the gateway run had errors (non-2xx or socket errors); the last lines of its log:" >&2
  grep -v '"msg":"request"' "$TMP/gateway.log" | tail -20 >&2 || true
fi
