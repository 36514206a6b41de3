"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real
`flashctl serve` with emulated fastboot devices, and loop devices as disks."""
import os
import re
import subprocess
import time
import zipfile

from playwright.sync_api import expect

from flashctl_server import FailingDevice, Server, make_image

MiB = 1 << 20


def tile(page, device_id):
    """A device's tile, whichever job it shows."""
    return page.locator(f'article.tile[data-device-id="{device_id}"]')


def card(page, job_id):
    """The tile that shows this job now (its device's current or last job)."""
    return page.locator(f'article.tile[data-job-id="{job_id}"]')


def field(locator, role):
    return locator.locator(f'[data-role="{role}"]')


def disk_row(page, device_path):
    return page.locator(f'#disks li[data-device-id="{device_path}"]')


def tile_order(page):
    return page.locator("#jobs article.tile").evaluate_all("tiles => tiles.map(t => t.dataset.deviceId)")


def listed_device(server, device_id):
    return next(d for d in server.get("/api/devices")["devices"] if d["deviceId"] == device_id)


def digest(tool, path):
    """What `xxh128sum` or `sha256sum` prints for the file."""
    return subprocess.run([tool, path], check=True, capture_output=True, text=True).stdout.split()[0]


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
    expect(page.locator("#disk-image option")).to_have_text(["boot.img (1.0 MiB)", "system.img (2.0 MiB)"])
    expect(page.locator("#jobs-empty")).to_be_visible()
    expect(page.locator("#summary-done")).to_have_text("0")
    expect(page.locator("#summary-failed")).to_have_text("0")
    page.wait_for_timeout(500)
    assert page.console.problems() == []


def test_job_started_through_the_api_appears_within_a_second_and_completes(page, server):
    image = make_image(server.images, "boot.img", 6 * MiB)
    open_dashboard(page, server)
    job_id = server.start_job("EMU2", "boot.img", "boot")
    job = card(page, job_id)
    expect(job).to_be_visible(timeout=1_000)
    # The device's tile, titled with its serial and where it is plugged in (an emulated device: its address).
    expect(job).to_have_attribute("data-device-id", "EMU2")
    expect(field(job, "serial")).to_have_text("EMU2")
    expect(field(job, "port")).to_have_text(listed_device(server, "EMU2")["address"])
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
    # Its tooltip names the digest of what was sent, as `xxh128sum` prints it for the image.
    expect(row).to_have_attribute("title", f"XXH128 of what was sent (xxh128sum): {digest('xxh128sum', image)}")
    expect(page.locator("#summary-running")).to_have_text("0")
    expect(page.locator("#summary-done")).to_have_text("1")
    expect(page.locator("#summary-failed")).to_have_text("0")
    # Clearing finished work takes the idle tile away; the tally keeps counting what was seen.
    page.click("#clear-finished")
    expect(tile(page, "EMU2")).to_have_count(0)
    expect(page.locator("#jobs-empty")).to_be_visible()
    expect(page.locator("#summary-done")).to_have_text("1")
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
    for name in ("start-image", "start-device", "start-partition", "start-slot", "start-button"):
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
        # The page hears flash_failed as the job ends; the API records the end a moment later.
        error = server.wait_for_job(job_id, lambda job: job.get("state") == "failed", timeout=10)["error"]
        assert "partition is locked" in error
        expect(field(job, "error")).to_have_text(error)
        expect(field(job, "outcome")).to_be_hidden()
        expect(job.get_by_role("button")).to_have_count(0)
        row = page.locator(f'#history tr[data-job-id="{job_id}"]')
        expect(row).to_contain_text("failed", timeout=5_000)
        expect(page.locator("#summary-failed")).to_have_text("1")
        expect(page.locator("#summary-done")).to_have_text("0")
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


