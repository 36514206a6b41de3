"""Starts and stops real `flashctl serve` processes (and emulated devices) for the browser tests.

The binary is $FLASHCTL, or the debug build scripts/test.sh makes (.build/debug/flashctl).
"""
import glob
import json
import os
import re
import signal
import ssl
import socket
import subprocess
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FLASHCTL = os.environ.get("FLASHCTL", os.path.join(ROOT, ".build", "debug", "flashctl"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_image(directory, name, size):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


class Server:
    """`flashctl serve` on a fixed port (so a restart comes back where the page looks for it)."""

    def __init__(self, workdir, devices=3, speed=None, token=None, port=None, tls=None, extra_args=()):
        self.workdir = workdir
        self.images = os.path.join(workdir, "images")
        self.history = os.path.join(workdir, "history.sqlite")
        os.makedirs(self.images, exist_ok=True)
        self.devices = devices
        self.speed = speed
        self.token = token
        self.port = port or free_port()
        # tls: (certificate, key) PEM files; the server then speaks https and wss.
        self.tls = tls
        # More `serve` options, e.g. ["--farm", URL, "--station", NAME].
        self.extra_args = list(extra_args)
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.process = None
        self.log_path = os.path.join(workdir, "server.log")

    def start(self):
        command = [FLASHCTL, "serve", "--port", str(self.port), "--images", self.images,
                   "--history", self.history, "--emulate", str(self.devices),
                   # FailingDevice is a separate emulator, reached as tcp:127.0.0.1:PORT.
                   "--allow-tcp", "127.0.0.1"]
        if self.speed:
            command += ["--emulate-speed", self.speed]
        if self.token:
            command += ["--token", self.token]
        if self.tls:
            command += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        command += self.extra_args
        env = dict(os.environ, TMPDIR=self.workdir + "/")
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flashctl serve exited at start: {self.log()}")
            if "listening on" in self.log():
                try:
                    self.get("/api/devices")
                    return self
                except (urllib.error.URLError, ConnectionError):
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"flashctl serve did not start within 30 s: {self.log()}")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self):
        """SIGKILL: the server ends at once, saying nothing to anyone (a station that died)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def request(self, method, path, body=None):
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        context = ssl.create_default_context(cafile=self.tls[0]) if self.tls else None
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def get(self, path):
        status, body = self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {body}"
        return body

    def start_job(self, device, image, partition=None, station=None):
        body = {"deviceId": device, "image": image}
        if partition:
            body["partition"] = partition
        if station:
            body["station"] = station
        status, answer = self.request("POST", "/api/flash/start", body)
        assert status == 200, f"start failed: {status} {answer}"
        return answer["jobId"]

    def job(self, job_id):
        return self.get(f"/api/jobs/{job_id}")

    def partition(self, device, name):
        """What emulated `device` holds in partition `name`, or None if it has no such partition.

        `serve --emulate` keeps each device's partitions as files NAME.img under
        $TMPDIR/flashctl-UID/serve-PID-N/DEVICE/ (TMPDIR is the workdir)."""
        found = glob.glob(os.path.join(self.workdir, f"flashctl-{os.geteuid()}", f"serve-{self.process.pid}-*", device, name + ".img"))
        if not found:
            return None
        with open(found[0], "rb") as f:
            return f.read()

    def wait_for_job(self, job_id, condition, timeout=30):
        deadline = time.monotonic() + timeout
        job = None
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if condition(job):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} never reached the expected state; last: {job}")


class FailingDevice:
    """A standalone emulated device that answers FAIL to `flash:boot`, reached as tcp:HOST:PORT."""

    def __init__(self, workdir, fail_on="flash:boot=partition is locked"):
        self.process = subprocess.Popen(
            [FLASHCTL, "emulate", "--tcp", "0", "--dir", os.path.join(workdir, "failing"), "--fail-on", fail_on],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.process.stdout.readline()
        match = re.search(r"on (tcp:[0-9.]+:[0-9]+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"flashctl emulate said: {line!r}")
        self.selector = match.group(1)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
