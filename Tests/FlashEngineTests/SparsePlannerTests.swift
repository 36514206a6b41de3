import Foundation
import XCTest
@testable import FlashEngine

final class SparsePlannerTests: XCTestCase {
    private typealias F = SparseFixtures

    /// Writes every piece to a file, checks each is a valid sparse image of the full size that
    /// fits `max`, and returns the piece paths in order.
    private func checkPieces(_ plan: DownloadPlan, image: ImageFile, max: Int64, blockSize: Int64, totalBlocks: Int64, dir: URL, tag: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String] {
        var paths: [String] = []
        let data = try F.read(image.path)
        for (index, segments) in plan.enumerated() {
            XCTAssertLessThanOrEqual(segments.totalLength, max, "\(tag) piece \(index)", file: file, line: line)
            let path = try F.materialize(segments, data: data, to: dir.appendingPathComponent("\(tag)-piece\(index).simg"))
            let piece = try SparseImage.open(path: path)
            XCTAssertEqual(piece.fileSize, segments.totalLength, file: file, line: line)
            XCTAssertEqual(Int64(piece.header.totalBlocks), totalBlocks, "\(tag) piece \(index) total_blks", file: file, line: line)
            XCTAssertEqual(piece.blockSize, blockSize, file: file, line: line)
            XCTAssertEqual(piece.header.checksum, 0, file: file, line: line)
            XCTAssertEqual(piece.header.fileHeaderSize, 28, file: file, line: line)
            XCTAssertEqual(piece.header.chunkHeaderSize, 12, file: file, line: line)
            if index > 0 {
                XCTAssertEqual(piece.chunks.first?.kind, .dontCare, "\(tag) piece \(index) must start with DONT_CARE", file: file, line: line)
            }
            XCTAssertTrue(piece.chunks.contains { $0.kind != .dontCare }, "\(tag) piece \(index) carries nothing", file: file, line: line)
            paths.append(path)
        }
        return paths
    }

    /// Runs `simg2img piece1 piece2 ... out` and returns what it wrote.
    private func simg2img(_ pieces: [String], dir: URL, tag: String) throws -> [UInt8] {
        let out = dir.appendingPathComponent("\(tag)-out.img").path
        try F.run(F.simg2img, pieces + [out])
        return try F.read(out)
    }

    func testSparseImageFromImg2simgSplitsAndReassembles() throws {
        let dir = try F.temporaryDirectory(self)
        let data = F.imageData(size: 3 * 1024 * 1024 + 1000, seed: 42)
        let raw = try F.write(data, to: dir.appendingPathComponent("src.img"))
        let sparsePath = dir.appendingPathComponent("src.simg").path
        try F.run(F.img2simg, [raw, sparsePath])
        let image = try ImageFile.open(path: sparsePath)
        let sparse = try XCTUnwrap(image.sparse)
        let whole = try simg2img([sparsePath], dir: dir, tag: "whole")
        F.assertSame(Array(whole.prefix(data.count)), data)

        // Fits: the file, unchanged, in one download.
        for max in [image.size, image.size + 1, Int64(1) << 40] {
            let plan = try SparsePlanner.downloads(for: image, maxDownloadBytes: max)
            XCTAssertEqual(plan.pieces, [[.file(offset: 0, length: image.size)]])
            XCTAssertFalse(plan.isResparsed)
            XCTAssertEqual(plan.description, "1 piece")
        }

        let largestRaw = sparse.chunks.filter { $0.kind == .raw }.map(\.blockCount).max() ?? 0
        XCTAssertGreaterThan(largestRaw, 4, "fixture should have RAW chunks worth splitting")
        for max: Int64 in [image.size - 1, 1 << 20, 300_000, 100_000, 28 + 36 + 2 * 4096 + 50, 28 + 36 + 5 * 4096 + 100] {
            let plan = try SparsePlanner.downloads(for: image, maxDownloadBytes: max)
            XCTAssertTrue(plan.isResparsed)
            XCTAssertGreaterThan(plan.count, 1, "max \(max)")
            XCTAssertEqual(plan.description, "\(plan.count) pieces")
            if max <= 100_000 { XCTAssertGreaterThan(plan.count, 3) }
            let tag = "s\(max)"
            let pieces = try checkPieces(plan, image: image, max: max, blockSize: 4096, totalBlocks: Int64(sparse.header.totalBlocks), dir: dir, tag: tag)
            XCTAssertTrue(try simg2img(pieces, dir: dir, tag: tag) == whole, "max \(max): simg2img output differs")
            // The same pieces applied one after another by our own expander.
            let ours = dir.appendingPathComponent("\(tag)-ours.img").path
            for piece in pieces { try SparseExpander.expand(sparseFileAt: piece, into: ours) }
            XCTAssertTrue(try F.read(ours) == whole, "expander, max \(max): output differs")
        }
    }

