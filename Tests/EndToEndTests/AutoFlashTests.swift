import Foundation
import XCTest

/// `flashctl serve --auto-flash` as a bench runs it: emulated fastboot devices are plugged into
/// the USB test bed while the server runs (real uevents to the real libudev monitor, real libusb),
/// and a dashboard follows over the real WebSocket.
final class AutoFlashTests: XCTestCase {
    func testAMarkedDeviceIsFlashedAnUnmarkedOneIsLeftAloneAndAFlashedSerialIsNotFlashedAgain() throws {
        let marked = try EmulatorProcess(serial: "AUTO-MARKED", extraArguments: ["--speed-limit", "8M"])
        defer { marked.stop() }
        let unmarked = try EmulatorProcess(serial: "AUTO-UNMARKED")
        defer { unmarked.stop() }
        let userdata = Data(repeating: 0x5A, count: 256 << 10)
        try userdata.write(to: URL(fileURLWithPath: marked.directory + "/userdata.img"))
        try userdata.write(to: URL(fileURLWithPath: unmarked.directory + "/userdata.img"))
        let boot = TestImages.random(1 << 20, seed: 1)
        let system = TestImages.random(3 << 20, seed: 2)
        let bench = try AutoFlashBench(profiles: """
            profiles:
              bench:
                erase: [userdata]
                flash:
                  - partition: boot
                    image: boot.img
                  - image: system.img
                reboot: true
                once-per-serial: true
            """, images: ["boot.img": boot, "system.img": system])
        defer { bench.stop() }
        let dashboard = try DashboardSocket(serverURL: bench.url)

        try bench.plug("add \(unmarked.usbDevice(serial: "EMU0002", port: "1-2"))")
        try bench.plug("add \(marked.usbDevice(serial: "EMU0001", port: "1-1", extra: "prop.FLASHCTL_PROFILE=bench"))")
        let end = try XCTUnwrap(dashboard.end(of: "EMU0001"), "no end of the job; got \(dashboard.messages.types)\n\(bench.server.output)")
        XCTAssertEqual(end["type"] as? String, "flash_completed", "\(end)")

        // What a dashboard saw: the whole sequence of one job.
        let seen = dashboard.messages(device: "EMU0001")
        XCTAssertEqual(seen.first?["type"] as? String, "flash_started")
        XCTAssertEqual(seen.types.filter { $0 != "flash_progress" }, ["flash_started", "flash_completed"])
        let progress = seen.filter { $0["type"] as? String == "flash_progress" }
        XCTAssertGreaterThan(progress.count, 2, "\(seen.types)")
        XCTAssertEqual(progress.last?["progress"] as? Int, 100)
        XCTAssertEqual(progress.last?["totalBytes"] as? Int, boot.count + system.count)
        XCTAssertEqual(seen.first?["image"] as? String, "boot.img, system.img")
        XCTAssertEqual(seen.first?["partition"] as? String, "boot, system")
        let stages = Set(progress.compactMap(\.stageName))
        let steps: Set = ["Connecting", "Erasing userdata", "Sending boot (1/2)", "Writing boot (1/2)", "Sending system (2/2)", "Writing system (2/2)", "Rebooting"]
        XCTAssertTrue(stages.isSubset(of: steps), "each stage names a step of the profile: \(stages)")

        // What the device holds: the images, and the erased partition empty.
        XCTAssertEqual(marked.partition("boot"), boot)
        XCTAssertEqual(marked.partition("system"), system)
        XCTAssertEqual(marked.partition("userdata"), Data(), "userdata was erased")
        // The device without the property: untouched, no job.
        XCTAssertEqual(unmarked.partition("userdata"), userdata)
        XCTAssertNil(unmarked.partition("boot"))
        XCTAssertTrue(bench.server.output.contains("device EMU0002 at usb:1-2 has no FLASHCTL_PROFILE"), bench.server.output)
        XCTAssertTrue(bench.server.output.contains("flashing device EMU0001 at usb:1-1 with profile 'bench'"), bench.server.output)

        // Re-enumerating on its port (its reboot), then plugged into another port: never again.
        try bench.plug("replug EMU0001")
        XCTAssertTrue(bench.server.waitFor("EMU0001 at usb:1-1 was already flashed by", timeout: 10), bench.server.output)
        try bench.plug("remove EMU0001")
        try bench.plug("add \(marked.usbDevice(serial: "EMU0001", port: "1-5", extra: "prop.FLASHCTL_PROFILE=bench"))")
        XCTAssertTrue(bench.server.waitFor("history has a completed job for serial EMU0001", timeout: 10), bench.server.output)
        let jobs = try bench.jobs()
        XCTAssertEqual(jobs.count, 1, "\(jobs)")
        XCTAssertEqual(jobs.first?["deviceId"] as? String, "EMU0001")
        XCTAssertEqual(dashboard.messages.types.filter { $0 == "flash_started" }.count, 1)
    }

