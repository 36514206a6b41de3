import FlashEngine
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import XCTest

/// The emulated device served over TCP, against the reference client: AOSP fastboot.
final class EmulatorTests: XCTestCase {
    private var directory = ""
    private var inputs = ""
    private var servers: [EmulatedDeviceServer] = []

    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/fastboot") else {
            throw FlashError(.io, "AOSP fastboot is not installed: run scripts/setup.sh")
        }
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("emu-\(UUID().uuidString)").path
        directory = base + "/device"
        inputs = base + "/in"
        try FileManager.default.createDirectory(atPath: inputs, withIntermediateDirectories: true)
    }

    override func tearDown() {
        for server in servers { server.stop() }
        servers = []
        try? FileManager.default.removeItem(atPath: (directory as NSString).deletingLastPathComponent)
    }

    private func start(maxDownload: Int64 = 256 << 20, speedLimit: Int64 = 0, faults: EmulatedFaults = EmulatedFaults()) throws -> EmulatedDeviceServer {
        let config = EmulatedDeviceConfig(directory: directory, serial: "EMUTEST", product: "testboard", maxDownloadSize: maxDownload, speedLimit: speedLimit, faults: faults)
        let server = try EmulatedDeviceServer(config: config, port: 0)
        try server.start()
        servers.append(server)
        return server
    }

    /// Runs AOSP fastboot against the server; kills it after `timeout` seconds.
    private func fastboot(_ server: EmulatedDeviceServer, _ arguments: [String], timeout: TimeInterval = 60) throws -> (status: Int32, output: String) {
        try Self.run("/usr/bin/fastboot", ["-s", "tcp:127.0.0.1:\(server.port)"] + arguments, timeout: timeout)
    }

    private func run(_ executable: String, _ arguments: [String], timeout: TimeInterval = 60) throws -> (status: Int32, output: String) {
        try Self.run(executable, arguments, timeout: timeout)
    }

    private static func run(_ executable: String, _ arguments: [String], timeout: TimeInterval = 60) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let watchdog = DispatchWorkItem { [process] in if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        watchdog.cancel()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    private func writeInput(_ data: Data, _ name: String) throws -> String {
        let path = inputs + "/" + name
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    private func partition(_ name: String) -> Data? {
        FileManager.default.contents(atPath: directory + "/\(name).img")
    }

    // MARK: Variables

    func testAnswersTheVariablesFastbootAsks() throws {
        let server = try start(maxDownload: 64 << 20)
        let product = try fastboot(server, ["getvar", "product"])
        XCTAssertEqual(product.status, 0, product.output)
        XCTAssertTrue(product.output.contains("product: testboard"), product.output)
        let max = try fastboot(server, ["getvar", "max-download-size"])
        XCTAssertTrue(max.output.contains("max-download-size: 0x04000000"), max.output)
        let serial = try fastboot(server, ["getvar", "serialno"])
        XCTAssertTrue(serial.output.contains("serialno: EMUTEST"), serial.output)
        let unknown = try fastboot(server, ["getvar", "no-such-thing"])
        XCTAssertTrue(unknown.output.contains("unknown variable"), unknown.output)
    }

    func testGetvarAllListsVariablesAndPartitions() throws {
        let server = try start()
        try Data(count: 8192).write(to: URL(fileURLWithPath: directory + "/misc.img"))
        let all = try fastboot(server, ["getvar", "all"])
        XCTAssertEqual(all.status, 0, all.output)
        XCTAssertTrue(all.output.contains("(bootloader) product:testboard"), all.output)
        XCTAssertTrue(all.output.contains("(bootloader) version:0.4"), all.output)
        XCTAssertTrue(all.output.contains("(bootloader) partition-size:misc:0x00002000"), all.output)
        XCTAssertTrue(all.output.contains("(bootloader) partition-type:misc:raw"), all.output)
    }

    // MARK: Flashing

    func testFastbootFlashArrivesByteExact() throws {
        let server = try start()
        let image = EmulatorTestData.random(3 << 20 + 17, seed: 1)
        let result = try fastboot(server, ["flash", "boot", try writeInput(image, "boot.img")])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(partition("boot"), image)
        XCTAssertTrue(result.output.contains("(bootloader) writing 'boot'"), result.output)
        let size = try fastboot(server, ["getvar", "partition-size:boot"])
        XCTAssertTrue(size.output.contains("partition-size:boot: 0x00300011"), size.output)
    }

    func testFlashingAnExistingPartitionOverwritesItInPlaceAndCutsItToTheNewLength() throws {
        let server = try start()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try EmulatorTestData.random(2 << 20, seed: 9).write(to: URL(fileURLWithPath: directory + "/boot.img"))
        // A hard link sees the new bytes only if the file is written in place, not replaced.
        let link = inputs + "/boot-link.img"
        XCTAssertEqual(Glibc.link(directory + "/boot.img", link), 0)
        let image = EmulatorTestData.random(300_000, seed: 10)
        let result = try fastboot(server, ["flash", "boot", try writeInput(image, "boot.img")])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(partition("boot"), image)
        XCTAssertEqual(FileManager.default.contents(atPath: link), image)
    }

    func testFastbootSplitsALargeImageIntoSparsePiecesThatTheDeviceReassembles() throws {
        let server = try start(maxDownload: 1 << 20)
        let image = EmulatorTestData.random(5 << 20, seed: 2)
        let result = try fastboot(server, ["flash", "system", try writeInput(image, "system.img")])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("Sending sparse 'system' 2/"), "fastboot should have split it: \(result.output)")
        XCTAssertEqual(partition("system"), image)
    }

    func testSparseImageFromImg2simgArrivesAsSimg2imgExpandsIt() throws {
        let server = try start()
        var raw = Data(count: 4 << 20)
        raw.replaceSubrange(4096..<(4096 + 100_000), with: EmulatorTestData.random(100_000, seed: 3))
        raw.replaceSubrange((2 << 20)..<((2 << 20) + 65536), with: Data(repeating: 0x5a, count: 65536))
        let rawPath = try writeInput(raw, "vendor.raw")
        let sparsePath = inputs + "/vendor.simg"
        let expandedPath = inputs + "/vendor.expanded"
        XCTAssertEqual(try run("/usr/bin/img2simg", [rawPath, sparsePath]).status, 0)
        XCTAssertEqual(try run("/usr/bin/simg2img", [sparsePath, expandedPath]).status, 0)
        let sparse = try XCTUnwrap(FileManager.default.contents(atPath: sparsePath))
        XCTAssertLessThan(sparse.count, raw.count / 2, "img2simg should have made a sparse image")

        let result = try fastboot(server, ["flash", "vendor", sparsePath])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(partition("vendor"), FileManager.default.contents(atPath: expandedPath))
    }

    func testEraseEmptiesThePartition() throws {
        let server = try start()
        _ = try fastboot(server, ["flash", "cache", try writeInput(EmulatorTestData.random(70_000, seed: 6), "cache.img")])
        XCTAssertEqual(partition("cache")?.count, 70_000)
        let result = try fastboot(server, ["erase", "cache"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(partition("cache")?.count, 0)
    }

    func testSeveralFastbootsAtOnceEachGetTheirOwnConnection() throws {
        let server = try start()
        let images = (0..<4).map { EmulatorTestData.random(1 << 20 + $0 * 4096, seed: UInt8(20 + $0)) }
        let paths = try images.enumerated().map { try writeInput($0.element, "part\($0.offset).img") }
        let results = PthreadSafeBox<[Int32]>([])
        let port = server.port
        DispatchQueue.concurrentPerform(iterations: images.count) { index in
            let arguments = ["-s", "tcp:127.0.0.1:\(port)", "flash", "part\(index)", paths[index]]
            let status = (try? Self.run("/usr/bin/fastboot", arguments).status) ?? -1
            results.update { $0.append(status) }
        }
        XCTAssertEqual(results.value, [0, 0, 0, 0])
        for (index, image) in images.enumerated() {
            XCTAssertEqual(partition("part\(index)"), image, "part\(index)")
        }
        // Every connection ended when its fastboot did.
        let deadline = Date().addingTimeInterval(5)
        while server.activeConnections > 0 && Date() < deadline { usleep(10_000) }
        XCTAssertEqual(server.activeConnections, 0)
    }

    func testRebootAndUnknownCommands() throws {
        let server = try start()
        XCTAssertEqual(try fastboot(server, ["reboot"]).status, 0)
        XCTAssertEqual(try fastboot(server, ["reboot", "bootloader"]).status, 0)
        XCTAssertEqual(try fastboot(server, ["continue"]).status, 0)
        let oem = try fastboot(server, ["oem", "unlock-all-the-things"])
        XCTAssertNotEqual(oem.status, 0)
        XCTAssertTrue(oem.output.contains("unknown oem command"), oem.output)
    }

    // MARK: Faults and limits

    func testInjectedFailureReachesFastbootWithItsMessage() throws {
        let server = try start(faults: EmulatedFaults(failures: [.init(commandPrefix: "flash:boot", message: "partition is locked")]))
        let result = try fastboot(server, ["flash", "boot", try writeInput(EmulatorTestData.random(8192, seed: 4), "boot.img")])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.output.contains("partition is locked"), result.output)
        XCTAssertNil(partition("boot"))
        // Other partitions still flash.
        let other = try fastboot(server, ["flash", "recovery", try writeInput(EmulatorTestData.random(8192, seed: 5), "recovery.img")])
        XCTAssertEqual(other.status, 0, other.output)
    }

    func testDownloadLargerThanMaxDownloadSizeIsRefused() throws {
        let server = try start(maxDownload: 64 << 10)
        let socket = try connect(server)
        defer { socket.close() }
        XCTAssertEqual(try exchange(socket, "download:00100000"), "FAILdownload of 1048576 bytes is larger than max-download-size (65536 bytes)")
        XCTAssertEqual(try exchange(socket, "flash:boot"), "FAILno data downloaded")
    }

    func testSpeedLimitSlowsTheDownload() throws {
        let server = try start(speedLimit: 4 << 20)
        let started = Date()
        let result = try fastboot(server, ["flash", "boot", try writeInput(EmulatorTestData.random(2 << 20, seed: 5), "boot.img")])
        XCTAssertEqual(result.status, 0, result.output)
        // 2 MiB at 4 MiB/s take half a second; only a loose lower bound is asserted.
        XCTAssertGreaterThan(Date().timeIntervalSince(started), 0.5 * 0.7)
    }

    func testDisconnectAfterBytesDropsTheConnectionMidDownload() throws {
        let server = try start(faults: EmulatedFaults(disconnectAfterBytes: 100_000))
        let result = try fastboot(server, ["flash", "boot", try writeInput(EmulatorTestData.random(1 << 20, seed: 7), "boot.img")], timeout: 30)
        XCTAssertNotEqual(result.status, 0, result.output)
        XCTAssertNil(partition("boot"))

        let socket = try connect(server)
        defer { socket.close() }
        XCTAssertEqual(try exchange(socket, "download:00030000"), "DATA00030000")
        let data = [UInt8](repeating: 7, count: 0x30000)
        XCTAssertThrowsError(try {
            try FastbootTCPFraming.writeFrame(data, socket: socket, timeoutMs: 5000)
            _ = try FastbootTCPFraming.readFrame(socket: socket, maxLength: 256, timeoutMs: 5000)
        }()) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .disconnected, "\(error)")
        }
    }

    func testStalledCommandIsNeverAnsweredAndStopStillEndsTheConnection() throws {
        let server = try start(faults: EmulatedFaults(stallPrefixes: ["flash:"]))
        let socket = try connect(server)
        defer { socket.close() }
        XCTAssertEqual(try exchange(socket, "getvar:product"), "OKAYtestboard")
        try FastbootTCPFraming.writeFrame(Array("flash:boot".utf8), socket: socket, timeoutMs: 5000)
        XCTAssertThrowsError(try FastbootTCPFraming.readFrame(socket: socket, maxLength: 256, timeoutMs: 300)) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .timeout, "\(error)")
        }
        XCTAssertEqual(server.activeConnections, 1)
        let started = Date()
        server.stop()
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        XCTAssertEqual(server.activeConnections, 0)
        XCTAssertThrowsError(try FastbootTCPFraming.readFrame(socket: socket, maxLength: 256, timeoutMs: 2000)) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .disconnected, "\(error)")
        }
    }

    // MARK: Wire

    func testADataFrameGoingPastTheAnnouncedSizeIsAnsweredFail() throws {
        let server = try start()
        let socket = try connect(server)
        defer { socket.close() }
        XCTAssertEqual(try exchange(socket, "download:00001000"), "DATA00001000")
        try FastbootTCPFraming.writeFrame([UInt8](repeating: 1, count: 0x800), socket: socket, timeoutMs: 5000)
        let reply = try exchange(socket, [UInt8](repeating: 2, count: 0x801))
        XCTAssertTrue(reply.hasPrefix("FAIL"), reply)
        // Back in the command phase, and nothing is left to flash.
        XCTAssertEqual(try exchange(socket, "flash:boot"), "FAILno data downloaded")
        // Data in odd-sized frames is a byte stream.
        XCTAssertEqual(try exchange(socket, "download:00000010"), "DATA00000010")
        try FastbootTCPFraming.writeFrame(Array("0123456".utf8), socket: socket, timeoutMs: 5000)
        XCTAssertEqual(try exchange(socket, Array("789abcdef".utf8)), "OKAY")
        XCTAssertEqual(try exchange(socket, "flash:tiny"), "INFOwriting 'tiny'...")
        XCTAssertEqual(try FastbootTCPFraming.readFrame(socket: socket, maxLength: 256, timeoutMs: 5000), Array("OKAY".utf8))
        XCTAssertEqual(partition("tiny"), Data("0123456789abcdef".utf8))
    }

    func testTheDeviceHangsUpOnAnAbsurdFrameLength() throws {
        let server = try start()
        let socket = try connect(server)
        defer { socket.close() }
        try socket.writeAll([0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff] + Array("getvar:product".utf8), timeoutMs: 5000)
        XCTAssertThrowsError(try FastbootTCPFraming.readFrame(socket: socket, maxLength: 4096, timeoutMs: 5000)) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .disconnected, "\(error)")
        }
        // The device is still there for the next connection.
        let next = try connect(server)
        defer { next.close() }
        XCTAssertEqual(try exchange(next, "getvar:serialno"), "OKAYEMUTEST")
    }

    func testAnOverlongCommandIsAnsweredFailWithoutBreakingTheConnection() throws {
        let server = try start()
        let socket = try connect(server)
        defer { socket.close() }
        XCTAssertEqual(try exchange(socket, [UInt8](repeating: UInt8(ascii: "a"), count: 100_000)), "FAILcommand too long")
        XCTAssertEqual(try exchange(socket, "getvar:version"), "OKAY0.4")
    }

    // MARK: Helpers

    private func connect(_ server: EmulatedDeviceServer) throws -> POSIXSocket {
        let socket = try POSIXSocket.connect(host: "127.0.0.1", port: server.port, timeoutMs: 2000)
        try FastbootTCPFraming.clientHandshake(socket: socket, timeoutMs: 2000)
        return socket
    }

    private func exchange(_ socket: POSIXSocket, _ command: String) throws -> String {
        try exchange(socket, Array(command.utf8))
    }

    private func exchange(_ socket: POSIXSocket, _ frame: [UInt8]) throws -> String {
        try FastbootTCPFraming.writeFrame(frame, socket: socket, timeoutMs: 5000)
        return String(decoding: try FastbootTCPFraming.readFrame(socket: socket, maxLength: 256, timeoutMs: 5000), as: UTF8.self)
    }
}

enum EmulatorTestData {
    /// Bytes that compress poorly (a seeded generator), so nothing about a transfer can be guessed.
    static func random(_ count: Int, seed: UInt8) -> Data {
        var state = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 | 1
        var data = Data(count: count)
        data.withUnsafeMutableBytes { (raw: UnsafeMutableRawBufferPointer) in
            for index in 0..<count {
                if index % 8 == 0 {
                    state ^= state << 13
                    state ^= state >> 7
                    state ^= state << 17
                }
                raw[index] = UInt8(truncatingIfNeeded: state >> (8 * UInt64(index % 8)))
            }
        }
        return data
    }
}

/// A value shared between threads of a test.
final class PthreadSafeBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value

    init(_ value: Value) {
        stored = value
    }

    var value: Value { lock.withLock { stored } }

    func update(_ body: (inout Value) -> Void) {
        lock.withLock { body(&stored) }
    }
}
