#!/usr/bin/env bash
# Patro's main job on its embedded default: one patro-worker process (its own broker on
# 127.0.0.1 and a queue, a log and a counter), driven by client processes that push and take
# jobs, write log lines and bump the counter under its lock. Prints an account, stops cleanly.
# Builds into BUILD_DIR (default build/) first if needed.
#   tools/main-job.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[ -d "$build" ] || meson setup "$build" >/dev/null
ninja -C "$build" -j2 >/dev/null
dir=$(mktemp -d /tmp/patro-main-job-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

"$build/worker/patro-worker" --front 'tcp://127.0.0.1:*' --back 'tcp://127.0.0.1:*' \
  --endpoints-file "$dir/endpoints" --log-sync always --log-prefix \
  queue jobs log events "$dir/events.log" counter done 2>"$dir/worker.err" &
worker=$!
pids+=("$worker")
for _ in $(seq 200); do [ -s "$dir/endpoints" ] && break; sleep 0.05; done
read -r front _ < "$dir/endpoints"
echo "patro-worker (pid $worker): a broker at $front, serving queue 'jobs', log 'events', counter 'done'"

jobs=("$build/examples/patro-example-jobs")
"${jobs[@]}" produce "$front" 300 &
p1=$!
"${jobs[@]}" produce "$front" 300 &
p2=$!
consumers=()
for c in alice bob carol; do
  "${jobs[@]}" consume "$front" "$c" &
  consumers+=($!)
done
status=0
for p in "$p1" "$p2" "${consumers[@]}"; do wait "$p" || status=1; done

lines=$(wc -l < "$dir/events.log")
echo
echo "account:"
echo "  jobs pushed:            600 (2 producers x 300)"
echo "  lines in the log:       $lines (one per job taken, each whole, time and sender first)"
echo "  first line:             $(head -n 1 "$dir/events.log")"
for c in alice bob carol; do
  printf '  %-24s%s\n' "$c's lines:" "$(grep -c " $c did " "$dir/events.log" || true)"
done
count=$("${jobs[@]}" counter "$front" -)
echo "  counter 'done':         $count (each consumer added its count under the counter's lock)"
kill -TERM "$worker"
wait "$worker" || status=1
pids=()
if [ "$lines" != 600 ] || [ "$count" != 600 ] || [ "$status" != 0 ]; then
  echo "something went wrong (see above)"; exit 1
fi
echo "  the worker stopped cleanly"