    func testAProfileNamingAFactoryZipUpdatesTheDeviceInTheSlotItNames() throws {
        let device = try EmulatorProcess(serial: "AUTO-FACTORY", extraArguments: ["--slots"])
        defer { device.stop() }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-factory-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let boot = TestImages.random(200_000, seed: 3), system = TestImages.random(600_000, seed: 4)
        try "require board=flashctl-emulator\n".write(toFile: folder + "/android-info.txt", atomically: true, encoding: .utf8)
        try boot.write(to: URL(fileURLWithPath: folder + "/boot.img"))
        try system.write(to: URL(fileURLWithPath: folder + "/system.img"))
        let zipped = try ProcessRunner.run("/usr/bin/zip", ["-q", "-j", folder + "/image-emu.zip", folder + "/android-info.txt", folder + "/boot.img", folder + "/system.img"])
        XCTAssertEqual(zipped.status, 0, zipped.stderr)
        let bench = try AutoFlashBench(profiles: """
            profiles:
              factory:
                update: image-emu.zip
                slot: b
            """, images: ["image-emu.zip": try Data(contentsOf: URL(fileURLWithPath: folder + "/image-emu.zip"))])
        defer { bench.stop() }
        let dashboard = try DashboardSocket(serverURL: bench.url)
        try bench.plug("add \(device.usbDevice(serial: "EMU0007", port: "1-7", extra: "prop.FLASHCTL_PROFILE=factory"))")
        let end = try XCTUnwrap(dashboard.end(of: "EMU0007"), "no end of the job; got \(dashboard.messages.types)\n\(bench.server.output)")
        XCTAssertEqual(end["type"] as? String, "flash_completed", "\(end)")
        XCTAssertEqual(device.partition("boot_b"), boot)
        XCTAssertEqual(device.partition("system_b"), system)
        XCTAssertNil(device.partition("boot_a"))
        let slot = try ProcessRunner.run(ProcessRunner.flashctl, ["getvar", "-d", device.tcpSelector, "current-slot"])
        XCTAssertEqual(slot.stdout, "current-slot: b\n", "the slot named was made active")
    }

    func testDevicesFlashInParallelAndAnUnplugFailsOnlyItsJob() throws {
        // One device there when the server starts, two plugged in at once while it runs.
        let emulators = try (1...3).map { try EmulatorProcess(serial: "AUTO-\($0)", extraArguments: ["--speed-limit", "3M"]) }
        defer { emulators.forEach { $0.stop() } }
        let image = TestImages.random(12 << 20, seed: 3)
        let marked = "prop.FLASHCTL_PROFILE=bench"
        let bench = try AutoFlashBench(profiles: """
            profiles:
              bench:
                flash:
                  - image: boot.img
            """, images: ["boot.img": image], devices: [emulators[0].usbDevice(serial: "EMU0001", port: "1-1", extra: marked)])
        defer { bench.stop() }
        let dashboard = try DashboardSocket(serverURL: bench.url)

        try bench.plug("add \(emulators[1].usbDevice(serial: "EMU0002", port: "1-2", extra: marked))")
        try bench.plug("add \(emulators[2].usbDevice(serial: "EMU0003", port: "1-3", extra: marked))")
        // All three move at the same time: each has sent bytes before any ends.
        let allMoving = dashboard.waitFor(timeout: 20) { messages in
            ["EMU0001", "EMU0002", "EMU0003"].allSatisfy { device in
                messages.contains { $0["deviceId"] as? String == device && ($0["bytesTransferred"] as? Int ?? 0) > 0 }
            }
        }
        XCTAssertTrue(allMoving, "\(dashboard.messages.types)\n\(bench.server.output)")
        XCTAssertFalse(dashboard.messages.contains { ["flash_completed", "flash_failed"].contains($0["type"] as? String ?? "") }, "all were running at once")

        let unplugged = Date()
        try bench.plug("remove EMU0003")
        let failed = try XCTUnwrap(dashboard.end(of: "EMU0003", timeout: 10), "the unplugged device's job never ended")
        XCTAssertLessThan(Date().timeIntervalSince(unplugged), 5, "an unplug ends the job at once, not after a timeout")
        XCTAssertEqual(failed["type"] as? String, "flash_failed")
        let error = failed["error"] as? String ?? ""
        XCTAssertTrue(error.hasPrefix("USB connection lost (") && error.hasSuffix("device EMU0003 (usb:1-3) was unplugged"), error)
        XCTAssertTrue(bench.server.waitFor("device EMU0003 at usb:1-3 was unplugged (its job", timeout: 5), bench.server.output)

        // The other jobs, and the server, carry on.
        for (index, device) in ["EMU0001", "EMU0002"].enumerated() {
            let done = try XCTUnwrap(dashboard.end(of: device, timeout: 30), device)
            XCTAssertEqual(done["type"] as? String, "flash_completed", "\(done)")
            XCTAssertEqual(emulators[index].partition("boot"), image, device)
        }
        // Plugged in again after its failed job: flashed again, to the end.
        try bench.plug("add \(emulators[2].usbDevice(serial: "EMU0003", port: "1-3", extra: marked))")
        XCTAssertTrue(dashboard.waitFor(timeout: 30) { $0.filter { $0["deviceId"] as? String == "EMU0003" }.types.last == "flash_completed" },
                      "\(dashboard.messages(device: "EMU0003").types)\n\(bench.server.output)")
        XCTAssertEqual(emulators[2].partition("boot"), image)
        let results = try bench.jobs().map { "\($0["deviceId"] as? String ?? "?") \($0["state"] as? String ?? "?")" }.sorted()
        XCTAssertEqual(results, ["EMU0001 completed", "EMU0002 completed", "EMU0003 completed", "EMU0003 failed"])
    }

