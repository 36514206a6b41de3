#!/usr/bin/env python3
"""WebSocket load for bench/server_load.sh (needs the `websockets` package from PyPI).

  ws_load.py clients --url ws://HOST:PORT/flash-progress --clients N --ready FILE --jobs FILE --out FILE
      Connects N clients to /flash-progress (like a browser dashboard: no protocol-level pings, the
      default permessage-deflate offer), writes "ready N" to --ready once all are connected, then
      records for every message: receive time (ms since the epoch) minus the message's "timestamp".
      It waits for --jobs (job ids, one per line, written by the driver once the jobs are over),
      then until every client has that many jobs' flash_completed (or --finish-timeout), closes
      the clients and writes its results (JSON) to --out.

  ws_load.py report --dir DIR --image-bytes N --clients N
      Reads the files server_load.sh left in DIR and prints the table.
"""
import argparse
import asyncio
import glob
import json
import os
import random
import statistics
import sys
import time


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# clients


class Client:
    __slots__ = ("ws", "latencies", "types", "started", "completed", "failed", "closed", "last_progress")

    def __init__(self):
        self.ws = None
        self.latencies = []
        self.types = {}
        self.started = set()
        self.completed = set()
        self.failed = set()
        self.closed = None  # why the connection ended before we closed it, if it did
        self.last_progress = {}


