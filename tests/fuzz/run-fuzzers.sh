#!/usr/bin/env bash
# Runs each libFuzzer target of a clang build for a bounded time, starting from its checked-in
# corpus (read only: new inputs go to a temporary directory, removed afterwards). A crash, leak or
# UB report fails the run; the reproducer is kept as tests/fuzz/found-<target>-* to be fixed and
# added to corpus/<target>/ as a regression seed.
# Usage: tests/fuzz/run-fuzzers.sh <clang build dir> [seconds per target]
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:?usage: run-fuzzers.sh <build dir> [seconds]}
secs=${2:-25}
targets=(frames request reply control batch config)
work=$(mktemp -d /tmp/patro-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
status=0
for t in "${targets[@]}"; do
  exe=$dir/tests/fuzz/fuzz-$t
  if [ ! -x "$exe" ]; then echo "fuzz $t: $exe not built (not a clang build?)"; status=1; continue; fi
  mkdir -p "$work/$t"
  start=$SECONDS
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="tests/fuzz/found-$t-" -print_final_stats=1 \
      "$work/$t" "tests/fuzz/corpus/$t" >"$work/$t.log" 2>&1; then
    echo "fuzz $t: ok ($((SECONDS - start)) s, $(grep -m1 -o 'stat::number_of_executed_units: [0-9]*' "$work/$t.log" | grep -o '[0-9]*$') runs)"
  else
    echo "fuzz $t: FAILED"; tail -40 "$work/$t.log"; status=1
  fi
done
exit $status