def test_the_slot_chosen_for_a_plain_flash_is_sent_and_the_current_slot_is_left_out(page, server):
    make_image(server.images, "boot.img", 64 * 1024)
    open_dashboard(page, server)
    page.select_option("#start-image", "boot.img")
    page.select_option("#start-device", "EMU2")
    expect(page.get_by_label("Slot", exact=True)).to_have_value("")
    with page.expect_request("**/api/flash/start") as sent:
        page.click("#start-button")
    assert sent.value.post_data_json == {"deviceId": "EMU2", "image": "boot.img"}
    expect(page.locator("#start-result")).to_contain_text("Started job_")
    first = page.locator("#start-result").inner_text().split()[1]
    expect(field(card(page, first), "status")).to_have_text("Completed", timeout=15_000)

    page.get_by_label("Slot", exact=True).select_option("b")
    with page.expect_request("**/api/flash/start") as sent:
        page.click("#start-button")
    assert sent.value.post_data_json == {"deviceId": "EMU2", "image": "boot.img", "slot": "b"}
    # The line still names the first job until the second's answer is in.
    expect(page.locator("#start-result")).not_to_contain_text(first)
    expect(page.locator("#start-result")).to_contain_text("Started job_")
    job_id = page.locator("#start-result").inner_text().split()[1]
    # The emulated device has no slots: its boot is written, as fastboot --slot b would.
    expect(field(card(page, job_id), "status")).to_have_text("Completed", timeout=15_000)
    assert server.job(job_id)["state"] == "completed"


def make_factory_zip(directory, name, board, images):
    """A zip as `fastboot update` takes it: android-info.txt and NAME.img for each partition."""
    with zipfile.ZipFile(os.path.join(directory, name), "w") as archive:
        archive.writestr("android-info.txt", f"require board={board}\n")
        for partition, data in images.items():
            archive.writestr(f"{partition}.img", data)


def start_factory_update(page, image, device):
    """Chooses the zip and a factory update in the devices panel, as a person would, and submits."""
    page.select_option("#start-image", image)
    choice = page.get_by_label("Factory update (fastboot update)")
    expect(choice).to_be_visible()
    if not choice.is_checked():
        choice.focus()
        page.keyboard.press("Space")
    page.select_option("#start-device", device)
    page.get_by_role("button", name="Start factory update").click()


def test_a_factory_update_from_the_devices_panel_writes_every_image_of_the_zip(page, server):
    board = listed_device(server, "EMU1")["product"]
    boot, system = os.urandom(512 * 1024), os.urandom(1 * MiB)
    make_factory_zip(server.images, "image-emu.zip", board, {"boot": boot, "system": system})
    make_image(server.images, "boot.img", 64 * 1024)
    open_dashboard(page, server)
    # Offered for a zip only.
    page.select_option("#start-image", "boot.img")
    expect(page.get_by_label("Factory update (fastboot update)")).to_be_hidden()
    page.select_option("#start-image", "image-emu.zip")
    page.get_by_label("Factory update (fastboot update)").check()
    # Its options replace the partition: wipe off and reboot on unless changed.
    expect(page.locator("#start-partition")).to_be_hidden()
    expect(page.get_by_label("Wipe user data")).not_to_be_checked()
    expect(page.get_by_label("Reboot at the end")).to_be_checked()
    expect(page.get_by_label("Slot", exact=True)).to_have_value("")

    with page.expect_request("**/api/flash/update") as sent:
        start_factory_update(page, "image-emu.zip", "EMU1")
    assert sent.value.post_data_json == {"deviceId": "EMU1", "image": "image-emu.zip"}
    expect(page.locator("#start-result")).to_contain_text("Started job_")
    job_id = page.locator("#start-result").inner_text().split()[1]
    job = card(page, job_id)
    expect(field(job, "status")).to_have_text("Completed", timeout=15_000)
    expect(job).to_contain_text("image-emu.zip: boot.img, system.img → boot, system")
    expect(field(job, "bytes")).to_have_text("1.5 MiB / 1.5 MiB")
    record = server.job(job_id)
    assert record["state"] == "completed" and record["totalBytes"] == len(boot) + len(system)
    assert server.partition("EMU1", "boot") == boot
    assert server.partition("EMU1", "system") == system
    assert page.console.problems() == []


