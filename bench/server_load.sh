#!/usr/bin/env bash
# Flashes 4 emulated devices through `flashctl serve` with and without CLIENTS WebSocket clients
# on /flash-progress. Prints the flash throughput with and without the clients (and the ratio):
# of the 4 jobs together (first start to last end) and of a job on its own (its bytes over its own
# start to end, with a 95% interval from resampling the runs); the CPU time of the server's event
# loops; the delivery latency of the messages (receive time minus the message's timestamp, same
# clock; p50/p99/max); and whether every client got every job's flash_completed. The release build goes
# to .build-bench (git-ignored); image, server state and partitions live in a temp dir on /dev/shm.
#
#   bench/server_load.sh [IMAGE_MIB=256] [CLIENTS=1000] [ROUNDS=3]
#
# A round is one run without clients and one with them; the order alternates (ABBA...) so drift
# hits both. Before the rounds, one unrecorded warm-up run.
# The clients are bench/ws_load.c (compiled with gcc into .build-bench/ws_load): one process, one
# thread, epoll, up to 1000 clients per process. CLIENT=python uses bench/ws_load.py instead
# (`websockets` from PyPI, up to 250 clients per process), as this bench did at first; but its CPU
# (1.4 to 1.7 s per run for 1000 clients, against about 0.2 s for the C one) competes on a small
# machine with the server and the flash being measured, which inflates the throughput loss and the
# latencies. CLIENTS_PER_PROCESS=N
# changes how many clients a process holds. Both write the same results, read by
# `bench/ws_load.py report`.
# FLASHCTL=/path/to/flashctl uses that binary instead of building the release one.
# SERVER_ARGS="--io-nice 0" adds options to `flashctl serve`.
# DEVICE_SPEED=40M caps each emulated device's write speed (default: unlimited), as a real bus would.
# DEVICES=process runs each emulated device as a `flashctl emulate` process of its own, flashed
# as tcp:127.0.0.1:PORT, instead of inside the server (DEVICES=server, the default); with
# DEVICE_NICE=N (below 0: root) they run at that niceness, which is as near as this machine gets
# to devices with processors of their own.
# KEEP_PARTITIONS=1 leaves each run's partitions for the next (see run()).
# CLIENT_NICE=N runs the clients at that niceness: 19 lets them take only CPU time the server and
# the flashes leave idle; below 0 (root) they run before the flashes, as if on a machine of their
# own: what is left of the latency is then the server's.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
size_mib=${1:-256}
clients=${2:-1000}
rounds=${3:-3}
client=${CLIENT:-c}
case "$client" in
  c) per_process=${CLIENTS_PER_PROCESS:-1000} ;;
  python) per_process=${CLIENTS_PER_PROCESS:-250} ;;
  *) echo "server_load: CLIENT must be c (default) or python, not '$client'" >&2; exit 1 ;;
esac
device_speed=${DEVICE_SPEED:-}
devices=${DEVICES:-server}
command_line="${KEEP_PARTITIONS:+KEEP_PARTITIONS=$KEEP_PARTITIONS }${DEVICES:+DEVICES=$DEVICES }${DEVICE_NICE:+DEVICE_NICE=$DEVICE_NICE }${SERVER_ARGS:+SERVER_ARGS=\"$SERVER_ARGS\" }${CLIENT:+CLIENT=$CLIENT }${CLIENT_NICE:+CLIENT_NICE=$CLIENT_NICE }${DEVICE_SPEED:+DEVICE_SPEED=$DEVICE_SPEED }${FLASHCTL:+FLASHCTL=$FLASHCTL }${CLIENTS_PER_PROCESS:+CLIENTS_PER_PROCESS=$CLIENTS_PER_PROCESS }bench/server_load.sh $size_mib $clients $rounds"

die() { echo "server_load: $*" >&2; exit 1; }
[[ "$size_mib" =~ ^[1-9][0-9]*$ && "$clients" =~ ^[1-9][0-9]*$ && "$rounds" =~ ^[1-9][0-9]*$ ]] \
  || die "usage: bench/server_load.sh [IMAGE_MIB=256] [CLIENTS=1000] [ROUNDS=3] (positive integers)"
