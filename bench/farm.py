#!/usr/bin/env python3
"""The farm's figures: three stations (`flashctl serve --farm`) on one machine sharing a real PostgreSQL.

    bench/farm.sh [--flashctl PATH] [--jobs 500] [--burst 300]

1. Claim-to-start latency: --jobs jobs submitted one after another at station s1 for devices of
   station s3; the time from just before each POST to its flash_started arriving on station
   s2's WebSocket (p50, p99, worst). Each device gets its next job once its last one ended, so
   the figure is the farm's own path (submit, NOTIFY, claim, start, relay), not a queue.
2. Jobs per hour: --burst short jobs (64 KiB images) submitted at once at the three stations
   for their twelve devices, from the first POST to the last flash_completed on s2's WebSocket;
   with the database's load: transactions committed per job, less what the stations commit
   idle (heartbeats and the lost-station watch), which is printed too.
3. Lost-station detection: s3 killed with SIGKILL; the time until s2's GET /api/stations says
   lost, and how long s3 had been silent then.

Needs PostgreSQL from Debian's packages (run as the postgres user when this runs as root) and
the `websockets` package (bench/farm.sh installs it). The figures are of a shared machine and a
debug or release build as given: compare them with the goals and the peers' loops, not with a
fixed number.
"""
import argparse
import asyncio
import json
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PG_BIN = max((d for d in os.listdir("/usr/lib/postgresql") if d.isdigit()), key=int, default=None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(command):
    return (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + command


class Postgres:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "pg")
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(workdir, user.pw_uid, user.pw_gid)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.bin = f"/usr/lib/postgresql/{PG_BIN}/bin"
        self.port = free_port()
        subprocess.run(as_postgres([f"{self.bin}/initdb", "-D", self.dir + "/data", "-A", "trust", "-U", "flashctl", "--no-sync"]),
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(as_postgres([f"{self.bin}/pg_ctl", "-D", self.dir + "/data", "-l", self.dir + "/log", "-w", "-o",
                                    f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"]),
                       check=True, stdout=subprocess.DEVNULL)
        self.url = f"postgres://flashctl@127.0.0.1:{self.port}/postgres"

    def sql(self, statement):
        out = subprocess.run([f"{self.bin}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "flashctl", "-d", "postgres",
                              "-At", "-c", statement], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def commits(self):
        return int(self.sql("SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"))

    def stop(self):
        subprocess.run(as_postgres([f"{self.bin}/pg_ctl", "-D", self.dir + "/data", "-m", "immediate", "-w", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Station:
    def __init__(self, flashctl, workdir, name, farm, image):
        self.name = name
        base = os.path.join(workdir, name)
        os.makedirs(base + "/images")
        shutil.copy(image, base + "/images/small.img")
        self.log = open(base + "/log", "w")
        self.process = subprocess.Popen(
            [flashctl, "serve", "--port", "0", "--images", base + "/images", "--history", base + "/history.sqlite",
             "--emulate", "4", "--farm", farm, "--station", name], stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            sys.exit(f"station {name} did not start: {line}")
        self.url = f"http://127.0.0.1:{match.group(1)}"

    def post(self, path, body):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as answer:
            return json.loads(answer.read())

    def kill(self, sig=signal.SIGTERM):
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)


class Watcher:
    """Station s2's WebSocket: when each job's messages arrived."""

    def __init__(self):
        self.started, self.completed = {}, {}
        self.events = {}

    async def run(self, url, ready):
        from websockets.asyncio.client import connect
        async with connect(url.replace("http://", "ws://") + "/flash-progress", max_size=1 << 20) as ws:
            ready.set()
            async for text in ws:
                now = time.monotonic()
                message = json.loads(text)
                job = message.get("jobId")
                kind = message.get("type")
                if kind == "flash_started":
                    self.started.setdefault(job, now)
                elif kind in ("flash_completed", "flash_failed"):
                    self.completed.setdefault(job, now)
                for key in (job,):
                    event = self.events.get(key)
                    if event:
                        event.set()

    async def wait(self, job, table, timeout=60):
        while job not in table:
            event = self.events.setdefault(job, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except asyncio.TimeoutError:
                raise SystemExit(f"job {job}: no message within {timeout} s")
            event.clear()
        return table[job]


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def main(args):
    workdir = tempfile.mkdtemp(prefix="flashctl-farm-bench-")
    os.chmod(workdir, 0o755)
    db = Postgres(workdir)
    image = os.path.join(workdir, "small.img")
    with open(image, "wb") as f:
        f.write(os.urandom(64 << 10))
    stations = []
    try:
        stations = [Station(args.flashctl, workdir, f"s{i}", db.url, image) for i in (1, 2, 3)]
        s1, s2, s3 = stations
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            listed = {s["station"]: s for s in s1.get("/api/stations")["stations"]}
            if all(len([d for d in listed.get(s.name, {}).get("devices", []) if d.get("kind") == "fastboot-tcp"]) == 4 for s in stations):
                break
            await asyncio.sleep(0.2)
        watcher = Watcher()
        ready = asyncio.Event()
        watching = asyncio.create_task(watcher.run(s2.url, ready))
        await asyncio.wait_for(ready.wait(), 10)
        loop = asyncio.get_running_loop()

        # 1. Claim-to-start latency.
        latencies, last_on_device = [], {}
        for i in range(args.jobs):
            device = f"EMU{i % 4 + 1}"
            if device in last_on_device:
                await watcher.wait(last_on_device[device], watcher.completed)
            sent = time.monotonic()
            answer = await loop.run_in_executor(None, s1.post, "/api/flash/start",
                                                {"deviceId": device, "station": "s3", "image": "small.img", "partition": f"l{i}"})
            job = answer["jobId"]
            started = await watcher.wait(job, watcher.started)
            latencies.append((started - sent) * 1000)
            last_on_device[device] = job
        for job in last_on_device.values():
            await watcher.wait(job, watcher.completed)

        # 2. Jobs per hour, and the database's load.
        await asyncio.sleep(2)  # the last jobs' records written
        before_idle = db.commits()
        await asyncio.sleep(5)
        idle_rate = (db.commits() - before_idle) / 5
        before = db.commits()
        began = time.monotonic()

        def submit(i):
            target = stations[i // 4 % 3].name
            return stations[i % 3].post("/api/flash/start", {"deviceId": f"EMU{i % 4 + 1}", "station": target,
                                                             "image": "small.img", "partition": f"b{i}"})["jobId"]
        jobs = await asyncio.gather(*(loop.run_in_executor(None, submit, i) for i in range(args.burst)))
        for job in jobs:
            await watcher.wait(job, watcher.completed, timeout=300)
        took = time.monotonic() - began
        commits = db.commits() - before - idle_rate * took
        watching.cancel()

        # 3. Lost-station detection.
        s3.kill(signal.SIGKILL)
        killed = time.monotonic()
        lost_after, silent = None, None
        while time.monotonic() - killed < 30:
            listed = {s["station"]: s for s in s2.get("/api/stations")["stations"]}
            if listed["s3"]["state"] == "lost":
                lost_after, silent = time.monotonic() - killed, listed["s3"]["silentMs"] / 1000
                break
            await asyncio.sleep(0.05)

        print(f"flashctl farm bench: 3 stations x 4 emulated devices on one machine ({os.cpu_count()} cores), PostgreSQL {PG_BIN}, {args.flashctl}")
        print(f"claim-to-start, {args.jobs} jobs submitted at s1 for s3, flash_started on s2's WebSocket:")
        print(f"  p50 {percentile(latencies, 50):.1f} ms   p99 {percentile(latencies, 99):.1f} ms   worst {max(latencies):.1f} ms"
              f"   (goal p99 < 250 ms; LAVA's scheduler loop: 20 s, {20000 / percentile(latencies, 99):.0f}x)")
        print(f"jobs per hour, {args.burst} jobs of 64 KiB at once across 3 stations: {args.burst / took * 3600:,.0f} "
              f"({took:.1f} s for all)")
        print(f"database load: {commits / args.burst:.1f} transactions per job, beyond {idle_rate:.1f}/s the 3 idle stations commit")
        if lost_after is None:
            print("lost-station detection: s3 was not declared lost within 30 s")
        else:
            print(f"lost-station detection: s3 declared lost {lost_after:.1f} s after SIGKILL, silent for {silent:.1f} s "
                  f"(goal < 10 s of silence + 1 s; LAVA 60 s, STF 30 s)")
    finally:
        for station in stations:
            station.kill()
        db.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--flashctl", default=os.path.join(ROOT, ".build/release/flashctl"))
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--burst", type=int, default=300)
    asyncio.run(main(parser.parse_args()))
