#!/usr/bin/env bash
# Installs Patro's Debian packages into a clean Debian 12 root (mmdebstrap, from Debian's
# packages: the network must reach a Debian mirror), runs the main job there from the installed
# binaries alone (patro-worker, the patro CLI, the Python client), then removes the packages and
# checks that none of their files is left. Removes the root at the end. Run as root.
#   tools/deb-clean-root.sh [DEB_DIR]   (DEB_DIR: the .deb files; default: tools/build-deb.sh
#                                        builds them first)
# Takes about a minute (mmdebstrap's downloads, then the job); .ci/run runs it after
# tools/build-deb.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/patro-clean-root.XXXXXX")
trap 'umount -R "$work/root/dev" "$work/root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
command -v mmdebstrap >/dev/null || { echo "deb-clean-root: apt-get install mmdebstrap" >&2; exit 2; }

debs=${1:-}
if [[ -z $debs ]]; then
  debs="$work/debs"
  "$here/tools/build-deb.sh" "$debs" >"$work/build-deb.log" 2>&1 ||
    { tail -30 "$work/build-deb.log"; exit 1; }
fi
debs=$(cd "$debs" && pwd)
pkgs=(libpatro0 patro-tools python3-patro)
files=()
for p in "${pkgs[@]}"; do files+=("$(ls "$debs"/${p}_*.deb)"); done

# A minimal root with apt; the packages go in by apt, which pulls what they depend on from the
# mirror, as on an operator's machine.
mmdebstrap --quiet --variant=apt bookworm "$work/root" >"$work/mmdebstrap.log" 2>&1 ||
  { tail -30 "$work/mmdebstrap.log"; exit 1; }
mkdir -p "$work/root/tmp/debs"
cp "${files[@]}" "$work/root/tmp/debs/"
mount --rbind /dev "$work/root/dev"
mount -t tmpfs -o mode=1777 shm "$work/root/dev/shm"  # its own: the worker's lock segments
mount -t proc proc "$work/root/proc"
in_root() { chroot "$work/root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
in_root sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends /tmp/debs/*.deb' >"$work/install.log" 2>&1 ||
  { tail -30 "$work/install.log"; exit 1; }
echo "installed: $(in_root dpkg-query -W -f '${Package} ${Version}  ' "${pkgs[@]}")"
# Their files (not the directories they share with other packages, as /lib or /usr/bin).
for p in "${pkgs[@]}"; do in_root dpkg -L "$p"; done | sort -u | while read -r f; do
  [[ -d $work/root$f ]] || echo "$f"
done >"$work/package-files"

# The main job from the installed binaries: a worker (its own broker on 127.0.0.1), producers
# pushing with the CLI, consumers taking with `patro take --exec` (each job writes a log line),
# and the Python client reading the results.
in_root /bin/sh -e >"$work/job.log" 2>&1 <<'JOB' || { cat "$work/job.log"; exit 1; }
d=$(mktemp -d)
patro-worker --front tcp://127.0.0.1:7170 --back tcp://127.0.0.1:7171 --log-sync always \
  queue jobs log events "$d/events.log" counter done 2>"$d/worker.err" &
w=$!
trap 'kill $w 2>/dev/null || true; rm -rf "$d"' EXIT
i=0; until patro ls >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 200 ] || exit 1; sleep 0.05; done
for n in $(seq 1 40); do patro push jobs "job $n" >/dev/null; done
consumers=""
for c in alice bob; do
  (while patro take jobs --wait 500 --exec sh -c \
     'patro call events write "$(cat) by '$c'" >/dev/null && patro call done add 1 >/dev/null'; do :; done) &
  consumers="$consumers $!"
done
wait $consumers
/usr/bin/python3 - <<'PY'
import patro
done = patro.Counter(patro.get_proxy("tcp://127.0.0.1:7170", "done"))
lines = patro.get_proxy("tcp://127.0.0.1:7170", "events").call("read", 0, 1000)["lines"]
print("counter", int(done), "lines", len(lines))
assert int(done) == 40 and len(lines) == 40, (int(done), len(lines))
PY
kill -TERM $w
st=0; wait $w || st=$?
echo "the worker stopped with status $st"
test $st = 0
JOB
echo "the main job in the clean root:"
sed 's/^/  /' "$work/job.log"

# Removed cleanly: purged, and none of their files left behind.
in_root sh -c "DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq ${pkgs[*]}" \
  >"$work/purge.log" 2>&1 || { tail -30 "$work/purge.log"; exit 1; }
left=0
while read -r f; do
  [[ -f $work/root$f || -L $work/root$f ]] || continue
  echo "deb-clean-root: left after the purge: $f" >&2
  left=1
done <"$work/package-files"
[[ $left == 0 ]] || exit 1
echo "purged: no file of ${pkgs[*]} left"
