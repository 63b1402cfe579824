#!/usr/bin/env bash
# Four hosts on one machine (the file keeps its name from when there were three): network
# namespaces joined by veth pairs, each with its own address.
#
#   server host 10.231.1.2 ─veth─ 10.231.1.1 broker host  10.231.2.1 ─veth─ 10.231.2.2 client host
#   server host 10.231.3.2 ─veth─ 10.231.3.1 broker2 host 10.231.4.1 ─veth─ 10.231.4.2 client host
#
# Each link is its own subnet, and server and client talk only to the brokers (no forwarding).
# patro-broker runs in each broker namespace bound to its two addresses (several brokers, issue
# 13); a server in the server namespace registers with both; clients in the client namespace push
# and pop on a served array, write a served hash and add to it concurrently, and check what they
# wrote from the client host.
#
# Everything runs with CURVE: the brokers share one key pair and the allow lists for
# both ports (every broker checks the same keys); the server host's processes use a server key,
# the client host's a client key (PATRO_CURVE_KEY), and all of them the brokers' public key
# (PATRO_BROKER_KEY). A plaintext client is refused, and so is a plaintext broker bound to a
# namespace's address. The client host cannot reach the server host's addresses, so until the
# last part (a link of their own, where the direct path runs under CURVE) every call goes through
# a broker.
#
# Skipped (77) where namespaces cannot be made (not root, no `ip netns`). Cleans up namespaces,
# processes and temp files on every path; every wait is bounded.
#
# On the server host also runs patro-worker with a job queue and a log, registered with both
# brokers. Then, all at once from the client host and listing both brokers (the first broker
# first): three clients add to the served hash (non-idempotent), one increments under the lock,
# producers and consumers move 2,000 jobs through the worker's queue, and two writers send 1,000
# log lines to its log. Mid-run the first broker is SIGKILLed: every client moves to the second
# and resends what was in flight, and still every add lands once, the locked increments are
# exact, each job is acknowledged exactly once, each log line lands whole and once, and no error
# reaches a client. The second broker's counters and each client's log show that it carried the
# rest.
#
# Last, the direct path in plaintext, through a third broker on the first broker host.
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

# The clients' "moving to the broker" lines are warnings; the check below reads them.
[ "${PATRO_LOG_LEVEL:-warn}" = error ] && export PATRO_LOG_LEVEL=warn

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root to make network namespaces"
command -v ip >/dev/null || skip "no ip command (iproute2)"

tag="patro-mh-$$"
ns_b="$tag-broker" ns_s="$tag-server" ns_c="$tag-client" ns_b2="$tag-broker2"
broker_front="tcp://10.231.2.1:7170"   # clients' side
broker_back="tcp://10.231.1.1:7171"    # servers' side
broker2_front="tcp://10.231.4.1:7170"  # the second broker: clients' side
broker2_back="tcp://10.231.3.1:7171"   # servers' side
brokers="$broker_front,$broker2_front" # a client's list, the first broker first
tmp=$(mktemp -d "/tmp/$tag-XXXXXX")
pids=()
namespaces=()

