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
# image copied or downloaded usually is); the device takes 64 MiB per download. Then the same image
# as .zst and .xz: flashctl streams it; AOSP fastboot takes only raw or sparse files, so the usual
# way is to decompress it to a file first and flash that.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
size_mib=${1:-512}
runs=${2:-3}

for tool in xz zstd /usr/bin/fastboot; do command -v "$tool" >/dev/null || { echo "fastboot_resparse.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }; done

use_release_flashctl
fastboot=/usr/bin/fastboot
make_workdir flashctl-resparse

truncate -s "${size_mib}M" "$work/holes.img"
for i in $(seq 0 4 $((size_mib / 4 - 1))); do
  dd if=/dev/urandom of="$work/holes.img" bs=4M seek="$i" count=1 conv=notrunc status=none
done
cp --sparse=never "$work/holes.img" "$work/system.img"
rm "$work/holes.img"
zstd -q -T2 -3 -k "$work/system.img"
xz -k -T2 -1 "$work/system.img"
start_emulator --serial RESPARSE1 --max-download-size 64M

usb() {
  /usr/bin/python3 testbed/fastboot_usb_testbed.py --device "tcp=127.0.0.1:$port,serial=RESPARSE1,port=1-1" -- "$@"
}

# One flash of IMAGE (system.img, .zst or .xz), checked on the device afterwards; prints
# "SECONDS CPU_SECONDS BYTES_SENT" (CPU of the command with its children: the decompressor too).
timed() {
  local tool=$1 transport=$2 target=$3 image=$4
  rm -f "$work/device/system.img" "$work/unpacked.img"
  local wrapper=() flash
  [ "$transport" = usb ] && wrapper=(usb)
  if [ "$tool" = fastboot ]; then
    flash="$fastboot -s $target flash system"
    case $image in
      *.zst) flash="zstd -q -dc $work/$image > $work/unpacked.img && $flash $work/unpacked.img" ;;
      *.xz) flash="xz -dc -T2 $work/$image > $work/unpacked.img && $flash $work/unpacked.img" ;;
      *) flash="$flash $work/$image" ;;
    esac
  else
    flash="$flashctl flash --device $target --partition system $work/$image --json"
  fi
  "${wrapper[@]}" /usr/bin/time -f "%e %U %S" -o "$work/time.out" bash -c "$flash" > "$work/last.log" 2>&1 \
    || { echo "failed: $flash" >&2; cat "$work/last.log" >&2; exit 1; }
  cmp -s "$work/system.img" "$work/device/system.img" || { echo "wrong bytes on the device after: $flash" >&2; exit 1; }
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
images="system.img system.img.zst system.img.xz"
declare -A seconds cpu bytes
for transport in $transports; do
  target="tcp:127.0.0.1:$port"; [ "$transport" = usb ] && target=RESPARSE1
  for image in $images; do
    for tool in fastboot flashctl; do seconds[$transport-$image-$tool]=""; cpu[$transport-$image-$tool]=""; done
    for _ in $(seq "$runs"); do
      for tool in fastboot flashctl; do
        read -r wall used sent <<< "$(timed $tool $transport $target $image)"
        seconds[$transport-$image-$tool]+="$wall"$'\n'
        cpu[$transport-$image-$tool]+="$used"$'\n'
        bytes[$transport-$image-$tool]=$sent
      done
    done
  done
done

echo
echo "image: ${size_mib} MiB raw, a quarter random data, the rest zeros; emulated device taking 64 MiB per download,"
echo "partitions on tmpfs; median of $runs runs (usb = real libusb/usbdevfs above umockdev); fastboot of a"
echo ".zst or .xz: decompressed to a file first, then flashed; CPU: user + system per GiB of image"
printf "%-5s %-15s %-9s %9s %10s %10s %22s\n" path image tool seconds "MiB sent" "CPU s/GiB" "its time / flashctl's"
for transport in $transports; do
  for image in $images; do
    ours=$(printf "%s" "${seconds[$transport-$image-flashctl]}" | median)
    for tool in fastboot flashctl; do
      wall=$(printf "%s" "${seconds[$transport-$image-$tool]}" | median)
      used=$(printf "%s" "${cpu[$transport-$image-$tool]}" | median)
      versus=""; [ $tool = fastboot ] && versus="$(echo "scale=2; $wall / $ours" | bc)x"
      printf "%-5s %-15s %-9s %9.2f %10.1f %10.3f %22s\n" "$transport" "$image" "$tool" "$wall" \
        "$(echo "${bytes[$transport-$image-$tool]} / 1048576" | bc -l)" "$(echo "$used * 1024 / $size_mib" | bc -l)" "$versus"
    done
  done
done