def test_a_factory_update_for_another_board_fails_naming_both_and_a_zip_that_is_not_one_is_refused(page, server):
    board = listed_device(server, "EMU2")["product"]
    make_factory_zip(server.images, "image-raven.zip", "raven", {"boot": os.urandom(64 * 1024)})
    with zipfile.ZipFile(os.path.join(server.images, "photos.zip"), "w") as archive:
        archive.writestr("photo.jpg", os.urandom(1024))
    open_dashboard(page, server)

    start_factory_update(page, "image-raven.zip", "EMU2")
    expect(page.locator("#start-result")).to_contain_text("Started job_")
    job = card(page, page.locator("#start-result").inner_text().split()[1])
    expect(field(job, "status")).to_have_text("Failed", timeout=15_000)
    expect(field(job, "error")).to_contain_text(f"board is '{board}', this image is for board raven")
    assert server.partition("EMU2", "boot") is None, "nothing is written to a device of another board"

    # Refused before any job: the page says what the server said.
    start_factory_update(page, "photos.zip", "EMU2")
    status, answer = server.request("POST", "/api/flash/update", {"deviceId": "EMU2", "image": "photos.zip"})
    assert status == 422
    expect(page.locator("#start-result")).to_have_text(answer["error"])
    expect(page.locator("#start-result")).to_have_class(re.compile(r"\berror\b"))
    expect(page.locator("#jobs article.tile")).to_have_count(1)


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
    # One tile for the device: it goes on showing the running job, with the queued one below it.
    device = tile(page, "EMU1")
    expect(device).to_have_count(1)
    expect(device).to_have_attribute("data-job-id", first)
    expect(field(device, "status")).to_have_text("Running")
    expect(field(device, "queue").locator(f'li[data-job-id="{second}"]')).to_contain_text("Queued")
    expect(page.locator("#summary-running")).to_have_text("1")
    expect(page.locator("#summary-running + .label")).to_have_text("jobs running (1 queued)")
    server.request("POST", f"/api/jobs/{first}/cancel")
    # The queued job runs next, on the same tile, and the cancelled one is in the history.
    expect(device).to_have_attribute("data-job-id", second, timeout=10_000)
    expect(field(device, "status")).to_have_text("Completed", timeout=30_000)
    expect(field(device, "queue").locator("li")).to_have_count(0)
    assert server.job(first)["state"] == "cancelled"
    expect(page.locator(f'#history tr[data-job-id="{first}"]')).to_contain_text("cancelled", timeout=5_000)
    expect(page.locator("#jobs article.tile")).to_have_count(1)


def test_reconnects_after_the_server_restarts(page, workdir):
    server = Server(workdir, devices=2, speed="2M").start()
    try:
        make_image(server.images, "system.img", 16 * MiB)
        open_dashboard(page, server)
        running = server.start_job("EMU1", "system.img")
        expect(field(card(page, running), "status")).to_have_text("Running", timeout=5_000)

        server.stop()
        # The server stopped the job on its way down and told the page so: not a person's cancel.
        expect(field(card(page, running), "status")).to_have_text("Interrupted", timeout=10_000)
        expect(card(page, running)).to_contain_text("The server stopped before this flash finished")
        expect(page.locator("#connection")).to_have_attribute("data-state", "disconnected", timeout=10_000)
        page.wait_for_timeout(1_500)  # a few failed attempts while it is away

        server.start()
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=20_000)
        make_image(server.images, "boot.img", 1 * MiB)
        job_id = server.start_job("EMU2", "boot.img", "boot")
        expect(field(card(page, job_id), "status")).to_have_text("Completed", timeout=30_000)
        expect(page.locator(f'#history tr[data-job-id="{running}"]')).to_contain_text("interrupted")
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


