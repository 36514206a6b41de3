import FlashEngine
import Foundation
import XCTest

/// The emulated device against the reference client, AOSP fastboot, over TCP.
final class EmulatorTests: XCTestCase {
    private var directory = ""
    private var server: EmulatedDeviceServer?

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("emu-\(UUID().uuidString)").path
    }

    override func tearDown() {
        server?.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func start(maxDownload: Int64 = 256 << 20, speedLimit: Int64 = 0, faults: EmulatedFaults = EmulatedFaults()) throws -> EmulatedDeviceServer {
        let config = EmulatedDeviceConfig(directory: directory, serial: "EMUTEST", product: "testboard", maxDownloadSize: maxDownload, speedLimit: speedLimit, faults: faults)
        let server = try EmulatedDeviceServer(config: config, port: 0)
        server.start()
        self.server = server
        return server
    }

    private func fastboot(_ server: EmulatedDeviceServer, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/fastboot")
        process.arguments = ["-s", "tcp:127.0.0.1:\(server.port)"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    private func writeImage(_ data: Data, _ name: String) throws -> String {
        let path = directory + "-in/" + name
        try FileManager.default.createDirectory(atPath: directory + "-in", withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    private func random(_ count: Int, seed: UInt8) -> Data {
        var generator = SystemRandomNumberGenerator()
        var data = Data(count: count)
        data.withUnsafeMutableBytes { raw in
            for index in stride(from: 0, to: count - 7, by: 8) {
                raw.storeBytes(of: generator.next() as UInt64 ^ UInt64(seed), toByteOffset: index, as: UInt64.self)
            }
        }
        return data
    }

    func testAnswersTheVariablesFastbootAsks() throws {
        let server = try start(maxDownload: 64 << 20)
        let product = try fastboot(server, ["getvar", "product"])
        XCTAssertTrue(product.output.contains("product: testboard"), product.output)
        let max = try fastboot(server, ["getvar", "max-download-size"])
        XCTAssertTrue(max.output.contains("max-download-size: 0x4000000"), max.output)
        let serial = try fastboot(server, ["getvar", "serialno"])
        XCTAssertTrue(serial.output.contains("serialno: EMUTEST"), serial.output)
    }

    func testFastbootFlashArrivesByteExact() throws {
        let server = try start()
        let image = random(3 << 20 + 17, seed: 1)
        let result = try fastboot(server, ["flash", "boot", try writeImage(image, "boot.img")])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(FileManager.default.contents(atPath: directory + "/boot.img"), image)
        XCTAssertTrue(result.output.contains("(bootloader) writing 'boot'"), result.output)
    }

    func testFastbootSplitsALargeImageIntoSparsePiecesThatTheDeviceReassembles() throws {
        let server = try start(maxDownload: 1 << 20)
        let image = random(5 << 20, seed: 2)
        let result = try fastboot(server, ["flash", "system", try writeImage(image, "system.img")])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("sparse"), "fastboot should have split it: \(result.output)")
        XCTAssertEqual(FileManager.default.contents(atPath: directory + "/system.img"), image)
    }

    func testSparseImageFromImg2simgIsExpanded() throws {
        let server = try start()
        var raw = Data(count: 4 << 20)
        raw.replaceSubrange(4096..<(4096 + 100_000), with: random(100_000, seed: 3))
        let rawPath = try writeImage(raw, "vendor.raw")
        let sparsePath = directory + "-in/vendor.img"
        let convert = Process()
        convert.executableURL = URL(fileURLWithPath: "/usr/bin/img2simg")
        convert.arguments = [rawPath, sparsePath]
        try convert.run()
        convert.waitUntilExit()
        let result = try fastboot(server, ["flash", "vendor", sparsePath])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(FileManager.default.contents(atPath: directory + "/vendor.img"), raw)
    }

    func testInjectedFailureReachesFastbootWithItsMessage() throws {
        let server = try start(faults: EmulatedFaults(failures: [.init(commandPrefix: "flash:boot", message: "partition is locked")]))
        let result = try fastboot(server, ["flash", "boot", try writeImage(random(8192, seed: 4), "boot.img")])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.output.contains("partition is locked"), result.output)
        XCTAssertNil(FileManager.default.contents(atPath: directory + "/boot.img"))
    }

    func testSpeedLimitSlowsTheDownload() throws {
        let server = try start(speedLimit: 4 << 20)
        let started = Date()
        let result = try fastboot(server, ["flash", "boot", try writeImage(random(2 << 20, seed: 5), "boot.img")])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertGreaterThan(Date().timeIntervalSince(started), 0.5 * 0.7, "2 MiB at 4 MiB/s takes at least about half a second")
    }

    func testAnAbsurdFrameLengthIsRefusedWithoutAllocatingIt() throws {
        let server = try start()
        let socket = try POSIXSocket.connect(host: "127.0.0.1", port: server.port, timeoutMs: 2000)
        defer { socket.close() }
        try FastbootTCPFraming.clientHandshake(socket: socket, timeoutMs: 2000)
        try socket.writeAll([0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff] + Array("getvar:product".utf8))
        // The device hangs up rather than trying to read 9 EB; our client refuses the same.
        XCTAssertThrowsError(try FastbootTCPFraming.readFrame(socket: socket, maxLength: 4096, timeoutMs: 5000)) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .disconnected)
        }
    }
}
