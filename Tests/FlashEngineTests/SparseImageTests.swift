import Foundation
import XCTest
@testable import FlashEngine

final class SparseImageTests: XCTestCase {
    private typealias F = SparseFixtures

    func testParsesImg2simgOutput() throws {
        let dir = try F.temporaryDirectory(self)
        let data = F.imageData(size: 3 * 1024 * 1024 + 777, seed: 1)
        let raw = try F.write(data, to: dir.appendingPathComponent("a.img"))
        let sparsePath = dir.appendingPathComponent("a.simg").path
        try F.run(F.img2simg, [raw, sparsePath])

        XCTAssertTrue(SparseImage.isSparse(path: sparsePath))
        XCTAssertFalse(SparseImage.isSparse(path: raw))
        XCTAssertFalse(SparseImage.isSparse(path: dir.appendingPathComponent("missing").path))

        let image = try SparseImage.open(path: sparsePath)
        XCTAssertEqual(image.header.blockSize, 4096)
        XCTAssertEqual(image.header.majorVersion, 1)
        XCTAssertEqual(Int64(image.header.totalBlocks), (Int64(data.count) + 4095) / 4096)
        XCTAssertEqual(image.expandedSize, Int64(image.header.totalBlocks) * 4096)
        XCTAssertEqual(image.chunks.count, Int(image.header.totalChunks))
        XCTAssertEqual(image.fileSize, Int64(try F.read(sparsePath).count))
        XCTAssertTrue(image.chunks.contains { $0.kind == .raw })
        XCTAssertTrue(image.chunks.contains { if case .fill = $0.kind { return true } else { return false } })

        // Chunks are contiguous, and RAW data read from the file matches the original blocks.
        let file = try F.read(sparsePath)
        var block: Int64 = 0
        for chunk in image.chunks {
            XCTAssertEqual(chunk.firstBlock, block)
            block += chunk.blockCount
            switch chunk.kind {
            case .raw:
                let start = Int(chunk.firstBlock) * 4096
                let length = Int(chunk.blockCount) * 4096
                let expected = Array(data[start..<min(start + length, data.count)])
                F.assertSame(Array(file[Int(chunk.dataOffset)..<(Int(chunk.dataOffset) + expected.count)]), expected)
            case .fill(let value):
                let start = Int(chunk.firstBlock) * 4096
                var word: [UInt8] = []
                ImageBytes.appendLE32(value, to: &word)
                XCTAssertEqual(Array(data[start..<min(start + 4, data.count)]), Array(word.prefix(min(4, data.count - start))))
            default:
                break
            }
        }
        XCTAssertEqual(block, Int64(image.header.totalBlocks))
    }

    func testHandBuiltChunksAreReportedExactly() throws {
        let dir = try F.temporaryDirectory(self)
        let built = F.buildSparse(blockSize: 512, chunks: [
            .dontCare(blocks: 2), .raw([UInt8](repeating: 7, count: 1024)), .crc32(0xDEAD_BEEF), .fill(0xA1B2_C3D4, blocks: 5),
        ])
        let path = try F.write(built.bytes, to: dir.appendingPathComponent("x.simg"))
        let image = try SparseImage.open(path: path)
        XCTAssertEqual(image.header, SparseHeader(majorVersion: 1, minorVersion: 0, fileHeaderSize: 28, chunkHeaderSize: 12, blockSize: 512, totalBlocks: 9, totalChunks: 4, checksum: 0))
        XCTAssertEqual(image.chunks, [
            SparseChunk(kind: .dontCare, firstBlock: 0, blockCount: 2, headerOffset: 28, dataOffset: 40),
            SparseChunk(kind: .raw, firstBlock: 2, blockCount: 2, headerOffset: 40, dataOffset: 52),
            SparseChunk(kind: .crc32(0xDEAD_BEEF), firstBlock: 4, blockCount: 0, headerOffset: 1076, dataOffset: 1088),
            SparseChunk(kind: .fill(0xA1B2_C3D4), firstBlock: 4, blockCount: 5, headerOffset: 1092, dataOffset: 1104),
        ])
        XCTAssertEqual(image.expandedSize, 9 * 512)
    }