    func testRawChunksAreSplitAtBlockBoundaries() throws {
        let dir = try F.temporaryDirectory(self)
        var random = F.Random(state: 3)
        // One RAW chunk of 300 blocks: every piece but the last must be nearly full.
        let built = F.buildSparse(blockSize: 4096, chunks: [.raw(random.bytes(300 * 4096))])
        let path = try F.write(built.bytes, to: dir.appendingPathComponent("one-raw.simg"))
        let image = try ImageFile.open(path: path)
        let max: Int64 = 10 * 4096 + 28 + 36 + 100
        let plan = try SparsePlanner.downloads(for: image, maxDownloadBytes: max)
        XCTAssertEqual(plan.count, 30)
        let pieces = try checkPieces(plan, image: image, max: max, blockSize: 4096, totalBlocks: 300, dir: dir, tag: "oneraw")
        for (index, segments) in plan.enumerated().dropLast() {
            XCTAssertGreaterThan(segments.totalLength + 4096, max, "piece \(index) is not as full as it could be")
        }
        // Piece layout: header, skip, RAW data straight from the file, padding skip.
        let second = try SparseImage.open(path: pieces[1])
        XCTAssertEqual(second.chunks.map(\.kind), [.dontCare, .raw, .dontCare])
        XCTAssertEqual(second.chunks.map(\.blockCount), [10, 10, 280])
        XCTAssertEqual(plan[1][3], .file(offset: 28 + 12 + 10 * 4096, length: 10 * 4096))
        let last = try SparseImage.open(path: pieces[29])
        XCTAssertEqual(last.chunks.map(\.kind), [.dontCare, .raw])
        XCTAssertTrue(try simg2img(pieces, dir: dir, tag: "oneraw") == built.expanded)
    }

    func testFillAndDontCareAreKeptAndCRCIsDropped() throws {
        let dir = try F.temporaryDirectory(self)
        for blockSize in [4096, 1024, 512] {
            let built = F.mixedSparse(blockSize: blockSize, seed: UInt64(blockSize) + 7, extraFileHeader: blockSize == 1024 ? 4 : 0, extraChunkHeader: blockSize == 1024 ? 8 : 0)
            let path = try F.write(built.bytes, to: dir.appendingPathComponent("mixed\(blockSize).simg"))
            let image = try ImageFile.open(path: path)
            let source = try XCTUnwrap(image.sparse)
            let fills = source.chunks.filter { if case .fill = $0.kind { return true } else { return false } }
            for max in [image.size / 2, Int64(blockSize) * 20 + 300, Int64(28 + 36 + blockSize)] {
                let plan = try SparsePlanner.downloads(for: image, maxDownloadBytes: max)
                XCTAssertGreaterThan(plan.count, 1)
                let tag = "m\(blockSize)-\(max)"
                let pieces = try checkPieces(plan, image: image, max: max, blockSize: Int64(blockSize), totalBlocks: Int64(source.header.totalBlocks), dir: dir, tag: tag)
                let parsed = try pieces.map { try SparseImage.open(path: $0) }
                let all = parsed.flatMap(\.chunks)
                XCTAssertFalse(all.contains { if case .crc32 = $0.kind { return true } else { return false } })
                // Every FILL chunk of the source appears, whole, as a FILL chunk of some piece.
                for fill in fills {
                    XCTAssertTrue(all.contains(where: { $0.kind == fill.kind && $0.firstBlock == fill.firstBlock && $0.blockCount == fill.blockCount }), "\(tag): FILL at block \(fill.firstBlock) lost")
                }
                // Blocks of DONT_CARE in the source are never carried as data.
                let rawBlocks = parsed.flatMap { $0.chunks.filter { $0.kind == .raw } }.reduce(Int64(0)) { $0 + $1.blockCount }
                XCTAssertEqual(rawBlocks, source.chunks.filter { $0.kind == .raw }.reduce(Int64(0)) { $0 + $1.blockCount })
                XCTAssertTrue(try simg2img(pieces, dir: dir, tag: tag) == built.expanded, "\(tag): simg2img output differs")
            }
        }
    }

    func testRawImageThatFitsIsSentUnchanged() throws {
        let dir = try F.temporaryDirectory(self)
        let data = F.imageData(size: 100_000, seed: 8)
        let image = try ImageFile.open(path: try F.write(data, to: dir.appendingPathComponent("small.img")))
        XCTAssertFalse(image.isSparse)
        let plan = try SparsePlanner.downloads(for: image, maxDownloadBytes: 100_000)
        XCTAssertEqual(plan.pieces, [[.file(offset: 0, length: 100_000)]])
        XCTAssertFalse(plan.isResparsed)
    }