def test_an_image_written_to_two_loop_devices_from_the_disks_panel_is_verified_on_both(page, server, loop_devices):
    disks = [loop_devices.attach(8 * MiB), loop_devices.attach(8 * MiB)]
    image = make_image(server.images, "os.img", 3 * MiB)
    open_dashboard(page, server)
    page.select_option("#disk-image", "os.img")
    for disk in disks:
        row = disk_row(page, disk.path)
        expect(row).to_contain_text(f"loop device on {disk.backing}")
        expect(row).to_contain_text("8.0 MiB")
        row.get_by_role("checkbox").check()
    expect(page.locator("#disk-flash-button")).to_have_text("Flash 2 disks")
    page.click("#disk-flash-button")

    # The dialog names each disk exactly and says what will be lost; nothing is written yet.
    dialog = page.locator("#disk-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Everything on these 2 disks will be lost")
    expect(dialog.locator("li")).to_have_count(2)
    for disk in disks:
        item = dialog.locator(f'li[data-device-id="{disk.path}"]')
        expect(item).to_have_text(f"{disk.path}: loop device on {disk.backing}, 8.0 MiB (8,388,608 bytes), no serial")
    assert server.get("/api/jobs")["jobs"] == []
    page.click("#disk-confirm-button")
    expect(dialog).to_be_hidden()

    for disk in disks:
        device = tile(page, disk.path)
        expect(field(device, "outcome")).to_have_text("Verified - safe to remove", timeout=30_000)
        expect(field(device, "status")).to_have_text("Completed")
        expect(field(device, "serial")).to_have_text(disk.path)  # a loop device has no serial: its path
        expect(field(device, "error")).to_be_hidden()
    with open(image, "rb") as f:
        written = f.read()
    for disk in disks:
        with open(disk.path, "rb") as f:
            assert f.read(len(written)) == written, f"{disk.path} does not hold the image"
    jobs = server.get("/api/jobs")["jobs"]
    assert sorted(job["deviceId"] for job in jobs) == sorted(disk.path for disk in disks)
    assert all(job["verified"] is True and job["batchId"] == jobs[0]["batchId"] for job in jobs)
    # The history's tooltip of each disk names the SHA-256 of what was written: the image's own.
    for job in jobs:
        expect(page.locator(f'#history tr[data-job-id="{job["jobId"]}"]')).to_have_attribute(
            "title", f"SHA-256 of what was written: {digest('sha256sum', image)}", timeout=5_000)
    expect(page.locator("#summary-done")).to_have_text("2")
    expect(page.locator("#disk-result")).to_contain_text(f"on {disks[0].path}")
    assert page.console.problems() == []


def test_a_disk_changed_after_the_dialog_opened_is_refused_and_the_page_says_what_the_server_said(page, server, loop_devices):
    disk = loop_devices.attach(8 * MiB)
    make_image(server.images, "os.img", 1 * MiB)
    open_dashboard(page, server)
    page.select_option("#disk-image", "os.img")
    disk_row(page, disk.path).get_by_role("checkbox").check()
    confirmed_token = listed_device(server, disk.path)["confirm"]
    page.click("#disk-flash-button")
    expect(page.locator("#disk-dialog")).to_be_visible()

    # Another card in the same slot while the dialog is open: same path, another size.
    os.truncate(disk.backing, 16 * MiB)
    subprocess.run(["losetup", "--set-capacity", disk.path], check=True)
    page.click("#disk-confirm-button")

    status, answer = server.request("POST", "/api/flash/start", {"deviceIds": [disk.path], "image": "os.img", "confirm": {disk.path: confirmed_token}})
    assert status == 409 and "16.0 MiB" in answer["error"]
    expect(page.locator("#disk-result")).to_have_text(answer["error"])
    expect(page.locator("#disk-result")).to_have_class(re.compile(r"\berror\b"))
    assert server.get("/api/jobs")["jobs"] == []
    expect(page.locator("#jobs article.tile")).to_have_count(0)


def test_disks_that_may_not_be_written_are_listed_with_the_reason_and_cannot_be_ticked(page, server, loop_devices):
    writable = loop_devices.attach(8 * MiB)
    read_only = loop_devices.attach(8 * MiB, read_only=True)
    make_image(server.images, "os.img", 1 * MiB)
    make_image(server.images, "large.img", 12 * MiB)
    open_dashboard(page, server)
    page.select_option("#disk-image", "os.img")

    row = disk_row(page, read_only.path)
    expect(row).to_contain_text("8.0 MiB")
    expect(row).to_contain_text("removable · not mounted · not a system disk · read-only")
    expect(field(row, "reason")).to_have_text("Cannot be written: read-only (write-protect switch?).")
    expect(row.get_by_role("checkbox")).to_be_disabled()
    # The server refuses it too, for the same reason.
    token = listed_device(server, read_only.path)["confirm"]
    status, answer = server.request("POST", "/api/flash/start", {"deviceIds": [read_only.path], "image": "os.img", "confirm": {read_only.path: token}})
    assert status == 422 and "read-only" in answer["error"]

    row = disk_row(page, writable.path)
    expect(field(row, "reason")).to_be_hidden()
    checkbox = row.get_by_role("checkbox")
    checkbox.check()
    expect(page.locator("#disk-flash-button")).to_have_text("Flash 1 disk")
    # An image larger than the disk: the tick goes, and the row says why.
    page.select_option("#disk-image", "large.img")
    expect(field(row, "reason")).to_have_text("Cannot be written: smaller (8.0 MiB) than large.img (12.0 MiB).")
    expect(checkbox).to_be_disabled()
    expect(checkbox).not_to_be_checked()
    expect(page.locator("#disk-flash-button")).to_have_text("Flash")
    assert page.console.problems() == []


