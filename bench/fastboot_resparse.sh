#!/usr/bin/env bash
# A raw image larger than the device's max-download-size, most of it empty (a file system image's
# free space), to the same emulated device with flashctl and with AOSP fastboot, side by side in
# one run, over emulated USB (real libusb / usbdevfs above umockdev) and over TCP. Both tools cut
# such an image into sparse pieces; what each leaves out of them is what it need not send.
# Prints each tool's time (median of the runs), the bytes it sent, its CPU seconds (user + system)
# per GiB of image, and the ratio fastboot / flashctl. Every run is checked on the device.
#
#   bench/fastboot_resparse.sh [IMAGE_MIB=512] [RUNS=3]      TRANSPORTS="tcp" for TCP alone
#
# The image is a quarter random data (4 MiB extents), the rest zeros written out (no holes: as an
# image copied or downloaded usually is); the device takes 64 MiB per download.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
size_mib=${1:-512}
runs=${2:-3}

use_release_flashctl
fastboot=/usr/bin/fastboot
make_workdir flashctl-resparse

truncate -s "${size_mib}M" "$work/holes.img"
for i in $(seq 0 4 $((size_mib / 4 - 1))); do
  dd if=/dev/urandom of="$work/holes.img" bs=4M seek="$i" count=1 conv=notrunc status=none
done
cp --sparse=never "$work/holes.img" "$work/system.img"
rm "$work/holes.img"
start_emulator --serial RESPARSE1 --max-download-size 64M

usb() {
  /usr/bin/python3 testbed/fastboot_usb_testbed.py --device "tcp=127.0.0.1:$port,serial=RESPARSE1,port=1-1" -- "$@"
}

# One flash, checked on the device afterwards; prints "SECONDS CPU_SECONDS BYTES_SENT".
timed() {
  local tool=$1 transport=$2 target=$3
  rm -f "$work/device/system.img"
  local command wrapper=()
  [ "$transport" = usb ] && wrapper=(usb)
  if [ "$tool" = fastboot ]; then
    command=("$fastboot" -s "$target" flash system "$work/system.img")
  else
    command=("$flashctl" flash --device "$target" --partition system "$work/system.img" --json)
  fi
  "${wrapper[@]}" /usr/bin/time -f "%e %U %S" -o "$work/time.out" "${command[@]}" > "$work/last.log" 2>&1 \
    || { echo "failed: ${command[*]}" >&2; cat "$work/last.log" >&2; exit 1; }
  cmp -s "$work/system.img" "$work/device/system.img" || { echo "wrong bytes on the device after: ${command[*]}" >&2; exit 1; }
  local sent
  if [ "$tool" = fastboot ]; then
    # "Sending sparse 'system' 1/3 (65532 KB)": the pieces' sizes, in KiB.
    sent=$(grep -o "Sending sparse '[^']*' [0-9]*/[0-9]* ([0-9]* KB)" "$work/last.log" | grep -o '([0-9]* KB)' | tr -dc '0-9\n' | awk '{s += $1 * 1024} END {print s + 0}')
  else
    sent=$(grep '"flash_completed"' "$work/last.log" | grep -o '"totalBytes":[0-9]*' | cut -d: -f2)
  fi
  tail -1 "$work/time.out" | awk -v sent="$sent" '{print $1, $2 + $3, sent}'
}

transports=${TRANSPORTS:-usb tcp}
declare -A seconds cpu bytes
for transport in $transports; do
  target="tcp:127.0.0.1:$port"; [ "$transport" = usb ] && target=RESPARSE1
  for tool in fastboot flashctl; do seconds[$transport-$tool]=""; cpu[$transport-$tool]=""; done
  for _ in $(seq "$runs"); do
    for tool in fastboot flashctl; do
      read -r wall used sent <<< "$(timed $tool $transport $target)"
      seconds[$transport-$tool]+="$wall"$'\n'
      cpu[$transport-$tool]+="$used"$'\n'
      bytes[$transport-$tool]=$sent
    done
  done
done

echo
echo "image: ${size_mib} MiB raw, a quarter random data, the rest zeros; emulated device taking 64 MiB per download,"
echo "partitions on tmpfs; median of $runs runs (usb = real libusb/usbdevfs above umockdev)"
printf "%-5s %-9s %9s %12s %12s %20s\n" path tool seconds "MiB sent" "CPU s/GiB" "its time / flashctl's"
for transport in $transports; do
  ours=$(printf "%s" "${seconds[$transport-flashctl]}" | median)
  for tool in fastboot flashctl; do
    wall=$(printf "%s" "${seconds[$transport-$tool]}" | median)
    used=$(printf "%s" "${cpu[$transport-$tool]}" | median)
    versus=""; [ $tool = fastboot ] && versus="$(echo "scale=2; $wall / $ours" | bc)x"
    printf "%-5s %-9s %9.2f %12.1f %12.3f %20s\n" "$transport" "$tool" "$wall" "$(echo "${bytes[$transport-$tool]} / 1048576" | bc -l)" \
      "$(echo "$used * 1024 / $size_mib" | bc -l)" "$versus"
  done
done