    /// A card duplicator: a card put into an allow-listed slot of a card reader is written and
    /// read back, once; a card in a slot no rule names is left alone.
    func testACardInAnAllowListedSlotIsWrittenVerifiedAndNotWrittenTwice() throws {
        let image = DiskImages.withHoles(6 << 20 + 4096)
        let card = try LoopDevice(size: 8 << 20, fill: 0xAB)
        defer { card.detach() }
        let other = try LoopDevice(size: 8 << 20, fill: 0xAB)
        defer { other.detach() }
        let bench = try AutoFlashBench(profiles: """
            profiles:
              cards:
                target: disk
                image: os.img
            """, images: ["os.img": image])
        defer { bench.stop() }
        XCTAssertTrue(bench.server.output.contains("watching udev for USB devices and disks"), bench.server.output)
        let dashboard = try DashboardSocket(serverURL: bench.url)

        try bench.plug("add-disk \(other.path),slot=2")
        try bench.plug("add-disk \(card.path),slot=1,prop.FLASHCTL_PROFILE=cards")
        let end = try XCTUnwrap(dashboard.end(of: card.path, timeout: 60), "no end of the job; got \(dashboard.messages.types)\n\(bench.server.output)")
        XCTAssertEqual(end["type"] as? String, "flash_completed", "\(end)")
        XCTAssertEqual(end["verified"] as? Bool, true)
        XCTAssertEqual(end["target"] as? String, "disk")
        XCTAssertEqual(try card.contents().prefix(image.count), image)
        XCTAssertEqual(try other.contents(), Data(repeating: 0xAB, count: 8 << 20), "a disk without the property is not written")
        XCTAssertTrue(bench.server.output.contains("disk \(other.path) (serial SD-\((other.path as NSString).lastPathComponent)) at pci-0000:00:14.0-usb-0:2:1.0-scsi-0:0:0:0 has no FLASHCTL_PROFILE"), bench.server.output)
        XCTAssertTrue(bench.server.output.contains("writing disk \(card.path)"), bench.server.output)

        // A mounted card in an allow-listed slot is never written.
        let mounted = try LoopDevice(size: 8 << 20)
        defer { mounted.detach() }
        try DiskImages.tool("mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 \(mounted.path) && mkdir -p mnt && mount \(mounted.path) mnt && sync", in: bench.base)
        defer { _ = try? ProcessRunner.run("/bin/umount", [bench.base + "/mnt"]) }
        let before = try mounted.contents()
        try bench.plug("add-disk \(mounted.path),slot=3,prop.FLASHCTL_PROFILE=cards")
        XCTAssertTrue(bench.server.waitFor("not writing disk \(mounted.path)", timeout: 10), bench.server.output)
        XCTAssertTrue(bench.server.output.contains("\(mounted.path) is mounted at \(bench.base)/mnt: unmount it first (umount '\(bench.base)/mnt'). Nothing was written."), bench.server.output)
        XCTAssertEqual(try mounted.contents(), before)

        // The same card taken out and put back: it holds what it was given, and is left alone.
        try bench.plug("remove-disk \(card.path)")
        try bench.plug("add-disk \(card.path),slot=1,prop.FLASHCTL_PROFILE=cards")
        XCTAssertTrue(bench.server.waitFor("holds a medium already written", timeout: 10), bench.server.output)
        let jobs = try bench.jobs()
        XCTAssertEqual(jobs.count, 1, "\(jobs)")
        XCTAssertEqual(jobs.first?["target"] as? String, "disk")
    }

    func testABrokenProfilesFileStopsTheServerAtStartWithTheLine() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-autoflash-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        try FileManager.default.createDirectory(atPath: base + "/images", withIntermediateDirectories: true)
        try Data(count: 4096).write(to: URL(fileURLWithPath: base + "/images/boot.img"))
        let profiles = base + "/profiles.yaml"
        try """
            profiles:
              bench:
                flash:
                  - image: boot.img
                rebot: true
            """.write(toFile: profiles, atomically: true, encoding: .utf8)
        let result = try ProcessRunner.run(ProcessRunner.flashctl, [
            "serve", "--port", "0", "--images", base + "/images", "--history", base + "/history.sqlite", "--auto-flash", profiles,
        ], timeout: 20)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("\(profiles) line 5: profile 'bench' has an unknown key 'rebot'"), result.stderr)
        XCTAssertFalse(result.stdout.contains("listening on"), result.stdout)
    }
}
