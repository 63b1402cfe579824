#!/usr/bin/env bash
# The README's hash example as three processes: patro-broker, a server, a client.
# Builds into BUILD_DIR (default build/) first if needed.
#   tools/demo.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[ -d "$build" ] || meson setup "$build" >/dev/null
ninja -C "$build" -j2 >/dev/null
dir=$(mktemp -d /tmp/patro-demo-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

"$build/broker/patro-broker" --front tcp://127.0.0.1:* --back tcp://127.0.0.1:* \
  --endpoints-file "$dir/endpoints" &
pids+=($!)
for _ in $(seq 100); do [ -s "$dir/endpoints" ] && break; sleep 0.05; done
read -r front back < "$dir/endpoints"
echo "broker: clients at $front, servers at $back"

"$build/examples/patro-example-hash-server" "$dir/patro.conf" "$back" > "$dir/server.out" &
server=$!
pids+=($server)
for _ in $(seq 100); do [ -s "$dir/patro.conf" ] && break; sleep 0.05; done
echo "server: config $(cat "$dir/patro.conf")"

echo "client:"
"$build/examples/patro-example-hash-client" "$dir/patro.conf" | sed 's/^/  /'

kill -TERM "$server"
wait "$server" || true
echo "server, after the client:"
sed 's/^/  /' "$dir/server.out"