def test_a_job_queued_through_the_api_shows_on_its_device_tile_at_once(page, server):
    make_image(server.images, "system.img", 24 * MiB)
    make_image(server.images, "boot.img", 1 * MiB)
    open_dashboard(page, server)
    first = server.start_job("EMU1", "system.img")
    device = tile(page, "EMU1")
    expect(field(device, "status")).to_have_text("Running", timeout=5_000)

    second = server.start_job("EMU1", "boot.img", "boot")
    assert server.job(second)["state"] == "queued"
    queued = field(device, "queue").locator(f'li[data-job-id="{second}"]')
    expect(queued).to_be_visible(timeout=1_000)
    expect(queued).to_contain_text("Queued")
    expect(queued).to_contain_text("boot.img → boot")
    expect(device).to_have_attribute("data-job-id", first)
    expect(page.locator("#summary-running + .label")).to_have_text("jobs running (1 queued)")

    # Cancelled from the tile before it ran: it leaves the queue, the running job goes on.
    queued.get_by_role("button", name=f"Cancel queued {second}").click()
    server.wait_for_job(second, lambda j: j["state"] == "cancelled", timeout=10)
    expect(queued).to_have_count(0)
    expect(field(device, "status")).to_have_text("Running")
    assert server.job(first)["state"] == "running"
    server.request("POST", f"/api/jobs/{first}/cancel")
    assert page.console.problems() == []


def test_device_tiles_stay_in_place_when_later_jobs_start(page, server):
    make_image(server.images, "boot.img", 1 * MiB)
    make_image(server.images, "system.img", 24 * MiB)
    open_dashboard(page, server)
    done = server.start_job("EMU1", "boot.img", "boot")
    expect(field(tile(page, "EMU1"), "status")).to_have_text("Completed", timeout=30_000)
    running = server.start_job("EMU2", "system.img")
    expect(field(tile(page, "EMU2"), "status")).to_have_text("Running", timeout=5_000)
    first_two = tile_order(page)
    assert sorted(first_two) == ["EMU1", "EMU2"]
    before = {device: tile(page, device).bounding_box() for device in first_two}

    # A job on a third device, then another job on the first one.
    third = server.start_job("EMU3", "boot.img", "boot")
    expect(field(tile(page, "EMU3"), "status")).to_have_text("Completed", timeout=30_000)
    again = server.start_job("EMU1", "boot.img", "boot")
    expect(tile(page, "EMU1")).to_have_attribute("data-job-id", again, timeout=5_000)
    expect(field(tile(page, "EMU1"), "status")).to_have_text("Completed", timeout=30_000)

    expect(page.locator("#jobs article.tile")).to_have_count(3)  # one per device, not one per job
    assert tile_order(page) == first_two + ["EMU3"]
    expect(card(page, done)).to_have_count(0)
    for device, box in before.items():
        now = tile(page, device).bounding_box()
        assert (now["x"], now["y"]) == (box["x"], box["y"]), f"the {device} tile moved from {box} to {now}"
    expect(page.locator("#summary-done")).to_have_text("3")
    server.request("POST", f"/api/jobs/{running}/cancel")
    assert third


