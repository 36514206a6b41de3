#!/usr/bin/env python3
"""How the API answers while one peer holds thousands of idle connections to `flashctl serve`.

    bench/idle_connections.py [--idle 20000] [--requests 300] [--flashctl PATH]

Starts `flashctl serve` on loopback three times, side by side in one run:
  1. no idle connections (the baseline);
  2. --idle connections opened from 127.0.0.1 that send nothing (the default caps apply: at most
     1,024 from one address, the rest are closed at once);
  3. the same with the per-peer cap lifted (--max-connections-per-peer 1000000), which is how the
     server behaved before the caps: only the open-file limit stops them.
Meanwhile another client, from 127.0.0.2, asks GET /api/jobs --requests times in a row and the
script prints p50, p99 and the worst latency of those answers, failures, and the connections the
server held. Raise `ulimit -n` first (the script needs --idle + 100 descriptors); needs nothing
beyond Python's standard library. The latency figures are of a shared machine: compare the
rows of one run, never a figure against a fixed number.
"""
import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def start_server(flashctl, workdir, extra):
    log = open(os.path.join(workdir, "serve.log"), "w")
    process = subprocess.Popen(
        [flashctl, "serve", "--port", "0", "--images", os.path.join(workdir, "images"),
         "--history", os.path.join(workdir, "history.sqlite")] + extra,
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(os.path.join(workdir, "serve.log")) as f:
            text = f.read()
        if "listening on http://127.0.0.1:" in text:
            port = int(text.split("listening on http://127.0.0.1:")[1].split()[0].rstrip(")"))
            return process, port
        if process.poll() is not None:
            sys.exit("flashctl serve exited: " + text)
        time.sleep(0.05)
    process.kill()
    sys.exit("flashctl serve did not start")


def open_idle(port, count):
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            sock.close()
            break
        held.append(sock)
    time.sleep(1.0)  # let the server accept (and refuse) them
    return held


def api_latencies(port, requests):
    latencies, failures = [], 0
    for _ in range(requests):
        start = time.monotonic()
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
            sock.sendall(b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            sock.close()
            if not answer.startswith(b"HTTP/1.1 200"):
                failures += 1
                continue
        except OSError:
            failures += 1
            continue
        latencies.append((time.monotonic() - start) * 1000)
    return latencies, failures


def server_connections(pid):
    return sum(1 for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--flashctl", default=os.path.join(ROOT, ".build", "release", "flashctl"))
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.idle + 100:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.idle + 100), hard))
        except ValueError:
            sys.exit(f"the open-file limit ({soft}, hard {hard}) is below --idle + 100: raise it with ulimit -n")
    rows = []
    for name, idle, extra in [
        ("no idle connections", 0, []),
        (f"{args.idle} idle from one peer (caps on)", args.idle, []),
        (f"{args.idle} idle from one peer (per-peer cap lifted)", args.idle, ["--max-connections-per-peer", "1000000"]),
    ]:
        with tempfile.TemporaryDirectory(prefix="flashctl-idle-") as workdir:
            os.makedirs(os.path.join(workdir, "images"))
            process, port = start_server(args.flashctl, workdir, extra)
            try:
                held = open_idle(port, idle)
                sockets = server_connections(process.pid)
                latencies, failures = api_latencies(port, args.requests)
                for sock in held:
                    sock.close()
            finally:
                process.terminate()
                process.wait(timeout=15)
            latencies.sort()
            pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")
            rows.append((name, sockets, pick(0.5), pick(0.99), latencies[-1] if latencies else float("nan"), failures))
    print(f"GET /api/jobs from 127.0.0.2, {args.requests} requests in a row, while 127.0.0.1 holds idle connections")
    print(f"{'run':50} {'server sockets':>14} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'failed':>7}")
    for name, sockets, p50, p99, worst, failures in rows:
        print(f"{name:50} {sockets:>14} {p50:>8.2f} {p99:>8.2f} {worst:>8.2f} {failures:>7}")
    print("command: bench/idle_connections.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
