#!/usr/bin/env bash
# The main job with no hardware: flash images to an emulated fastboot device over the real libusb
# path (an emulated USB device under umockdev, bridged to `flashctl emulate`), then check that
# every byte arrived.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"

swift build -c release --product flashctl >&2
flashctl="$(swift build -c release --show-bin-path)/flashctl"

work=$(mktemp -d /tmp/flashctl-demo.XXXXXX)
emulator_pid=""
cleanup() {
  [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null && wait "$emulator_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "== making images in $work"
head -c $((48 << 20)) /dev/urandom > "$work/boot.img"
truncate -s 96M "$work/system.raw"
dd if=/dev/urandom of="$work/system.raw" bs=1M count=24 seek=8 conv=notrunc status=none
img2simg "$work/system.raw" "$work/system.img"

echo "== starting an emulated fastboot device (max-download-size 32 MiB)"
"$flashctl" emulate --tcp 0 --dir "$work/device" --serial DEMO0001 --max-download-size 32M > "$work/emulator.log" &
emulator_pid=$!
for _ in $(seq 100); do grep -q "tcp:" "$work/emulator.log" 2>/dev/null && break; sleep 0.1; done
port=$(grep -o 'tcp:[0-9.]*:[0-9]*' "$work/emulator.log" | head -1 | cut -d: -f3)
echo "   $(cat "$work/emulator.log")"

usb() {
  /usr/bin/python3 testbed/fastboot_usb_testbed.py --device "tcp=127.0.0.1:$port,serial=DEMO0001,port=1-1" -- "$@"
}

echo "== flashctl devices (real libusb, emulated USB device)"
usb "$flashctl" devices
echo "== flashctl flash --device DEMO0001 boot.img"
usb "$flashctl" flash --device DEMO0001 "$work/boot.img"
echo "== flashctl flash --device usb:1-1 system.img (sparse, sent in pieces of at most 32 MiB)"
usb "$flashctl" flash --device usb:1-1 "$work/system.img"
echo "== flashctl flash --device tcp:127.0.0.1:$port boot.img --partition recovery"
"$flashctl" flash --device "tcp:127.0.0.1:$port" "$work/boot.img" --partition recovery

echo "== checking what the device holds"
cmp "$work/boot.img" "$work/device/boot.img"
cmp "$work/system.raw" "$work/device/system.img"
cmp "$work/boot.img" "$work/device/recovery.img"
echo "OK: every byte arrived"
