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
# "SECONDS CPU_SECONDS PEAK_RSS_KIB" of the flashing tool itself.
timed() {
  rm -f "$work/device/boot.img"
  local wrapper=()
  if [ "$1" = usb ]; then wrapper=(usb); shift; fi
  "${wrapper[@]}" /usr/bin/time -f "%e %U %S %M" -o "$work/time.out" "$@" > "$work/last.log" 2>&1 \
    || { echo "failed: $*" >&2; cat "$work/last.log" >&2; exit 1; }
  cmp -s "$work/boot.img" "$work/device/boot.img" || { echo "wrong bytes on the device after: $*" >&2; exit 1; }
  tail -1 "$work/time.out" | awk '{print $1, $2 + $3, $4}'
}

transports=${TRANSPORTS:-usb tcp}
declare -A seconds cpu rss
for transport in $transports; do
  for tool in flashctl fastboot; do seconds[$transport-$tool]=""; cpu[$transport-$tool]=""; rss[$transport-$tool]=0; done
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
      read -r wall used kib <<< "$result"
      seconds[$transport-$tool]+="$wall"$'\n'
      cpu[$transport-$tool]+="$used"$'\n'
      [ "$kib" -gt "${rss[$transport-$tool]}" ] && rss[$transport-$tool]=$kib
    done
  done
done

echo
echo "image: ${size_mib} MiB random; emulated device with partitions on tmpfs; median of $runs runs"
echo "(usb = real libusb/usbdevfs above umockdev; the emulation, not a bus, limits the speed)"
printf "%-5s %14s %14s %7s %14s %14s %18s %18s\n" path "flashctl MB/s" "fastboot MB/s" ratio \
  "flashctl CPU" "fastboot CPU" "flashctl peak RSS" "fastboot peak RSS"
for transport in $transports; do
  ours=$(printf "%s" "${seconds[$transport-flashctl]}" | median)
  theirs=$(printf "%s" "${seconds[$transport-fastboot]}" | median)
  ours_speed=$(echo "$size_mib * 1.048576 / $ours" | bc -l)
  theirs_speed=$(echo "$size_mib * 1.048576 / $theirs" | bc -l)
  ours_cpu=$(printf "%s" "${cpu[$transport-flashctl]}" | median)
  theirs_cpu=$(printf "%s" "${cpu[$transport-fastboot]}" | median)
  printf "%-5s %14.1f %14.1f %6.2fx %8.3f s/GiB %8.3f s/GiB %14s MiB %14s MiB\n" "$transport" "$ours_speed" "$theirs_speed" \
    "$(echo "$ours_speed / $theirs_speed" | bc -l)" \
    "$(echo "$ours_cpu * 1024 / $size_mib" | bc -l)" "$(echo "$theirs_cpu * 1024 / $size_mib" | bc -l)" "$((rss[$transport-flashctl] / 1024))" "$((rss[$transport-fastboot] / 1024))"
done
