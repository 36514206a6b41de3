import os
import shutil
import subprocess
import tempfile

import pytest
from playwright.sync_api import sync_playwright

from flashctl_server import Server, free_port

# Debian's binary itself: /usr/bin/chromium is a wrapper script.
CHROMIUM = os.environ.get("CHROMIUM") or next(
    (path for path in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "") if path and os.path.exists(path)),
    "/usr/lib/chromium/chromium")


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="flashctl-browser-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(workdir):
    server = Server(workdir, devices=3, speed="4M").start()
    yield server
    server.stop()


class ConsoleLog:
    """Every console message and uncaught error of a page."""

    def __init__(self, page):
        self.messages = []
        page.on("console", lambda message: self.messages.append((message.type, message.text)))
        page.on("pageerror", lambda error: self.messages.append(("pageerror", str(error))))

    def problems(self):
        return [m for m in self.messages if m[0] in ("error", "warning", "pageerror")]


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.console = ConsoleLog(page)
    yield page
    context.close()


class LoopDevice:
    """A loop device (`path`, /dev/loopN) over a file (`backing`): a disk the server lists."""

    def __init__(self, path, backing):
        self.path = path
        self.backing = backing


class LoopDevices:
    """Attaches loop devices over files in a test's folder; `detach_all` undoes every one."""

    def __init__(self, directory):
        self.directory = directory
        self.attached = []

    def attach(self, size, read_only=False):
        backing = os.path.join(self.directory, f"disk{len(self.attached)}.img")
        with open(backing, "wb") as f:
            f.truncate(size)
        command = ["losetup", "--find", "--show"] + (["--read-only"] if read_only else []) + [backing]
        path = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()
        device = LoopDevice(path, backing)
        self.attached.append(device)
        return device

    def detach_all(self):
        for device in self.attached:
            subprocess.run(["losetup", "--detach", device.path], check=False)
        self.attached = []


@pytest.fixture
def loop_devices(workdir):
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("loop devices need root and losetup")
    directory = tempfile.mkdtemp(prefix="loop-", dir=workdir)
    devices = LoopDevices(directory)
    yield devices
    devices.detach_all()


POSTGRES_BIN = "/usr/lib/postgresql/15/bin"


class PostgreSQL:
    """A throwaway PostgreSQL for a farm of stations: `url` is what `serve --farm` takes.

    PostgreSQL refuses to run as root, so as root it runs as the postgres user, in a folder that
    user owns; fsync is off, for speed."""

    def __init__(self, directory):
        self.directory = directory
        self.data = os.path.join(directory, "data")
        self.port = free_port()
        self.url = f"postgres://flashctl@127.0.0.1:{self.port}/postgres"
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(directory, user="postgres")

    def run(self, *command):
        done = subprocess.run(self.as_owner + [os.path.join(POSTGRES_BIN, command[0]), *command[1:]],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout}{done.stderr}")

    def start(self):
        """Creates the database the first time; later, starts it again where it was."""
        if not os.path.exists(self.data):
            self.run("initdb", "-D", self.data, "-A", "trust", "-U", "flashctl", "--no-sync")
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.directory, "log"), "-w", "-o",
                 f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        return self

    def stop(self):
        """Stops at once, as a crash or a cut cable would (no goodbye to the stations)."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self.run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")


@pytest.fixture
def postgres():
    # Its own folder outside the test's workdir: the postgres user must be able to reach it.
    directory = tempfile.mkdtemp(prefix="flashctl-farm-db-")
    database = PostgreSQL(directory).start()
    yield database
    database.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def stations(workdir, postgres):
    """Stations "a" and "b" of a farm, each with one emulated device: both have an EMU1."""
    started = {}
    try:
        for name in ("a", "b"):
            started[name] = Server(os.path.join(workdir, name), devices=1, speed="2M",
                                   extra_args=["--farm", postgres.url, "--station", name]).start()
        yield started
    finally:
        for server in started.values():
            server.stop()
