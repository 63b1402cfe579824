#!/usr/bin/env bash
# What the units' sandbox allows against what the daemons do: patro-broker and patro-worker run
# under strace (no systemd needed), serve a hash, a counter, a queue and a log to the patro CLI,
# reload on SIGHUP and stop on SIGTERM; every system call they made must pass each unit's
# SystemCallFilter= lines (expanded by systemd-analyze), every socket they opened be of a family
# in RestrictAddressFamilies=, no mapping be writable and executable (MemoryDenyWriteExecute=),
# no /proc file be another process's or a non-process one (ProtectProc=, ProcSubset=pid), and
# no device be one PrivateDevices= hides. What the run does not exercise is not checked.
# Skips (77) without systemd-analyze or strace, where ptrace is not allowed, and for sanitizer
# builds (their runtimes make calls of their own; the units run plain builds).
#   unit_syscalls.sh UNIT_SOURCE_DIR PATRO_BROKER PATRO_WORKER PATRO_CLI
set -euo pipefail
src=$(realpath "$1") broker=$(realpath "$2") worker=$(realpath "$3") cli=$(realpath "$4")
for tool in systemd-analyze strace; do
  if ! command -v $tool >/dev/null; then
    echo "SKIP: no $tool"
    exit 77
  fi
done
if ! strace -f -qq -o /dev/null true 2>/dev/null; then
  echo "SKIP: strace cannot trace here (ptrace not allowed)"
  exit 77