[[ "$per_process" =~ ^[1-9][0-9]*$ ]] || die "CLIENTS_PER_PROCESS must be a positive integer"
[[ "${KEEP_PARTITIONS:-0}" = 0 || "${KEEP_PARTITIONS:-0}" = 1 ]] || die "KEEP_PARTITIONS must be 0 (default) or 1, not '$KEEP_PARTITIONS'"
[[ "$devices" = server || "$devices" = process ]] || die "DEVICES must be server (default) or process, not '$devices'"
if [ -n "${DEVICE_NICE:-}" ]; then
  [ "$devices" = process ] || die "DEVICE_NICE needs DEVICES=process"
  [[ "$DEVICE_NICE" =~ ^-?[0-9]+$ && "$DEVICE_NICE" -ge -20 && "$DEVICE_NICE" -le 19 ]] \
    || die "DEVICE_NICE must be a niceness from -20 to 19 (below 0 needs root)"
fi

if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ]; then
  ulimit -n 8192 || die "cannot raise the open file limit to 8192 (ulimit -Hn is $(ulimit -Hn))"
fi
if [ "$client" = python ]; then
  python3 -c 'import websockets' 2>/dev/null || python3 -m pip install --quiet websockets >&2 \
    || die "the Python package 'websockets' is missing and pip could not install it"
  client_command=(python3 "$root/bench/ws_load.py" clients)
  client_name="Python (bench/ws_load.py)"
else
  # Rebuilt when the source is newer; through a temporary name, so a concurrent run never sees half a binary.
  ws_load="$root/.build-bench/ws_load"
  if [ ! -x "$ws_load" ] || [ "$root/bench/ws_load.c" -nt "$ws_load" ]; then
    mkdir -p "$root/.build-bench"
    gcc -O2 -Wall -Wextra -o "$ws_load.$$" "$root/bench/ws_load.c" && mv "$ws_load.$$" "$ws_load" \
      || die "cannot compile bench/ws_load.c with gcc (CLIENT=python uses bench/ws_load.py instead)"
  fi
  client_command=("$ws_load")
  client_name="C (bench/ws_load.c)"
fi
if [ -n "${CLIENT_NICE:-}" ]; then
  [[ "$CLIENT_NICE" =~ ^-?[0-9]+$ && "$CLIENT_NICE" -ge -20 && "$CLIENT_NICE" -le 19 ]] \
    || die "CLIENT_NICE must be a niceness from -20 to 19 (below 0 needs root)"
  client_command=(nice -n "$CLIENT_NICE" "${client_command[@]}")
  client_name="$client_name at niceness $CLIENT_NICE"
fi

if [ -n "${FLASHCTL:-}" ]; then
  flashctl=$FLASHCTL
  build="given binary $flashctl"
else
  swift build -c release --product flashctl --scratch-path "$root/.build-bench" >&2
  flashctl="$(swift build -c release --scratch-path "$root/.build-bench" --show-bin-path)/flashctl"
  build="release build"
fi
[ -x "$flashctl" ] || die "no flashctl binary at $flashctl"

