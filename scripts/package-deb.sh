#!/usr/bin/env bash
# Builds flashctl_VERSION_amd64.deb (into the folder given, default .build-release/deb) from the
# release binary with Swift's standard library linked in, for a Debian 12 with no Swift: the
# files scripts/install.sh installs, with PREFIX=/usr, plus the auto-flash allow-list and
# profiles in /etc (kept on upgrade). Depends: the package of every library the binary loads
# (ldd), which must include libusb-1.0-0, libudev1, libarchive13, liblzma5, zlib1g and libxxhash0.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
out=$(mkdir -p "${1:-.build-release/deb}" && cd "${1:-.build-release/deb}" && pwd)
version=$(tr -d ' \n' < VERSION)
binary=$(scripts/build-release.sh)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
FLASHCTL_BINARY=$binary PREFIX=/usr DESTDIR=$stage scripts/install.sh
install -d "$stage/etc/udev/rules.d" "$stage/etc/flashctl" "$stage/usr/share/doc/flashctl"
install -m 644 udev/72-flashctl-autoflash.rules "$stage/etc/udev/rules.d/"
install -m 644 udev/profiles.example.yaml "$stage/etc/flashctl/profiles.yaml"
install -m 644 README.md "$stage/usr/share/doc/flashctl/"

# Every shared library the binary loads, as the Debian package that holds it.
# (dpkg knows a file by one of its names: /lib or /usr/lib, the link or its target.)
owner() {
  local real
  real=$(readlink -f "$1")
  for name in "$1" "${1#/usr}" "/usr$1" "$real" "${real#/usr}"; do
    dpkg -S "$name" 2>/dev/null && return
  done
  echo "package-deb.sh: no package holds $1" >&2
  return 1
}
depends=$(ldd "$binary" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r library; do
  owner "$library"
done | cut -d: -f1 | sort -u)
for required in libusb-1.0-0 libudev1 libarchive13 liblzma5 zlib1g libxxhash0; do
  grep -qx "$required" <<< "$depends" || { echo "package-deb.sh: the binary does not load $required's library" >&2; exit 1; }
done
if ldd "$binary" | grep -q "libswift\|libFoundation\|not found"; then
  echo "package-deb.sh: $binary still needs Swift's libraries:" >&2
  ldd "$binary" >&2
  exit 1
fi

install -d "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: flashctl
Version: $version
Architecture: amd64
Maintainer: flashctl developers <flashctl@localhost>
Section: utils
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: $(paste -sd, <<< "$depends" | sed 's/,/, /g')
Homepage: https://github.com/flashctl/flashctl
Description: USB flashing tool: fastboot devices, USB drives and SD cards
 flashctl flashes Android-style devices over fastboot (USB and TCP) and writes
 images to USB drives and SD cards, verified, with live progress; its server
 runs many devices at once with a WebSocket progress endpoint, an HTTP job API
 and a browser dashboard, and can auto-flash devices udev rules allow-list.
CONTROL
printf '/etc/udev/rules.d/72-flashctl-autoflash.rules\n/etc/flashctl/profiles.yaml\n' > "$stage/DEBIAN/conffiles"
deb="$out/flashctl_${version}_amd64.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >&2
echo "$deb"
