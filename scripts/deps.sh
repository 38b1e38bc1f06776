#!/usr/bin/env bash
# Installs the Debian packages Trellis builds, tests and benchmarks with
# (prometheus is there for promtool, which checks our /metrics output;
# postgresql for the throwaway test cluster of scripts/pg-cluster.sh).
# Idempotent: checks each package first and runs `apt-get update` once, only
# when something is missing. Prints what it installs. Needs root (or sudo).
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libuv1-dev node-llhttp libjansson-dev libjwt-dev libsodium-dev libssl-dev
  libsqlite3-dev libpq-dev libhiredis-dev libwslay-dev libcurl4-openssl-dev
  libcmocka-dev nodejs wrk curl prometheus redis-server postgresql postgresql-client
)

# Bench-only extras are requested with `deps.sh bench`, the coverage
# report's with `deps.sh coverage`.
if [ "${1:-}" = "bench" ]; then
  packages+=(nginx-light)
fi
if [ "${1:-}" = "coverage" ]; then
  packages+=(gcovr)
fi

missing=()
# Debian's nodejs ships npm separately; NodeSource's nodejs bundles it and
# conflicts with Debian's npm package, so ask for npm only when it is absent.
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
