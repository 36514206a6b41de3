#!/usr/bin/env bash
# The main job with no hardware: flash images to an emulated fastboot device over the real libusb
# path (an emulated USB device under umockdev, bridged to `flashctl emulate`), then check that
# every byte arrived; then flash two emulated devices at once through `flashctl serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"

swift build -c release --product flashctl >&2
flashctl="$(swift build -c release --show-bin-path)/flashctl"

work=$(mktemp -d /tmp/flashctl-demo.XXXXXX)
emulator_pid=""
server_pid=""
cleanup() {
  [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null && wait "$emulator_pid" 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
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

echo "== flashctl serve --emulate 2 (WebSocket /flash-progress, HTTP API, history)"
mkdir -p "$work/images"
cp "$work/boot.img" "$work/images/boot.img"
"$flashctl" serve --port 0 --emulate 2 --emulate-speed 64M --images "$work/images" --history "$work/history.sqlite" > "$work/server.log" 2>/dev/null &
server_pid=$!
for _ in $(seq 100); do grep -q "emulated device EMU2" "$work/server.log" 2>/dev/null && break; sleep 0.1; done
sed 's/^/   /' "$work/server.log"
server=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/server.log" | head -1)
echo "== two jobs at once: flashctl flash --server $server --device EMU1|EMU2 boot.img"
"$flashctl" flash --server "$server" --device EMU1 boot.img --json > "$work/emu1.ndjson" &
first=$!
"$flashctl" flash --server "$server" --device EMU2 boot.img --json > "$work/emu2.ndjson"
wait "$first"
tail -n 1 "$work/emu1.ndjson" "$work/emu2.ndjson"
echo "== flashctl jobs / flashctl history"
"$flashctl" jobs --server "$server"
"$flashctl" history --server "$server"
expected=$(xxh128sum "$work/boot.img" | cut -c1-32)
for device in EMU1 EMU2; do
  got=$("$flashctl" history --server "$server" --device "$device" --json | grep -o '"xxh128" : "[0-9a-f]*"' | head -1 | grep -o '[0-9a-f]\{32\}')
  [ "$got" = "$expected" ] || { echo "FAIL: history says $device was sent $got, expected $expected"; exit 1; }
  partitions=$(grep -o "emulated device $device on .*partitions in .*" "$work/server.log" | sed 's/.*partitions in //')
  cmp "$work/boot.img" "$partitions/boot.img"
done
echo "OK: both devices hold every byte, and the history's XXH3-128 of what was sent matches xxh128sum of the image"