async def run_clients(args):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    clients = [Client() for _ in range(args.clients)]
    connect_errors = []
    gate = asyncio.Semaphore(50)  # connections opened at once

    async def open_one(client):
        async with gate:
            try:
                client.ws = await connect(
                    args.url, proxy=None, open_timeout=args.connect_timeout,
                    ping_interval=None, ping_timeout=None, close_timeout=5, max_size=1 << 20,
                )
            except Exception as error:  # noqa: BLE001 - reported, never hidden
                connect_errors.append(f"{type(error).__name__}: {error}")

    process_started = connect_started = time.monotonic()
    await asyncio.gather(*(open_one(c) for c in clients))
    connect_seconds = time.monotonic() - connect_started
    if connect_errors:
        summary = {}
        for e in connect_errors:
            summary[e] = summary.get(e, 0) + 1
        write_atomically(args.ready, f"failed {len(connect_errors)} of {args.clients}: " +
                         "; ".join(f"{n}x {e}" for e, n in summary.items()) + "\n")
        for c in clients:
            if c.ws is not None:
                await c.ws.close()
        return 1

    stopping = False

    async def read(client):
        ws = client.ws
        latencies = client.latencies
        types = client.types
        try:
            async for raw in ws:
                received = time.time() * 1000.0
                message = json.loads(raw)
                kind = message.get("type", "?")
                types[kind] = types.get(kind, 0) + 1
                stamp = message.get("timestamp")
                if isinstance(stamp, (int, float)):
                    latencies.append((kind, received - stamp))
                job = message.get("jobId")
                if kind == "flash_started":
                    client.started.add(job)
                elif kind == "flash_completed":
                    client.completed.add(job)
                elif kind == "flash_failed":
                    client.failed.add(job)
                elif kind == "flash_progress":
                    client.last_progress[job] = message.get("progress")
        except ConnectionClosed as closed:
            if not stopping:
                client.closed = f"ConnectionClosed code={closed.rcvd.code if closed.rcvd else None} " \
                                f"reason={(closed.rcvd.reason if closed.rcvd else '')!r}"
            return
        except Exception as error:  # noqa: BLE001
            client.closed = f"{type(error).__name__}: {error}"
            return
        if not stopping:
            rcvd = ws.close_code
            client.closed = f"closed by server code={rcvd} reason={ws.close_reason!r}"

    readers = [asyncio.create_task(read(c)) for c in clients]
    cpu_at_ready = sum(os.times()[:2])
    write_atomically(args.ready, f"ready {args.clients} {connect_seconds:.2f}s\n")

    # Wait for the driver's list of jobs (it writes it once the jobs are over on the server side).
    deadline = time.monotonic() + args.jobs_timeout
    while not os.path.exists(args.jobs):
        if time.monotonic() > deadline:
            print(f"ws_load: no job list at {args.jobs} after {args.jobs_timeout}s", file=sys.stderr)
            break
        await asyncio.sleep(0.05)
    jobs = set()
    if os.path.exists(args.jobs):
        with open(args.jobs) as f:
            jobs = {line.strip() for line in f if line.strip()}

    # Then until every client has seen every job end (or left), with a deadline.
    jobs_listed = time.monotonic()
    deadline = jobs_listed + args.finish_timeout
    while time.monotonic() < deadline:
        if all(c.closed is not None or jobs <= (c.completed | c.failed) for c in clients):
            break
        await asyncio.sleep(0.02)
    waited_after_jobs = time.monotonic() - jobs_listed
    run_cpu = sum(os.times()[:2]) - cpu_at_ready

    stopping = True
    await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)

    types = {}
    for c in clients:
        for k, n in c.types.items():
            types[k] = types.get(k, 0) + n
    closed = {}
    for c in clients:
        if c.closed is not None:
            closed[c.closed] = closed.get(c.closed, 0) + 1
    extensions = sorted({str(h) for c in clients for h in c.ws.response.headers.get_all("Sec-WebSocket-Extensions")})
    result = {
        "clients": len(clients),
        "jobs": sorted(jobs),
        "connect_seconds": connect_seconds,
        "waited_after_jobs_seconds": waited_after_jobs,
        "types": types,
        "missed_started": sum(1 for c in clients if not jobs <= c.started),
        "missed_completed": sum(1 for c in clients if not jobs <= c.completed),
        "got_failed": sum(1 for c in clients if c.failed),
        "last_progress_not_100": sum(1 for c in clients for j in jobs
                                     if j in c.last_progress and c.last_progress[j] != 100),
        "closed_early": closed,
        "extensions": extensions,
        "latencies": {},
        "cpu_seconds": sum(os.times()[:2]),
        "run_cpu_seconds": run_cpu,
        "wall_seconds": time.monotonic() - process_started,
    }
    for c in clients:
        for kind, x in c.latencies:
            result["latencies"].setdefault(kind, []).append(round(x, 2))
    write_atomically(args.out, json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------
# report


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def bootstrap_ratio_interval(with_runs, without_runs, rounds=2000):
    """95% interval of the median job throughput with clients over that without, by resampling
    whole runs (the jobs of one run share its moment on the machine), with a fixed seed so that
    the same runs always give the same interval. An interval that holds 1 means no difference
    these runs can measure."""
    rng = random.Random(1)

    def pooled_median(runs):
        return statistics.median(x for run in rng.choices(runs, k=len(runs)) for x in run)

    ratios = sorted(pooled_median(with_runs) / pooled_median(without_runs) for _ in range(rounds))
    return ratios[int(rounds * 0.025)], ratios[int(rounds * 0.975) - 1]


def report(args):
    rows = []
    for run_dir in sorted(glob.glob(os.path.join(args.dir, "run-*")), key=lambda d: int(d.rsplit("-", 1)[1])):
        with open(os.path.join(run_dir, "meta.json")) as f:
            meta = json.load(f)
        jobs = []
        for path in sorted(glob.glob(os.path.join(run_dir, "job-*.json"))):
            with open(path) as f:
                jobs.append(json.load(f))
        first = min(j["startedAt"] for j in jobs)
        last = max(j["endedAt"] for j in jobs)
        seconds = (last - first) / 1000.0
        total = sum(j["bytesTransferred"] for j in jobs)
        client_results = []
        for path in sorted(glob.glob(os.path.join(run_dir, "clients-*.json"))):
            with open(path) as f:
                client_results.append(json.load(f))
        spread_ms = max(j["startedAt"] for j in jobs) - first
        job_seconds = statistics.median((j["endedAt"] - j["startedAt"]) / 1000.0 for j in jobs)
        rows.append({"meta": meta, "seconds": seconds, "bytes": total, "spread_ms": spread_ms, "job_seconds": job_seconds,
                     "mbps": args.image_bytes * len(jobs) / seconds / 1e6, "clients": client_results,
                     "jobs": jobs})

    def median(xs):
        return statistics.median(xs) if xs else float("nan")

    print(f"{'run':>3} {'round':>5} {'clients':>7} {'4 jobs, s':>9} {'MB/s':>8} {'starts ms':>9} {'a job, s':>8} {'messages':>9} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'missed done':>11} {'server CPU s':>12} {'loops CPU s':>11} {'clients CPU s':>13}")
    all_latencies = []
    by_type = {}
    cpu = 0.0
    messages = 0
    missed = 0
    client_rounds = 0
    closed = {}
    types = {}
    extensions = set()
    notes = []
    for i, row in enumerate(rows, 1):
        meta = row["meta"]
        lat = sorted(x for c in row["clients"] for xs in c["latencies"].values() for x in xs)
        all_latencies.extend(lat)
        for c in row["clients"]:
            for kind, xs in c["latencies"].items():
                by_type.setdefault(kind, []).extend(xs)
            cpu += c["cpu_seconds"]
        client_cpu = sum(c["run_cpu_seconds"] for c in row["clients"])
        n = sum(sum(c["types"].values()) for c in row["clients"])
        messages += n
        miss = sum(c["missed_completed"] for c in row["clients"])
        if meta["clients"]:
            missed += miss
            client_rounds += meta["clients"]
        for c in row["clients"]:
            for k, v in c["closed_early"].items():
                closed[k] = closed.get(k, 0) + v
            for k, v in c["types"].items():
                types[k] = types.get(k, 0) + v
            extensions.update(c["extensions"])
            if c["missed_started"]:
                notes.append(f"run {i}: {c['missed_started']} clients missed a flash_started")
            if c["got_failed"]:
                notes.append(f"run {i}: {c['got_failed']} clients got a flash_failed")
            if c["last_progress_not_100"]:
                notes.append(f"run {i}: {c['last_progress_not_100']} (client, job) pairs whose last "
                             f"flash_progress was not 100")
        bad = [j for j in row["jobs"] if j.get("state") != "completed" or j.get("bytesTransferred") != args.image_bytes]
        for j in bad:
            notes.append(f"run {i}: job {j.get('jobId')} state={j.get('state')} bytes={j.get('bytesTransferred')}")
        if meta["clients"]:
            print(f"{i:>3} {meta['round']:>5} {meta['clients']:>7} {row['seconds']:>9.2f} {row['mbps']:>8.1f} "
                  f"{row['spread_ms']:>9} {row['job_seconds']:>8.3f} {n:>9} {percentile(lat, 50):>7.1f} {percentile(lat, 99):>7.1f} {lat[-1] if lat else float('nan'):>7.1f} "
                  f"{miss:>11} {meta['server_cpu']:>12.2f} {meta.get('loops_cpu', float('nan')):>11.3f} {client_cpu:>13.2f}")
        else:
            print(f"{i:>3} {meta['round']:>5} {0:>7} {row['seconds']:>9.2f} {row['mbps']:>8.1f} "
                  f"{row['spread_ms']:>9} {row['job_seconds']:>8.3f} {'-':>9} {'-':>7} {'-':>7} {'-':>7} {'-':>11} {meta['server_cpu']:>12.2f} {meta.get('loops_cpu', float('nan')):>11.3f} {'-':>13}")

    without = [r["mbps"] for r in rows if not r["meta"]["clients"]]
    with_ = [r["mbps"] for r in rows if r["meta"]["clients"]]
    all_latencies.sort()
    m_without, m_with = median(without), median(with_)
    print()
    print(f"throughput (4 jobs together, first start to last end, median): "
          f"without clients {m_without:.1f} MB/s, with {args.clients} clients {m_with:.1f} MB/s, "
          f"ratio with/without {m_with / m_without:.3f}")
    # A job's own throughput leaves out when the server got its start request: how far apart
    # the four starts land is a matter of the requests' arrival and of the API's latency.
    def job_speeds(row):
        return [args.image_bytes / ((j["endedAt"] - j["startedAt"]) / 1000.0) / 1e6 for j in row["jobs"]]

    runs_without = [job_speeds(r) for r in rows if not r["meta"]["clients"]]
    runs_with = [job_speeds(r) for r in rows if r["meta"]["clients"]]
    job_without = [x for run in runs_without for x in run]
    job_with = [x for run in runs_with for x in run]
    if job_without and job_with:
        if min(len(runs_with), len(runs_without)) >= 3:
            low, high = bootstrap_ratio_interval(runs_with, runs_without)
            interval = (f"95% interval {low:.3f}-{high:.3f}: {'a loss' if high < 1 else 'a gain' if low > 1 else 'no difference'} "
                        f"that these runs can tell")
        else:
            interval = "too few rounds for an interval: 3 at least"
        print(f"throughput of a job (its bytes over its own start to end, median of {len(job_without)} and "
              f"{len(job_with)} jobs): without clients {median(job_without):.2f} MB/s "
              f"(range {min(job_without):.2f}-{max(job_without):.2f}), with {args.clients} clients "
              f"{median(job_with):.2f} MB/s (range {min(job_with):.2f}-{max(job_with):.2f}), "
              f"ratio with/without {median(job_with) / median(job_without):.3f} ({interval})")
    loops_without = [r["meta"]["loops_cpu"] for r in rows if not r["meta"]["clients"] and "loops_cpu" in r["meta"]]
    loops_with = [(r["meta"]["loops_cpu"], sum(sum(c["types"].values()) for c in r["clients"]))
                  for r in rows if r["meta"]["clients"] and "loops_cpu" in r["meta"]]
    if loops_without and loops_with and median([n for _, n in loops_with]) > 0:
        extra = median([cpu for cpu, _ in loops_with]) - median(loops_without)
        delivered = median([n for _, n in loops_with])
        print(f"event loop CPU per run (median): without clients {median(loops_without) * 1000:.1f} ms, with "
              f"{args.clients} clients {median([cpu for cpu, _ in loops_with]) * 1000:.1f} ms: "
              f"{extra / delivered * 1e6:.2f} us per message delivered ({delivered} per run)")
    print(f"delivery latency (receive time - message timestamp), {len(all_latencies)} messages: "
          f"p50 {percentile(all_latencies, 50):.1f} ms, p99 {percentile(all_latencies, 99):.1f} ms, "
          f"max {all_latencies[-1] if all_latencies else float('nan'):.1f} ms")
    print("  by type: " + ", ".join(
        f"{k} p50 {percentile(sorted(v), 50):.1f} / p99 {percentile(sorted(v), 99):.1f} ms"
        for k, v in sorted(by_type.items())))
    print("messages received: " + ", ".join(f"{k} {v}" for k, v in sorted(types.items())))
    print(f"client processes: {cpu:.1f} CPU seconds in all (connect, runs, close); per run in the table "
          f"(from all connected to all done). Server CPU s: user+system of the server process from the "
          f"first POST to the last job seen ended; loops CPU s: the same for its event loop threads alone "
          f"(HTTP, WebSocket and the writes to the clients). {os.cpu_count()} CPUs.")
    if missed == 0 and not closed:
        print(f"every client got every job's flash_completed ({client_rounds} client-runs); no client disconnected")
    else:
        print(f"client-runs that missed a job's flash_completed: {missed} of {client_rounds}")
    for k, v in sorted(closed.items()):
        print(f"clients whose connection ended early: {v}x {k}")
    print("WebSocket extensions negotiated: " + (", ".join(sorted(extensions)) or "none"))
    for note in notes:
        print("note: " + note)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("clients")
    c.add_argument("--url", required=True)
    c.add_argument("--clients", type=int, required=True)
    c.add_argument("--ready", required=True)
    c.add_argument("--jobs", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--connect-timeout", type=float, default=30)
    c.add_argument("--jobs-timeout", type=float, default=600)
    c.add_argument("--finish-timeout", type=float, default=30)
    r = sub.add_parser("report")
    r.add_argument("--dir", required=True)
    r.add_argument("--image-bytes", type=int, required=True)
    r.add_argument("--clients", type=int, required=True)
    args = parser.parse_args()
    if args.command == "clients":
        sys.exit(asyncio.run(run_clients(args)))
    sys.exit(report(args))


if __name__ == "__main__":
    main()
