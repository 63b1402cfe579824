#!/usr/bin/env bash
# Checks the sources once (clang-format, the layers of libpatro), then builds Patro four ways: a
# plain build, AddressSanitizer + UndefinedBehaviorSanitizer and ThreadSanitizer, each running
# every test (the fuzz corpus replays among them; the benchmark's smoke run in the plain build
# only), and a clang build (-Wthread-safety) that runs
# each fuzz target for a bounded time instead of the tests. The clang build compiles everything
# but the test programs (libpatro, where the thread-safety annotations are, the daemons, the tools,
# the examples, and tests/fuzz): the tests are C++ that gcc compiles three times over, and they
# hold no annotations. The doctest programs themselves compile at -O0 in every build
# (tests/meson.build says why). Warnings are errors. A failed test's assertions end the summary,
# which CI shows.
#
# The builds and the tests overlap: one background builder compiles the variants in turn, at a
# lower priority (nice), while the foreground runs the tests of each variant as soon as its build
# is done. The tests run one at a time and mostly wait on their processes (half a core on
# average), so the next variant's compiler takes the rest of the machine; the last gcc variant's
# tests, with only the clang build left beside them, run two at a time. A build's output is shown
# when it fails.
#
# Usage:
#   tools/run-tests.sh [plain|asan|tsan|clang]...      (default: all four, in that order)
# One suite of one variant, once its directory is built:
#   meson test -C build-ci-plain --suite unit          (suites: unit, integration, python, fuzz...)
#   meson test -C build-ci-asan lifetime               (one test by name)
# PATRO_FUZZ_SECONDS sets the time per fuzz target in the clang variant (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(plain asan tsan clang)
for v in "${variants[@]}"; do
  case "$v" in plain|asan|tsan|clang) ;; *) echo "unknown variant $v" >&2; exit 2 ;; esac
done
export PATRO_LOG_LEVEL=${PATRO_LOG_LEVEL:-warn}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp}
status=0
failures=()
details=$(mktemp /tmp/patro-test-details-XXXXXX)
# Records a failed step; the summary at the end lists them (CI shows only an output's tail).
fail() {
  status=1
  failures+=("$1")
}
# A step's headline, with the seconds since the start (the closing lines list the builds' times).
say() { echo "=== [$SECONDS s] $*"; }
say "source checks"
if ! tools/check-format.sh; then fail "clang-format"; fi
if ! python3 tools/check-layers.py; then fail "layers"; fi
logs=$(mktemp -d /tmp/patro-test-logs-XXXXXX)
builder=
cleanup() {
  if [ -n "$builder" ] && kill -0 "$builder" 2>/dev/null; then
    kill -- -"$builder" 2>/dev/null || kill "$builder" 2>/dev/null || true
  fi
  rm -rf "$logs" "$details"
}
trap cleanup EXIT

# Sets opts and setup_env, the meson setup arguments of variant $1.
variant_options() {
  setup_env=()
  # The gcc builds keep line tables only (-g1: file:line in sanitizer reports and stack traces,
  # no variables for a debugger), which makes them a quarter faster to compile; the ASan+UBSan
  # build also compiles at -O1 (what AddressSanitizer recommends): with -g1, 38% of its time at
  # -O2 -g, the slowest of the builds by far.
  case "$1" in
    # Only the plain build has patro-bench's ZeroC Ice peer: the benchmark's smoke run (suite perf)
    # runs there alone, and the peer's generated code was a tenth of each other build.
    plain) opts=(-Dcpp_args=-g1) ;;
    # GCC 12 reports maybe-uninitialized falsely inside the standard library (<regex>, std::variant)
    # once the sanitizers instrument it; the plain build keeps that warning an error.
    asan) opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dice=disabled
                "-Dcpp_args=-Wno-error=maybe-uninitialized -O1 -g1") ;;
    tsan) opts=(-Db_sanitize=thread -Db_lundef=false -Dice=disabled
                "-Dcpp_args=-Wno-error=maybe-uninitialized -g1") ;;
    # clang 14 checks the thread-safety annotations (meson.build adds -Wthread-safety for clang)
    # and builds the libFuzzer targets of tests/fuzz.
    # Line tables only, as the gcc builds: enough for a fuzzer's crash report.
    # Without optimization: the build is there for the analysis (clang's warnings come from its
    # front end), and code generation at -O2 was 58% of a file's time (client/connection.cpp:
    # 7.1 s against 3.2 s); the fuzz targets compile their own code at -O1 (tests/fuzz/meson.build).
    clang) opts=(-Dcpp_args=-gline-tables-only -Doptimization=0 -Dice=disabled)
           setup_env=(CXX=clang++) ;;
  esac
  # The gcc builds link with gold where it is installed (binutils ships it): some 90 programs
  # a build, each linked in about half the time ld.bfd takes (0.3 s against 0.7 s, measured on
  # one test program).
  if [ "$1" != clang ] && command -v ld.gold >/dev/null; then setup_env+=(CXX_LD=gold); fi
}

