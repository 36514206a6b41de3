import Foundation
import XCTest

/// Compressed and block-mapped images to fastboot devices: made by the real tools (gzip, xz,
/// zstd, bzip2, zip, img2simg, bmaptool), streamed into downloads, and compared with what landed
/// in the emulated device's partition.
final class CompressedFastbootTests: XCTestCase {
    private var work = ""

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-cfb-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: work)
    }

    private func source(_ size: Int = 6 << 20 + 4096 * 3) throws -> Data {
        let data = DiskImages.withHoles(size)
        try data.write(to: URL(fileURLWithPath: work + "/os.img"))
        return data
    }

    private func flash(_ emulator: EmulatorProcess, _ arguments: [String]) throws -> CommandResult {
        try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--json", "--device", emulator.tcpSelector] + arguments, timeout: 120)
    }

    private func bytesSent(_ result: CommandResult) -> Int64? {
        (result.events(ofType: "flash_progress").last?["bytesTransferred"] as? NSNumber)?.int64Value
    }

    func testEveryCompressedFormatLandsByteForByteInPiecesAndWhole() throws {
        let data = try source()
        try DiskImages.tool("gzip -k -1 os.img && xz -k -1 -T1 os.img && zstd -q -1 os.img && bzip2 -k -1 os.img && zip -q os.zip os.img && img2simg os.img os.simg && xz -k -1 -T1 os.simg && zstd -q -1 os.simg", in: work)
        // 2 MiB downloads: every image is cut into sparse pieces from the stream.
        let small = try EmulatorProcess(serial: "CFB-SMALL", extraArguments: ["--max-download-size", "2M"])
        defer { small.stop() }
        let dataBlocks = stride(from: 0, to: data.count, by: 4096).filter { start in data[start..<min(data.count, start + 4096)].contains { $0 != 0 } }
        for name in ["os.img.gz", "os.img.xz", "os.img.zst", "os.img.bz2", "os.zip", "os.simg.xz", "os.simg.zst"] {
            let result = try flash(small, ["--partition", "system", work + "/" + name])
            XCTAssertEqual(result.status, 0, "\(name): \(result.stderr)\(result.stdout)")
            XCTAssertEqual(small.partition("system"), data, "\(name) did not land byte for byte")
            // The empty third went as FILL chunks (img2simg's, or found by reading the stream
            // first): only the data blocks and the pieces' headers were sent.
            let sent = try XCTUnwrap(bytesSent(result), name)
            XCTAssertGreaterThanOrEqual(sent, Int64(dataBlocks.count * 4096), name)
            XCTAssertLessThan(sent, Int64(dataBlocks.count * 4096 + (16 << 10)), "\(name): \(sent) bytes sent for an image of \(data.count)")
            let stages = result.events.compactMap(\.stageName)
            XCTAssertTrue(stages.contains { $0.hasPrefix("Writing system ") && $0.contains("/") }, "\(name) was not sent in pieces: \(Set(stages))")
            // Raw images with a recorded size are read for empty blocks first, named as the user
            // knows them (a zip's entry); .gz and .bz2 are found out while learning their size.
            let looked = stages.first { $0.hasPrefix("Looking for empty blocks") }
            switch name {
            case "os.img.xz", "os.img.zst": XCTAssertEqual(looked, "Looking for empty blocks in \(name)")
            case "os.zip": XCTAssertEqual(looked, "Looking for empty blocks in os.img")
            default: XCTAssertNil(looked, name)
            }
            try FileManager.default.removeItem(atPath: small.directory + "/system.img")
        }
        // Room for the whole image: sent unchanged in one download, whose size the xz index,
        // the zstd frame header, the zip directory or a first reading pass (gzip, bzip2) gave.
        let large = try EmulatorProcess(serial: "CFB-LARGE")
        defer { large.stop() }
        for name in ["os.img.gz", "os.img.xz", "os.img.zst", "os.img.bz2", "os.zip"] {
            let result = try flash(large, ["--partition", "boot", work + "/" + name])
            XCTAssertEqual(result.status, 0, "\(name): \(result.stderr)\(result.stdout)")
            XCTAssertEqual(large.partition("boot"), data, "\(name) did not land byte for byte")
            XCTAssertEqual(bytesSent(result), Int64(data.count), name)
            let measured = result.events.contains { ($0["stage"] as? String)?.hasPrefix("Reading the image") == true }
            XCTAssertEqual(measured, ["os.img.gz", "os.img.bz2"].contains(name), "\(name): only images that do not record their size are read twice")
            try FileManager.default.removeItem(atPath: large.directory + "/boot.img")
        }
    }

    func testAZipEntryIsChosenByName() throws {
        let data = try source(1 << 20)
        try DiskImages.tool("echo notes > README.txt && zip -q both.zip README.txt os.img", in: work)
        let emulator = try EmulatorProcess(serial: "CFB-ZIP")
        defer { emulator.stop() }
        let ambiguous = try flash(emulator, ["--partition", "boot", work + "/both.zip"])
        XCTAssertNotEqual(ambiguous.status, 0)
        XCTAssertTrue(ambiguous.stderr.contains("--entry"), ambiguous.stderr)
        XCTAssertNil(emulator.partition("boot"))
        let chosen = try flash(emulator, ["--partition", "boot", "--entry", "os.img", work + "/both.zip"])
        XCTAssertEqual(chosen.status, 0, chosen.stderr)
        XCTAssertEqual(emulator.partition("boot"), data)
    }

    func testABlockMapSendsOnlyMappedBlocksAndLeavesTheRestOfThePartition() throws {
        let data = try source()
        try DiskImages.tool("fallocate --dig-holes os.img && bmaptool -q create os.img -o os.img.bmap && zstd -q -1 os.img && xz -k -1 -T1 os.img", in: work)
        let emulator = try EmulatorProcess(serial: "CFB-BMAP", extraArguments: ["--max-download-size", "2M"])
        defer { emulator.stop() }
        let old = Data(repeating: 0xAA, count: data.count)
        for name in ["os.img.zst", "os.img.xz", "os.img"] {
            try old.write(to: URL(fileURLWithPath: emulator.directory + "/system.img"))
            let result = try flash(emulator, ["--partition", "system", work + "/" + name])
            XCTAssertEqual(result.status, 0, "\(name): \(result.stderr)\(result.stdout)")
            let landed = try XCTUnwrap(emulator.partition("system"))
            XCTAssertEqual(landed.count, data.count)
            let block = 64 << 10
            for start in stride(from: 0, to: data.count, by: block) {
                let range = start..<min(data.count, start + block)
                let hole = data[range].allSatisfy { $0 == 0 }
                XCTAssertEqual(landed[range], hole ? old[range] : data[range], "\(name): bytes \(range) should be \(hole ? "left alone" : "the image's")")
            }
            let sent = try XCTUnwrap(bytesSent(result))
            XCTAssertLessThan(sent, Int64(data.count * 3 / 4), "\(name): the holes were sent")
        }
        // --no-bmap sends everything, zeros included.
        try old.write(to: URL(fileURLWithPath: emulator.directory + "/system.img"))
        let whole = try flash(emulator, ["--partition", "system", "--no-bmap", work + "/os.img.xz"])
        XCTAssertEqual(whole.status, 0, whole.stderr)
        XCTAssertEqual(emulator.partition("system"), data)
    }

    func testBrokenImagesFailClearlyAndTheUnknownOnesBeforeAnythingIsSent() throws {
        _ = try source()
        try DiskImages.tool("xz -k -1 -T1 os.img && gzip -k -1 os.img && head -c 2000000 os.img.xz > truncated.img.xz && cp os.img.gz corrupt.img.gz && printf 'XXXXXXXX' | dd of=corrupt.img.gz bs=1 seek=3000000 conv=notrunc status=none", in: work)
        let emulator = try EmulatorProcess(serial: "CFB-BROKEN")
        defer { emulator.stop() }
        for (name, expected) in [("truncated.img.xz", "truncated"), ("corrupt.img.gz", "CRC-32")] {
            let result = try flash(emulator, ["--partition", "boot", work + "/" + name])
            XCTAssertNotEqual(result.status, 0, name)
            let error = (result.events(ofType: "flash_failed").first?["error"] as? String) ?? result.stderr
            XCTAssertTrue(error.contains(expected) && error.contains(name), "\(name): \(error)")
            XCTAssertNil(emulator.partition("boot"), "\(name): the device was written to")
        }
        // An .xz whose index is whole but whose data is damaged, cut into pieces: found while
        // looking for empty blocks, before the first piece is flashed.
        try DiskImages.tool("cp os.img.xz damaged.img.xz && printf 'XXXXXXXX' | dd of=damaged.img.xz bs=1 seek=2000000 conv=notrunc status=none", in: work)
        let pieces = try EmulatorProcess(serial: "CFB-BROKEN2", extraArguments: ["--max-download-size", "1M"])
        defer { pieces.stop() }
        let damaged = try flash(pieces, ["--partition", "system", work + "/damaged.img.xz"])
        XCTAssertNotEqual(damaged.status, 0)
        let error = (damaged.events(ofType: "flash_failed").first?["error"] as? String) ?? damaged.stderr
        XCTAssertTrue(error.contains("damaged.img.xz") && error.contains("corrupt"), error)
        XCTAssertNil(pieces.partition("system"), "a piece was flashed before the damage was found")
    }

    func testAnImageThatDoesNotMatchItsBlockMapFails() throws {
        _ = try source()
        try DiskImages.tool("fallocate --dig-holes os.img && bmaptool -q create os.img -o os.img.bmap && printf 'XXXX' | dd of=os.img bs=1 seek=4900000 conv=notrunc status=none", in: work)
        let emulator = try EmulatorProcess(serial: "CFB-BADMAP")
        defer { emulator.stop() }
        let result = try flash(emulator, ["--partition", "system", work + "/os.img"])
        XCTAssertNotEqual(result.status, 0)
        let error = (result.events(ofType: "flash_failed").first?["error"] as? String) ?? result.stderr
        XCTAssertTrue(error.contains("does not match its block map"), error)
    }

    func testAnXZImageInPiecesOverRealLibUSB() throws {
        let data = try source(3 << 20)
        try DiskImages.tool("xz -k -1 -T1 os.img", in: work)
        let emulator = try EmulatorProcess(serial: "CFBUSB01", extraArguments: ["--max-download-size", "1M"])
        defer { emulator.stop() }
        let result = try ProcessRunner.flashctlOverUSB(
            devices: [emulator.usbDevice(port: "1-1")], ["flash", "--device", "CFBUSB01", "--partition", "vendor", work + "/os.img.xz", "--json"], timeout: 120
        )
        XCTAssertEqual(result.status, 0, result.stderr + result.stdout)
        XCTAssertEqual(emulator.partition("vendor"), data)
        XCTAssertEqual(result.events.last?["type"] as? String, "flash_completed")
    }
}
