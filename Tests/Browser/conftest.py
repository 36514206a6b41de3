import os
import shutil
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
