@testable import FlashEngine
import Foundation
import Testing

/// Which blocks of a raw image go as FILL chunks when it is cut into sparse pieces.
@Suite final class RawFillScannerTests {
    private let path = NSTemporaryDirectory() + "flashctl-fill-\(UUID().uuidString).img"
    private let block = 4096

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    private func random(_ blocks: Int) -> Data {
        Data((0..<(blocks * block)).map { _ in UInt8.random(in: 0...255) })
    }

    private func repeating(_ word: [UInt8], blocks: Int) -> Data {
        Data((0..<(blocks * block)).map { word[$0 % 4] })
    }

    private func chunks() throws -> [String] {
        let file = try ImageDescriptor.open(path: path)
        let size = Int64(try file.status().st_size)
        return try RawFillScanner.chunks(of: file, size: size, blockSize: Int64(block), checkCancelled: {}).map(describe)
    }

    private func describe(_ chunk: SparsePlanner.PlanChunk) -> String {
        switch chunk.kind {
        case .raw(let offset, let end): "raw \(chunk.first)+\(chunk.count) from \(offset) to \(end)"
        case .fill(let value): "fill \(String(value, radix: 16)) \(chunk.first)+\(chunk.count)"
        case .dontCare: "skip \(chunk.first)+\(chunk.count)"
        }
    }

    @Test func repeatedBlocksAndHolesBecomeFillsAndTheRestStaysRaw() throws {
        // Blocks 0-2 data, 3-7 written zeros, 8-9 one repeated word, 10-17 a hole, 18 data,
        // then 100 bytes of a last partial block.
        var image = random(3) + Data(count: 5 * block) + repeating([0xAB, 0xCD, 0x00, 0x01], blocks: 2)
        try image.write(to: URL(fileURLWithPath: path))
        let tail = random(1) + Data((0..<100).map { _ in UInt8.random(in: 1...255) })
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.seek(toOffset: UInt64(18 * block))
        try handle.write(contentsOf: tail)
        try handle.close()
        image += Data(count: 8 * block) + tail
        let size = Int64(image.count)
        #expect(try chunks() == [
            "raw 0+3 from 0 to \(size)",
            "fill 0 3+5",
            "fill 100cdab 8+2",
            "fill 0 10+8",
            "raw 18+2 from \(18 * block) to \(size)",
        ])
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == image, "the file is what the chunks describe")
    }

    @Test func aBlockDifferingInItsLastByteIsData() throws {
        var image = Data(count: 2 * block)
        image[2 * block - 1] = 1
        try image.write(to: URL(fileURLWithPath: path))
        #expect(try chunks() == ["fill 0 0+1", "raw 1+1 from \(block) to \(2 * block)"])
    }

    @Test func anImageThatIsAllHoleIsOneFill() throws {
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        #expect(truncate(path, off_t(64 * block)) == 0)
        #expect(try chunks() == ["fill 0 0+64"])
    }
}

extension RawFillScannerTests {
    /// A decompressed image is read in order from its start: the same chunks as the file gives.
    @Test func aStreamGivesTheChunksAndSizeTheFileGives() throws {
        let image = random(2) + Data(count: 3 * block) + repeating([7, 7, 7, 7], blocks: 1) + random(1) + Data(count: 10)
        try image.write(to: URL(fileURLWithPath: path))
        let file = try ImageDescriptor.open(path: path)
        let fromFile = try RawFillScanner.chunks(of: file, size: Int64(image.count), blockSize: Int64(block), checkCancelled: {})
        let fromStream = try RawFillScanner.chunks(of: try FileStream(path: path), blockSize: Int64(block), checkCancelled: {})
        #expect(fromStream.size == Int64(image.count))
        #expect(fromStream.chunks.map(describe) == fromFile.map(describe))
        let end = image.count
        #expect(fromFile.map(describe) == ["raw 0+2 from 0 to \(end)", "fill 0 2+3", "fill 7070707 5+1", "raw 6+2 from \(6 * block) to \(end)"])
    }
}