    func testLargerHeadersAreSkipped() throws {
        let dir = try F.temporaryDirectory(self)
        let built = F.mixedSparse(blockSize: 4096, seed: 5, extraFileHeader: 8, extraChunkHeader: 4)
        let path = try F.write(built.bytes, to: dir.appendingPathComponent("big-headers.simg"))
        let image = try SparseImage.open(path: path)
        XCTAssertEqual(image.header.fileHeaderSize, 36)
        XCTAssertEqual(image.header.chunkHeaderSize, 16)
        XCTAssertEqual(image.expandedSize, Int64(built.expanded.count))
        let out = dir.appendingPathComponent("out.img").path
        try SparseExpander.expand(sparseFileAt: path, into: out)
        F.assertSame(try F.read(out), built.expanded)
    }

    // MARK: Corrupt images

    /// A valid hand-built image to corrupt: DONT_CARE, RAW, FILL, CRC32, RAW.
    private func validImage() -> [UInt8] {
        F.buildSparse(blockSize: 4096, chunks: [
            .dontCare(blocks: 1), .raw([UInt8](repeating: 0x11, count: 8192)), .fill(0x0102_0304, blocks: 3),
            .crcOfData, .raw([UInt8](repeating: 0x22, count: 4096)),
        ]).bytes
    }

    // Offsets in validImage(): header 0-27; chunk 1 at 28; chunk 2 (RAW) at 40; chunk 3 (FILL) at 8244.
    private func patch16(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt16) {
        bytes[offset] = UInt8(value & 0xFF)
        bytes[offset + 1] = UInt8(value >> 8)
    }

    private func patch32(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt32) {
        for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }

    private func corruptions() -> [(name: String, bytes: [UInt8], expect: String)] {
        let good = validImage()
        var list: [(String, [UInt8], String)] = []
        var b = good

        b = good; patch32(&b, 0, 0xED26_FF3B); list.append(("bad magic", b, "bad magic 0xED26FF3B"))
        b = good; patch16(&b, 4, 2); list.append(("wrong major version", b, "unsupported major version 2"))
        b = good; patch16(&b, 8, 20); list.append(("small file header", b, "file header size 20"))
        b = good; patch16(&b, 10, 8); list.append(("small chunk header", b, "chunk header size 8"))
        b = good; patch32(&b, 12, 0); list.append(("zero block size", b, "block size 0"))
        b = good; patch32(&b, 12, 4098); list.append(("odd block size", b, "block size 4098"))
        b = good; patch32(&b, 16, 8); list.append(("too many blocks in header", b, "chunks cover 7 blocks but the header says total_blks = 8"))
        b = good; patch32(&b, 16, 6); list.append(("too few blocks in header", b, "goes past total_blks = 6"))
        b = good; patch32(&b, 20, 6); list.append(("more chunks in header", b, "ends after 5 chunks"))
        b = good; patch32(&b, 20, 4); list.append(("fewer chunks in header", b, "trailing data"))
        b = good; patch16(&b, 40, 0xCAC5); list.append(("unknown chunk type", b, "unknown type 0xCAC5"))
        b = good; patch32(&b, 48, 8192 + 12 + 4); list.append(("raw total_sz too big", b, "has total_sz 8208, expected 8204"))
        b = good; patch32(&b, 44, 3); list.append(("raw blocks vs total_sz", b, "(RAW, 3 blocks)"))
        b = good; patch32(&b, 8244 + 8, 20); list.append(("fill total_sz", b, "(FILL, 3 blocks)"))
        b = good; patch32(&b, 28 + 8, 16); list.append(("dont care with data", b, "(DONT_CARE, 1 blocks)"))
        b = good + [0, 0, 0]; list.append(("trailing garbage", b, "3 bytes of trailing data"))
        list.append(("truncated in header", Array(good.prefix(20)), "shorter than the 28-byte sparse header"))
        list.append(("truncated in chunk header", Array(good.prefix(34)), "runs past the end of the file"))
        list.append(("truncated in raw data", Array(good.prefix(5000)), "past the end of the file"))
        list.append(("truncated by one byte", Array(good.dropLast()), "past the end of the file"))
        list.append(("header only", Array(good.prefix(28)), "ends after 0 chunks"))
        return list
    }

