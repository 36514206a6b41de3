#!/usr/bin/env bash
# Builds the .deb and installs it into a clean Debian 12 made with debootstrap (minbase and systemd,
# cached in .cache/debootstrap-bookworm, pristine; each run works on a copy), then checks there, with no
# Swift on the system: --version names this commit, the man page is there, `flashctl emulate` +
# `flashctl flash --device tcp:...` writes every byte, `flashctl serve` serves the dashboard at /,
# and systemd-analyze accepts the unit. Needs root (chroot, mounts) and the Debian mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "test-deb.sh: needs root (chroot)" >&2; exit 1; }
deb=$(scripts/package-deb.sh)
echo "test-deb: built $deb ($(du -h "$deb" | cut -f1))"

mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
cache="$PWD/.cache/debootstrap-bookworm"
mkdir -p "$(dirname "$cache")"
if [ ! -x "$cache/usr/bin/systemd-analyze" ]; then
  rm -rf "$cache" "$cache.partial"
  debootstrap --variant=minbase --include=systemd bookworm "$cache.partial" "$mirror" >&2
  mv "$cache.partial" "$cache"
fi

root=$(mktemp -d /tmp/flashctl-deb-root.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for mount in "$root/dev" "$root/proc"; do
    if mountpoint -q "$mount"; then umount "$mount" || umount -l "$mount"; fi
  done
  # Never delete through a mount that is still there (/dev of the host).
  if ! mountpoint -q "$root/dev" && ! mountpoint -q "$root/proc"; then rm -rf "$root"; fi
}
trap cleanup EXIT
cp -a "$cache/." "$root/"
mount --bind /dev "$root/dev"
mount -t proc proc "$root/proc"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$deb" "$root/tmp/flashctl.deb"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }

in_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -qq --no-install-recommends /tmp/flashctl.deb >/dev/null
if in_root sh -c 'command -v swift || ls -d /opt/swift /usr/lib/swift' 2>/dev/null; then
  echo "test-deb: the root has Swift" >&2; exit 1
fi

expected="$(tr -d ' \n' < VERSION) (commit $(git describe --always --dirty --abbrev=12 --exclude='*'))"
version=$(in_root flashctl --version)
[ "$version" = "$expected" ] || { echo "test-deb: --version said '$version', expected '$expected'" >&2; exit 1; }
echo "test-deb: flashctl --version: $version"

in_root sh -c 'zcat /usr/share/man/man1/flashctl.1.gz | grep -q "^\.Dt FLASHCTL 1"'
in_root test -s /usr/share/bash-completion/completions/flashctl
echo "test-deb: man page and completions installed"

# An emulated device and a flash over TCP, inside the root.
in_root sh -ec '
  mkdir -p /tmp/emu
  flashctl emulate --tcp 0 --dir /tmp/emu --serial DEB1 > /tmp/emulate.log 2>&1 &
  emulator=$!
  trap "kill $emulator" EXIT
  for _ in $(seq 100); do grep -q "on tcp:" /tmp/emulate.log && break; sleep 0.1; done
  port=$(sed -n "s/.* on tcp:127.0.0.1:\([0-9]*\),.*/\1/p" /tmp/emulate.log)
  head -c 3000000 /dev/urandom > /tmp/boot.img
  flashctl flash --device tcp:127.0.0.1:$port /tmp/boot.img --json > /tmp/flash.log
  cmp /tmp/boot.img /tmp/emu/boot.img
  grep -q "\"type\":\"flash_completed\"" /tmp/flash.log
'
echo "test-deb: emulate + flash --device tcp:... wrote every byte"

# The dashboard at / from `flashctl serve` in the root, fetched from the host.
log=$root/tmp/serve.log
chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root flashctl serve --port 0 > "$log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do grep -q "listening on" "$log" && break; sleep 0.1; done
url=$(sed -n 's/.*listening on \(http:[^ ]*\) .*/\1/p' "$log")
[ -n "$url" ] || { echo "test-deb: serve did not start:" >&2; cat "$log" >&2; exit 1; }
# Read whole first: grep -q stops at the match, and curl would fail writing the rest (pipefail).
page=$(curl -fsS "$url/")
grep -q '<script type="module" src="/assets/app.js">' <<< "$page"
curl -fsS -o /dev/null "$url/assets/app.js"
echo "test-deb: flashctl serve serves the dashboard at $url/"

# The root's own systemd checks the unit (ExecStart must exist there).
grep -q '^ExecStart=/usr/bin/flashctl serve ' "$root/usr/lib/systemd/system/flashctl-autoflash.service"
in_root systemd-analyze verify /usr/lib/systemd/system/flashctl-autoflash.service
echo "test-deb: systemd-analyze verify accepts the unit"
echo "test-deb: passed"
