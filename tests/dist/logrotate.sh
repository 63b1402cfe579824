#!/usr/bin/env bash
# The shipped logrotate file: `logrotate -d` reads it without an error, and a forced rotation of
# a copy aimed at a temporary directory (its postrotate replaced by a marker, so that no running
# worker is touched) moves the log aside, creates a new one with the old one's mode, and runs the
# postrotate once for several logs (sharedscripts). Skips (77) where logrotate is not installed.
#   logrotate.sh CONFIG
set -euo pipefail
conf=$(realpath "$1")
logrotate=$(command -v logrotate || command -v /usr/sbin/logrotate || true)
if [[ -z $logrotate ]]; then
  echo "SKIP: no logrotate"
  exit 77
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/patro-logrotate.XXXXXX")
trap 'rm -rf "$work"' EXIT
status=0
fail() {
  echo "FAIL: $*"
  status=1
}

# 1. The file as shipped.
if ! out=$("$logrotate" -d -s "$work/state-d" "$conf" 2>&1); then
  fail "logrotate -d exits non-zero:"
  echo "$out"
elif grep -qi 'error' <<<"$out"; then
  fail "logrotate -d reports an error:"
  echo "$out"
else
  echo "ok: logrotate -d reads $(basename "$conf")"
fi
if ! grep -q '^/var/log/patro/\*\.log ' "$conf"; then
  fail "the file does not name /var/log/patro/*.log"
fi

# 2. A forced rotation of a copy.
mkdir "$work/logs"
sed -e "s|^/var/log/patro/|$work/logs/|" \
  -e '/^[[:space:]]*postrotate/,/^[[:space:]]*endscript/{/postrotate\|endscript/!d}' \
  -e "s|^\([[:space:]]*\)postrotate\$|&\n\1\1echo ran >>$work/postrotate|" "$conf" >"$work/conf"
for name in events audit; do
  echo "a line of $name" >"$work/logs/$name.log"
  chmod 0640 "$work/logs/$name.log"
done
echo "not a log" >"$work/logs/notes.txt"
chmod 0700 "$work"  # logrotate refuses a config or a directory others may write
if ! out=$("$logrotate" -f -s "$work/state" "$work/conf" 2>&1); then
  fail "the forced rotation exits non-zero:"
  echo "$out"
fi
for name in events audit; do
  if [[ $(cat "$work/logs/$name.log.1" 2>/dev/null) != "a line of $name" ]]; then
    fail "$name.log was not moved to $name.log.1 (delaycompress leaves it uncompressed)"
  fi
  if [[ ! -f $work/logs/$name.log || -s $work/logs/$name.log ]]; then
    fail "no new empty $name.log"
  elif [[ $(stat -c %a "$work/logs/$name.log") != 640 ]]; then
    fail "the new $name.log has mode $(stat -c %a "$work/logs/$name.log"), not the old 640"
  fi
done
if [[ -e $work/logs/notes.txt.1 ]]; then fail "a file not named *.log was rotated"; fi
ran=$(grep -c ran "$work/postrotate" 2>/dev/null || true)
if [[ $ran != 1 ]]; then fail "postrotate ran ${ran:-0} times for two logs, not once"; fi
if [[ $status == 0 ]]; then
  echo "ok: a forced rotation moved both logs, created new ones, ran postrotate once"
fi
exit $status