# The clang build's targets: every target built by default whose meson.build is outside tests/,
# and those of tests/fuzz.
clang_targets() {
  meson introspect --targets "$1" | python3 -c 'import json, os, sys
for t in json.load(sys.stdin):
    where = os.path.relpath(t["defined_in"])
    if t["build_by_default"] and (not where.startswith("tests/") or where.startswith("tests/fuzz/")):
        print("\n".join(os.path.relpath(f, sys.argv[1]) for f in t["filename"]))' "$1"
}

# Builds every variant in turn; after each step writes $logs/STEP.status (ok or failed), which the
# foreground waits for. The clang variant has three steps: its fuzz targets first (they need only
# the wire and the families below it, so a build error elsewhere does not also stop the fuzzing),
# then the bounded fuzzing itself (here, at the builder's priority, beside the foreground's tests:
# it is bounded in time, not in work), then everything else, warnings as errors.
build_all() {
  local v dir log ok
  for v in "${variants[@]}"; do
    local t0=$SECONDS
    dir=build-ci-$v
    log=$logs/$v.log
    variant_options "$v"
    : >"$log"
    ok=ok
    if [ ! -d "$dir" ]; then
      env "${setup_env[@]}" meson setup "$dir" -Dwerror=true "${opts[@]}" >>"$log" 2>&1 || ok=failed
    fi
    if [ "$v" = clang ]; then
      if [ $ok = ok ]; then
        ninja -C "$dir" -j2 $(for t in $fuzz_targets; do echo "tests/fuzz/fuzz-$t"; done) \
          >>"$log" 2>&1 || ok=failed
      fi
      echo $ok >"$logs/clang-fuzz.status"
      if [ $ok = ok ]; then
        local fuzzed=ok
        tests/fuzz/run-fuzzers.sh "$dir" "${PATRO_FUZZ_SECONDS:-15}" >"$logs/fuzz.log" 2>&1 ||
          fuzzed=failed
        echo $fuzzed >"$logs/fuzz.status"
      fi
      if [ $ok = ok ]; then
        targets=$(clang_targets "$dir") || targets=
        # shellcheck disable=SC2086
        { [ -n "$targets" ] && ninja -C "$dir" -j2 $targets >>"$log" 2>&1; } || ok=failed
      fi
    elif [ $ok = ok ]; then
      ninja -C "$dir" -j2 >>"$log" 2>&1 || ok=failed
    fi
    echo "$v build: $ok, $((SECONDS - t0)) s, done at $SECONDS s" >>"$logs/times"
    echo $ok >"$logs/$v.status"
  done
}

# Waits for build step $1; true when it succeeded. Shows the build's log when it failed.
built() {
  while [ ! -e "$logs/$1.status" ]; do
    if ! kill -0 "$builder" 2>/dev/null && [ ! -e "$logs/$1.status" ]; then
      echo "the builder stopped before $1"; return 1
    fi
    sleep 1
  done
  if [ "$(cat "$logs/$1.status")" = ok ]; then return 0; fi
  echo "--- the output of step $1 (last 60 lines)"
  tail -60 "$logs/${1%-fuzz}.log"
  return 1
}

fuzz_targets=$(tests/fuzz/run-fuzzers.sh --list)
last_gcc=
for v in "${variants[@]}"; do [ "$v" = clang ] || last_gcc=$v; done
# In a process group of its own (set -m), so that a stop takes its compilers with it.
set -m
(renice -n 10 $BASHPID >/dev/null; build_all) &
builder=$!
set +m

