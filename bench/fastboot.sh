#!/usr/bin/env bash
# Flashes the same image to the same emulated device with flashctl and with AOSP fastboot, side by
# side in one run: over emulated USB (real libusb / usbdevfs above umockdev) and over TCP.
# Prints each tool's speed (median of the runs), the ratio flashctl / fastboot, and each tool's
# CPU seconds (user + system) per GiB sent, which are steadier than wall times on a shared machine.
#
#   bench/fastboot.sh [IMAGE_MIB=256] [RUNS=3]      TRANSPORTS="tcp" for TCP alone
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
size_mib=${1:-256}
runs=${2:-3}

use_release_flashctl
fastboot=/usr/bin/fastboot
make_workdir flashctl-bench

head -c $((size_mib << 20)) /dev/urandom > "$work/boot.img"
start_emulator --serial BENCH0001 --max-download-size 512M

usb() {
  /usr/bin/python3 testbed/fastboot_usb_testbed.py --device "tcp=127.0.0.1:$port,serial=BENCH0001,port=1-1" -- "$@"
}

# Runs one flash, checks the partition afterwards (so a fast failure never counts) and prints
# "SECONDS CPU_SECONDS PEAK_RSS_KIB DEVICE_CPU_SECONDS" of the flashing tool itself and of the
# emulated device taking the bytes (over USB, the testbed's bridge to it is not counted).
timed() {
  rm -f "$work/device/boot.img"
  local wrapper=()
  if [ "$1" = usb ]; then wrapper=(usb); shift; fi
  local device_before
  device_before=$(emulator_cpu)
  "${wrapper[@]}" /usr/bin/time -f "%e %U %S %M" -o "$work/time.out" "$@" > "$work/last.log" 2>&1 \
    || { echo "failed: $*" >&2; cat "$work/last.log" >&2; exit 1; }
  local device_after
  device_after=$(emulator_cpu)
  cmp -s "$work/boot.img" "$work/device/boot.img" || { echo "wrong bytes on the device after: $*" >&2; exit 1; }
  tail -1 "$work/time.out" | awk -v d="$(echo "$device_after - $device_before" | bc)" '{print $1, $2 + $3, $4, d}'
}

transports=${TRANSPORTS:-usb tcp}
declare -A seconds cpu rss device
for transport in $transports; do
  for tool in flashctl fastboot; do seconds[$transport-$tool]=""; cpu[$transport-$tool]=""; device[$transport-$tool]=""; rss[$transport-$tool]=0; done
  for _ in $(seq "$runs"); do
    for tool in fastboot flashctl; do
      prefix=""; target="tcp:127.0.0.1:$port"
      if [ $transport = usb ]; then prefix=usb; target=BENCH0001; fi
      if [ $tool = fastboot ]; then
        command=("$fastboot" -s "$target" flash boot "$work/boot.img")
      else
        command=("$flashctl" flash --device "$target" "$work/boot.img" --json)
      fi
      result=$(timed $prefix "${command[@]}")
      read -r wall used kib taken <<< "$result"
      seconds[$transport-$tool]+="$wall"$'\n'
      cpu[$transport-$tool]+="$used"$'\n'
      device[$transport-$tool]+="$taken"$'\n'
      [ "$kib" -gt "${rss[$transport-$tool]}" ] && rss[$transport-$tool]=$kib
    done
  done
done

echo
echo "image: ${size_mib} MiB random; emulated device with partitions on tmpfs; median of $runs runs"
echo "(usb = real libusb/usbdevfs above umockdev; the emulation, not a bus, limits the speed)"
echo "CPU: user + system seconds per GiB sent; device: the emulated device's own, and its share of"
echo "the wall time (near 100%: the device, not the tool, sets the speed)"
printf "%-5s %-9s %10s %9s %12s %12s %12s %14s\n" path tool MB/s "vs fastboot" "CPU s/GiB" "device CPU" "device busy" "peak RSS MiB"
for transport in $transports; do
  theirs=$(printf "%s" "${seconds[$transport-fastboot]}" | median)
  for tool in fastboot flashctl; do
    wall=$(printf "%s" "${seconds[$transport-$tool]}" | median)
    used=$(printf "%s" "${cpu[$transport-$tool]}" | median)
    taken=$(printf "%s" "${device[$transport-$tool]}" | median)
    printf "%-5s %-9s %10.1f %8.2fx %12.3f %12.3f %11.0f%% %14s\n" "$transport" "$tool" \
      "$(echo "$size_mib * 1.048576 / $wall" | bc -l)" "$(echo "$theirs / $wall" | bc -l)" \
      "$(echo "$used * 1024 / $size_mib" | bc -l)" "$(echo "$taken * 1024 / $size_mib" | bc -l)" \
      "$(echo "100 * $taken / $wall" | bc -l)" "$((rss[$transport-$tool] / 1024))"
  done
done
