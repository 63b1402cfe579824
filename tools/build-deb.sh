#!/usr/bin/env bash
# Builds the Debian packages (libpatro0, libpatro-dev, patro-tools, python3-patro) from this working tree with
# dpkg-buildpackage, unpacks each into a clean root with dpkg -x and lists what landed, checking
# that the files an operator needs are there, and runs lintian on them. Works in a temporary directory and removes it.
#   tools/build-deb.sh [OUTDIR]   (OUTDIR: where to keep the .deb files; default: none kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
keep=${1:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/patro-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A copy of the tree (tracked and untracked-but-not-ignored files), so that the build writes
# nothing into the checkout and its .deb files land in $work.
mkdir "$work/src"
(cd "$here" && git ls-files -z --cached --others --exclude-standard |
  xargs -0 tar -cf - --no-recursion 2>/dev/null) | tar -xf - -C "$work/src"
(cd "$work/src" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc) ${DEB_BUILD_OPTIONS:-}" \
  dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) || {
  tail -50 "$work/build.log"
  echo "build-deb: dpkg-buildpackage failed" >&2
  exit 1
}

status=0
for pkg in libpatro0 libpatro-dev patro-tools python3-patro; do
  deb=$(ls "$work"/${pkg}_*.deb)
  root="$work/root-$pkg"
  mkdir "$root"
  dpkg -x "$deb" "$root"
  echo "== $(basename "$deb")"
  dpkg-deb --field "$deb" Package Version Architecture Depends | sed 's/^/   /'
  (cd "$root" && find . -type f -o -type l | sort | sed 's/^\./   /')
done

# What must have landed.
need() {
  if [[ -e "$work/root-$1/$2" || -L "$work/root-$1/$2" ]]; then return; fi
  echo "build-deb: $1 lacks $2" >&2
  status=1
}
need libpatro0 "usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/libpatro.so.0"
need libpatro-dev usr/include/patro/patro.hpp
need libpatro-dev "usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/pkgconfig/patro.pc"
for f in usr/bin/patro usr/bin/patro-broker usr/bin/patro-worker \
  lib/systemd/system/patro-broker.service lib/systemd/system/patro-worker@.service \
  usr/share/man/man1/patro-worker.1.gz usr/share/bash-completion/completions/patro; do
  need patro-tools "$f"
done
if grep -q -- '-std=' "$work"/root-libpatro-dev/usr/lib/*/pkgconfig/patro.pc; then
  echo "build-deb: patro.pc names a -std flag" >&2
  status=1
fi
# lintian on what was built: no errors and no warnings, but for the tags debian/README.source
# names with the reason for each.
if command -v lintian >/dev/null; then
  echo "== lintian"
  # Its ELF caches (mldbm-elf-*) stay behind in TMPDIR: kept in $work, which goes on exit.
  if ! TMPDIR="$work" lintian --fail-on error,warning --tag-display-limit 0 \
    --suppress-tags bogus-mail-host,bogus-mail-host-in-debian-changelog "$work"/*.changes; then
    echo "build-deb: lintian found errors or warnings" >&2
    status=1
  fi
else
  echo "build-deb: lintian is not installed (apt-get install lintian): not run"
fi
if [[ -n $keep ]]; then
  mkdir -p "$keep"
  cp "$work"/*.deb "$keep"/
  echo "kept the packages in $keep"
fi
exit $status
