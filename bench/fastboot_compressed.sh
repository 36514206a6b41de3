#!/usr/bin/env bash
# Compressed and block-mapped images to a fastboot device: flashctl streams them into the
# downloads; AOSP fastboot takes only raw or sparse files, so the usual way is to decompress to a
# file first and then flash it. Side by side in one run, over fastboot-over-TCP to the emulated
# device (partitions on tmpfs), each run checked afterwards; prints median seconds and ratios.
#
#   bench/fastboot_compressed.sh [IMAGE_MIB=256] [RUNS=3]
#
# The image is a quarter full of random data (4 MiB extents), the rest zeros, with a block map
# from `bmaptool create` (after `fallocate --dig-holes`).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
size_mib=${1:-256}
runs=${2:-3}
for tool in bmaptool xz zstd fallocate /usr/bin/fastboot; do command -v "$tool" >/dev/null || { echo "fastboot_compressed.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }; done

use_release_flashctl
fastboot=/usr/bin/fastboot
make_workdir flashctl-cbench

image="$work/os.img"
truncate -s "${size_mib}M" "$image"
for i in $(seq 0 4 $((size_mib / 4 - 1))); do
  dd if=/dev/urandom of="$image" bs=4M seek="$i" count=1 conv=notrunc status=none
done
fallocate --dig-holes "$image"
bmaptool -q create "$image" -o "$work/os.img.bmap"
xz -k -T2 -1 "$image"
zstd -q -T2 -3 -k "$image"
mkdir "$work/images"
for f in os.img.xz os.img.zst; do ln "$work/$f" "$work/images/$f"; done

start_emulator --serial CBENCH01 --max-download-size 256M

# The partition must hold the image's data where the image has data (zeros elsewhere, as the
# partition starts from zeros each run). Prints the medians "SECONDS CPU_SECONDS DEVICE_CPU_SECONDS":
# the command's own CPU (its children's included) and the emulated device's.
timed() {
  local name=$1; shift
  local times=() cpus=() devices=()
  for _ in $(seq "$runs"); do
    rm -f "$work/device/system.img" "$work/unpacked.img"
    truncate -s "${size_mib}M" "$work/device/system.img"
    local before after
    before=$(emulator_cpu)
    /usr/bin/time -f "%e %U %S" -o "$work/time.out" bash -c "$*" > "$work/out.log" 2>&1 \
      || { echo "fastboot_compressed.sh: $name failed: $(tail -3 "$work/out.log")" >&2; exit 1; }
    after=$(emulator_cpu)
    cmp -s "$image" "$work/device/system.img" || { echo "fastboot_compressed.sh: $name left the wrong bytes on the device" >&2; exit 1; }
    read -r wall user system < <(tail -1 "$work/time.out")
    times+=("$wall"); cpus+=("$(echo "$user + $system" | bc)"); devices+=("$(echo "$after - $before" | bc)")
  done
  echo "$(printf '%s\n' "${times[@]}" | median) $(printf '%s\n' "${cpus[@]}" | median) $(printf '%s\n' "${devices[@]}" | median)"
}

fc="$flashctl flash --device $target --partition system --json"
fb="$fastboot -s $target flash system"
declare -A t
t[xz_ours]=$(timed "flashctl .xz" "$fc --no-bmap $work/images/os.img.xz")
t[xz_theirs]=$(timed "xz -dc + fastboot" "xz -dc -T2 $work/os.img.xz > $work/unpacked.img && $fb $work/unpacked.img")
t[zst_ours]=$(timed "flashctl .zst" "$fc --no-bmap $work/images/os.img.zst")
t[zst_theirs]=$(timed "zstd -dc + fastboot" "zstd -q -dc $work/os.img.zst > $work/unpacked.img && $fb $work/unpacked.img")
t[bmap_ours]=$(timed "flashctl --bmap .zst" "$fc --bmap $work/os.img.bmap $work/images/os.img.zst")
t[raw_theirs]=$(timed "fastboot raw" "$fb $image")
# The stream has no holes to skip: it sends every block, so its floor is sending every block.
cp --sparse=never "$image" "$work/full.img"
t[raw_ours]=$(timed "flashctl raw" "$fc $work/full.img")
# Decompression alone, to /dev/null: with sending the raw image, the floor a streamed flash
# cannot beat (it has to do both; at best at once).
floor() {
  local times=() cpus=()
  for _ in $(seq "$runs"); do
    /usr/bin/time -f "%e %U %S" -o "$work/time.out" bash -c "$1" > /dev/null
    read -r wall user system < <(tail -1 "$work/time.out")
    times+=("$wall"); cpus+=("$(echo "$user + $system" | bc)")
  done
  echo "$(printf '%s\n' "${times[@]}" | median) $(printf '%s\n' "${cpus[@]}" | median) 0"
}
t[xz_floor]=$(floor "xz -dc -T2 $work/os.img.xz")
t[zst_floor]=$(floor "zstd -q -dc $work/os.img.zst")
# Each entry is "SECONDS CPU DEVICE_CPU"; these take one field.
seconds() { echo "${t[$1]}" | cut -d' ' -f1; }
slower() { echo "$1 $2" | awk '{print ($1 > $2) ? $1 : $2}'; }
ratio() { echo "scale=2; $1 / $2" | bc; }
row() {  # NAME KEY [KEY_OF_THE_FLASHCTL_RUN_IT_IS_COMPARED_WITH]
  local wall cpu device versus=""
  read -r wall cpu device <<< "${t[$2]}"
  [ -n "${3:-}" ] && versus="$(ratio "$wall" "$(seconds "$3")")x"
  printf "%-46s %8.2f %10.2f %10.2f %9s\n" "$1" "$wall" "$(echo "$cpu * 1024 / $size_mib" | bc -l)" "$(echo "$device * 1024 / $size_mib" | bc -l)" "$versus"
}
echo
echo "image: ${size_mib} MiB, a quarter random data; emulated device over TCP, partitions on tmpfs; median of $runs runs"
echo "CPU: user + system seconds per GiB of image, of the command (with its children) and of the emulated device"
printf "%-46s %8s %10s %10s %9s\n" run seconds "CPU s/GiB" "device CPU" "vs flashctl"
row "flashctl image.xz (streamed)" xz_ours
row "xz -dc > file && fastboot flash file" xz_theirs xz_ours
row "xz -dc > /dev/null (decompression alone)" xz_floor
row "flashctl image.zst (streamed)" zst_ours
row "zstd -dc > file && fastboot flash file" zst_theirs zst_ours
row "zstd -dc > /dev/null (decompression alone)" zst_floor
row "flashctl image (raw, every block: sending alone)" raw_ours
row "flashctl --bmap image.zst (mapped blocks)" bmap_ours
row "fastboot flash image (raw, every block)" raw_theirs bmap_ours
echo
echo "streamed time / the slower of decompression alone and sending the raw image (goal: at most 1.20):"
printf "%-46s %8s\n" "flashctl image.xz" "$(ratio "$(seconds xz_ours)" "$(slower "$(seconds xz_floor)" "$(seconds raw_ours)")")"
printf "%-46s %8s\n" "flashctl image.zst" "$(ratio "$(seconds zst_ours)" "$(slower "$(seconds zst_floor)" "$(seconds raw_ours)")")"
