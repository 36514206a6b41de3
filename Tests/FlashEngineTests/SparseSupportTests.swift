import Foundation
import XCTest
@testable import FlashEngine

/// Helpers shared by the sparse image, planner, expander and segment reader tests: temporary
/// directories, deterministic image data, hand-built sparse images, the AOSP tools.
enum SparseFixtures {
    static let img2simg = "/usr/bin/img2simg"
    static let simg2img = "/usr/bin/simg2img"

    /// A fresh temporary directory, removed when the test ends.
    static func temporaryDirectory(_ test: XCTestCase) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-sparse-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// Deterministic pseudo-random numbers (SplitMix64).
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func next(_ range: ClosedRange<Int>) -> Int {
            range.lowerBound + Int(next() % UInt64(range.count))
        }
        mutating func bytes(_ count: Int) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: count)
            out.withUnsafeMutableBytes { raw in
                var i = 0
                while i + 8 <= count {
                    raw.storeBytes(of: next(), toByteOffset: i, as: UInt64.self)
                    i += 8
                }
                var word = next()
                while i < count {
                    raw[i] = UInt8(truncatingIfNeeded: word)
                    word >>= 8
                    i += 1
                }
            }
            return out
        }
    }

    /// `count` bytes of a 4-byte pattern repeated.
    static func repeated(_ pattern: [UInt8], count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let word = pattern.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        out.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 4 <= count {
                raw.storeBytes(of: word, toByteOffset: i, as: UInt32.self)
                i += 4
            }
            while i < count {
                raw[i] = pattern[i % 4]
                i += 1
            }
        }
        return out
    }

    /// `size` bytes of random data interleaved with zero holes and constant 32-bit runs, in
    /// regions of varied length (aligned and unaligned to 4096), so img2simg makes RAW and FILL chunks.
    static func imageData(size: Int, seed: UInt64) -> [UInt8] {
        var random = Random(state: seed)
        var data: [UInt8] = []
        data.reserveCapacity(size)
        while data.count < size {
            let aligned = random.next(0...1) == 0
            let length = min(size - data.count, aligned ? 4096 * random.next(1...64) : random.next(1...100_000))
            switch random.next(0...3) {
            case 0:
                data += [UInt8](repeating: 0, count: length)
            case 1:
                let pattern = random.bytes(4)
                data += repeated(pattern, count: length)
            default:
                data += random.bytes(length)
            }
        }
        return data
    }

    /// Compares byte arrays and reports the first difference instead of printing megabytes.
    static func assertSame(_ actual: [UInt8], _ expected: [UInt8], _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
        if actual == expected { return }
        let firstDifference = zip(actual, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        XCTFail("bytes differ\(message.isEmpty ? "" : " (\(message))"): \(actual.count) vs \(expected.count) bytes, first difference at \(firstDifference.map(String.init) ?? "the end of the shorter")", file: file, line: line)
    }

    @discardableResult
    static func write(_ bytes: [UInt8], to url: URL) throws -> String {
        try Data(bytes).write(to: url)
        return url.path
    }

    static func read(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Runs a tool and fails the test when it does not exit with 0.
    static func run(_ tool: String, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        guard FileManager.default.isExecutableFile(atPath: tool) else {
            throw FlashError(.io, "\(tool) is not installed: run scripts/setup.sh")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "\(tool) \(arguments.joined(separator: " ")) failed: \(String(decoding: message, as: UTF8.self))", file: file, line: line)
    }

    /// Writes the bytes a download's segments stand for into a file.
    static func materialize(_ segments: [ByteSegment], source: String, to url: URL) throws -> String {
        try materialize(segments, data: try read(source), to: url)
    }

    /// The same with the source file's bytes already read.
    static func materialize(_ segments: [ByteSegment], data: [UInt8], to url: URL) throws -> String {
        var out: [UInt8] = []
        for segment in segments {
            switch segment {
            case .bytes(let bytes):
                out += bytes
            case .file(let offset, let length):
                out += data[Int(offset)..<Int(offset + length)]
            }
        }
        return try write(out, to: url)
    }

    // MARK: Hand-built sparse images

    enum Chunk {
        case raw([UInt8])
        case fill(UInt32, blocks: Int)
        case dontCare(blocks: Int)
        case crc32(UInt32)
        /// A CRC32 chunk holding the right value: libsparse's CRC of the data before it.
        case crcOfData
    }

    /// A sparse image made byte by byte, and the bytes it expands to (DONT_CARE as zeros).
    struct Built {
        var bytes: [UInt8]
        var expanded: [UInt8]
        /// Where each DONT_CARE range lies in the expanded bytes.
        var dontCareRanges: [Range<Int>]
    }

    static func buildSparse(blockSize: Int, chunks: [Chunk], extraFileHeader: Int = 0, extraChunkHeader: Int = 0) -> Built {
        var body: [UInt8] = []
        var expanded: [UInt8] = []
        var dontCare: [Range<Int>] = []
        let chunkHeaderSize = 12 + extraChunkHeader
        func header(_ type: UInt16, _ blocks: Int, _ dataSize: Int) {
            body += SparseFormat.chunkHeader(type: type, blocks: UInt32(blocks), totalSize: UInt32(chunkHeaderSize + dataSize))
            body += [UInt8](repeating: 0xEE, count: extraChunkHeader)
        }
        for chunk in chunks {
            switch chunk {
            case .raw(let data):
                precondition(data.count % blockSize == 0)
                header(SparseFormat.chunkTypeRaw, data.count / blockSize, data.count)
                body += data
                expanded += data
            case .fill(let value, let blocks):
                header(SparseFormat.chunkTypeFill, blocks, 4)
                ImageBytes.appendLE32(value, to: &body)
                var word: [UInt8] = []
                ImageBytes.appendLE32(value, to: &word)
                expanded += repeated(word, count: blocks * blockSize)
            case .dontCare(let blocks):
                header(SparseFormat.chunkTypeDontCare, blocks, 0)
                dontCare.append(expanded.count..<(expanded.count + blocks * blockSize))
                expanded += [UInt8](repeating: 0, count: blocks * blockSize)
            case .crc32(let value):
                header(SparseFormat.chunkTypeCRC32, 0, 4)
                ImageBytes.appendLE32(value, to: &body)
            case .crcOfData:
                var crc = SparseCRC()
                expanded.withUnsafeBytes { crc.add($0) }
                header(SparseFormat.chunkTypeCRC32, 0, 4)
                ImageBytes.appendLE32(crc.current, to: &body)
            }
        }
        var file = SparseFormat.fileHeader(blockSize: UInt32(blockSize), totalBlocks: UInt32(expanded.count / blockSize), totalChunks: UInt32(chunks.count))
        file[8] = UInt8(28 + extraFileHeader)
        file[10] = UInt8(chunkHeaderSize)
        file += [UInt8](repeating: 0xDD, count: extraFileHeader)
        return Built(bytes: file + body, expanded: expanded, dontCareRanges: dontCare)
    }

    /// A varied hand-built image: RAW, FILL, DONT_CARE and CRC32 chunks, starting and ending
    /// with DONT_CARE.
    static func mixedSparse(blockSize: Int, seed: UInt64, extraFileHeader: Int = 0, extraChunkHeader: Int = 0) -> Built {
        var random = Random(state: seed)
        var chunks: [Chunk] = [.dontCare(blocks: 3)]
        for round in 0..<12 {
            chunks.append(.raw(random.bytes(blockSize * random.next(1...40))))
            chunks.append(.fill(UInt32(truncatingIfNeeded: random.next()), blocks: random.next(1...80)))
            if round % 3 == 0 { chunks.append(.crcOfData) }
            chunks.append(.raw(random.bytes(blockSize * random.next(1...5))))
            chunks.append(.dontCare(blocks: random.next(1...80)))
            if round % 4 == 1 { chunks.append(.fill(0, blocks: random.next(1...20))) }
        }
        chunks.append(.raw(random.bytes(blockSize * 7)))
        chunks.append(.dontCare(blocks: 50))
        return buildSparse(blockSize: blockSize, chunks: chunks, extraFileHeader: extraFileHeader, extraChunkHeader: extraChunkHeader)
    }
}

/// Checks the fixtures themselves against the AOSP tools, so the other tests stand on firm ground.
final class SparseSupportTests: XCTestCase {
    func testHandBuiltImagesExpandWithSimg2img() throws {
        let dir = try SparseFixtures.temporaryDirectory(self)
        for blockSize in [4096, 1024] {
            let built = SparseFixtures.mixedSparse(blockSize: blockSize, seed: UInt64(blockSize))
            let sparse = try SparseFixtures.write(built.bytes, to: dir.appendingPathComponent("mixed-\(blockSize).simg"))
            let out = dir.appendingPathComponent("mixed-\(blockSize).img").path
            try SparseFixtures.run(SparseFixtures.simg2img, [sparse, out])
            SparseFixtures.assertSame(try SparseFixtures.read(out), built.expanded)
        }
    }
}

/// CRC32 chunks: what libsparse writes is accepted, a wrong one refused naming the chunk, by the
/// file check (before anything is written) and by the stream that expands a compressed image.
final class SparseCRCTests: XCTestCase {
    private typealias F = SparseFixtures

    private func image(crc: SparseFixtures.Chunk) -> SparseFixtures.Built {
        F.buildSparse(blockSize: 4096, chunks: [
            .raw([UInt8](repeating: 0x11, count: 8192)), .dontCare(blocks: 2), .fill(0x0102_0304, blocks: 3), crc,
            .raw([UInt8](repeating: 0x22, count: 4096)),
        ])
    }

    private func expandAll(_ reader: SparseStreamExtentReader) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        while try reader.next(into: buffer) != nil {}
    }

    func testTheRightCRCPassesAndAWrongOneIsRefusedNamingTheChunk() throws {
        let dir = try F.temporaryDirectory(self)
        let good = try F.write(image(crc: .crcOfData).bytes, to: dir.appendingPathComponent("good.simg"))
        let bad = try F.write(image(crc: .crc32(0x1234_5678)).bytes, to: dir.appendingPathComponent("bad.simg"))
        // The format's CRC: the 802.3 CRC-32 of the expanded data so far, DONT_CARE counted as zeros.
        var expected = SparseCRC()
        let built = image(crc: .crcOfData)
        built.expanded.prefix(8192 + 2 * 4096 + 3 * 4096).withUnsafeBytes { expected.add($0) }
        XCTAssertEqual(expected.current, UInt32(crc32Reference(Array(built.expanded.prefix(8192 + 5 * 4096)))))

        XCTAssertNoThrow(try OpenedImage.open(path: good, bmapPath: nil, noBmap: true, entry: nil))
        XCTAssertThrowsError(try OpenedImage.open(path: bad, bmapPath: nil, noBmap: true, entry: nil)) { error in
            XCTAssertTrue("\(error)".contains("corrupt sparse image \(bad): chunk 4 (CRC32) says 0x12345678, but the data before it has CRC32 0x"), "\(error)")
        }
        XCTAssertNoThrow(try expandAll(SparseStreamExtentReader(stream: FileStream(path: good), path: good)))
        XCTAssertThrowsError(try expandAll(SparseStreamExtentReader(stream: FileStream(path: bad), path: bad))) { error in
            XCTAssertTrue("\(error)".contains("chunk 4 (CRC32) says 0x12345678"), "\(error)")
        }
    }
}

/// The textbook bitwise CRC-32 (IEEE 802.3, reflected, 0xEDB88320), to hold zlib's against.
private func crc32Reference(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return crc ^ 0xFFFF_FFFF
}
