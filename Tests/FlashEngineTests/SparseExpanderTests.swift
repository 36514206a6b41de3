import Foundation
import XCTest
@testable import FlashEngine

final class SparseExpanderTests: XCTestCase {
    private typealias F = SparseFixtures

    func testOutputEqualsSimg2img() throws {
        let dir = try F.temporaryDirectory(self)
        let data = F.imageData(size: 3 * 1024 * 1024 + 5, seed: 11)
        let raw = try F.write(data, to: dir.appendingPathComponent("a.img"))
        let sparse = dir.appendingPathComponent("a.simg").path
        try F.run(F.img2simg, [raw, sparse])
        let reference = dir.appendingPathComponent("ref.img").path
        try F.run(F.simg2img, [sparse, reference])

        let ours = dir.appendingPathComponent("ours.img").path
        try SparseExpander.expand(sparseFileAt: sparse, into: ours)
        F.assertSame(try F.read(ours), try F.read(reference))
        F.assertSame(Array(try F.read(ours).prefix(data.count)), data)
    }

    func testOtherBlockSizeEqualsSimg2img() throws {
        let dir = try F.temporaryDirectory(self)
        let data = F.imageData(size: 1024 * 1024 + 300, seed: 12)
        let raw = try F.write(data, to: dir.appendingPathComponent("b.img"))
        let sparse = dir.appendingPathComponent("b.simg").path
        try F.run(F.img2simg, [raw, sparse, "1024"])
        XCTAssertEqual(try SparseImage.open(path: sparse).header.blockSize, 1024)
        let reference = dir.appendingPathComponent("ref.img").path
        try F.run(F.simg2img, [sparse, reference])
        let ours = dir.appendingPathComponent("ours.img").path
        try SparseExpander.expand(sparseFileAt: sparse, into: ours)
        F.assertSame(try F.read(ours), try F.read(reference))
    }

    func testDontCareKeepsExistingBytesAndLargerOutputIsNotShrunk() throws {
        let dir = try F.temporaryDirectory(self)
        let built = F.mixedSparse(blockSize: 4096, seed: 21)
        let sparse = try F.write(built.bytes, to: dir.appendingPathComponent("m.simg"))
        var random = F.Random(state: 99)
        let existing = random.bytes(built.expanded.count + 10_000)
        let output = try F.write(existing, to: dir.appendingPathComponent("part.img"))

        try SparseExpander.expand(sparseFileAt: sparse, into: output)

        var expected = built.expanded + existing[built.expanded.count...]
        for range in built.dontCareRanges {
            expected.replaceSubrange(range, with: existing[range])
        }
        XCTAssertFalse(built.dontCareRanges.isEmpty)
        F.assertSame(try F.read(output), expected)
    }

    func testSmallerOutputIsExtendedAndMissingOutputCreated() throws {
        let dir = try F.temporaryDirectory(self)
        let built = F.mixedSparse(blockSize: 2048, seed: 22)
        let sparse = try F.write(built.bytes, to: dir.appendingPathComponent("m.simg"))

        let created = dir.appendingPathComponent("new.img").path
        try SparseExpander.expand(sparseFileAt: sparse, into: created)
        F.assertSame(try F.read(created), built.expanded)

        let short = try F.write([UInt8](repeating: 0x77, count: 5000), to: dir.appendingPathComponent("short.img"))
        try SparseExpander.expand(sparseFileAt: sparse, into: short)
        var expected = built.expanded
        for range in built.dontCareRanges {
            for i in range { expected[i] = i < 5000 ? 0x77 : 0 }
        }
        F.assertSame(try F.read(short), expected)
    }

    func testLargeFillAndRawChunksStreamInPieces() throws {
        let dir = try F.temporaryDirectory(self)
        var random = F.Random(state: 5)
        // Chunks larger than the 1 MiB buffer, in both kinds.
        let built = F.buildSparse(blockSize: 4096, chunks: [
            .fill(0xCAFE_F00D, blocks: 700), .raw(random.bytes(300 * 4096)), .fill(0x0000_0001, blocks: 260), .raw(random.bytes(4096)),
        ])
        let sparse = try F.write(built.bytes, to: dir.appendingPathComponent("big.simg"))
        let out = dir.appendingPathComponent("big.img").path
        try SparseExpander.expand(sparseFileAt: sparse, into: out)
        F.assertSame(try F.read(out), built.expanded)
        let reference = dir.appendingPathComponent("ref.img").path
        try F.run(F.simg2img, [sparse, reference])
        F.assertSame(try F.read(out), try F.read(reference))
    }

    func testUnwritableOutputIsAnIOError() throws {
        let dir = try F.temporaryDirectory(self)
        let built = F.mixedSparse(blockSize: 4096, seed: 23)
        let sparse = try F.write(built.bytes, to: dir.appendingPathComponent("m.simg"))
        XCTAssertThrowsError(try SparseExpander.expand(sparseFileAt: sparse, into: dir.path)) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .io)
            XCTAssertTrue((error as? FlashError)?.message.contains(dir.path) ?? false, "\(error)")
        }
        XCTAssertThrowsError(try SparseExpander.expand(sparseFileAt: dir.appendingPathComponent("missing.simg").path, into: dir.appendingPathComponent("o").path)) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .image)
            XCTAssertTrue((error as? FlashError)?.message.hasPrefix("image not found: ") ?? false, "\(error)")
        }
    }
}
