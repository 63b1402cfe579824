#!/usr/bin/env bash
# Runs each libFuzzer target of a clang build for a bounded time, starting from its checked-in
# corpus (read only: new inputs go to a temporary directory, removed afterwards). A crash, leak or
# UB report fails the run; the reproducer is kept as tests/fuzz/found-<target>-* to be fixed and
# added to corpus/<target>/ as a regression seed.
# The targets run side by side, one per core (PATRO_FUZZ_JOBS sets how many at once); each report
# is printed whole when its target ends.
# Usage: tests/fuzz/run-fuzzers.sh <clang build dir> [seconds per target]
#        tests/fuzz/run-fuzzers.sh --list            (the targets' names)
set -euo pipefail
cd "$(dirname "$0")/../.."
targets=(frames request reply control batch config broker wal)
if [ "${1:-}" = --list ]; then echo "${targets[*]}"; exit 0; fi
dir=${1:?usage: run-fuzzers.sh <build dir> [seconds]}
secs=${2:-15}
jobs=${PATRO_FUZZ_JOBS:-$(nproc)}
work=$(mktemp -d /tmp/patro-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
# Runs target $1 for $secs seconds; prints one line (ok, with its count of runs) or the log's tail.
fuzz_one() {
  local t=$1 exe=$dir/tests/fuzz/fuzz-$1 start=$SECONDS
  if [ ! -x "$exe" ]; then echo "fuzz $t: $exe not built (not a clang build?)"; return 1; fi
  mkdir -p "$work/$t"
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="tests/fuzz/found-$t-" -print_final_stats=1 \
      "$work/$t" "tests/fuzz/corpus/$t" >"$work/$t.log" 2>&1; then
    echo "fuzz $t: ok ($((SECONDS - start)) s, $(grep -m1 -o 'stat::number_of_executed_units: [0-9]*' "$work/$t.log" | grep -o '[0-9]*$') runs)"
  else
    echo "fuzz $t: FAILED"; tail -40 "$work/$t.log"; return 1
  fi
}
status=0
pids=()
for t in "${targets[@]}"; do
  # At most $jobs at once: wait for the oldest before starting another.
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
  fuzz_one "$t" >"$work/$t.out" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
for t in "${targets[@]}"; do cat "$work/$t.out"; done
exit $status
