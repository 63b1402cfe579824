#!/usr/bin/env bash
# Checks that every tracked C++ file is formatted by .clang-format (clang-format 14). Prints the
# offending lines and exits 1 if one is not. Usage: tools/check-format.sh [clang-format binary]
set -euo pipefail
cd "$(dirname "$0")/.."
cf=${1:-${CLANG_FORMAT:-}}
if [ -z "$cf" ]; then
  for c in clang-format-14 clang-format; do
    if command -v "$c" >/dev/null; then cf=$c; break; fi
  done
fi
if [ -z "$cf" ]; then echo "check-format: no clang-format found" >&2; exit 1; fi
if ! "$cf" --version | grep -q 'version 14\.'; then
  echo "check-format: warning: $("$cf" --version) is not clang-format 14; results may differ" >&2
fi
mapfile -t files < <(git ls-files -- '*.cpp' '*.hpp')
if "$cf" --dry-run --Werror "${files[@]}"; then
  echo "check-format: ${#files[@]} files formatted"
else
  echo "check-format: run '$cf -i' on the files above" >&2
  exit 1
fi
