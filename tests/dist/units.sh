#!/usr/bin/env bash
# The systemd units as shipped: `systemd-analyze verify` finds nothing to say about them (with
# ExecStart on this build's daemons and Documentation= on the project's man pages), and
# `systemd-analyze security --offline` rates each at 2.0 or lower ("OK"); the worker's unit does
# not pull in a local broker and waits for network-online.target. Skips (77) where
# systemd-analyze is absent or too old for --offline (systemd < 250).
# Nothing here starts a unit: this machine's tests run without systemd as PID 1.
#   units.sh UNIT_SOURCE_DIR PATRO_BROKER PATRO_WORKER MAN_DIR
set -euo pipefail
src=$1 broker=$(realpath "$2") worker=$(realpath "$3") mandir=$(realpath "$4")
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: no systemd-analyze"
  exit 77
fi
if ! systemd-analyze --help 2>/dev/null | grep -q -- '--offline'; then
  echo "SKIP: systemd-analyze $(systemd-analyze --version | head -1) lacks --offline"
  exit 77
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/patro-units.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/units" "$work/man/man1"
ln -s "$broker" "$work/bin/patro-broker"
ln -s "$worker" "$work/bin/patro-worker"
for page in "$mandir"/*.1; do ln -s "$page" "$work/man/man1/"; done
for unit in patro-broker.service patro-worker@.service; do
  sed -e "s|@bindir@|$work/bin|g" -e "s|@datadir@|/usr/share|g" "$src/$unit.in" \
    >"$work/units/$unit"
  if grep -q '@[a-z]*@' "$work/units/$unit"; then
    echo "FAIL: $unit keeps a placeholder: $(grep -o '@[a-z]*@' "$work/units/$unit" | head -1)"
    exit 1
  fi
done
# The worker's template as an instance, the way systemd loads it.
units=("$work/units/patro-broker.service" "$work/units/patro-worker@test.service")
status=0

# verify: the man pages are checked where man(1) is installed.
man_check=--man=no
if command -v man >/dev/null; then man_check=--man=yes; fi
if ! out=$(MANPATH="$work/man" systemd-analyze verify "$man_check" "${units[@]}" 2>&1) ||
  [[ -n $out ]]; then
  echo "FAIL: systemd-analyze verify $man_check:"
  echo "$out"
  status=1
else
  echo "ok: systemd-analyze verify $man_check says nothing"
fi

# security: "Overall exposure level for NAME: 1.3 OK"
for unit in "${units[@]}"; do
  name=$(basename "$unit")
  out=$(systemd-analyze security --offline=yes "$unit" 2>&1) || true
  score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
  if [[ -z $score ]]; then
    echo "FAIL: no exposure level for $name:"
    echo "$out"
    status=1
  elif awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
    echo "ok: $name exposure $score"
  else
    echo "FAIL: $name exposure $score, above 2.0; what it lacks:"
    grep '✗' <<<"$out" || true
    status=1
  fi
done

# Ordering: a worker may use a broker on another host.
worker_unit="$work/units/patro-worker@.service"
if grep -Eq '^(Wants|Requires|BindsTo)=.*patro-broker' "$worker_unit"; then
  echo "FAIL: patro-worker@.service pulls in a local patro-broker.service"
  status=1
fi
for key in Wants After; do
  if ! grep -Eq "^$key=.*network-online\.target" "$worker_unit"; then
    echo "FAIL: patro-worker@.service lacks $key=network-online.target"
    status=1
  fi
done
exit $status