fi
# (ldd's output read whole first: with pipefail, grep -q's early exit would fail the pipeline.)
libs=$(ldd "$broker" "$worker" 2>/dev/null || true)
if grep -Eq 'lib(a|t|ub|l)san' <<<"$libs"; then
  echo "SKIP: a sanitizer build"
  exit 77
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/patro-unit-syscalls.XXXXXX")
pids=()
name="unit-syscalls-$$"
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  # Each daemon first (a SIGKILLed strace would leave its tracee running), then its strace.
  local p child
  for p in "${pids[@]}"; do
    [[ -n $p ]] || continue  # reaped already
    for child in $(ps -o pid= --ppid "$p" 2>/dev/null); do
      kill -KILL "$child" 2>/dev/null || true
    done
    kill -KILL "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do [[ -z $p ]] || wait "$p" 2>/dev/null || true; done
  rm -f /dev/shm/*patro-"$name"*
  rm -rf "$work"
}
trap cleanup EXIT
status=0
failures=0
fail() {
  echo "FAIL: $*"
  status=1
  failures=$((failures + 1))
}

# The calls that filter words (names and @groups) name, groups expanded recursively, from
# systemd-analyze's list of every group (read once).
groups=$(systemd-analyze syscall-filter 2>/dev/null)
expand() {
  awk -v want="$*" '
    function add(x, parts, k, j) {
      if (x !~ /^@/) { out[x] = 1; return }
      if (seen[x]++) return
      k = split(members[x], parts, " ")
      for (j = 1; j <= k; j++) add(parts[j])
    }
    /^@/ { group = $1; next }
    /^[ \t]+[^# \t]/ { if (group != "") members[group] = members[group] " " $1; next }
    /^[^ \t]/ { group = "" }
    END {
      n = split(want, words, " ")
      for (i = 1; i <= n; i++) add(words[i])
      for (c in out) print c
    }' <<<"$groups"
}
# The calls a unit's SystemCallFilter= lines allow: the allow lists' union, less the deny lists.
allowed_calls() {
  local unit=$1 line allow=() deny=()
  while IFS= read -r line; do
    line=${line#SystemCallFilter=}
    if [[ $line == ~* ]]; then
      read -ra words <<<"${line#\~}"
      deny+=("${words[@]}")
    else
      read -ra words <<<"$line"
      allow+=("${words[@]}")
    fi
  done < <(grep '^SystemCallFilter=' "$unit")
  if ((${#deny[@]})); then
    comm -23 <(expand "${allow[@]}" | sort -u) <(expand "${deny[@]}" | sort -u)
  else
    expand "${allow[@]}" | sort -u
  fi
}

# The run. Processes are waited for by their ids; every wait is bounded.
wait_for() {
  local i
  for ((i = 0; i < 200; i++)); do
    if [[ -s $1 ]]; then return 0; fi
    sleep 0.05
  done
  return 1
}
export NOTIFY_SOCKET="$work/notify"  # nobody listens: the daemons' sd_notify still runs
strace -f -qq -o "$work/broker.trace" "$broker" --front 'tcp://127.0.0.1:*' \
  --back 'tcp://127.0.0.1:*' --endpoints-file "$work/broker.ends" \
  --metrics 'tcp://127.0.0.1:*' --log-file "$work/broker.log" --log-level info &
pids+=($!)
wait_for "$work/broker.ends" || {
  fail "patro-broker did not start"
  exit 1
}
read -r front back <"$work/broker.ends"
strace -f -qq -o "$work/worker.trace" "$worker" --broker "$back" --name "$name" \
  --data "$work/data" --metrics 'tcp://127.0.0.1:*' --log-file "$work/worker.log" \
  --log-level info \
  --endpoints-file "$work/worker.ends" \
  queue jobs hash kv counter hits log events "$work/events.log" &
pids+=($!)
patro() { timeout 30 "$cli" --broker "$front" --timeout 10s "$@"; }
for ((i = 0; i < 100; i++)); do
  if patro ls 2>/dev/null | grep -q '^events'; then break; fi
  sleep 0.1
done
patro call events write "a line" >/dev/null || fail "patro call events write"
patro set kv code 42 || fail "patro set kv code 42"
[[ $(patro get kv code) == 42 ]] || fail "patro get kv code"
patro call hits add 5 >/dev/null || fail "patro call hits add"
patro push jobs a b >/dev/null || fail "patro push jobs"
patro take jobs --exec true || fail "patro take jobs --exec true"
patro lock kv -- true || fail "patro lock kv -- true"
[[ $(patro tail events) == "a line" ]] || fail "patro tail events"
patro stats >/dev/null || fail "patro stats"
patro locks >/dev/null || fail "patro locks"
# SIGHUP, then SIGTERM, to the daemons (strace's children), each by its id.
daemon_pids=()
for p in "${pids[@]}"; do
  daemon_pids+=("$(ps -o pid= --ppid "$p" | head -1 | tr -d ' ')")
done
kill -HUP "${daemon_pids[@]}"
for ((i = 0; i < 100; i++)); do
  if grep -q 'SIGHUP' "$work/broker.log" "$work/worker.log" 2>/dev/null &&
    [[ $(grep -l 'SIGHUP' "$work/broker.log" "$work/worker.log" | wc -l) == 2 ]]; then break; fi
  sleep 0.05
done
# Stops daemon $1 (its strace is pids[$1]) with SIGTERM; its exit status, or 124 after 20 s.
stop() {
  local i
  kill -TERM "${daemon_pids[$1]}"
  for ((i = 0; i < 400; i++)); do
    if ! kill -0 "${pids[$1]}" 2>/dev/null; then
      local rc=0
      wait "${pids[$1]}" || rc=$?
      pids[$1]=""
      return $rc
    fi
    sleep 0.05
  done
  return 124
}
stop 1 || fail "patro-worker did not stop cleanly on SIGTERM"
stop 0 || fail "patro-broker did not stop cleanly on SIGTERM"

# The checks.
check() {
  local what=$1 unit=$2 trace=$3 calls families before=$failures
  calls=$(sed -nE 's/^[0-9]+ +([a-z_0-9]+)\(.*/\1/p' "$trace" | sort -u)
  [[ -n $calls ]] || fail "$what: no system calls traced"
  local outside
  outside=$(comm -23 <(echo "$calls") <(allowed_calls "$unit"))
  if [[ -n $outside ]]; then
    fail "$what makes calls its unit's SystemCallFilter= refuses: $(tr '\n' ' ' <<<"$outside")"
  fi
  families=$(sed -nE 's/^[0-9]+ +socket\((AF_[A-Z0-9]+).*/\1/p' "$trace" | sort -u)
  local allowed_families f
  allowed_families=$(sed -n 's/^RestrictAddressFamilies=//p' "$unit")
  for f in $families; do
    if [[ " $allowed_families " != *" $f "* ]]; then
      fail "$what opens an $f socket, outside RestrictAddressFamilies=$allowed_families"
    fi
  done
  if grep -E '(mmap|mprotect|pkey_mprotect)\(' "$trace" | grep 'PROT_WRITE' | grep -q 'PROT_EXEC'
  then
    fail "$what maps memory writable and executable (MemoryDenyWriteExecute=)"
  fi
  # glibc's malloc reads overcommit_memory when it trims a thread's arena; where it is hidden,
  # it trims with madvise instead (malloc/arena.c, check_may_shrink_heap).
  local proc
  proc=$(grep -oE '"/proc/[^"]*"' "$trace" | tr -d '"' |
    grep -vE '^/proc/(self|thread-self|[0-9]+)(/|$)' |
    grep -vx /proc/sys/vm/overcommit_memory | sort -u || true)
  [[ -z $proc ]] || fail "$what reads /proc beyond its own process (ProcSubset=pid): $proc"
  local dev
  dev=$(grep -oE '"/dev/[^"]*"' "$trace" | tr -d '"' |
    grep -vE '^/dev/(shm(/|$)|null$|zero$|full$|random$|urandom$|tty$|pts/|ptmx$)' |
    sort -u || true)
  [[ -z $dev ]] || fail "$what opens a device PrivateDevices= hides: $dev"
  if ((failures == before)); then
    echo "ok: $what: $(echo "$calls" | wc -l) distinct calls, all within its unit's sandbox"
  fi
}
check patro-broker "$src/patro-broker.service.in" "$work/broker.trace"
check patro-worker "$src/patro-worker@.service.in" "$work/worker.trace"
exit $status
