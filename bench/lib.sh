# What the bench scripts share; sourced by them, after `set -euo pipefail` and `cd` to the root.

[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"

# Sets $flashctl: $FLASHCTL when given, else a release build made now.
use_release_flashctl() {
  if [ -n "${FLASHCTL:-}" ]; then
    flashctl=$FLASHCTL
  else
    swift build -c release --product flashctl >&2
    flashctl="$(swift build -c release --show-bin-path)/flashctl"
  fi
}

# Sets $work to a new folder in PARENT (default /dev/shm) named after NAME, removed on exit with
# the emulator, if one was started.
make_workdir() {
  work=$(mktemp -d "${2:-/dev/shm}/$1.XXXXXX")
  emulator_pid=""
  trap 'bench_cleanup' EXIT
}

bench_cleanup() {
  [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null && wait "$emulator_pid" 2>/dev/null
  rm -rf "$work"
}

# Starts `flashctl emulate` over TCP with its partitions in $work/device and the given options,
# and sets $target (tcp:127.0.0.1:PORT) and $port once it listens.
start_emulator() {
  "$flashctl" emulate --tcp 0 --dir "$work/device" "$@" > "$work/emulator.log" &
  emulator_pid=$!
  for _ in $(seq 100); do grep -q "tcp:" "$work/emulator.log" 2>/dev/null && break; sleep 0.1; done
  target=$(grep -o 'tcp:[0-9.]*:[0-9]*' "$work/emulator.log" | head -1)
  port=${target##*:}
}

# CPU seconds (user + system) the emulated device has used so far: read before and after a run,
# the difference is what taking that run's bytes cost it.
emulator_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f\n", ($14 + $15) / hz}' "/proc/$emulator_pid/stat"; }

# The median of the numbers on standard input, one a line.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
