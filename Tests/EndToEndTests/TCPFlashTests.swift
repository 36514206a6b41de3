import Foundation
import XCTest

/// flashctl against `flashctl emulate` over fastboot-over-TCP, and the errors a user meets.
final class TCPFlashTests: XCTestCase {
    func testFlashOverTCPDeliversEveryByte() throws {
        let emulator = try EmulatorProcess(serial: "TCP01")
        defer { emulator.stop() }
        let image = TestImages.random(5 << 20 + 123)
        let path = try TestImages.write(image, name: "vendor.img")
        let result = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--device", emulator.tcpSelector, path, "--partition", "vendor_a", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(emulator.partition("vendor_a"), image)
        XCTAssertEqual(result.events.first?["type"] as? String, "flash_started")
        XCTAssertEqual(result.events.last?["type"] as? String, "flash_completed")
    }

    func testPeerClosingMidDownloadIsAClearError() throws {
        let emulator = try EmulatorProcess(serial: "TCPCLOSE", extraArguments: ["--disconnect-after-bytes", "\(2 << 20)"])
        defer { emulator.stop() }
        let path = try TestImages.write(TestImages.random(8 << 20), name: "boot.img")
        let result = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--device", emulator.tcpSelector, path, "--json"], timeout: 30)
        XCTAssertNotEqual(result.status, 0)
        let error = result.events(ofType: "flash_failed").first?["error"] as? String ?? ""
        XCTAssertTrue(error.contains("closed") || error.contains("lost"), error)
    }

    func testAStalledDeviceEndsInATimeoutNamingTheCommand() throws {
        let emulator = try EmulatorProcess(serial: "TCPSTALL", extraArguments: ["--stall-on", "flash:"])
        defer { emulator.stop() }
        let path = try TestImages.write(TestImages.random(1 << 20), name: "boot.img")
        let result = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--device", emulator.tcpSelector, path, "--write-timeout", "2", "--json"], timeout: 30)
        XCTAssertNotEqual(result.status, 0)
        let error = result.events(ofType: "flash_failed").first?["error"] as? String ?? ""
        XCTAssertTrue(error.contains("did not answer flash:boot within 2 s"), error)
    }

    func testCorruptSparseImageIsRefusedBeforeAnythingIsSent() throws {
        let emulator = try EmulatorProcess(serial: "TCPCORRUPT")
        defer { emulator.stop() }
        var sparse = Data([0x3a, 0xff, 0x26, 0xed, 1, 0, 0, 0, 28, 0, 12, 0])
        sparse += Data([0, 0x10, 0, 0, 100, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]) // claims 5 chunks, has none
        let path = try TestImages.write(sparse, name: "boot.img")
        let result = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--device", emulator.tcpSelector, path])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("corrupt sparse image"), result.stderr)
        XCTAssertNil(emulator.partition("boot"))
    }

    func testMissingAndEmptyImagesAndBadSelectorsGiveOneClearMessage() throws {
        let missing = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--device", "tcp:127.0.0.1:1", "/nonexistent/boot.img"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("not found"), missing.stderr)

        let empty = try TestImages.write(Data(), name: "boot.img")
        let emptyResult = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--device", "tcp:127.0.0.1:1", empty])
        XCTAssertNotEqual(emptyResult.status, 0)
        XCTAssertTrue(emptyResult.stderr.contains("empty"), emptyResult.stderr)

        let image = try TestImages.write(TestImages.random(4096), name: "boot.img")
        let selector = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--device", "bogus:thing", image])
        XCTAssertNotEqual(selector.status, 0)
        XCTAssertTrue(selector.stderr.contains("unknown device selector"), selector.stderr)

        let nobody = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--device", "tcp:127.0.0.1:1", image, "--json"])
        XCTAssertNotEqual(nobody.status, 0)
        XCTAssertTrue((nobody.events(ofType: "flash_failed").first?["error"] as? String)?.contains("refused") == true, nobody.stdout + nobody.stderr)
    }

    func testNoUSBDeviceSaysSo() throws {
        let image = try TestImages.write(TestImages.random(4096), name: "boot.img")
        let result = try ProcessRunner.flashctlOverUSB(devices: [], ["flash", image])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("no fastboot device found"), result.stderr)
    }
}
