#!/usr/bin/env python3
"""Takes docs/dashboard.png (desktop) and docs/dashboard-phone.png: the dashboard of a
`flashctl serve --emulate 4` with two fastboot jobs running (one more queued), two loop devices
written from the disks panel, a read-only one it will not write, and a short history.

    sudo scripts/dashboard_screenshot.py    (after `swift build`; root for the loop devices)
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Tests", "Browser"))
from flashctl_server import FailingDevice, ROOT, Server, make_image  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

MiB = 1 << 20
IMAGE = "raspios-bookworm-arm64-lite.img"


def attach(workdir, loops, size, read_only=False):
    path = os.path.join(workdir, "disk%d.img" % len(loops))
    with open(path, "wb") as backing:
        backing.truncate(size)
    device = subprocess.check_output(["losetup", "--find", "--show"] + (["-r"] if read_only else []) + [path], text=True).strip()
    loops.append(device)
    return device


def main():
    workdir = tempfile.mkdtemp(prefix="flashctl-screenshot-")
    loops = []
    server = Server(workdir, devices=4, speed="12M").start()
    failing = FailingDevice(workdir)
    try:
        first, second = attach(workdir, loops, 64 * MiB), attach(workdir, loops, 64 * MiB)
        attach(workdir, loops, 8 * MiB, read_only=True)
        make_image(server.images, "boot.img", 4 * MiB)
        make_image(server.images, "system.img", 384 * MiB)
        make_image(server.images, IMAGE, 24 * MiB)
        done = server.start_job("EMU4", "boot.img", "boot")
        server.wait_for_job(done, lambda job: job["state"] == "completed")
        failed = server.start_job(failing.selector, "boot.img", "boot")
        server.wait_for_job(failed, lambda job: job["state"] == "failed")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/lib/chromium/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.base + "/")
            expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=10_000)
            server.start_job("EMU1", "system.img")
            server.start_job("EMU2", "system.img")
            server.start_job("EMU1", "boot.img", "boot")
            page.select_option("#disk-image", IMAGE)
            page.check('#disks li[data-device-id="%s"] input' % first)
            page.check('#disks li[data-device-id="%s"] input' % second)
            page.click("#disk-flash-button")
            page.click("#disk-confirm-button")
            expect(page.get_by_text("Verified - safe to remove")).to_have_count(2, timeout=30_000)
            time.sleep(1)
            page.screenshot(path=os.path.join(ROOT, "docs", "dashboard.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            time.sleep(1)
            page.screenshot(path=os.path.join(ROOT, "docs", "dashboard-phone.png"), full_page=True)
            browser.close()
    finally:
        failing.stop()
        server.stop()
        for device in loops:
            subprocess.run(["losetup", "-d", device], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
