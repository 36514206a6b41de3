@testable import FlashEngine
import Foundation
import Testing

/// The read-back catches a disk that does not hold what was written: pieces are written to a file
/// standing in for a disk, then one byte of it is changed before it is read back.
@Suite final class DiskReadBackTests {
    private let path = NSTemporaryDirectory() + "flashctl-readback-\(UUID().uuidString).img"
    /// Written at 0 (the held-back first MiB and past it) and at 8 MiB, with a gap between.
    private let pieces: [(offset: Int64, count: Int)] = [(0, 3 << 20), (8 << 20, 2 << 20)]

    init() throws {
        #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 12 << 20)))
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Writes the pieces and returns what verification needs.
    private func write() throws -> (extents: [(offset: Int64, count: Int64)], digest: String, alignment: Int) {
        let writer = try DiskWriter(path: path, isBlockDevice: false, alignment: 512, digestsWrites: true)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        for (number, piece) in pieces.enumerated() {
            for index in 0..<piece.count { buffer[index] = UInt8(truncatingIfNeeded: index &* 31 &+ index >> 9 &+ number) }
            try writer.write(UnsafeRawBufferPointer(rebasing: buffer[0..<piece.count]), at: piece.offset)
        }
        let digest = try #require(try writer.finish())
        return (writer.extents, digest, writer.alignment)
    }

    private func verify(_ written: (extents: [(offset: Int64, count: Int64)], digest: String, alignment: Int)) throws {
        try DiskVerifier.verify(path: path, extents: written.extents, expected: written.digest, alignment: written.alignment,
                                onBytes: { _ in }, checkCancelled: {})
    }

    private func changeByte(at offset: UInt64) throws {
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        try handle.seek(toOffset: offset)
        let old = try #require(try handle.read(upToCount: 1)?.first)
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: [old ^ 0x40])
        try handle.close()
    }

    @Test func aDiskHoldingWhatWasWrittenIsVerified() throws {
        let written = try write()
        try verify(written)
        // Bytes that were never written (the gap) are not the image's: changing them is no failure.
        try changeByte(at: 5 << 20)
        try verify(written)
    }

    @Test(arguments: [UInt64(100), UInt64(2 << 20) + 7, UInt64(10 << 20) - 1])
    func aChangedByteFailsVerificationWithTheReason(offset: UInt64) throws {
        let written = try write()
        try changeByte(at: offset)
        let error = try #require(throws: FlashError.self) { try self.verify(written) }
        #expect(error.kind == .verification)
        #expect(error.message.hasPrefix("verification of \(path) failed: the data read back (XXH3-128 "), "\(error.message)")
        #expect(error.message.hasSuffix("differs from what was written (\(written.digest)); the medium may be failing or counterfeit"), "\(error.message)")
    }
}
