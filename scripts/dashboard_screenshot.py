#!/usr/bin/env python3
"""Takes docs/dashboard.png (desktop) and docs/dashboard-phone.png: the dashboard of a
`flashctl serve --emulate 4` with several jobs running, one paused, and a short history.

    scripts/dashboard_screenshot.py        (after `swift build`; needs what scripts/setup.sh installs)
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Tests", "Browser"))
from flashctl_server import FailingDevice, ROOT, Server, make_image  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

MiB = 1 << 20


def main():
    workdir = tempfile.mkdtemp(prefix="flashctl-screenshot-")
    server = Server(workdir, devices=4, speed="12M").start()
    failing = FailingDevice(workdir, fail_on="flash:boot=partition is locked")
    try:
        make_image(server.images, "boot.img", 4 * MiB)
        make_image(server.images, "system.img", 384 * MiB)
        make_image(server.images, "vendor.img", 160 * MiB)
        # Some history first: a completed job and a failed one.
        done = server.start_job("EMU4", "boot.img", "boot")
        server.wait_for_job(done, lambda j: j["state"] == "completed")
        failed = server.start_job(failing.selector, "boot.img", "boot")
        server.wait_for_job(failed, lambda j: j["state"] == "failed")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/lib/chromium/chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.base + "/")
            expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=10_000)
            jobs = [server.start_job("EMU1", "system.img"), server.start_job("EMU2", "system.img"),
                    server.start_job("EMU3", "vendor.img")]
            time.sleep(4)
            server.request("POST", f"/api/jobs/{jobs[2]}/pause")
            time.sleep(3)
            docs = os.path.join(ROOT, "docs")
            page.screenshot(path=os.path.join(docs, "dashboard.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            time.sleep(1)
            page.screenshot(path=os.path.join(docs, "dashboard-phone.png"))
            browser.close()
        print("wrote docs/dashboard.png and docs/dashboard-phone.png")
    finally:
        failing.stop()
        server.stop()


if __name__ == "__main__":
    main()
