# shellcheck shell=bash
# What the load scripts (bench/run.sh, bench/gateway.sh) share: checking
# the tools and the binary, a temp dir and the processes started into it
# that are stopped and removed on any exit (also Ctrl-C), reading back the
# port a `--port 0` server was given, a free fixed port for the programs
# that need one (nginx), waiting for a server, and running wrk with
# bench/lua's BENCH line.
#
# Sourced, not run. The sourcing script sets BIN and LUA first, appends the
# pid of everything it starts in the background to PIDS, and reads wrk's
# figures back with `field`.

PIDS=()
declare -A RESULT

# bench_require BIN TOOL...: exits 1 (with the reason) when a tool is not
# installed or BIN is not an executable.
bench_require() {
  local bin=$1 tool
  shift
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null; then
      echo "bench: $tool is not installed (./scripts/deps.sh bench)" >&2
      exit 1
    fi
  done
  if [ ! -x "$bin" ]; then
    echo "bench: $bin is not an executable" >&2
    exit 1
  fi
}

# Stops every pid in PIDS (TERM, up to 10 s each, then KILL) and removes TMP.
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}

# bench_tmpdir NAME: a fresh /tmp/NAME.XXXXXX in TMP, cleaned up on exit.
bench_tmpdir() {
  TMP=$(mktemp -d "/tmp/$1.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# listening_port LOG PID: prints the port of the first "listening" line a
# Trellis service started with --port 0 writes to LOG (its stderr), waiting
# up to ~20 s; returns 1 when PID exits first or the line never comes.
listening_port() {
  local log=$1 pid=$2 port
  for _ in $(seq 1 200); do
    port=$(grep -m1 '"msg":"listening"' "$log" 2>/dev/null | sed -n 's/.*"port":\([0-9][0-9]*\).*/\1/p')
    if [ -n "$port" ]; then
      echo "$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# A port nothing listens on, for a program that cannot take port 0: below
# the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), so
# neither a `listen(0)` nor an outgoing connection is given it meanwhile.
# Free when checked is no promise: the caller retries on "Address already in
# use".
free_port() {
  node -e '
const fs = require("fs"), net = require("net");
let low = 32768;
try { low = Number(fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || low; } catch {}
const top = Math.min(low - 1, 32000);
if (top - 10000 < 1000) { console.error("free_port: the ephemeral range starts at " + low); process.exit(1); }
const tryPort = (n) => {
  const port = 10000 + Math.floor(Math.random() * (top - 10000));
  const s = net.createServer();
  s.once("error", () => (n > 0 ? tryPort(n - 1) : process.exit(1)));
  s.listen({ port, host: "127.0.0.1", exclusive: true }, () => s.close(() => console.log(port)));
};
tryPort(100);'
}

# Waits until URL answers 200 (at most ~20 s); extra curl arguments follow.
wait_ok() {
  local url=$1
  shift
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "$@" "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# nginx_start DIR PATH [curl args...]: starts nginx with DIR/nginx.conf.in,
# its "@PORT@" replaced by a free_port, and waits until PATH answers 200
# there; when the bind failed ("Address already in use" in
# DIR/logs/error.log) it tries another port, up to 5 times. Sets NGINX_PORT
# and appends nginx's pid to PIDS; returns 1 when nginx never answered.
nginx_start() {
  local dir=$1 path=$2 pid
  shift 2
  for _ in 1 2 3 4 5; do
    NGINX_PORT=$(free_port) || return 1
    sed "s/@PORT@/$NGINX_PORT/g" "$dir/nginx.conf.in" >"$dir/nginx.conf"
    : >"$dir/logs/error.log"
    nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" &
    pid=$!
    PIDS+=("$pid")
    if wait_ok "http://127.0.0.1:$NGINX_PORT$path" "$@" &&
      ! grep -q "Address already in use" "$dir/logs/error.log"; then
      return 0
    fi
    grep -q "Address already in use" "$dir/logs/error.log" || return 1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  return 1
}

json_field() { # json_field NAME < json
  sed -n "s/.*\"$1\" *: *\"\\([^\"]*\\)\".*/\\1/p"
}

# bench_wrk LABEL NAME CONNECTIONS URL SCRIPT [script args...]: runs wrk
# with THREADS and DURATION and stores "rps p50 p99 bad errors" as
# RESULT[NAME] (zeros when wrk failed); LABEL names the run on stderr.
bench_wrk() {
  local label=$1 name=$2 conns=$3 url=$4 script=$5
  shift 5
  local out line
  out=$(wrk -t "$THREADS" -c "$conns" -d "$DURATION" --timeout 5s -s "$LUA/$script" "$url" -- "$@" 2>&1) || {
    echo "bench: wrk failed for $name:" >&2
    echo "$out" >&2
    RESULT[$name]="0 0 0 0 0"
    return 0
  }
  line=$(grep '^BENCH ' <<<"$out" | tail -1)
  if [ -z "$line" ]; then
    echo "bench: no result from wrk for $name:" >&2
    echo "$out" >&2
    RESULT[$name]="0 0 0 0 0"
    return 0
  fi
  # shellcheck disable=SC2001
  RESULT[$name]=$(sed 's/.*rps=\([^ ]*\) p50_ms=\([^ ]*\) p99_ms=\([^ ]*\) bad_status=\([^ ]*\) socket_errors=\([^ ]*\).*/\1 \2 \3 \4 \5/' <<<"$line")
  echo "  $label: $line" >&2
}

field() { # field NAME INDEX(1-5)
  awk -v i="$2" '{print $i}' <<<"${RESULT[$1]:-0 0 0 0 0}"
}

ge() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a + 0 >= b + 0)}'; }