    func testCorruptImagesAreRefusedWithAClearMessage() throws {
        let dir = try F.temporaryDirectory(self)
        // The uncorrupted image is accepted, so each corruption is what gets refused.
        let goodPath = try F.write(validImage(), to: dir.appendingPathComponent("good.simg"))
        XCTAssertEqual(try SparseImage.open(path: goodPath).chunks.count, 5)
        XCTAssertTrue(try ImageFile.open(path: goodPath).isSparse)

        for (index, corruption) in corruptions().enumerated() {
            let path = try F.write(corruption.bytes, to: dir.appendingPathComponent("bad-\(index).simg"))
            // A file without the magic is simply not sparse to ImageFile: a raw image.
            for opener in corruption.name == "bad magic" ? ["SparseImage"] : ["SparseImage", "ImageFile"] {
                XCTAssertThrowsError(try opener == "SparseImage" ? SparseImage.open(path: path).path : ImageFile.open(path: path).path, "\(corruption.name) via \(opener)") { error in
                    guard let error = error as? FlashError else { return XCTFail("\(corruption.name): not a FlashError: \(error)") }
                    XCTAssertEqual(error.kind, .image, corruption.name)
                    XCTAssertTrue(error.message.hasPrefix("corrupt sparse image \(path): "), "\(corruption.name): \(error.message)")
                    XCTAssertTrue(error.message.contains(corruption.expect), "\(corruption.name): '\(error.message)' lacks '\(corruption.expect)'")
                }
            }
        }
    }

    func testExpanderLeavesOutputUntouchedForCorruptImages() throws {
        let dir = try F.temporaryDirectory(self)
        var random = F.Random(state: 9)
        let existing = random.bytes(20_000)
        for (index, corruption) in corruptions().enumerated() {
            let path = try F.write(corruption.bytes, to: dir.appendingPathComponent("bad-\(index).simg"))
            let output = try F.write(existing, to: dir.appendingPathComponent("out-\(index).img"))
            XCTAssertThrowsError(try SparseExpander.expand(sparseFileAt: path, into: output), corruption.name) { error in
                XCTAssertEqual((error as? FlashError)?.kind, .image, corruption.name)
            }
            F.assertSame(try F.read(output), existing, corruption.name)
            let missing = dir.appendingPathComponent("never-\(index).img").path
            XCTAssertThrowsError(try SparseExpander.expand(sparseFileAt: path, into: missing))
            XCTAssertFalse(FileManager.default.fileExists(atPath: missing), "\(corruption.name) created the output")
        }
    }

    func testHugeDeclaredSizesDoNotTrap() throws {
        let dir = try F.temporaryDirectory(self)
        // total_blks * blk_sz beyond Int64, and a RAW chunk whose blocks * blk_sz overflows.
        var header = SparseFormat.fileHeader(blockSize: 0xFFFF_FFFC, totalBlocks: 0xFFFF_FFFF, totalChunks: 1)
        var path = try F.write(header + SparseFormat.chunkHeader(type: SparseFormat.chunkTypeDontCare, blocks: 0xFFFF_FFFF, totalSize: 12), to: dir.appendingPathComponent("huge1.simg"))
        XCTAssertThrowsError(try SparseImage.open(path: path)) { XCTAssertEqual(($0 as? FlashError)?.kind, .image) }

        header = SparseFormat.fileHeader(blockSize: 0x8000_0000, totalBlocks: 0xFFFF_FFFF, totalChunks: 1)
        path = try F.write(header + SparseFormat.chunkHeader(type: SparseFormat.chunkTypeRaw, blocks: 0xFFFF_FFFF, totalSize: 0xFFFF_FFFF), to: dir.appendingPathComponent("huge2.simg"))
        XCTAssertThrowsError(try SparseImage.open(path: path)) { XCTAssertEqual(($0 as? FlashError)?.kind, .image) }

        // A header promising four billion chunks in a tiny file fails fast, without reserving memory.
        header = SparseFormat.fileHeader(blockSize: 4096, totalBlocks: 1, totalChunks: 0xFFFF_FFFF)
        path = try F.write(header + SparseFormat.chunkHeader(type: SparseFormat.chunkTypeDontCare, blocks: 1, totalSize: 12), to: dir.appendingPathComponent("huge3.simg"))
        XCTAssertThrowsError(try SparseImage.open(path: path)) { XCTAssertTrue(($0 as? FlashError)?.message.contains("ends after 1 chunks") ?? false, "\($0)") }
    }
}
