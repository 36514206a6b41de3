import Foundation
import XCTest

/// The real libusb path: flashctl runs above emulated USB fastboot devices (umockdev), whose
/// endpoints are bridged to emulated fastboot devices on TCP.
final class USBFlashTests: XCTestCase {
    func testDevicesListsTheEmulatedUSBDevice() throws {
        let emulator = try EmulatorProcess(serial: "USBLIST01")
        defer { emulator.stop() }
        let result = try ProcessRunner.flashctlOverUSB(devices: [emulator.usbDevice(port: "1-1")], ["devices", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let usb = result.events.filter { ($0["address"] as? String)?.hasPrefix("usb:") == true }
        XCTAssertEqual(usb.count, 1, result.stdout)
        XCTAssertEqual(usb.first?["serial"] as? String, "USBLIST01")
        XCTAssertEqual(usb.first?["address"] as? String, "usb:1-1")
        XCTAssertEqual(usb.first?["vidPid"] as? String, "18d1:4ee0")
    }

    func testFlashOverUSBDeliversEveryByteAndReportsHonestProgress() throws {
        let emulator = try EmulatorProcess(serial: "USBFLASH01")
        defer { emulator.stop() }
        let image = TestImages.random(12 << 20)
        let path = try TestImages.write(image, name: "boot.img")
        let result = try ProcessRunner.flashctlOverUSB(
            devices: [emulator.usbDevice(port: "1-1")], ["flash", "--device", "USBFLASH01", path, "--json"]
        )
        XCTAssertEqual(result.status, 0, result.stderr + result.stdout)
        XCTAssertEqual(emulator.partition("boot"), image, "the partition must hold exactly the image")

        let started = result.events(ofType: "flash_started")
        XCTAssertEqual(started.count, 1)
        XCTAssertEqual(started.first?["deviceId"] as? String, "USBFLASH01")
        let progress = result.events(ofType: "flash_progress")
        let percentages = progress.compactMap { $0["progress"] as? Double }
        XCTAssertEqual(percentages, percentages.sorted(), "progress never goes back")
        XCTAssertEqual(percentages.last, 100)
        XCTAssertEqual(progress.last?["bytesTransferred"] as? Int, image.count)
        XCTAssertEqual(result.events(ofType: "flash_completed").count, 1)
        XCTAssertEqual(result.events.last?["type"] as? String, "flash_completed")
    }

    func testPortPathSelectorPicksOneOfTwoDevicesAndVidPidIsAmbiguous() throws {
        let first = try EmulatorProcess(serial: "TWIN-A")
        let second = try EmulatorProcess(serial: "TWIN-B")
        defer { first.stop(); second.stop() }
        let devices = [first.usbDevice(port: "1-1"), second.usbDevice(port: "1-2")]
        let path = try TestImages.write(TestImages.random(1 << 20, seed: 7), name: "misc.img")

        let ambiguous = try ProcessRunner.flashctlOverUSB(devices: devices, ["flash", "--device", "18d1:4ee0", path])
        XCTAssertNotEqual(ambiguous.status, 0)
        XCTAssertTrue(ambiguous.stderr.contains("matches 2 devices"), ambiguous.stderr)
        XCTAssertTrue(ambiguous.stderr.contains("TWIN-A") && ambiguous.stderr.contains("TWIN-B"), ambiguous.stderr)

        let chosen = try ProcessRunner.flashctlOverUSB(devices: devices, ["flash", "--device", "usb:1-2", path, "--json"])
        XCTAssertEqual(chosen.status, 0, chosen.stderr)
        XCTAssertNotNil(second.partition("misc"))
        XCTAssertNil(first.partition("misc"), "the other device must be untouched")
    }

    func testSparseImageIsSplitByMaxDownloadSizeAndArrivesIntact() throws {
        let emulator = try EmulatorProcess(serial: "USBSPARSE1", extraArguments: ["--max-download-size", "1M"])
        defer { emulator.stop() }
        var raw = Data(count: 6 << 20)
        raw.replaceSubrange(0..<(1 << 20), with: TestImages.random(1 << 20, seed: 1))
        raw.replaceSubrange((3 << 20)..<((3 << 20) + 1_500_000), with: TestImages.random(1_500_000, seed: 2))
        let rawPath = try TestImages.write(raw, name: "system.raw")
        let sparsePath = rawPath.replacingOccurrences(of: "system.raw", with: "system.img")
        let convert = try ProcessRunner.run("/usr/bin/img2simg", [rawPath, sparsePath])
        XCTAssertEqual(convert.status, 0, convert.stderr)

        let result = try ProcessRunner.flashctlOverUSB(
            devices: [emulator.usbDevice()], ["flash", "--device", "USBSPARSE1", sparsePath, "--json"]
        )
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(emulator.partition("system"), raw)
        // Stages read "Sending system 2/5": the piece count is what the split produced.
        let stages = result.events(ofType: "flash_progress").compactMap(\.stageName)
        let pieces = stages.compactMap { $0.split(separator: "/").last.flatMap { Int($0) } }
        XCTAssertGreaterThanOrEqual(pieces.max() ?? 0, 3, "2.5 MB of data in downloads of 1 MiB: \(stages)")
        XCTAssertTrue(stages.allSatisfy { $0.hasPrefix("Sending system") || $0.hasPrefix("Writing system") }, "\(stages)")
    }

    /// A raw image too big for one download is cut into sparse pieces, and its empty blocks go
    /// as FILL chunks (as AOSP fastboot sends them), not as megabytes of zeros over the cable.
    func testARawImageLargerThanADownloadSendsItsEmptyBlocksAsFills() throws {
        let emulator = try EmulatorProcess(serial: "USBFILL1", extraArguments: ["--max-download-size", "1M"])
        defer { emulator.stop() }
        var raw = Data(count: 6 << 20)
        raw.replaceSubrange(0..<(1 << 20), with: TestImages.random(1 << 20, seed: 3))
        raw.replaceSubrange((3 << 20)..<((3 << 20) + 1_500_000), with: TestImages.random(1_500_000, seed: 4))
        raw.replaceSubrange((5 << 20)..<((5 << 20) + 8192), with: Data((0..<8192).map { [0xDE, 0xAD, 0xBE, 0xEF][$0 % 4] }))
        let path = try TestImages.write(raw, name: "vendor.raw")

        let result = try ProcessRunner.flashctlOverUSB(
            devices: [emulator.usbDevice()], ["flash", "--device", "USBFILL1", "--partition", "vendor", path, "--json"]
        )
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(emulator.partition("vendor"), raw, "the empty and repeated blocks arrive as they are in the image")
        let sent = try XCTUnwrap(result.events(ofType: "flash_completed").first?["totalBytes"] as? Int)
        let data = (1 << 20) + 1_503_232  // the random bytes, in whole 4 KiB blocks
        XCTAssertGreaterThanOrEqual(sent, data)
        XCTAssertLessThan(sent, data + 4096, "only the data blocks and sparse headers are sent, of \(raw.count) bytes")
        let stages = result.events(ofType: "flash_progress").compactMap(\.stageName)
        XCTAssertTrue(stages.contains("Looking for empty blocks in vendor.raw"), "\(stages)")
    }

    func testDeviceFailEndsTheJobWithTheDevicesMessage() throws {
        let emulator = try EmulatorProcess(serial: "USBFAIL01", extraArguments: ["--fail-on", "flash:boot=partition is locked"])
        defer { emulator.stop() }
        let path = try TestImages.write(TestImages.random(1 << 20), name: "boot.img")
        let result = try ProcessRunner.flashctlOverUSB(devices: [emulator.usbDevice()], ["flash", "--device", "USBFAIL01", path, "--json"])
        XCTAssertNotEqual(result.status, 0)
        let failed = result.events(ofType: "flash_failed")
        XCTAssertEqual(failed.count, 1, result.stdout)
        XCTAssertTrue((failed.first?["error"] as? String)?.contains("partition is locked") == true, "\(failed)")
        XCTAssertEqual(result.events(ofType: "flash_completed").count, 0)
    }

    func testUnplugMidTransferFailsClearlyWithoutHanging() throws {
        let emulator = try EmulatorProcess(serial: "USBUNPLUG1")
        defer { emulator.stop() }
        let path = try TestImages.write(TestImages.random(16 << 20), name: "boot.img")
        let result = try ProcessRunner.flashctlOverUSB(
            devices: [emulator.usbDevice(extra: "unplug_after=\(5 << 20)")],
            ["flash", "--device", "USBUNPLUG1", path, "--json"], timeout: 45
        )
        XCTAssertNotEqual(result.status, 0)
        let failed = result.events(ofType: "flash_failed")
        XCTAssertEqual(failed.count, 1, result.stdout + result.stderr)
        let error = failed.first?["error"] as? String ?? ""
        XCTAssertTrue(error.contains("USB connection lost"), error)
        XCTAssertLessThan(result.seconds, 15, "an unplug must not wait for a timeout")
    }

    /// A device that stops taking download data with its USB link up: each bulk OUT transfer has
    /// the command timeout, and the job ends with it, not when the user gives up.
    func testADeviceThatStopsTakingDataEndsAtTheCommandTimeout() throws {
        let emulator = try EmulatorProcess(serial: "USBSTOP01", extraArguments: ["--stop-reading-after-bytes", "1M"])
        defer { emulator.stop() }
        // Far more than the test bed's TCP link to the emulator buffers.
        let path = try TestImages.write(TestImages.random(48 << 20), name: "boot.img")
        let result = try ProcessRunner.flashctlOverUSB(
            devices: [emulator.usbDevice()],
            ["flash", "--device", "USBSTOP01", path, "--command-timeout", "2", "--write-timeout", "3", "--json"], timeout: 45
        )
        XCTAssertEqual(result.status, 1, result.stderr)
        let failed = try XCTUnwrap(result.events(ofType: "flash_failed").first, result.stdout + result.stderr)
        XCTAssertEqual(failed["error"] as? String, "USBSTOP01 (usb:1-1) stopped accepting data (no progress for 2 s)")
        let started = try XCTUnwrap(result.events(ofType: "flash_started").first?["timestamp"] as? Double)
        let ended = try XCTUnwrap(failed["timestamp"] as? Double)
        XCTAssertLessThan(ended - started, 3_000, "the job must end within the 2 s timeout and a second")
        XCTAssertNil(emulator.partition("boot"))
    }
}
