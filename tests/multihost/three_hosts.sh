#!/usr/bin/env bash
# Three hosts on one machine: network namespaces joined by veth pairs, each with its own address.
#
#   server host  10.231.1.2 ──veth── 10.231.1.1  broker host  10.231.2.1 ──veth── 10.231.2.2  client host
#
# Each link is its own subnet, and server and client talk only to the broker (no forwarding).
# patro-broker runs in the broker namespace bound to its two addresses; a server in the server
# namespace; clients in the client namespace push and pop on a served array, write a served hash
# and add to it concurrently, and check what they wrote from the client host.
#
# Everything runs with CURVE (issue 11): the broker has a key pair and allow lists for both ports;
# the server host's processes use a server key, the client host's a client key
# (PATRO_CURVE_KEY), and all of them the broker's public key (PATRO_BROKER_KEY). A plaintext
# client is refused, and so is a plaintext broker bound to a namespace's address.
#
# Skipped (77) where namespaces cannot be made (not root, no `ip netns`). Cleans up namespaces,
# processes and temp files on every path; every wait is bounded.
#
# On the server host also runs patro-worker with a job queue and a log: producers and consumers on
# the client host move 2,000 jobs through it (each acknowledged exactly once), and two writers send
# 1,000 log lines that land whole in the worker's file.
#
# Environment (meson sets these): PATRO_BROKER, PATRO_CLI, PATRO_TEST_SERVER, PATRO_TEST_CLIENT,
# PATRO_WORKER, PATRO_WORKER_CLIENT.
set -euo pipefail

: "${PATRO_BROKER:?set PATRO_BROKER (meson test does)}"
: "${PATRO_CLI:?set PATRO_CLI}"
: "${PATRO_TEST_SERVER:?set PATRO_TEST_SERVER}"
: "${PATRO_TEST_CLIENT:?set PATRO_TEST_CLIENT}"
: "${PATRO_WORKER:?set PATRO_WORKER}"
: "${PATRO_WORKER_CLIENT:?set PATRO_WORKER_CLIENT}"

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root to make network namespaces"
command -v ip >/dev/null || skip "no ip command (iproute2)"

tag="patro-mh-$$"
ns_b="$tag-broker" ns_s="$tag-server" ns_c="$tag-client"
broker_front="tcp://10.231.2.1:7170"   # clients' side
broker_back="tcp://10.231.1.1:7171"    # servers' side
tmp=$(mktemp -d "/tmp/$tag-XXXXXX")
pids=()
namespaces=()