for v in "${variants[@]}"; do
  dir=build-ci-$v
  if [ "$v" = clang ]; then
    say "clang: bounded fuzzing (the builder ran it)"
    if built clang-fuzz; then
      if built fuzz; then cat "$logs/fuzz.log"; else fail "clang: fuzzing"; fi
    else
      fail "clang: building the fuzz targets"
    fi
    say "clang: build all but the test programs (-Wthread-safety, -Werror)"
    if ! built clang; then fail "clang: build (-Wthread-safety, -Werror)"; fi
    continue
  fi
  say "$v build"
  if ! built "$v"; then
    fail "$v: build"; continue
  fi
  say "$v tests"
  # patro-bench's smoke run (suite perf) checks that every benchmark case runs and reports; it
  # measures nothing, and under a sanitizer it was the slowest test (65 s); what it drives (calls,
  # CURVE, the worker's queue and log) the integration tests drive there too. Plain build only.
  suites=()
  [ "$v" = plain ] || suites=(--no-suite perf)
  # One test at a time while a gcc build is still to come (it takes the rest of the machine); the
  # last gcc variant's tests, two at a time: only the clang build and its fuzzing are left beside
  # them, off the critical path, and these tests were CI's tail (TSan: ~700 s one at a time).
  procs=1
  [ "$v" = "$last_gcc" ] && procs=2
  if ! meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes $procs "${suites[@]}"; then
    # One pass over meson's log: the failed tests' names and results for the FAILED line, and
    # what each said went wrong (its assertions, a sanitizer's headline) into the summary too:
    # CI shows only the tail of its output, far below the test's own log.
    failed=$(python3 - "$dir/meson-logs/testlog.json" "$details" 2>/dev/null <<'PY' || true
import json, re, sys
said = re.compile(r"ERROR|FATAL|NOT correct|MESSAGE|Sanitizer|Assertion|FAILED|Traceback|Error:"
                  r"|^[a-z-]+(-client|-server|broker|worker): ")
failed = [t for t in map(json.loads, open(sys.argv[1]))
          if t["result"] not in ("OK", "SKIP", "EXPECTEDFAIL")]
print(" ".join(t["name"] + " " + t["result"] for t in failed))
with open(sys.argv[2], "a") as details:
    for t in failed:
        # The test's own output and its child processes' (stderr: what a client said went wrong).
        out = (t.get("stdout") or "") + "\n" + (t.get("stderr") or "")
        lines = [l for l in out.splitlines() if said.search(l)]
        print("--- " + t["name"] + " (" + t["result"] + "):", file=details)
        for l in lines[:20]:
            print("    " + l[:300], file=details)
PY
)
    fail "$v: tests: $failed"
  fi
  if [ "$v" = plain ]; then
    # A program outside the tree builds against the library through pkg-config.
    say "building an outside program with pkg-config (uninstalled patro.pc)"
    out=$(mktemp -d /tmp/patro-pkgconfig-XXXXXX)
    # shellcheck disable=SC2046
    if c++ -std=c++20 examples/hash_client.cpp -o "$out/client" \
        $(PKG_CONFIG_PATH="$dir/meson-uninstalled" pkg-config --cflags --libs patro); then
      rc=0; LD_LIBRARY_PATH="$dir/libpatro" "$out/client" >/dev/null 2>&1 || rc=$?
      if [ "$rc" = 2 ]; then echo "pkg-config build: ok"; else echo "pkg-config build: runs badly ($rc)"; fail "plain: pkg-config build runs badly"; fi
    else
      echo "pkg-config build: FAILED"; fail "plain: pkg-config build"
    fi
    rm -rf "$out"
  fi
done
wait "$builder" 2>/dev/null || true
builder=
# Nothing may be left behind by the tests.
# The programs themselves, by their command's first word (not a compiler whose arguments name
# them: .ci/run builds the Debian packages meanwhile).
left='^([^ ]*/)?patro-(broker|test-server|test-client|example)'
if pgrep -f "$left" >/dev/null; then
  echo "processes left behind:"; pgrep -af "$left"; fail "processes left behind"
fi
if ls /dev/shm | grep -qi patro; then
  echo "/dev/shm segments left behind:"; ls /dev/shm | grep -i patro; fail "/dev/shm segments left behind"
fi
cat "$logs/times" 2>/dev/null || true
say "summary: ${#failures[@]} failed step(s)"
for f in "${failures[@]}"; do echo "FAILED: $f"; done
cat "$details"
if [ -n "${PATRO_SUMMARY_FILE:-}" ]; then
  { for f in "${failures[@]}"; do echo "FAILED: $f"; done; cat "$details"; } >"$PATRO_SUMMARY_FILE"
fi
exit $status
