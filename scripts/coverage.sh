#!/usr/bin/env bash
# coverage.sh [BUILD_DIR [JOBS]] - line and branch coverage of src/ by the
# unit tests (CTest) and the e2e suite, measured on a gcc --coverage build
# (-fprofile-update=atomic, for the threaded code) in BUILD_DIR (default
# build-cov). `make coverage` runs it after `./scripts/deps.sh coverage`.
#
# The counters are reset before the run, so the figures are this run's. A
# failing test does not stop the report (the figures of a partial run are
# still worth seeing) but makes the script exit 1 after printing it. The HTML
# report lands in BUILD_DIR/coverage/index.html.
set -uo pipefail

cd "$(dirname "$0")/.."
build=${1:-build-cov}
jobs=${2:-$(nproc)}

for tool in gcc gcovr node; do
  if ! command -v "$tool" >/dev/null; then
    echo "coverage: $tool is not installed (./scripts/deps.sh coverage)" >&2
    exit 1
  fi
done

set -e
if [ ! -f "$build/Makefile" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=gcc -DTRELLIS_COVERAGE=ON
fi
cmake --build "$build" -j "$jobs"
set +e

# Zero the counters: a .gcda file accumulates over every run of the binary.
find "$build" -name '*.gcda' -delete

failed=0
(cd "$build" && ctest --output-on-failure -j "$jobs") || failed=1
TRELLIS_BIN="$PWD/$build/trellis" node --test --test-concurrency=2 --test-timeout=180000 --test-force-exit tests/e2e/ || failed=1

mkdir -p "$build/coverage"
# --exclude-unreachable-branches drops the branches gcc attributes to lines
# without code ("}" and the like); --exclude-throw-branches is C++ only.
gcovr --root . --object-directory "$build" --filter 'src/' \
  --exclude-unreachable-branches \
  --html-details "$build/coverage/index.html" \
  --txt "$build/coverage/summary.txt" \
  --print-summary
status=$?
[ $status -eq 0 ] || failed=1

echo "coverage: per-file report in $build/coverage/summary.txt, HTML in $build/coverage/index.html"
if [ $failed -ne 0 ]; then
  echo "coverage: some tests failed (see above); the figures cover what ran" >&2
  exit 1
fi
