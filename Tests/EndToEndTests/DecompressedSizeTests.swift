import FlashEngine
import Foundation
import XCTest

/// The decompressed size read from xz indexes and zstd frame headers, for files made by the real
/// tools, including the shapes that record no size.
final class DecompressedSizeTests: XCTestCase {
    private var work = ""

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-size-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        try TestImages.random(3 << 20 + 77).write(to: URL(fileURLWithPath: work + "/a.img"))
        try TestImages.random(1 << 20 + 5, seed: 9).write(to: URL(fileURLWithPath: work + "/b.img"))
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: work)
    }

    private func knownSize(_ name: String, _ format: ImageFormat) throws -> Int64? {
        try DecompressedStream(path: work + "/" + name, format: format).knownSize
    }

    func testXZIndexesGiveTheSizeOfEveryStream() throws {
        try DiskImages.tool("xz -k -1 -T1 a.img && xz -k -1 -T1 b.img && cat a.img.xz b.img.xz > ab.xz && xz -1 -T2 --block-size=500000 -c a.img > blocks.xz && cp a.img.xz padded.xz && head -c 8 /dev/zero >> padded.xz", in: work)
        XCTAssertEqual(try knownSize("a.img.xz", .xz), 3 << 20 + 77)
        XCTAssertEqual(try knownSize("ab.xz", .xz), 3 << 20 + 77 + 1 << 20 + 5)
        XCTAssertEqual(try knownSize("blocks.xz", .xz), 3 << 20 + 77)
        XCTAssertEqual(try knownSize("padded.xz", .xz), 3 << 20 + 77)
    }

    /// Multi-block files are decoded by several threads; what comes out must still be the
    /// original bytes, in order, across concatenated streams and padding.
    func testMultiBlockAndConcatenatedXZDecodeToTheOriginalBytes() throws {
        try DiskImages.tool("xz -1 -T2 --block-size=300000 -c a.img > blocks.xz && xz -k -1 -T1 b.img && cat blocks.xz b.img.xz > ab.xz && head -c 4 /dev/zero >> ab.xz", in: work)
        let a = try Data(contentsOf: URL(fileURLWithPath: work + "/a.img"))
        let b = try Data(contentsOf: URL(fileURLWithPath: work + "/b.img"))
        XCTAssertEqual(try decompressed("blocks.xz"), a)
        XCTAssertEqual(try decompressed("ab.xz"), a + b)
    }

    private func decompressed(_ name: String) throws -> Data {
        let stream = try DecompressedStream(path: work + "/" + name, format: .xz)
        var out = Data()
        var buffer = [UInt8](repeating: 0, count: 100_000)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try stream.read(into: $0) }
            if n == 0 { return out }
            out.append(contentsOf: buffer[0..<n])
        }
    }

    func testZstdFramesGiveTheirSizeAndAStreamedOneDoesNot() throws {
        try DiskImages.tool("zstd -q -1 a.img && zstd -q -1 b.img && cat a.img.zst b.img.zst > ab.zst && cat a.img | zstd -q -1 -c > piped.zst", in: work)
        XCTAssertEqual(try knownSize("a.img.zst", .zstd), 3 << 20 + 77)
        XCTAssertEqual(try knownSize("ab.zst", .zstd), 3 << 20 + 77 + 1 << 20 + 5)
        XCTAssertNil(try knownSize("piped.zst", .zstd), "zstd reading a pipe cannot record the size")
    }

    func testATruncatedXZHasNoRecordedSize() throws {
        try DiskImages.tool("xz -k -1 -T1 a.img && head -c 1000000 a.img.xz > cut.xz", in: work)
        XCTAssertNil(try knownSize("cut.xz", .xz))
    }
}
