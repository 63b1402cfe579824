#!/usr/bin/env bash
# Checks the sources once (clang-format, the layers of libpatro), then builds Patro four ways: a
# plain build, AddressSanitizer + UndefinedBehaviorSanitizer and ThreadSanitizer, each running
# every test (the fuzz corpus replays among them), and a clang build (-Wthread-safety) that runs
# each fuzz target for a bounded time instead of the tests. The clang build compiles everything
# but the test programs (libpatro, where the thread-safety annotations are, the daemons, the tools,
# the examples, and tests/fuzz): the tests are C++ that gcc compiles three times over, and they
# hold no annotations. The doctest programs themselves compile at -O0 in every build
# (tests/meson.build says why). Warnings are errors. A failed test's assertions end the summary,
# which CI shows. Usage:
#   tools/run-tests.sh [plain|asan|tsan|clang]...      (default: all four)
# PATRO_FUZZ_SECONDS sets the time per fuzz target in the clang variant (default 25).
set -euo pipefail
cd "$(dirname "$0")/.."
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(plain asan tsan clang)
export PATRO_LOG_LEVEL=${PATRO_LOG_LEVEL:-warn}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp}
status=0
failures=()
details=$(mktemp /tmp/patro-test-details-XXXXXX)
trap 'rm -f "$details"' EXIT
# Records a failed step; the summary at the end lists them (CI shows only an output's tail).
fail() {
  status=1
  failures+=("$1")
}
echo "=== source checks"
if ! tools/check-format.sh; then fail "clang-format"; fi
if ! python3 tools/check-layers.py; then fail "layers"; fi
for v in "${variants[@]}"; do
  setup_env=()
  # The gcc builds keep line tables only (-g1: file:line in sanitizer reports and stack traces,
  # no variables for a debugger), which makes them a quarter faster to compile; the ASan+UBSan
  # build also compiles at -O1 (what AddressSanitizer recommends): with -g1, 38% of its time at
  # -O2 -g, the slowest of the builds by far.
  case "$v" in
    plain) opts=(-Dcpp_args=-g1) ;;
    # GCC 12 reports maybe-uninitialized falsely inside the standard library (<regex>, std::variant)
    # once the sanitizers instrument it; the plain build keeps that warning an error.
    asan) opts=(-Db_sanitize=address,undefined -Db_lundef=false
                "-Dcpp_args=-Wno-error=maybe-uninitialized -O1 -g1") ;;
    tsan) opts=(-Db_sanitize=thread -Db_lundef=false
                "-Dcpp_args=-Wno-error=maybe-uninitialized -g1") ;;
    # clang 14 checks the thread-safety annotations (meson.build adds -Wthread-safety for clang)
    # and builds the libFuzzer targets of tests/fuzz.
    # Line tables only, as the gcc builds: enough for a fuzzer's crash report.
    clang) opts=(-Dcpp_args=-gline-tables-only); setup_env=(CXX=clang++) ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  dir=build-ci-$v
  echo "=== $v build"
  if [ ! -d "$dir" ]; then
    env "${setup_env[@]}" meson setup "$dir" -Dwerror=true "${opts[@]}" >/dev/null
  fi
  if [ "$v" = clang ]; then
    # The fuzz targets first (they need only the wire and the families below it), so that a
    # build error elsewhere does not also stop the fuzzing; then everything, warnings as errors.
    echo "=== clang: bounded fuzzing"
    if ninja -C "$dir" -j2 $(for t in frames request reply control batch config; do
                              echo "tests/fuzz/fuzz-$t"; done); then
      if ! tests/fuzz/run-fuzzers.sh "$dir" "${PATRO_FUZZ_SECONDS:-25}"; then fail "clang: fuzzing"; fi
    else
      fail "clang: building the fuzz targets"
    fi
    echo "=== clang: build all but the test programs (-Wthread-safety, -Werror)"
    # Every target built by default whose meson.build is outside tests/, and those of tests/fuzz.
    targets=$(meson introspect --targets "$dir" | python3 -c 'import json, os, sys
for t in json.load(sys.stdin):
    where = os.path.relpath(t["defined_in"])
    if t["build_by_default"] and (not where.startswith("tests/") or where.startswith("tests/fuzz/")):
        print("\n".join(os.path.relpath(f, sys.argv[1]) for f in t["filename"]))' "$dir") || targets=
    # shellcheck disable=SC2086
    if [ -z "$targets" ] || ! ninja -C "$dir" -j2 $targets; then
      fail "clang: build (-Wthread-safety, -Werror)"
    fi
    continue
  fi
  if ! ninja -C "$dir" -j2; then
    fail "$v: build"; continue
  fi
  echo "=== $v tests"
  if ! meson test -C "$dir" --print-errorlogs --num-processes 1; then
    # One pass over meson's log: the failed tests' names and results for the FAILED line, and
    # what each said went wrong (its assertions, a sanitizer's headline) into the summary too:
    # CI shows only the tail of its output, far below the test's own log.
    failed=$(python3 - "$dir/meson-logs/testlog.json" "$details" 2>/dev/null <<'PY' || true
import json, re, sys
said = re.compile(r"ERROR|FATAL|NOT correct|MESSAGE|Sanitizer|Assertion|FAILED|Traceback|Error:")
failed = [t for t in map(json.loads, open(sys.argv[1]))
          if t["result"] not in ("OK", "SKIP", "EXPECTEDFAIL")]
print(" ".join(t["name"] + " " + t["result"] for t in failed))
with open(sys.argv[2], "a") as details:
    for t in failed:
        lines = [l for l in (t.get("stdout") or "").splitlines() if said.search(l)]
        print("--- " + t["name"] + " (" + t["result"] + "):", file=details)
        for l in lines[:12]:
            print("    " + l[:300], file=details)
PY
)
    fail "$v: tests: $failed"
  fi
  if [ "$v" = plain ]; then
    # A program outside the tree builds against the library through pkg-config.
    echo "=== building an outside program with pkg-config (uninstalled patro.pc)"
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
# Nothing may be left behind by the tests.
if pgrep -f 'patro-(broker|test-server|test-client|example)' >/dev/null; then
  echo "processes left behind:"; pgrep -af 'patro-(broker|test-server|test-client|example)'; fail "processes left behind"
fi
if ls /dev/shm | grep -qi patro; then
  echo "/dev/shm segments left behind:"; ls /dev/shm | grep -i patro; fail "/dev/shm segments left behind"
fi
echo "=== summary: ${#failures[@]} failed step(s)"
for f in "${failures[@]}"; do echo "FAILED: $f"; done
cat "$details"
if [ -n "${PATRO_SUMMARY_FILE:-}" ]; then
  { for f in "${failures[@]}"; do echo "FAILED: $f"; done; cat "$details"; } >"$PATRO_SUMMARY_FILE"
fi
exit $status
