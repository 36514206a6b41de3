"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real
`flashctl serve` with emulated fastboot devices."""
import re
import time

from playwright.sync_api import expect

from flashctl_server import FailingDevice, Server, make_image

MiB = 1 << 20


def card(page, job_id):
    return page.locator(f'article.job[data-job-id="{job_id}"]')


def field(locator, role):
    return locator.locator(f'[data-role="{role}"]')


def open_dashboard(page, server):
    page.goto(server.base + "/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=10_000)


def test_page_loads_with_no_console_errors_and_shows_devices_and_images(page, server):
    make_image(server.images, "boot.img", 1 * MiB)
    make_image(server.images, "system.img", 2 * MiB)
    open_dashboard(page, server)
    expect(page.locator("#summary-devices")).to_have_text("3")
    expect(page.locator("#devices li.device")).to_have_count(3)
    for serial in ("EMU1", "EMU2", "EMU3"):
        expect(page.locator(f'#devices li[data-device-id="{serial}"]')).to_contain_text("fastboot")
    expect(page.locator("#start-image option")).to_have_text(["boot.img (1.0 MiB)", "system.img (2.0 MiB)"])
    expect(page.locator("#jobs-empty")).to_be_visible()
    page.wait_for_timeout(500)
    assert page.console.problems() == []


def test_job_started_through_the_api_appears_within_a_second_and_completes(page, server):
    make_image(server.images, "boot.img", 6 * MiB)
    open_dashboard(page, server)
    job_id = server.start_job("EMU2", "boot.img", "boot")
    job = card(page, job_id)
    expect(job).to_be_visible(timeout=1_000)
    expect(job).to_contain_text("EMU2")
    expect(job).to_contain_text("boot.img → boot")
    # While it runs, the summary counts it and its speed.
    expect(page.locator("#summary-running")).to_have_text("1")
    expect(field(job, "status")).to_have_text("Completed", timeout=30_000)
    expect(field(job, "progress")).to_have_text("100%")
    expect(field(job, "bytes")).to_have_text("6.0 MiB / 6.0 MiB")
    expect(job.locator('[role="progressbar"]')).to_have_attribute("aria-valuenow", "100")
    expect(field(job, "error")).to_be_hidden()
    server_job = server.job(job_id)
    assert server_job["state"] == "completed" and server_job["bytesTransferred"] == 6 * MiB
    # The speed chart has a line, and the history table the finished job.
    assert job.locator("polyline.chart-line").get_attribute("points").count(",") >= 2
    row = page.locator(f'#history tr[data-job-id="{job_id}"]')
    expect(row).to_be_visible(timeout=5_000)
    expect(row).to_contain_text("completed")
    expect(page.locator("#summary-running")).to_have_text("0")
    assert page.console.problems() == []


def test_pause_and_resume_from_the_page_hold_and_release_the_transfer_on_the_server(page, server):
    make_image(server.images, "system.img", 24 * MiB)
    open_dashboard(page, server)
    job_id = server.start_job("EMU1", "system.img")
    job = card(page, job_id)
    expect(field(job, "status")).to_have_text("Running", timeout=5_000)
    server.wait_for_job(job_id, lambda j: j["bytesTransferred"] > 0)
    # While it runs: a speed, an ETA, an elapsed time that moves, and the summary's throughput.
    expect(field(job, "speed")).to_have_text(re.compile(r"^[0-9.]+ (B|KiB|MiB)/s$"))
    expect(field(job, "eta")).to_have_text(re.compile(r"^([0-9]+m )?[0-9]+s$"))
    expect(page.locator("#summary-throughput")).to_have_text(re.compile(r"^[1-9][0-9.]* (KiB|MiB)/s$"))
    first_elapsed = field(job, "elapsed").inner_text()
    expect(field(job, "elapsed")).not_to_have_text(first_elapsed, timeout=3_000)

    job.get_by_role("button", name="Pause").click()
    server.wait_for_job(job_id, lambda j: j["state"] == "paused", timeout=10)
    expect(field(job, "status")).to_have_text("Paused")
    expect(page.locator("#summary-running")).to_have_text("0")
    held = server.job(job_id)["bytesTransferred"]
    time.sleep(1.0)
    assert server.job(job_id)["bytesTransferred"] == held, "bytes moved while paused"

    # The keyboard focus moved from Pause to Resume: Enter resumes.
    expect(job.get_by_role("button", name="Resume")).to_be_focused()
    page.keyboard.press("Enter")
    server.wait_for_job(job_id, lambda j: j["state"] == "running" and j["bytesTransferred"] > held, timeout=10)
    expect(field(job, "status")).to_have_text("Running")

    job.get_by_role("button", name="Cancel").click()
    server.wait_for_job(job_id, lambda j: j["state"] == "cancelled", timeout=15)
    expect(field(job, "status")).to_have_text("Cancelled")
    expect(field(job, "error")).to_contain_text("cancel")
    expect(job.get_by_role("button")).to_have_count(0)
    assert page.console.problems() == []


def test_controls_are_reachable_with_the_keyboard(page, server):
    make_image(server.images, "system.img", 24 * MiB)
    open_dashboard(page, server)
    job_id = server.start_job("EMU3", "system.img")
    expect(field(card(page, job_id), "status")).to_have_text("Running", timeout=5_000)
    reached = []
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.dataset.action || document.activeElement.tagName"))
        if reached[-1] == "pause":
            break
    assert reached[-1] == "pause", f"Tab never reached the job's Pause button: {reached}"
    page.keyboard.press("Enter")
    server.wait_for_job(job_id, lambda j: j["state"] == "paused", timeout=10)
    for name in ("start-image", "start-device", "start-partition", "start-button"):
        assert name in reached or _tab_reaches(page, name), f"{name} is not reachable with Tab"
    server.request("POST", f"/api/jobs/{job_id}/cancel")


def _tab_reaches(page, element_id):
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == element_id:
            return True
    return False


def test_a_failed_job_shows_the_devices_error(page, server, workdir):
    make_image(server.images, "boot.img", 1 * MiB)
    device = FailingDevice(workdir, fail_on="flash:boot=partition is locked")
    try:
        open_dashboard(page, server)
        job_id = server.start_job(device.selector, "boot.img", "boot")
        job = card(page, job_id)
        expect(field(job, "status")).to_have_text("Failed", timeout=15_000)
        error = server.job(job_id)["error"]
        assert "partition is locked" in error
        expect(field(job, "error")).to_have_text(error)
        expect(job.get_by_role("button")).to_have_count(0)
        row = page.locator(f'#history tr[data-job-id="{job_id}"]')
        expect(row).to_contain_text("failed", timeout=5_000)
    finally:
        device.stop()


def test_start_a_flash_from_the_devices_panel(page, server):
    make_image(server.images, "boot.img", 2 * MiB)
    open_dashboard(page, server)
    page.select_option("#start-image", "boot.img")
    page.select_option("#start-device", "EMU3")
    expect(page.locator("#start-partition")).to_have_attribute("placeholder", "boot (from the image name)")
    page.click("#start-button")
    expect(page.locator("#start-result")).to_contain_text("Started job_")
    job_id = page.locator("#start-result").inner_text().split()[1]
    job = card(page, job_id)
    expect(field(job, "status")).to_have_text("Completed", timeout=30_000)
    assert server.job(job_id)["partition"] == "boot"
    emulated = server.get("/api/devices")

    # A refusal from the server is shown as the server said it.
    page.fill("#start-partition", "bad name!")
    page.click("#start-button")
    status, answer = server.request("POST", "/api/flash/start", {"deviceId": "EMU3", "image": "boot.img", "partition": "bad name!"})
    assert status == 422
    expect(page.locator("#start-result")).to_have_text(answer["error"])
    assert len([d for d in emulated["devices"] if d["kind"] != "disk"]) == 3


def test_a_job_for_a_busy_device_shows_as_queued_then_runs(page, server):
    make_image(server.images, "system.img", 24 * MiB)
    make_image(server.images, "boot.img", 1 * MiB)
    open_dashboard(page, server)
    first = server.start_job("EMU1", "system.img")
    page.select_option("#start-image", "boot.img")
    page.select_option("#start-device", "EMU1")
    page.click("#start-button")
    expect(page.locator("#start-result")).to_contain_text("Queued job_")
    second = page.locator("#start-result").inner_text().split()[1]
    assert server.job(second)["state"] == "queued"
    expect(field(card(page, second), "status")).to_have_text("Queued")
    expect(page.locator("#summary-running")).to_have_text("1")
    expect(page.locator("#summary-running + .label")).to_have_text("jobs running (1 queued)")
    server.request("POST", f"/api/jobs/{first}/cancel")
    expect(field(card(page, first), "status")).to_have_text("Cancelled", timeout=10_000)
    expect(field(card(page, second), "status")).to_have_text("Completed", timeout=30_000)


def test_reconnects_after_the_server_restarts(page, workdir):
    server = Server(workdir, devices=2, speed="2M").start()
    try:
        make_image(server.images, "system.img", 16 * MiB)
        open_dashboard(page, server)
        running = server.start_job("EMU1", "system.img")
        expect(field(card(page, running), "status")).to_have_text("Running", timeout=5_000)

        server.stop()
        # The server cancelled the job on its way down and told the page so.
        expect(field(card(page, running), "status")).to_have_text("Cancelled", timeout=10_000)
        expect(page.locator("#connection")).to_have_attribute("data-state", "disconnected", timeout=10_000)
        page.wait_for_timeout(1_500)  # a few failed attempts while it is away

        server.start()
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=20_000)
        make_image(server.images, "boot.img", 1 * MiB)
        job_id = server.start_job("EMU2", "boot.img", "boot")
        expect(field(card(page, job_id), "status")).to_have_text("Completed", timeout=30_000)
        expect(page.locator(f'#history tr[data-job-id="{running}"]')).to_contain_text("cancelled")
    finally:
        server.stop()


def test_the_token_is_asked_for_once(page, browser, workdir):
    token = "bench-token-0123456789"
    server = Server(workdir, devices=1, token=token).start()
    try:
        page.goto(server.base + "/")
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible(timeout=5_000)
        expect(page.locator("#connection")).to_have_attribute("data-state", "token")
        page.fill("#token-input", token)
        page.press("#token-input", "Enter")
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=10_000)
        expect(page.locator("#summary-devices")).to_have_text("1")

        page.reload()
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=10_000)
        expect(dialog).to_be_hidden()

        # A wrong stored token is asked for again, saying why.
        page.evaluate("localStorage.setItem('flashctl.token', 'wrong-token-000000000')")
        page.reload()
        expect(dialog).to_be_visible(timeout=5_000)
        expect(page.locator("#token-reason")).to_contain_text("refused")
    finally:
        server.stop()


def test_phone_sized_screen_has_no_sideways_scrolling(browser, server):
    make_image(server.images, "system.img", 8 * MiB)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        open_dashboard(page, server)
        job_id = server.start_job("EMU1", "system.img")
        expect(card(page, job_id)).to_be_visible(timeout=2_000)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px screen"
        box = card(page, job_id).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        server.request("POST", f"/api/jobs/{job_id}/cancel")
    finally:
        context.close()
