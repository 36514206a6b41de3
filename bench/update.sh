#!/usr/bin/env bash
# 'flashctl update' against 'fastboot update' on the same factory image zip and the same emulated
# A/B device, side by side in one run (alternating, over TCP). Prints each tool's wall time and CPU
# seconds (median of the runs), peak RSS, and the ratio fastboot / flashctl.
#
#   bench/update.sh [TOTAL_MIB=512] [RUNS=3]
#   DYNAMIC=0 bench/update.sh ...    # without super_empty.img: every image from the bootloader
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
total_mib=${1:-512}
runs=${2:-3}

use_release_flashctl
fastboot=/usr/bin/fastboot
make_workdir flashctl-bench-update

# A factory image zip as vendors ship them: deflated images of data that compresses about 2:1
# (random 4 KiB blocks between zeroed ones), boot-critical images, and system and vendor as
# dynamic (logical) partitions with the super metadata, flashed from fastbootd.
mkdir -p "$work/images"
python3 - "$work/images" "$total_mib" <<'PY'
import os, sys
folder, total = sys.argv[1], int(sys.argv[2]) << 20
shares = {"boot": 1, "dtbo": 0.25, "vbmeta": 0.0625, "vendor_boot": 1, "system": 9, "vendor": 4.6875}
scale = total / sum(shares.values())
for name, share in shares.items():
    size = int(share * scale) // 8192 * 8192
    with open(os.path.join(folder, name + ".img"), "wb") as out:
        for _ in range(size // 8192):
            out.write(os.urandom(4096) + bytes(4096))
PY
printf 'require board=flashctl-emulator\n' > "$work/images/android-info.txt"
logical="2 logical"
if [ "${DYNAMIC:-1}" = 1 ]; then
  python3 testbed/make_super_empty.py "$work/images/super_empty.img" $((8 << 30)) main_a:$((4 << 30)) main_b:$((4 << 30)) \
    system_a:main_a vendor_a:main_a system_b:main_b vendor_b:main_b
else
  logical="none logical"
fi
(cd "$work/images" && zip -q -6 "$work/image-bench.zip" android-info.txt ./*.img)

start_emulator --serial BENCHUPD --slots --max-download-size 256M

# One update; every partition is compared with its image afterwards, so a fast failure never
# counts. Prints "WALL CPU PEAK_RSS_KIB" of the tool.
timed() {
  rm -f "$work"/device/*.img
  /usr/bin/time -f "%e %U %S %M" -o "$work/time.out" "$@" > "$work/last.log" 2>&1 \
    || { echo "failed: $*" >&2; tail -20 "$work/last.log" >&2; exit 1; }
  for image in "$work"/images/*.img; do
    name=$(basename "$image" .img)
    [ "$name" = super_empty ] && continue
    cmp -s "$image" "$work/device/${name}_a.img" || { echo "wrong bytes in ${name}_a after: $*" >&2; exit 1; }
  done
  awk '{printf "%s %.2f %s\n", $1, $2 + $3, $4}' "$work/time.out"
}


declare -A wall cpu rss
for tool in flashctl fastboot; do wall[$tool]=""; cpu[$tool]=""; rss[$tool]=0; done
for _ in $(seq "$runs"); do
  for tool in fastboot flashctl; do
    if [ $tool = fastboot ]; then
      result=$(timed "$fastboot" -s "$target" update "$work/image-bench.zip")
    else
      result=$(timed "$flashctl" update -d "$target" --json "$work/image-bench.zip")
    fi
    read -r seconds cpu_seconds kib <<< "$result"
    wall[$tool]+="$seconds"$'\n'; cpu[$tool]+="$cpu_seconds"$'\n'
    [ "$kib" -gt "${rss[$tool]}" ] && rss[$tool]=$kib
  done
done

zip_mib=$(( $(stat -c %s "$work/image-bench.zip") >> 20 ))
echo
echo "factory zip: ${total_mib} MiB of images in 6 partitions ($logical), ${zip_mib} MiB deflated; emulated A/B device over TCP,"
echo "partitions on tmpfs; median of $runs alternating runs"
printf "%-9s %9s %9s %15s\n" tool "wall s" "CPU s" "peak RSS"
for tool in flashctl fastboot; do
  printf "%-9s %9.2f %9.2f %11s MiB\n" $tool "$(printf "%s" "${wall[$tool]}" | median)" "$(printf "%s" "${cpu[$tool]}" | median)" "$((rss[$tool] / 1024))"
done
printf "flashctl is %.2fx as fast as fastboot update\n" \
  "$(echo "$(printf "%s" "${wall[fastboot]}" | median) / $(printf "%s" "${wall[flashctl]}" | median)" | bc -l)"