work=$(mktemp -d /dev/shm/flashctl-server-load.XXXXXX)
server_pid=""
client_pids=()
device_pids=()
cleanup() {
  local pid
  for pid in "${client_pids[@]}" "${device_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server_pid" 2>/dev/null; then
      echo "server_load: the server did not stop within 10 s of SIGTERM; killing it" >&2
      kill -KILL "$server_pid" 2>/dev/null || true
    fi
  fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/images" "$work/tmp"
head -c $((size_mib << 20)) /dev/urandom > "$work/images/bench.img"
image_bytes=$((size_mib << 20))

# The devices flashed, as the server's POST /api/flash/start names them.
device_ids=(EMU1 EMU2 EMU3 EMU4)
emulate_in_server=(--emulate 4 ${device_speed:+--emulate-speed "$device_speed"})
if [ "$devices" = process ]; then
  emulate_in_server=(--allow-tcp 127.0.0.1)
  for i in 1 2 3 4; do
    ${DEVICE_NICE:+nice -n "$DEVICE_NICE"} "$flashctl" emulate --tcp 0 --dir "$work/device-$i" --serial "EMU$i" \
      ${device_speed:+--speed-limit "$device_speed"} > "$work/device-$i.log" 2>&1 &
    device_pids+=($!)
  done
  for i in 1 2 3 4; do
    address=""
    for _ in $(seq 300); do
      address=$(grep -o 'tcp:127\.0\.0\.1:[0-9]*' "$work/device-$i.log" | head -1) || true
      [ -n "$address" ] && break
      kill -0 "${device_pids[$((i - 1))]}" 2>/dev/null || die "flashctl emulate for EMU$i exited: $(cat "$work/device-$i.log")"
      sleep 0.1
    done
    [ -n "$address" ] || die "flashctl emulate for EMU$i did not say its port within 30 s: $(cat "$work/device-$i.log")"
    device_ids[$((i - 1))]=$address
  done
fi

# The server's emulated devices keep their partitions under $TMPDIR: on tmpfs, as the image.
TMPDIR="$work/tmp" "$flashctl" serve --port 0 "${emulate_in_server[@]}" --images "$work/images" \
  --history "$work/history.sqlite" ${SERVER_ARGS:-} > "$work/server.log" 2>&1 &
server_pid=$!
base=""
for _ in $(seq 300); do
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; die "the server exited at start (log above)"; }
  base=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$work/server.log" | head -1 | cut -d' ' -f3) || true
  [ -n "$base" ] && { [ "$devices" = process ] || [ "$(grep -c '^emulated device EMU' "$work/server.log")" -ge 4 ]; } && break
  base=""
  sleep 0.1
done
[ -n "$base" ] || { cat "$work/server.log" >&2; die "the server did not say it listens${emulate_in_server[*]:+, with 4 emulated devices,} within 30 s (log above)"; }
ws_url="ws://${base#http://}/flash-progress"

# Prints a metric's value from GET /metrics.
metric() { curl -sf --max-time 10 "$base/metrics" | awk -v name="$1" '$1 == name {print $2}'; }

# User + system CPU time of the server so far, in clock ticks.
server_cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }

