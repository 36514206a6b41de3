import os
import shutil
import subprocess
import tempfile

import pytest
from playwright.sync_api import sync_playwright

from flashctl_server import Server

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
