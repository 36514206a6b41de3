#!/usr/bin/env bash
# Flashes the same image to the same emulated device with flashctl and with AOSP fastboot, side by
# side in one run: over emulated USB (real libusb / usbdevfs above umockdev) and over TCP.
# Prints each tool's speed (median of the runs) and the ratio flashctl / fastboot.
#
#   bench/fastboot.sh [IMAGE_MIB=256] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
size_mib=${1:-256}
runs=${2:-3}

swift build -c release --product flashctl >&2
flashctl="$(swift build -c release --show-bin-path)/flashctl"
fastboot=/usr/bin/fastboot

work=$(mktemp -d /dev/shm/flashctl-bench.XXXXXX)
emulator_pid=""
cleanup() {
  [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null && wait "$emulator_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

head -c $((size_mib << 20)) /dev/urandom > "$work/boot.img"
"$flashctl" emulate --tcp 0 --dir "$work/device" --serial BENCH0001 --max-download-size 512M > "$work/emulator.log" &
emulator_pid=$!
for _ in $(seq 100); do grep -q "tcp:" "$work/emulator.log" 2>/dev/null && break; sleep 0.1; done
port=$(grep -o 'tcp:[0-9.]*:[0-9]*' "$work/emulator.log" | head -1 | cut -d: -f3)

usb() {
  /usr/bin/python3 testbed/fastboot_usb_testbed.py --device "tcp=127.0.0.1:$port,serial=BENCH0001,port=1-1" -- "$@"
}

# seconds for one command, checking the partition afterwards so a fast failure never counts
timed() {
  rm -f "$work/device/boot.img"
  local start end
  start=$(date +%s.%N)
  "$@" > "$work/last.log" 2>&1 || { echo "failed: $*" >&2; cat "$work/last.log" >&2; exit 1; }
  end=$(date +%s.%N)
  cmp -s "$work/boot.img" "$work/device/boot.img" || { echo "wrong bytes on the device after: $*" >&2; exit 1; }
  echo "$end - $start" | bc -l
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A seconds
for transport in usb tcp; do
  for tool in flashctl fastboot; do seconds[$transport-$tool]=""; done
  for _ in $(seq "$runs"); do
    if [ $transport = usb ]; then
      seconds[$transport-fastboot]+="$(timed usb "$fastboot" -s BENCH0001 flash boot "$work/boot.img")"$'\n'
      seconds[$transport-flashctl]+="$(timed usb "$flashctl" flash --device BENCH0001 "$work/boot.img" --json)"$'\n'
    else
      seconds[$transport-fastboot]+="$(timed "$fastboot" -s "tcp:127.0.0.1:$port" flash boot "$work/boot.img")"$'\n'
      seconds[$transport-flashctl]+="$(timed "$flashctl" flash --device "tcp:127.0.0.1:$port" "$work/boot.img" --json)"$'\n'
    fi
  done
done

echo
echo "image: ${size_mib} MiB random, emulated device with partitions on tmpfs, median of $runs runs"
printf "%-10s %14s %14s %8s\n" transport "flashctl MB/s" "fastboot MB/s" ratio
for transport in usb tcp; do
  ours=$(printf "%s" "${seconds[$transport-flashctl]}" | median)
  theirs=$(printf "%s" "${seconds[$transport-fastboot]}" | median)
  ours_speed=$(echo "$size_mib * 1.048576 / $ours" | bc -l)
  theirs_speed=$(echo "$size_mib * 1.048576 / $theirs" | bc -l)
  printf "%-10s %14.1f %14.1f %7.2fx\n" "$transport" "$ours_speed" "$theirs_speed" "$(echo "$ours_speed / $theirs_speed" | bc -l)"
done