# CPU time of the server's event loop threads (NIO-...: HTTP, WebSocket, the writes to the
# clients) so far, in nanoseconds, from each thread's schedstat: the cost of serving the clients
# without the jobs' own.
loops_cpu_nanos() {
  local task comm run total=0
  for task in /proc/"$server_pid"/task/*; do
    read -r comm < "$task/comm" 2>/dev/null || continue
    [[ "$comm" == NIO-* ]] || continue
    read -r run _ < "$task/schedstat" 2>/dev/null || continue
    total=$((total + run))
  done
  echo "$total"
}

# Starts the 4 jobs at once, waits for them to end, saves their final records in $1.
# One curl process sends the 4 requests side by side, as a dashboard's "flash all" would: four
# curl processes started one after another took from 1 to 20 ms to get going on an idle machine,
# and longer while the machine was busy, which measured process start-up, not the server.
run_jobs() {
  local dir=$1 i requests=()
  for i in 1 2 3 4; do
    [ "$i" = 1 ] || requests+=(--next)
    requests+=(-s --max-time 30 -o "$dir/start-$i.out" -w "EMU$i %{http_code}\n" -X POST "$base/api/flash/start"
      -H 'Content-Type: application/json' -d "{\"deviceId\":\"${device_ids[$((i - 1))]}\",\"image\":\"bench.img\"}")
  done
  curl --parallel --parallel-immediate "${requests[@]}" > "$dir/start.codes" || true
  # Bash alone from here to the wait: the jobs are starting, and a grep or a cut per job (forks,
  # about 20 ms of CPU in all) would compete with them and with the clients being written to.
  local ids=() answer pattern='"jobId":"([^"]*)"'
  for i in 1 2 3 4; do
    local id=""
    answer=""; IFS= read -r -d "" answer 2>/dev/null < "$dir/start-$i.out" || true
    [[ "$answer" =~ $pattern ]] && id=${BASH_REMATCH[1]}
    [ -n "$id" ] || die "POST /api/flash/start for EMU$i (${device_ids[$((i - 1))]}) answered HTTP $(awk -v d="EMU$i" '$1 == d {print $2}' "$dir/start.codes"): $(cat "$dir/start-$i.out" 2>/dev/null)"
    ids+=("$id")
  done
  # Generous: 4 jobs at 10 MB/s at least, and never less than 2 minutes.
  local limit=$(( 120 + 4 * image_bytes / 10000000 ))
  local deadline=$((SECONDS + limit))
  # Each job's NDJSON stream ends when the job does: one curl waits for all four, where polling
  # every job every 0.2 s started a curl, a grep and a sleep each time on the machine measured.
  local streams=()
  for id in "${ids[@]}"; do
    [ ${#streams[@]} -eq 0 ] || streams+=(--next)
    streams+=(-sN --max-time "$limit" -o /dev/null "$base/api/jobs/$id/events")
  done
  curl --parallel --parallel-immediate "${streams[@]}" || true
  for id in "${ids[@]}"; do
    while :; do
      curl -sf --max-time 10 "$base/api/jobs/$id" > "$dir/job-$id.json" || die "GET /api/jobs/$id failed"
      grep -qE '"state":"(running|queued|paused)"' "$dir/job-$id.json" || break
      [ $SECONDS -lt $deadline ] || die "job $id still not finished after ${limit}s: $(cat "$dir/job-$id.json")"
      sleep 0.2
    done
    grep -q '"state":"completed"' "$dir/job-$id.json" || die "job $id did not complete: $(cat "$dir/job-$id.json")"
  done
  printf '%s\n' "${ids[@]}" > "$dir/jobs.tmp" && mv "$dir/jobs.tmp" "$dir/jobs"
}

# One run: $1 = run number, $2 = number of clients (0 or $clients), $3 = round (or "warm-up").
run() {
  local n=$1 count=$2 round=$3 dir="$work/run-$1"
  mkdir -p "$dir"
  client_pids=()
  if [ "$count" -gt 0 ]; then
    local before procs p share left=$count
    before=$(metric flashctl_websocket_clients)
    procs=$(( (count + per_process - 1) / per_process ))
    for p in $(seq "$procs"); do
      share=$(( left / (procs - p + 1) )); left=$((left - share))
      timeout -s TERM $(( 900 + 4 * image_bytes / 10000000 )) "${client_command[@]}" \
        --url "$ws_url" --clients "$share" --ready "$dir/ready-$p" --jobs "$dir/jobs" \
        --out "$dir/clients-$p.json" > "$dir/clients-$p.log" 2>&1 &
      client_pids+=($!)
    done
    local deadline=$((SECONDS + 120))
    for p in $(seq "$procs"); do
      while [ ! -f "$dir/ready-$p" ]; do
        [ $SECONDS -lt $deadline ] || die "client process $p not connected within 120 s: $(cat "$dir/clients-$p.log")"
        kill -0 "${client_pids[$((p - 1))]}" 2>/dev/null || [ -f "$dir/ready-$p" ] \
          || die "client process $p exited before connecting: $(cat "$dir/clients-$p.log")"
        sleep 0.1
      done
      grep -q '^ready' "$dir/ready-$p" || die "client process $p: $(cat "$dir/ready-$p") $(cat "$dir/clients-$p.log")"
    done
    # The server must see them all too.
    local seen=""
    for _ in $(seq 100); do
      seen=$(metric flashctl_websocket_clients)
      awk -v a="$seen" -v b="$before" -v c="$count" 'BEGIN {exit !(a - b == c)}' && break
      sleep 0.1
    done
    awk -v a="$seen" -v b="$before" -v c="$count" 'BEGIN {exit !(a - b == c)}' \
      || die "$count clients say they are connected but the server counts $seen (was $before)"
  fi
  # A real device writes its flash with its own processor. An emulated one overwrites an existing
  # partition file by copying the download into it (64 MiB a device, on the CPU the server and
  # the clients use, at the moment the jobs end); a partition that is not there yet becomes the
  # download (a rename). So each run starts with the last run's partitions removed, unless
  # KEEP_PARTITIONS=1.
  if [ "${KEEP_PARTITIONS:-0}" != 1 ]; then
    rm -f "$work"/tmp/flashctl-*/serve-*/EMU*/bench.img "$work"/device-*/bench.img
  fi
  local cpu_before cpu_after loops_before loops_after
  cpu_before=$(server_cpu_ticks)
  loops_before=$(loops_cpu_nanos)
  run_jobs "$dir"
  cpu_after=$(server_cpu_ticks)
  loops_after=$(loops_cpu_nanos)
  printf '{"round":"%s","clients":%d,"server_cpu":%s,"loops_cpu":%s}\n' "$round" "$count" \
    "$(awk -v a="$cpu_before" -v b="$cpu_after" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (b - a) / hz}')" \
    "$(awk -v a="$loops_before" -v b="$loops_after" 'BEGIN {printf "%.4f", (b - a) / 1e9}')" \
    > "$dir/meta.json"
  local p status=0
  for p in "${client_pids[@]}"; do wait "$p" || status=$?; done
  client_pids=()
  [ "$status" -eq 0 ] || die "a client process failed (status $status): $(cat "$dir"/clients-*.log)"
  echo "run $n (round $round, $count clients) done" >&2
}