cleanup() {
  local status=$?
  set +e
  # Newest first: clients, server, broker. SIGTERM, then SIGKILL after a bounded grace.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    local pid=${pids[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if [ "$status" != 0 ] && [ "$status" != 77 ]; then
    for f in "$tmp"/*.log; do [ -s "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- the three hosts ---
for ns in "$ns_b" "$ns_s" "$ns_c"; do
  ip netns add "$ns" 2>/dev/null || skip "cannot make network namespaces here"
  namespaces+=("$ns")
  ip -n "$ns" link set lo up
done
ip link add "mh$$a" netns "$ns_b" type veth peer name "mh$$b" netns "$ns_s" ||
  skip "cannot make veth pairs here"
ip link add "mh$$c" netns "$ns_b" type veth peer name "mh$$d" netns "$ns_c"
ip -n "$ns_b" addr add 10.231.1.1/24 dev "mh$$a"
ip -n "$ns_s" addr add 10.231.1.2/24 dev "mh$$b"
ip -n "$ns_b" addr add 10.231.2.1/24 dev "mh$$c"
ip -n "$ns_c" addr add 10.231.2.2/24 dev "mh$$d"
for dev in "$ns_b mh$$a" "$ns_s mh$$b" "$ns_b mh$$c" "$ns_c mh$$d"; do
  set -- $dev
  ip -n "$1" link set "$2" up
done

on() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

wait_file() {  # wait_file PATH SECONDS: until PATH exists and is not empty
  for _ in $(seq $(($2 * 10))); do [ -s "$1" ] && return 0; sleep 0.1; done
  echo "FAIL: $1 did not appear within $2 s"; return 1
}

# No route from the client host to the server host: everything goes through the broker.
if on "$ns_c" timeout 5 bash -c 'exec 3<>/dev/tcp/10.231.1.2/7171' 2>/dev/null; then
  echo "FAIL: the client host reaches the server host directly"; exit 1
fi

# --- keys: each host's pair; the broker allows the server key on its back, the client key on
# its front ---
for who in broker server client; do "$PATRO_CLI" keygen "$tmp/$who.key" >/dev/null; done
grep -h public-key "$tmp/server.key.pub" >"$tmp/servers.allow"
grep -h public-key "$tmp/client.key.pub" >"$tmp/clients.allow"
export PATRO_BROKER_KEY="$tmp/broker.key.pub"
export PATRO_CURVE_KEY="$tmp/client.key"  # the client host's; server-host commands override it
as_server=(env "PATRO_CURVE_KEY=$tmp/server.key")

# A plaintext broker off loopback is refused (before it binds).
if ip netns exec "$ns_b" "$PATRO_BROKER" --front "$broker_front" --back "$broker_back" \
  2>"$tmp/plain-broker.log"; then
  echo "FAIL: a plaintext broker bound $broker_front"; exit 1
fi
grep -q -- --insecure "$tmp/plain-broker.log" || { echo "FAIL: the refusal does not name --insecure"; exit 1; }

# --- broker ---
ip netns exec "$ns_b" "$PATRO_BROKER" --front "$broker_front" --back "$broker_back" \
  --advertise "$broker_front" --heartbeat-ms 200 --endpoints-file "$tmp/broker.endpoints" \
  --curve-key "$tmp/broker.key" --allow-clients "$tmp/clients.allow" \
  --allow-servers "$tmp/servers.allow" 2>"$tmp/broker.log" &
pids+=($!)
wait_file "$tmp/broker.endpoints" 20

# --- server: the one line to change for another server (patro-worker with a queue and a log).
# It must write a config to $tmp/server.conf and register with $broker_back. patro-test-server
# serves 0: a hash, 1: an array named "jobs", 2: a hash {"n": 0}.
start_server() {
  "${as_server[@]}" ip netns exec "$ns_s" "$PATRO_TEST_SERVER" "$tmp/server.conf" --broker "$broker_back" \
    --heartbeat-ms 200 2>"$tmp/server.log" &
  pids+=($!)
}
start_server
wait_file "$tmp/server.conf" 20
grep -q "10.231.2.1:7170" "$tmp/server.conf" || { echo "FAIL: config lacks the broker"; exit 1; }
grep -q "broker_key" "$tmp/server.conf" || { echo "FAIL: config lacks the broker's key"; exit 1; }

# --- clients, on the client host ---
cli() { on "$ns_c" timeout 60 "$PATRO_CLI" --timeout 20s "$@"; }
expect() {  # expect WANT CMD...: CMD's output must be WANT
  local want=$1; shift
  local got
  got=$("$@") || { echo "FAIL: $* exited $?"; exit 1; }
  [ "$got" = "$want" ] || { echo "FAIL: $*: want '$want', got '$got'"; exit 1; }
}

cli --broker "$broker_front" ls | grep -q "^jobs" || { echo "FAIL: ls lacks jobs"; exit 1; }
# Without keys, the client host is refused at once with a clear error.
if on "$ns_c" env -u PATRO_BROKER_KEY -u PATRO_CURVE_KEY timeout 60 "$PATRO_CLI" \
  --broker "$broker_front" ls >"$tmp/plain-client.out" 2>&1; then
  echo "FAIL: a plaintext client was served"; exit 1
fi
grep -q not_authorized "$tmp/plain-client.out" || { echo "FAIL: plaintext client: $(cat "$tmp/plain-client.out")"; exit 1; }
expect 3 cli --broker "$broker_front" push jobs a b c
expect c cli --broker "$broker_front" pop jobs
expect a cli --broker "$broker_front" take jobs
expect '["b"]' cli --broker "$broker_front" --json get jobs
cli --config "$tmp/server.conf" set 0 from client-host
cli --config "$tmp/server.conf" set 0 when 1234
expect client-host cli --config "$tmp/server.conf" get 0 from
expect 1234 cli --config "$tmp/server.conf" --json get 0 when
expect 123 cli --config "$tmp/server.conf" get 0 abc

# Three client processes at once: atomic adds to the served hash, pushes onto the array.
cpids=()
for i in 1 2 3; do
  ip netns exec "$ns_c" timeout 120 "$PATRO_TEST_CLIENT" add "$tmp/server.conf" 2 n 100 &
  cpids+=($!)
done
for p in "${cpids[@]}"; do wait "$p" || { echo "FAIL: a client exited $?"; exit 1; }; done
expect 300 cli --config "$tmp/server.conf" get 2 n
for i in $(seq 20); do cli --broker "$broker_front" push jobs "m$i" >/dev/null; done
count=$(cli --broker "$broker_front" --json get jobs | tr ',' '\n' | wc -l)
[ "$count" = 21 ] || { echo "FAIL: want 21 jobs, got $count"; exit 1; }

# What the broker saw, from the client host.
cli --broker "$broker_front" --json stats --interval 100 | grep -q '"servers":1' ||
  { echo "FAIL: stats"; exit 1; }
# --- patro-worker on the server host: a job queue and a log ---
"${as_server[@]}" ip netns exec "$ns_s" "$PATRO_WORKER" --broker "$broker_back" --heartbeat-ms 200 \
  --config-out "$tmp/worker.conf" queue work log events "$tmp/events.log" 2>"$tmp/worker.log" &
pids+=($!)
wait_file "$tmp/worker.conf" 20
wclient() { on "$ns_c" timeout 180 "$PATRO_WORKER_CLIENT" "$@"; }
# Jobs across: two producers and two consumers on the client host, at once.
jpids=()
wclient consume "$broker_front" work 50 "$tmp/acked1" 3000 & jpids+=($!)
wclient consume "$broker_front" work 50 "$tmp/acked2" 3000 & jpids+=($!)
wclient produce "$broker_front" work 0 1000 100 "$tmp/pushed1" & jpids+=($!)
wclient produce "$broker_front" work 1000 1000 100 "$tmp/pushed2" & jpids+=($!)
# Log lines across: two writers.
wclient log "$broker_front" events w0 500 50 "$tmp/wrote0" & jpids+=($!)
wclient log "$broker_front" events w1 500 50 "$tmp/wrote1" & jpids+=($!)
for p in "${jpids[@]}"; do wait "$p" || { echo "FAIL: a worker client exited $?"; exit 1; }; done
acked=$(cat "$tmp/acked1" "$tmp/acked2" | wc -l)
distinct=$(cat "$tmp/acked1" "$tmp/acked2" | sort -un | wc -l)
[ "$acked" = 2000 ] && [ "$distinct" = 2000 ] ||
  { echo "FAIL: jobs: $acked acknowledged, $distinct distinct (want 2000 each)"; exit 1; }
# The CLI against the worker's queue and log, from the client host.
cli --broker "$broker_front" push work from-the-cli >/dev/null
cli --broker "$broker_front" take work | grep -q from-the-cli || { echo "FAIL: cli take"; exit 1; }
lines=$(grep -cE '^w[01] [0-9]+ x{40}$' "$tmp/events.log" || true)
[ "$lines" = 1000 ] || { echo "FAIL: want 1000 whole log lines, got $lines"; exit 1; }
cli --broker "$broker_front" tail -n 1 events | grep -qE '^w[01] ' || { echo "FAIL: cli tail"; exit 1; }


# --- the direct path (issue 12), plaintext: CURVE turns it off, so a second broker without keys
# (--insecure) and a server without keys. The server advertises its direct endpoint on the server
# host's address, which the client host cannot reach: route=auto falls back to the broker and
# every call lands; route=direct fails with a clear error.
plain=(env -u PATRO_BROKER_KEY -u PATRO_CURVE_KEY)
ip netns exec "$ns_b" "${plain[@]}" "$PATRO_BROKER" --front tcp://10.231.2.1:7270 \
  --back tcp://10.231.1.1:7271 --insecure --heartbeat-ms 200 \
  --endpoints-file "$tmp/plain-broker.endpoints" 2>"$tmp/plain-broker2.log" &
pids+=($!)
wait_file "$tmp/plain-broker.endpoints" 20
ip netns exec "$ns_s" "${plain[@]}" "$PATRO_TEST_SERVER" "$tmp/plain.conf" \
  --broker tcp://10.231.1.1:7271 --heartbeat-ms 200 2>"$tmp/plain-server.log" &
pids+=($!)
wait_file "$tmp/plain.conf" 20
pcli() { on "$ns_c" "${plain[@]}" timeout 60 "$PATRO_CLI" --timeout 20s "$@"; }
pcli --broker tcp://10.231.2.1:7270 --json ls | grep -q '"direct":0' ||
  { echo "FAIL: plain ls"; exit 1; }
cpids=()
for i in 1 2; do
  ip netns exec "$ns_c" "${plain[@]}" timeout 120 "$PATRO_TEST_CLIENT" add \
    "$tmp/plain.conf" 2 n 100 &
  cpids+=($!)
done
for p in "${cpids[@]}"; do wait "$p" || { echo "FAIL: a route=auto client exited $?"; exit 1; }; done
expect 200 pcli --config "$tmp/plain.conf" get 2 n
# The server took every call through the broker (its counters reach the broker on heartbeats).
ok=
for _ in $(seq 50); do
  ls_json=$(pcli --broker tcp://10.231.2.1:7270 --json ls)
  if echo "$ls_json" | grep -q '"direct":0' &&
    [ "$(echo "$ls_json" | grep -oE '"brokered":[0-9]+' | cut -d: -f2)" -ge 200 ]; then
    ok=1; break
  fi
  sleep 0.1
done
[ -n "$ok" ] || { echo "FAIL: want every call brokered: $ls_json"; exit 1; }
if on "$ns_c" "${plain[@]}" timeout 60 "$PATRO_CLI" --timeout 5s --route direct \
  --config "$tmp/plain.conf" get 2 n >"$tmp/direct.out" 2>&1; then
  echo "FAIL: route=direct reached the server host"; exit 1
fi
grep -q server_unavailable "$tmp/direct.out" || { echo "FAIL: route=direct: $(cat "$tmp/direct.out")"; exit 1; }

echo "multihost: ok"
