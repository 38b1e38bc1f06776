#!/usr/bin/env bash
# Runs every libFuzzer target briefly against its seed corpus.
# usage: tests/fuzz/run.sh BUILD_DIR [SECONDS_PER_TARGET]
# New inputs found go to a scratch directory, never into the committed
# corpus; a crash leaves its reproducer in tests/fuzz/ and fails the run.
set -euo pipefail

build=${1:?usage: run.sh BUILD_DIR [SECONDS]}
seconds=${2:-${FUZZ_SECONDS:-20}}
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

status=0
for bin in "$build"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  corpus="$here/corpus/${name#fuzz_}"
  mkdir -p "$scratch/$name"
  echo "fuzz: $name for ${seconds}s (seeds: $corpus)"
  if ! "$bin" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$here/" \
       "$scratch/$name" "$corpus" 2>"$scratch/$name.log"; then
    tail -n 40 "$scratch/$name.log"
    echo "fuzz: $name FAILED"
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb" "$scratch/$name.log" | sed "s/^/fuzz: $name /"
  fi
done
exit $status
