import FlashEngine
import Foundation
import XCTest

/// A sparse image whose CRC32 chunk does not match its data, as a user would meet it: refused
/// before anything is sent to a fastboot device, and a disk job fails naming the chunk without
/// leaving the disk's first MiB written.
final class SparseCRCFlashTests: XCTestCase {
    /// 2 MiB of data then a CRC32 chunk holding `crc`, then 4 KiB more.
    private func sparse(crc: UInt32) -> Data {
        let first = TestImages.random(2 << 20, seed: 9), second = TestImages.random(4096, seed: 10)
        var bytes = SparseFormat.fileHeader(blockSize: 4096, totalBlocks: UInt32((first.count + second.count) / 4096), totalChunks: 3)
        bytes += SparseFormat.chunkHeader(type: SparseFormat.chunkTypeRaw, blocks: UInt32(first.count / 4096), totalSize: UInt32(12 + first.count)) + [UInt8](first)
        bytes += SparseFormat.chunkHeader(type: SparseFormat.chunkTypeCRC32, blocks: 0, totalSize: 16)
        bytes += (0..<4).map { UInt8(truncatingIfNeeded: crc >> (8 * UInt32($0))) }
        bytes += SparseFormat.chunkHeader(type: SparseFormat.chunkTypeRaw, blocks: 1, totalSize: UInt32(12 + second.count)) + [UInt8](second)
        return Data(bytes)
    }

    func testAWrongCRC32ChunkIsRefusedBeforeAnythingIsSentToAFastbootDevice() throws {
        let emulator = try EmulatorProcess(serial: "TCPCRC")
        defer { emulator.stop() }
        let path = try TestImages.write(sparse(crc: 0xDEAD_BEEF), name: "boot.simg")
        let result = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--device", emulator.tcpSelector, path, "--partition", "boot"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("corrupt sparse image \(path): chunk 2 (CRC32) says 0xdeadbeef, but the data before it has CRC32 0x"), result.stderr)
        XCTAssertNil(emulator.partition("boot"))

        // The same inside a compressed file: found in the pass that learns its chunks.
        try DiskImages.tool("xz -k -1 boot.simg", in: (path as NSString).deletingLastPathComponent)
        let compressed = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--device", emulator.tcpSelector, path + ".xz", "--partition", "boot", "--json"])
        XCTAssertNotEqual(compressed.status, 0)
        let error = compressed.events(ofType: "flash_failed").first?["error"] as? String ?? compressed.stderr
        XCTAssertTrue(error.contains("chunk 2 (CRC32) says 0xdeadbeef"), error)
        XCTAssertNil(emulator.partition("boot"))
    }

    func testADiskJobFailsAtTheWrongCRC32ChunkAndLeavesTheFirstMiBAlone() throws {
        let device = try LoopDevice(size: 8 << 20, fill: 0xAB)
        defer { device.detach() }
        let path = try TestImages.write(sparse(crc: 0x0BAD_C0DE), name: "os.simg")
        try DiskImages.tool("xz -k -1 os.simg", in: (path as NSString).deletingLastPathComponent)
        let result = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--device", device.path, "--yes", "--json", path + ".xz"])
        XCTAssertNotEqual(result.status, 0)
        let error = result.events(ofType: "flash_failed").first?["error"] as? String ?? result.stderr
        XCTAssertTrue(error.contains("corrupt sparse image \(path).xz: chunk 2 (CRC32) says 0x0badc0de"), error)
        XCTAssertEqual(try device.contents().prefix(1 << 20), Data(repeating: 0xAB, count: 1 << 20), "the first MiB was written")
    }
}
