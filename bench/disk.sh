#!/usr/bin/env bash
# Writes the same image to the same loop device with flashctl and with the usual tools, side by
# side in one run, and prints each one's time (median of the runs), the ratio to flashctl, its CPU
# seconds (user + system) per GiB of image, steadier than wall times on a shared machine, and its
# peak RSS.
#
#   bench/disk.sh [IMAGE_MIB=1024] [RUNS=3]
#
# The image is a quarter full of random data (in 4 MiB extents spread over it), the rest holes,
# with a block map made by `bmaptool create`:
#   1. image + bmap:  flashctl --bmap (range checksums and read-back) vs `bmaptool copy` (range
#                     checksums); flashctl --no-verify vs `bmaptool copy --no-verify` (neither)
#                     vs `dd bs=4M oflag=direct` (which writes everything, unchecked)
#   2. image.xz:      flashctl --no-bmap vs `xz -dc | dd bs=4M oflag=direct`, and with the bmap
#                     flashctl --no-verify vs `bmaptool copy --no-verify`.
# Every run is checked afterwards (the device's mapped bytes against the image), so a fast
# failure never counts. The page cache is dropped before each run (when root) so every tool
# reads the image cold. The loop device's backing file is in LOOP_DIR (default /var/tmp: a real
# disk; /dev/shm measures the tools' own overhead). FLASHCTL=/path uses that binary.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
size_mib=${1:-1024}
runs=${2:-3}
loop_dir=${LOOP_DIR:-/var/tmp}
[ "$(id -u)" -eq 0 ] || { echo "disk.sh: needs root (losetup, O_DIRECT on a loop device)" >&2; exit 1; }
for tool in bmaptool xz dd losetup; do command -v "$tool" >/dev/null || { echo "disk.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }; done

use_release_flashctl

work=$(mktemp -d "$loop_dir/flashctl-disk-bench.XXXXXX")
loop=""
cleanup() {
  [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

image="$work/os.img"
truncate -s "${size_mib}M" "$image"
extents=$((size_mib / 4))
for i in $(seq 0 4 $((extents - 1))); do
  dd if=/dev/urandom of="$image" bs=4M seek="$i" count=1 conv=notrunc status=none
done
bmaptool -q create "$image" -o "$work/os.img.bmap"
xz -k -T2 -1 "$image"
truncate -s "$((size_mib + 64))M" "$work/target.img"
loop=$(losetup --find --show "$work/target.img")
mapped=$(grep -o '<MappedBlocksCount> *[0-9]*' "$work/os.img.bmap" | grep -o '[0-9]*$')
block=$(grep -o '<BlockSize> *[0-9]*' "$work/os.img.bmap" | grep -o '[0-9]*$')

# The image is read cold by every tool; the tools' own programs and libraries are loaded again
# after the drop (as they are when a tool is used twice), so a tool's start-up from disk (the
# Swift runtime, Python for bmaptool) is not counted as flashing time.
drop_caches() {
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  { "$flashctl" --help; bmaptool --version; dd --version; xz --version; } > /dev/null 2>&1 || true
}

# The device must hold the image's data where the image has data.
check() {
  local name=$1
  if ! cmp -s -n "$((4 << 20))" "$image" "$loop"; then echo "disk.sh: $name left the wrong bytes on the device" >&2; exit 1; fi
  local last=$(( (extents - 1) / 4 * 4 ))
  if ! cmp -s -i "$((last << 22)):$((last << 22))" -n "$((4 << 20))" "$image" "$loop"; then
    echo "disk.sh: $name left the wrong bytes at the last extent" >&2; exit 1
  fi
}

median() { sort -n | awk '{a[NR]=$1} END {printf "%.2f\n", a[int((NR+1)/2)]}'; }

# Prints "SECONDS CPU_SECONDS_PER_GIB PEAK_RSS_MIB" for $runs runs of "$@" (a shell command line):
# the median wall time, the median CPU time (user + system of the command and its children: for a
# pipeline, every tool of it) per GiB of image, and the highest peak RSS of one of its processes.
timed() {
  local name=$1; shift
  local times=() cpus=() peak=0
  for _ in $(seq "$runs"); do
    dd if=/dev/zero of="$loop" bs=4M count=2 oflag=direct status=none
    drop_caches
    local start end used kib
    start=$(date +%s.%N)
    if ! /usr/bin/time -f "%U %S %M" -o "$work/time.out" bash -c "$*" > "$work/out.log" 2>&1; then
      echo "disk.sh: $name failed: $(tail -3 "$work/out.log")" >&2; exit 1
    fi
    end=$(date +%s.%N)
    check "$name"
    times+=("$(echo "$end - $start" | bc)")
    read -r used kib <<< "$(tail -1 "$work/time.out" | awk '{print $1 + $2, $3}')"
    cpus+=("$(echo "scale=4; $used * 1024 / $size_mib" | bc)")
    [ "$kib" -gt "$peak" ] && peak=$kib
  done
  echo "$(printf '%s\n' "${times[@]}" | median) $(printf '%s\n' "${cpus[@]}" | median) $((peak >> 10))"
}

declare -A t
t[fl_bmap]=$(timed "flashctl --bmap" "$flashctl flash --device $loop --yes --bmap $work/os.img.bmap $image")
t[fl_bmap_nv]=$(timed "flashctl --bmap --no-verify" "$flashctl flash --device $loop --yes --no-verify --bmap $work/os.img.bmap $image")
t[bmaptool]=$(timed "bmaptool copy" "bmaptool -q copy --bmap $work/os.img.bmap $image $loop")
t[bmaptool_nv]=$(timed "bmaptool copy --no-verify" "bmaptool -q copy --no-verify --bmap $work/os.img.bmap $image $loop")
t[dd]=$(timed "dd" "dd if=$image of=$loop bs=4M oflag=direct conv=fsync status=none")
t[fl_xz]=$(timed "flashctl .xz" "$flashctl flash --device $loop --yes --no-bmap --no-verify $image.xz")
t[xz_dd]=$(timed "xz -dc | dd" "xz -dc $image.xz | dd of=$loop bs=4M iflag=fullblock oflag=direct conv=fsync status=none")
t[xz_only]=$(timed "xz -dc > /dev/null" "xz -dc $image.xz > /dev/null && dd if=$image of=$loop bs=4M count=1 oflag=direct conv=notrunc status=none && dd if=$image of=$loop bs=4M skip=$(( (extents - 1) / 4 * 4 )) seek=$(( (extents - 1) / 4 * 4 )) count=1 oflag=direct conv=notrunc status=none")
t[fl_xz_bmap]=$(timed "flashctl .xz --bmap" "$flashctl flash --device $loop --yes --no-verify --bmap $work/os.img.bmap $image.xz")
t[bmaptool_xz]=$(timed "bmaptool copy .xz" "bmaptool -q copy --no-verify --bmap $work/os.img.bmap $image.xz $loop")

ratio() { printf '%.2f' "$(echo "scale=4; $2 / $1" | bc)"; }
wall() { echo "${1%% *}"; }
row() {
  local name=$1 result=$2 note=${3:-}
  read -r seconds cpu mib <<< "$result"
  printf '%-44s %8s %9s %8s  %s\n' "$name" "$seconds" "$cpu" "$mib" "$note"
}
echo
echo "loop device on $loop_dir, ${size_mib} MiB image, $((mapped * block >> 20)) MiB mapped; median of $runs runs; page cache dropped before each"
echo "CPU: user + system seconds per GiB of image (median); RSS: highest peak of one process, MiB"
printf '%-44s %8s %9s %8s  %s\n' "run" "seconds" "CPU s/GiB" "peak RSS" "vs flashctl"
row "flashctl --bmap (range checksums + read-back)" "${t[fl_bmap]}"
row "bmaptool copy (range checksums)" "${t[bmaptool]}" "$(ratio "$(wall "${t[fl_bmap]}")" "$(wall "${t[bmaptool]}")")x slower than flashctl (which also reads back)"
row "flashctl --bmap --no-verify" "${t[fl_bmap_nv]}"
row "bmaptool copy --no-verify" "${t[bmaptool_nv]}" "$(ratio "$(wall "${t[fl_bmap_nv]}")" "$(wall "${t[bmaptool_nv]}")")x slower than flashctl --no-verify"
row "dd bs=4M oflag=direct (whole image)" "${t[dd]}" "$(ratio "$(wall "${t[fl_bmap_nv]}")" "$(wall "${t[dd]}")")x slower than flashctl --no-verify"
row "flashctl image.xz --no-bmap --no-verify" "${t[fl_xz]}"
row "xz -dc | dd bs=4M oflag=direct" "${t[xz_dd]}" "$(ratio "$(wall "${t[fl_xz]}")" "$(wall "${t[xz_dd]}")")x slower than flashctl"
row "xz -dc > /dev/null" "${t[xz_only]}" "(decompression alone: the floor for .xz)"
row "flashctl image.xz --bmap --no-verify" "${t[fl_xz_bmap]}"
row "bmaptool copy --no-verify image.xz" "${t[bmaptool_xz]}" "$(ratio "$(wall "${t[fl_xz_bmap]}")" "$(wall "${t[bmaptool_xz]}")")x slower than flashctl"
echo "command: ${FLASHCTL:+FLASHCTL=$FLASHCTL }${LOOP_DIR:+LOOP_DIR=$LOOP_DIR }bench/disk.sh $size_mib $runs"