def test_history_sorts_by_the_column_whose_header_is_clicked(page, server):
    for name, size, device in (("b.img", 4 * MiB, "EMU1"), ("a.img", 1 * MiB, "EMU2"), ("c.img", 8 * MiB, "EMU3")):
        make_image(server.images, name, size)
        job_id = server.start_job(device, name, "boot")
        server.wait_for_job(job_id, lambda j: j["state"] == "completed")
    open_dashboard(page, server)
    rows = page.locator("#history tbody tr")
    expect(rows).to_have_count(3)
    images = page.locator("#history tbody td:nth-child(3)")
    ended = page.locator('#history th[data-sort="ended"]')
    image = page.locator('#history th[data-sort="image"]')
    duration = page.locator('#history th[data-sort="duration"]')
    # Newest first until sorted.
    expect(ended).to_have_attribute("aria-sort", "descending")
    expect(images).to_have_text([re.compile(r"^c\.img"), re.compile(r"^a\.img"), re.compile(r"^b\.img")])

    image.get_by_role("button").click()
    expect(image).to_have_attribute("aria-sort", "ascending")
    expect(images).to_have_text([re.compile(r"^a\.img"), re.compile(r"^b\.img"), re.compile(r"^c\.img")])
    assert ended.get_attribute("aria-sort") is None
    image.get_by_role("button").click()
    expect(image).to_have_attribute("aria-sort", "descending")
    expect(images).to_have_text([re.compile(r"^c\.img"), re.compile(r"^b\.img"), re.compile(r"^a\.img")])

    # Durations sort by the time each job took (the server's durationMs).
    duration.get_by_role("button").click()
    expect(duration).to_have_attribute("aria-sort", "ascending")
    assert image.get_attribute("aria-sort") is None
    by_duration = [entry["jobId"] for entry in sorted(server.get("/api/history")["jobs"], key=lambda entry: entry["durationMs"])]
    expect(rows).to_have_count(3)
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.jobId)") == by_duration


def test_history_fits_the_page_at_1280_px_with_long_values(page, server, workdir):
    long_name = "raspios-bookworm-arm64-lite-" + "with-a-long-suffix-" * 5 + "2024-11-19.img"
    make_image(server.images, long_name, 1 * MiB)
    device = FailingDevice(workdir, fail_on="flash:boot=partition is locked " + "and the bootloader refuses to say more " * 4)
    try:
        failed = server.start_job(device.selector, long_name, "boot")
        server.wait_for_job(failed, lambda j: j["state"] == "failed")
        done = server.start_job("EMU1", long_name, "boot")
        server.wait_for_job(done, lambda j: j["state"] == "completed")
        open_dashboard(page, server)
        expect(page.locator("#history tbody tr")).to_have_count(2)
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        table, box = page.evaluate("[document.getElementById('history').scrollWidth, document.getElementById('history').parentElement.clientWidth]")
        assert table <= box, f"the history table is {table} px wide in a {box} px panel"
        # A value cut to its column keeps it whole in its title.
        image_cell = page.locator(f'#history tr[data-job-id="{done}"] td:nth-child(3)')
        assert image_cell.evaluate("cell => cell.scrollWidth > cell.clientWidth"), "the long image name was expected to be cut"
        expect(image_cell).to_have_attribute("title", re.compile(re.escape(long_name) + " → boot$"))
        device_cell = page.locator(f'#history tr[data-job-id="{failed}"] td:nth-child(2)')
        expect(device_cell).to_have_attribute("title", re.compile("^" + re.escape(device.selector)))
    finally:
        device.stop()


def make_certificate(workdir):
    """A self-signed certificate for 127.0.0.1, made now (nothing secret is kept in the tree)."""
    cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_the_dashboard_works_over_https_and_wss(browser, workdir):
    tls = make_certificate(workdir)
    server = Server(os.path.join(workdir, "tls"), devices=1, tls=tls).start()
    try:
        make_image(server.images, "boot.img", 1 * MiB)
        # The page trusts the certificate as a person would after accepting it once.
        context = browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
        page = context.new_page()
        page.goto(server.base + "/")
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=10_000)
        assert page.evaluate("location.protocol") == "https:"
        job_id = server.start_job("EMU1", "boot.img", "boot")
        expect(page.locator(f'[data-job-id="{job_id}"]').first).to_be_visible(timeout=10_000)
        server.wait_for_job(job_id, lambda job: job["state"] == "completed")
        expect(page.get_by_text("Completed").first).to_be_visible(timeout=10_000)
        context.close()
    finally:
        server.stop()


