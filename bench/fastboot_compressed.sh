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
# partition starts from zeros each run).
timed() {
  local name=$1; shift
  local times=()
  for _ in $(seq "$runs"); do
    rm -f "$work/device/system.img" "$work/unpacked.img"
    truncate -s "${size_mib}M" "$work/device/system.img"
    local start end
    start=$(date +%s.%N)
    bash -c "$*" > "$work/out.log" 2>&1 || { echo "fastboot_compressed.sh: $name failed: $(tail -3 "$work/out.log")" >&2; exit 1; }
    end=$(date +%s.%N)
    cmp -s "$image" "$work/device/system.img" || { echo "fastboot_compressed.sh: $name left the wrong bytes on the device" >&2; exit 1; }
    times+=("$(echo "$end - $start" | bc)")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.2f\n", a[int((NR+1)/2)]}'
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
  local times=()
  for _ in $(seq "$runs"); do
    local start end
    start=$(date +%s.%N); bash -c "$1" > /dev/null; end=$(date +%s.%N)
    times+=("$(echo "$end - $start" | bc)")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.2f\n", a[int((NR+1)/2)]}'
}
t[xz_floor]=$(floor "xz -dc -T2 $work/os.img.xz")
t[zst_floor]=$(floor "zstd -q -dc $work/os.img.zst")
slower() { echo "$1 $2" | awk '{print ($1 > $2) ? $1 : $2}'; }

ratio() { echo "scale=2; $1 / $2" | bc; }
echo
echo "image: ${size_mib} MiB, a quarter random data; emulated device over TCP, partitions on tmpfs; median of $runs runs"
printf "%-44s %8s %8s\n" run seconds "vs flashctl"
printf "%-44s %8s\n" "flashctl image.xz (streamed)" "${t[xz_ours]}"
printf "%-44s %8s %7sx\n" "xz -dc > file && fastboot flash file" "${t[xz_theirs]}" "$(ratio "${t[xz_theirs]}" "${t[xz_ours]}")"
printf "%-44s %8s\n" "xz -dc > /dev/null (decompression alone)" "${t[xz_floor]}"
printf "%-44s %8s\n" "flashctl image.zst (streamed)" "${t[zst_ours]}"
printf "%-44s %8s %7sx\n" "zstd -dc > file && fastboot flash file" "${t[zst_theirs]}" "$(ratio "${t[zst_theirs]}" "${t[zst_ours]}")"
printf "%-44s %8s\n" "zstd -dc > /dev/null (decompression alone)" "${t[zst_floor]}"
printf "%-44s %8s\n" "flashctl image (raw, every block: sending alone)" "${t[raw_ours]}"
printf "%-44s %8s\n" "flashctl --bmap image.zst (mapped blocks)" "${t[bmap_ours]}"
printf "%-44s %8s %7sx\n" "fastboot flash image (raw, every block)" "${t[raw_theirs]}" "$(ratio "${t[raw_theirs]}" "${t[bmap_ours]}")"
echo
echo "streamed time / the slower of decompression alone and sending the raw image (goal: at most 1.20):"
printf "%-44s %8s\n" "flashctl image.xz" "$(ratio "${t[xz_ours]}" "$(slower "${t[xz_floor]}" "${t[raw_ours]}")")"
printf "%-44s %8s\n" "flashctl image.zst" "$(ratio "${t[zst_ours]}" "$(slower "${t[zst_floor]}" "${t[raw_ours]}")")"