cleanup() {
  local status=$?
  set +e
  # Newest first: clients, servers, brokers. SIGTERM, then SIGKILL after a bounded grace.
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

# --- the four hosts: the broker host and the second broker host each have a link to the server
# host and one to the client host ---
for ns in "$ns_b" "$ns_s" "$ns_c" "$ns_b2"; do
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
ip link add "mh$$e" netns "$ns_b2" type veth peer name "mh$$f" netns "$ns_s"
ip link add "mh$$g" netns "$ns_b2" type veth peer name "mh$$h" netns "$ns_c"
ip -n "$ns_b2" addr add 10.231.3.1/24 dev "mh$$e"
ip -n "$ns_s" addr add 10.231.3.2/24 dev "mh$$f"
ip -n "$ns_b2" addr add 10.231.4.1/24 dev "mh$$g"
ip -n "$ns_c" addr add 10.231.4.2/24 dev "mh$$h"
for dev in "$ns_b mh$$a" "$ns_s mh$$b" "$ns_b mh$$c" "$ns_c mh$$d" \
  "$ns_b2 mh$$e" "$ns_s mh$$f" "$ns_b2 mh$$g" "$ns_c mh$$h"; do
  set -- $dev
  ip -n "$1" link set "$2" up
done

on() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

forget() {  # forget PID...: processes that ended and were waited for leave pids
  local left=() pid gone
  for pid in "${pids[@]}"; do
    for gone in "$@"; do [ "$pid" = "$gone" ] && continue 2; done
    left+=("$pid")
  done
  pids=("${left[@]}")
}

wait_file() {  # wait_file PATH SECONDS: until PATH exists and is not empty
  for _ in $(seq $(($2 * 10))); do [ -s "$1" ] && return 0; sleep 0.1; done
  echo "FAIL: $1 did not appear within $2 s"; return 1
}

# No route from the client host to the server host (on either of its addresses): everything goes
# through a broker.
for addr in 10.231.1.2 10.231.3.2; do
  if on "$ns_c" timeout 5 bash -c "exec 3<>/dev/tcp/$addr/7171" 2>/dev/null; then
    echo "FAIL: the client host reaches the server host directly ($addr)"; exit 1
  fi
done

# --- keys: each host's pair; the brokers share one pair, and each allows the server key on its
# back, the client key on its front ---
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

# --- brokers: the first on the broker host, the second on the second broker host, with the same
# keys and allow lists ---
ip netns exec "$ns_b" "$PATRO_BROKER" --front "$broker_front" --back "$broker_back" \
  --advertise "$broker_front" --heartbeat-ms 200 --endpoints-file "$tmp/broker.endpoints" \
  --curve-key "$tmp/broker.key" --allow-clients "$tmp/clients.allow" \
  --allow-servers "$tmp/servers.allow" 2>"$tmp/broker.log" &
broker_pid=$!
pids+=($!)
ip netns exec "$ns_b2" "$PATRO_BROKER" --front "$broker2_front" --back "$broker2_back" \
  --advertise "$broker2_front" --heartbeat-ms 200 --endpoints-file "$tmp/broker2.endpoints" \
  --curve-key "$tmp/broker.key" --allow-clients "$tmp/clients.allow" \
  --allow-servers "$tmp/servers.allow" 2>"$tmp/broker2.log" &
pids+=($!)
wait_file "$tmp/broker.endpoints" 20
wait_file "$tmp/broker2.endpoints" 20

# --- server: the one line to change for another server (patro-worker with a queue and a log).
# It must write a config to $tmp/server.conf and register with $broker_back and $broker2_back.
# patro-test-server serves 0: a hash, 1: an array named "jobs", 2: a hash {"n": 0}.
start_server() {
  "${as_server[@]}" ip netns exec "$ns_s" "$PATRO_TEST_SERVER" "$tmp/server.conf" \
    --broker "$broker_back" --broker "$broker2_back" --heartbeat-ms 200 2>"$tmp/server.log" &
  pids+=($!)
}
start_server
wait_file "$tmp/server.conf" 20
# The config names both brokers' client endpoints, the first broker first.
tr -d '\n' <"$tmp/server.conf" | grep -q "10.231.2.1:7170.*10.231.4.1:7170" ||
  { echo "FAIL: config lacks the brokers: $(cat "$tmp/server.conf")"; exit 1; }
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

# What each broker saw, from the client host: the first one server, the second its names too.
cli --broker "$broker_front" --json stats --interval 100 | grep -q '"servers":1' ||
  { echo "FAIL: stats"; exit 1; }
has_names() {  # has_names FRONT NAME...: the broker at FRONT lists every NAME (bounded wait)
  local front=$1; shift
  local out=
  for _ in $(seq 50); do
    out=$(cli --broker "$front" ls 2>&1) || true
    local missing=
    for name in "$@"; do
      grep -q "^$name"$'\t' <<<"$out" || missing=1
    done
    [ -z "$missing" ] && return 0
    sleep 0.2
  done
  echo "FAIL: the broker at $front does not list $*: $out"; return 1
}
has_names "$broker2_front" jobs
routed() {  # routed FRONT: the requests the broker at FRONT has routed
  cli --broker "$1" --json stats --interval 100 | grep -oE '"routed":[0-9]+' | cut -d: -f2
}

# --- patro-worker on the server host: a job queue and a log, registered with both brokers ---
"${as_server[@]}" ip netns exec "$ns_s" "$PATRO_WORKER" --broker "$broker_back" \
  --broker "$broker2_back" --heartbeat-ms 200 --config-out "$tmp/worker.conf" \
  queue work log events "$tmp/events.log" 2>"$tmp/worker.log" &
pids+=($!)
wait_file "$tmp/worker.conf" 20
has_names "$broker_front" jobs work events
has_names "$broker2_front" jobs work events

# --- the first broker dies mid-run ---
# All at once from the client host, each listing both brokers (through the server's config, or
# "A,B"), and paced to run for a few seconds: three clients add to the served hash (not
# idempotent: a call run twice would show), one increments under the hash's lock, two producers
# push 2,000 jobs and two consumers take and acknowledge them, two writers send 1,000 log lines.
cli --config "$tmp/server.conf" set 2 k 0
cli --config "$tmp/server.conf" set 2 m 0
routed_before=$(routed "$broker2_front") || { echo "FAIL: stats at the second broker"; exit 1; }
# Each client's pid goes into pids too, so that cleanup ends it on every path ("ip netns exec"
# execs timeout, which passes the signal on).
wclient=(ip netns exec "$ns_c" timeout 180 "$PATRO_WORKER_CLIENT")
jpids=() logs=()
for i in 1 2 3; do
  ip netns exec "$ns_c" timeout 120 "$PATRO_TEST_CLIENT" add-paced "$tmp/server.conf" 2 k 300 \
    10000 >"$tmp/add$i.out" 2>"$tmp/add$i.log" &
  jpids+=($!) pids+=($!) logs+=("$tmp/add$i.log")
done
ip netns exec "$ns_c" timeout 120 "$PATRO_TEST_CLIENT" sync-incr-paced "$tmp/server.conf" 2 m \
  150 20000 2>"$tmp/incr.log" &
jpids+=($!) pids+=($!) logs+=("$tmp/incr.log")
for i in 1 2; do
  "${wclient[@]}" consume "$brokers" work 50 "$tmp/acked$i" 3000 2>"$tmp/consume$i.log" &
  jpids+=($!) pids+=($!) logs+=("$tmp/consume$i.log")
done
"${wclient[@]}" --pace-us 30000 produce "$brokers" work 0 1000 10 "$tmp/pushed1" \
  2>"$tmp/produce1.log" &
jpids+=($!) pids+=($!) logs+=("$tmp/produce1.log")
"${wclient[@]}" --pace-us 30000 produce "$brokers" work 1000 1000 10 "$tmp/pushed2" \
  2>"$tmp/produce2.log" &
jpids+=($!) pids+=($!) logs+=("$tmp/produce2.log")
for w in 0 1; do
  "${wclient[@]}" --pace-us 30000 log "$brokers" events "w$w" 500 5 "$tmp/wrote$w" \
    2>"$tmp/log$w.log" &
  jpids+=($!) pids+=($!) logs+=("$tmp/log$w.log")
done
# Once a good part of the jobs and lines went through (through the first broker), SIGKILL it.
# Every client is still running then (a failed one is reported at once).
lines_of() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
started=
for _ in $(seq 300); do
  for k in "${!jpids[@]}"; do
    kill -0 "${jpids[k]}" 2>/dev/null ||
      { echo "FAIL: a client ended before the first broker died (its log: ${logs[k]})"; exit 1; }
  done
  if [ "$(lines_of "$tmp/pushed1")" -ge 300 ] && [ "$(lines_of "$tmp/wrote0")" -ge 150 ]; then
    started=1; break
  fi
  sleep 0.1
done
[ -n "$started" ] || { echo "FAIL: the clients made no progress within 30 s"; exit 1; }
echo "SIGKILL to the first broker: $(lines_of "$tmp/pushed1") of 1000 jobs pushed," \
  "$(lines_of "$tmp/wrote0") of 500 lines written (by one producer, one writer)"
{ kill -KILL "$broker_pid"; wait "$broker_pid"; } 2>/dev/null || true  # (bash's "Killed" too)
forget "$broker_pid"
[ "$(lines_of "$tmp/pushed1")" -lt 1000 ] && [ "$(lines_of "$tmp/wrote0")" -lt 500 ] ||
  { echo "FAIL: the clients were done before the first broker died (pace them more)"; exit 1; }
for k in "${!jpids[@]}"; do
  wait "${jpids[k]}" || { echo "FAIL: a client exited $? (its log: ${logs[k]})"; exit 1; }
done
forget "${jpids[@]}"
for i in 1 2 3; do
  [ "$(cat "$tmp/add$i.out")" = "errors 0" ] ||
    { echo "FAIL: add client $i: $(cat "$tmp/add$i.out")"; exit 1; }
done

# Every add ran once, the locked increments are exact (a fresh client: the dead first broker in
# the config costs it a connect timeout's share, then it uses the second).
expect 900 cli --config "$tmp/server.conf" get 2 k
expect 150 cli --config "$tmp/server.conf" get 2 m
# Each job acknowledged to its producer once, taken and acknowledged by a consumer once.
pushed=$(cat "$tmp/pushed1" "$tmp/pushed2" | wc -l)
distinct=$(cat "$tmp/pushed1" "$tmp/pushed2" | sort -un | wc -l)
[ "$pushed" = 2000 ] && [ "$distinct" = 2000 ] ||
  { echo "FAIL: jobs: $pushed pushed, $distinct distinct (want 2000 each)"; exit 1; }
acked=$(cat "$tmp/acked1" "$tmp/acked2" | wc -l)
distinct=$(cat "$tmp/acked1" "$tmp/acked2" | sort -un | wc -l)
[ "$acked" = 2000 ] && [ "$distinct" = 2000 ] ||
  { echo "FAIL: jobs: $acked acknowledged, $distinct distinct (want 2000 each)"; exit 1; }
# Each log line acknowledged once, and in the worker's file whole and once.
for w in 0 1; do
  n=$(wc -l <"$tmp/wrote$w") distinct=$(sort -un "$tmp/wrote$w" | wc -l)
  [ "$n" = 500 ] && [ "$distinct" = 500 ] ||
    { echo "FAIL: writer w$w: $n acknowledged, $distinct distinct (want 500)"; exit 1; }
done
lines=$(grep -cE '^w[01] [0-9]+ x{40}$' "$tmp/events.log" || true)
[ "$lines" = 1000 ] || { echo "FAIL: want 1000 whole log lines, got $lines"; exit 1; }
distinct=$(cut -d' ' -f1,2 "$tmp/events.log" | sort -u | wc -l)
[ "$distinct" = 1000 ] || { echo "FAIL: want 1000 distinct log lines, got $distinct"; exit 1; }

# The second broker carried the rest: every client moved to it, and it routed their calls.
for f in "${logs[@]}"; do
  grep -q "moving to the broker at $broker2_front" "$f" ||
    { echo "FAIL: $f: the client did not move to the second broker: $(cat "$f")"; exit 1; }
done
routed_after=$(routed "$broker2_front") || { echo "FAIL: stats at the second broker"; exit 1; }
[ "$((routed_after - routed_before))" -ge 500 ] ||
  { echo "FAIL: the second broker routed $routed_before, then $routed_after"; exit 1; }
echo "the second broker routed $routed_before requests before the run, $routed_after after"
cli --broker "$broker2_front" --json stats --interval 100 | grep -q '"servers":2' ||
  { echo "FAIL: stats at the second broker"; exit 1; }
# The CLI against the worker's queue and log, from the client host: given both brokers it passes
# over the dead first one.
cli --broker "$brokers" push work from-the-cli >/dev/null
cli --broker "$broker2_front" take work | grep -q from-the-cli || { echo "FAIL: cli take"; exit 1; }
cli --broker "$broker2_front" tail -n 1 events | grep -qE '^w[01] ' ||
  { echo "FAIL: cli tail"; exit 1; }

# --- the direct path under CURVE: a link of its own between the server host and the client host
# (10.231.5.0/24), and a worker registered with the second broker whose lanes bind there. With
# --route direct every call goes by that link, encrypted with the server's key, which the broker
# handed the client with its LOCATE answer; the worker counts them (DIRECT in `patro ls`).
ip link add "mh$$i" netns "$ns_s" type veth peer name "mh$$j" netns "$ns_c"
ip -n "$ns_s" addr add 10.231.5.1/24 dev "mh$$i"
ip -n "$ns_c" addr add 10.231.5.2/24 dev "mh$$j"
ip -n "$ns_s" link set "mh$$i" up
ip -n "$ns_c" link set "mh$$j" up
"${as_server[@]}" ip netns exec "$ns_s" "$PATRO_WORKER" --broker "$broker2_back" \
  --direct 'tcp://10.231.5.1:*' --heartbeat-ms 200 --config-out "$tmp/direct-worker.conf" \
  queue dq 2>"$tmp/direct-worker.log" &
pids+=($!)
wait_file "$tmp/direct-worker.conf" 20
cli --broker "$broker2_front" --route direct push dq x y z >/dev/null
took=$(cli --broker "$broker2_front" --route direct take dq | cut -f3)  # id, delivery, job
[ "$took" = x ] || { echo "FAIL: direct take under CURVE: '$took'"; exit 1; }
ok=
for _ in $(seq 50); do
  dq_json=$(cli --broker "$broker2_front" --json ls)
  # Only this worker can be reached directly: every other server's direct count stays 0.
  if echo "$dq_json" | grep -qE '"direct":[1-9]'; then
    ok=1; break
  fi
  sleep 0.1
done
[ -n "$ok" ] || { echo "FAIL: want the CURVE calls direct: $dq_json"; exit 1; }

# --- the direct path, plaintext: a third broker without keys
# (--insecure), on the first broker host (whose CURVE broker is dead now), and a server without
# keys registered with it alone. The server advertises its direct endpoint on the server
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