def station_group(page, station):
    """A station's group of tiles on the dashboard of a farm."""
    return page.locator(f'#jobs section.station-group[data-station="{station}"]')


def test_a_farms_stations_are_grouped_and_a_job_for_another_station_shows_in_its_group(page, stations):
    here, there = stations["a"], stations["b"]
    for server in (here, there):
        make_image(server.images, "boot.img", 2 * MiB)
    open_dashboard(page, here)
    groups = page.locator("#jobs section.station-group")
    expect(groups).to_have_count(2, timeout=5_000)
    assert groups.evaluate_all("groups => groups.map(g => g.dataset.station)") == ["a", "b"]
    for name in ("a", "b"):
        group = station_group(page, name)
        expect(group.locator("h3")).to_have_text(f"Station {name}")
        expect(field(group, "station-state")).to_have_text("Online")
        expect(field(tile(group, "EMU1"), "status")).to_have_text("Idle")
    expect(page.locator("#summary-devices")).to_have_text("2")

    # Started at station a for station b's EMU1: it runs at b, and shows in b's group.
    job_id = here.start_job("EMU1", "boot.img", "boot", station="b")
    job = station_group(page, "b").locator(f'article.tile[data-job-id="{job_id}"]')
    expect(job).to_be_visible(timeout=2_000)
    expect(field(job, "status")).to_have_text("Completed", timeout=15_000)
    assert there.job(job_id)["state"] == "completed"
    expect(field(tile(station_group(page, "a"), "EMU1"), "status")).to_have_text("Idle")
    expect(page.locator("#jobs article.tile")).to_have_count(2)
    expect(page.locator(f'#history tr[data-job-id="{job_id}"] td:nth-child(2)')).to_have_text("EMU1 at b", timeout=5_000)

    # The start form names the station of the device chosen.
    page.select_option("#start-image", "boot.img")
    page.select_option("#start-device", "b/EMU1")
    page.click("#start-button")
    expect(page.locator("#start-result")).to_contain_text("on EMU1 at station b.")
    started = page.locator("#start-result").inner_text().split()[1]
    assert there.job(started)["station"] == "b"
    expect(field(tile(station_group(page, "b"), "EMU1"), "status")).to_have_text("Completed", timeout=15_000)
    expect(tile(station_group(page, "b"), "EMU1")).to_have_attribute("data-job-id", started)

    # Clearing finished work keeps every station's device, idle.
    page.click("#clear-finished")
    expect(field(tile(station_group(page, "b"), "EMU1"), "status")).to_have_text("Idle")
    expect(page.locator("#jobs article.tile")).to_have_count(2)
    assert page.console.problems() == []


def test_a_killed_station_shows_lost_and_its_running_job_interrupted(page, stations):
    here, there = stations["a"], stations["b"]
    make_image(there.images, "system.img", 16 * MiB)
    open_dashboard(page, here)
    job_id = here.start_job("EMU1", "system.img", station="b")
    job = station_group(page, "b").locator(f'article.tile[data-job-id="{job_id}"]')
    expect(field(job, "status")).to_have_text("Running", timeout=5_000)

    there.kill()
    # Silent for 10 s, it is declared lost: its group says so, and its job did not finish.
    lost = station_group(page, "b")
    expect(lost).to_have_attribute("data-state", "lost", timeout=15_000)
    expect(field(lost, "station-state")).to_have_text(re.compile(r"^Lost"))
    expect(field(job, "status")).to_have_text("Interrupted", timeout=5_000)
    expect(field(station_group(page, "a"), "station-state")).to_have_text("Online")
    expect(page.locator("#summary-failed")).to_have_text("1")


def test_the_page_says_when_the_farm_is_unreachable(page, postgres, stations):
    open_dashboard(page, stations["a"])
    expect(station_group(page, "b")).to_be_visible(timeout=5_000)
    banner = page.locator("#farm-status")
    expect(banner).to_be_hidden()

    postgres.stop()
    expect(banner).to_be_visible(timeout=10_000)
    expect(banner).to_contain_text("The farm is unreachable")
    # The station goes on serving: the page stays connected, the groups as last seen.
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(station_group(page, "b")).to_be_visible()

    postgres.start()
    expect(banner).to_be_hidden(timeout=15_000)