run 0 0 warm-up
rm -rf "$work/run-0"
n=0
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then order="0 $clients"; else order="$clients 0"; fi
  for count in $order; do
    n=$((n + 1))
    run "$n" "$count" "$r"
  done
done

slow=$(metric flashctl_slow_clients_disconnected_total)
coalesced=$(metric flashctl_progress_messages_coalesced_total)
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$server_pid/status")

# Stop the server as a user would, and see how it goes.
kill -TERM "$server_pid"
stop_started=$SECONDS
server_status=""
for _ in $(seq 150); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then
  stop_note="did not stop within 15 s of SIGTERM (killed)"
else
  wait "$server_pid" && server_status=0 || server_status=$?
  server_pid=""
  stop_note="stopped on SIGTERM in about $((SECONDS - stop_started)) s, exit status $server_status"
fi

echo
if [ "$devices" = process ]; then
  where="4 flashctl emulate processes${DEVICE_NICE:+ at niceness $DEVICE_NICE}"
else
  where="4 emulated devices in the server"
fi
echo "flashctl serve, $where (TCP, ${device_speed:-unlimited} speed, partitions on tmpfs), ${size_mib} MiB random image"
processes=$(( (clients + per_process - 1) / per_process ))
echo "to each; $clients WebSocket clients in $processes $client_name client process$([ "$processes" -eq 1 ] || echo es); $rounds rounds; $build"
python3 "$root/bench/ws_load.py" report --dir "$work" --image-bytes "$image_bytes" --clients "$clients"
echo "server: peak RSS (VmHWM) $((hwm / 1024)) MiB; clients cut off as too slow: ${slow:-?}; progress messages coalesced: ${coalesced:-?}"
echo "server: $stop_note"
for left in "$work"/tmp/flashctl-*/serve-*; do
  [ -e "$left" ] && echo "server: left its emulated devices' partitions behind in \$TMPDIR: $(basename "$left"), $(du -sm "$left" | cut -f1) MiB (removed by this script with its temp dir)"
done
if grep -qiE 'error|warning|critical' "$work/server.log"; then
  echo "server log lines with error/warning:"
  grep -iE 'error|warning|critical' "$work/server.log" | head -20
fi
echo "command: $command_line"