    func testRawImagesAreSentAsSparsePieces() throws {
        let dir = try F.temporaryDirectory(self)
        for size in [1024 * 1024 + 1234, 1024 * 1024, 4097] {
            let data = F.imageData(size: size, seed: UInt64(size))
            let path = try F.write(data, to: dir.appendingPathComponent("raw\(size).img"))
            let image = try ImageFile.open(path: path)
            let totalBlocks = Int64((size + 4095) / 4096)
            for max: Int64 in [Int64(size) - 1, 300_000, 100_000, 28 + 36 + 4096] where max < size && max >= 28 + 36 + 4096 {
                let plan = try SparsePlanner.downloads(for: image, maxDownloadBytes: max)
                XCTAssertTrue(plan.isResparsed)
                if max <= 100_000 { XCTAssertGreaterThan(plan.count, 3) }
                let tag = "r\(size)-\(max)"
                let pieces = try checkPieces(plan, image: image, max: max, blockSize: 4096, totalBlocks: totalBlocks, dir: dir, tag: tag)
                for (index, segments) in plan.enumerated().dropLast() {
                    XCTAssertGreaterThan(segments.totalLength + 4096, max, "\(tag) piece \(index) is not as full as it could be")
                }
                let out = try simg2img(pieces, dir: dir, tag: tag)
                XCTAssertEqual(out.count, Int(totalBlocks) * 4096)
                XCTAssertTrue(Array(out.prefix(size)) == data, "\(tag): simg2img output differs")
                XCTAssertTrue(out.dropFirst(size).allSatisfy { $0 == 0 }, "\(tag): padding is not zeros")
            }
        }
    }

    func testPiecesReadThroughSegmentReaderMatchMaterializedOnes() throws {
        let dir = try F.temporaryDirectory(self)
        let data = F.imageData(size: 1_500_000 + 17, seed: 77)
        let path = try F.write(data, to: dir.appendingPathComponent("raw.img"))
        let image = try ImageFile.open(path: path)
        let plan = try SparsePlanner.downloads(for: image, maxDownloadBytes: 200_000)
        var pieces: [String] = []
        for (index, segments) in plan.enumerated() {
            let reader = SegmentReader(path: path, segments: segments, bufferSize: 64 * 1024, readAhead: 3)
            defer { reader.close() }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 50_000)
            while true {
                let n = try chunk.withUnsafeMutableBytes { try reader.read(into: $0) }
                bytes += chunk.prefix(n)
                if n < chunk.count { break }
            }
            XCTAssertEqual(Int64(bytes.count), segments.totalLength)
            XCTAssertTrue(bytes == (try F.read(try F.materialize(segments, source: path, to: dir.appendingPathComponent("m\(index)")))))
            pieces.append(try F.write(bytes, to: dir.appendingPathComponent("piece\(index).simg")))
        }
        let out = try simg2img(pieces, dir: dir, tag: "reader")
        XCTAssertTrue(Array(out.prefix(data.count)) == data)
    }

    func testTooSmallLimitIsRefused() throws {
        let dir = try F.temporaryDirectory(self)
        let image = try ImageFile.open(path: try F.write(F.imageData(size: 50_000, seed: 1), to: dir.appendingPathComponent("r.img")))
        for max: Int64 in [0, -5, 100, 28 + 36 + 4095] {
            XCTAssertThrowsError(try SparsePlanner.downloads(for: image, maxDownloadBytes: max), "max \(max)") { error in
                XCTAssertEqual((error as? FlashError)?.kind, .image)
                XCTAssertTrue((error as? FlashError)?.message.contains(image.path) ?? false, "\(error)")
            }
        }
        XCTAssertNoThrow(try SparsePlanner.downloads(for: image, maxDownloadBytes: 28 + 36 + 4096))
    }

    func testOnlyDontCareImageStillMakesOneValidPiece() throws {
        let dir = try F.temporaryDirectory(self)
        let built = F.buildSparse(blockSize: 4096, chunks: Array(repeating: .dontCare(blocks: 1), count: 10_000))
        let path = try F.write(built.bytes, to: dir.appendingPathComponent("nothing.simg"))
        let image = try ImageFile.open(path: path)
        let plan = try SparsePlanner.downloads(for: image, maxDownloadBytes: 5000)
        XCTAssertEqual(plan.count, 1)
        let piece = try SparseImage.open(path: try F.materialize(plan[0], source: path, to: dir.appendingPathComponent("p")))
        XCTAssertEqual(piece.chunks.map(\.kind), [.dontCare])
        XCTAssertEqual(piece.header.totalBlocks, 10_000)
    }
}
