import Foundation
import XCTest
@testable import FlashEngine

final class SegmentReaderTests: XCTestCase {
    private typealias F = SparseFixtures

    /// Reads the whole stream in calls of `chunk` bytes, checking that only the last call is short.
    private func readAll(_ reader: SegmentReader, chunk: Int, file: StaticString = #filePath, line: UInt = #line) throws -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: chunk)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try reader.read(into: $0) }
            out += buffer.prefix(n)
            if n < chunk { break }
        }
        let again = try buffer.withUnsafeMutableBytes { try reader.read(into: $0) }
        XCTAssertEqual(again, 0, "reads after the end return 0", file: file, line: line)
        return out
    }

    private func expected(_ segments: [ByteSegment], data: [UInt8]) -> [UInt8] {
        segments.flatMap { segment -> [UInt8] in
            switch segment {
            case .bytes(let bytes): return bytes
            case .file(let offset, let length): return Array(data[Int(offset)..<Int(offset + length)])
            }
        }
    }

    func testDeliversTheConcatenationOfSegments() throws {
        let dir = try F.temporaryDirectory(self)
        var random = F.Random(state: 31)
        let data = random.bytes(300_000)
        let path = try F.write(data, to: dir.appendingPathComponent("data.bin"))
        let segments: [ByteSegment] = [
            .bytes([1, 2, 3]), .file(offset: 0, length: 70_000), .bytes([]), .file(offset: 5, length: 0),
            .file(offset: 299_000, length: 1000), .bytes(random.bytes(5000)), .file(offset: 100_001, length: 150_000),
            .file(offset: 10, length: 1), .bytes([9]), .file(offset: 0, length: 300_000),
        ]
        let small: [ByteSegment] = [
            .bytes([1, 2, 3]), .file(offset: 0, length: 700), .bytes([]), .file(offset: 299_500, length: 500),
            .bytes(random.bytes(100)), .file(offset: 7, length: 600),
        ]
        for bufferSize in [1, 7, 4096, 65_539, 1 << 20] {
            // Tiny buffers mean one hand-over per few bytes: keep their streams short.
            let list = bufferSize < 100 ? small : segments
            let want = expected(list, data: data)
            for readAhead in [1, 2, 4] {
                for chunk in bufferSize < 100 ? [4093] : [4093, 65_536, 1 << 20, 2_000_000] {
                    let reader = SegmentReader(path: path, segments: list, bufferSize: bufferSize, readAhead: readAhead)
                    XCTAssertEqual(reader.totalLength, Int64(want.count))
                    let got = try readAll(reader, chunk: chunk)
                    F.assertSame(got, want, "buffer \(bufferSize) ahead \(readAhead) chunk \(chunk)")
                    reader.close()
                }
            }
        }
        // Byte-at-a-time reads over a shorter list.
        let tiny: [ByteSegment] = [.bytes([7, 8]), .file(offset: 1000, length: 3000), .bytes([6])]
        let reader = SegmentReader(path: path, segments: tiny, bufferSize: 512, readAhead: 2)
        F.assertSame(try readAll(reader, chunk: 1), expected(tiny, data: data))
    }

    func testEmptyAndBytesOnlyStreams() throws {
        let empty = SegmentReader(path: "/nonexistent/never-opened", segments: [])
        XCTAssertEqual(try readAll(empty, chunk: 100), [])
        let bytesOnly = SegmentReader(path: "/nonexistent/never-opened", segments: [.bytes([1, 2]), .bytes([]), .bytes([3])])
        XCTAssertEqual(try readAll(bytesOnly, chunk: 2), [1, 2, 3])
    }

    func testFileShorterThanSegmentIsAnImageError() throws {
        let dir = try F.temporaryDirectory(self)
        var random = F.Random(state: 32)
        let data = random.bytes(100_000)
        let path = try F.write(data, to: dir.appendingPathComponent("short.bin"))
        let reader = SegmentReader(path: path, segments: [.bytes([5]), .file(offset: 0, length: 100_000), .file(offset: 90_000, length: 20_000)], bufferSize: 4096, readAhead: 2)
        var delivered: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1000)
        XCTAssertThrowsError(try {
            while true {
                let n = try buffer.withUnsafeMutableBytes { try reader.read(into: $0) }
                delivered += buffer.prefix(n)
                if n < buffer.count { break }
            }
        }()) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .image)
            XCTAssertTrue((error as? FlashError)?.message.contains(path) ?? false, "\(error)")
        }
        // What came before the failure was the real data.
        F.assertSame(delivered, Array(([5] + data + data[90_000...]).prefix(delivered.count)))
        XCTAssertGreaterThanOrEqual(delivered.count, 90_000)
        // The error sticks.
        XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { try reader.read(into: $0) })
    }

    func testMissingFileIsAnImageError() throws {
        let dir = try F.temporaryDirectory(self)
        let path = dir.appendingPathComponent("gone.img").path
        let reader = SegmentReader(path: path, segments: [.bytes([1]), .file(offset: 0, length: 10)])
        var buffer = [UInt8](repeating: 0, count: 16)
        XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { try reader.read(into: $0) }) { error in
            XCTAssertEqual(error as? FlashError, FlashError(.image, "image not found: \(path)"))
        }
    }

    private func threadCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
    }

    func testStopsCleanlyWhenDroppedOrClosedEarly() throws {
        let dir = try F.temporaryDirectory(self)
        var random = F.Random(state: 33)
        let path = try F.write(random.bytes(2 * 1024 * 1024), to: dir.appendingPathComponent("big.bin"))
        let segments: [ByteSegment] = Array(repeating: .file(offset: 0, length: 2 * 1024 * 1024), count: 50)
        let before = threadCount()
        let start = Date()
        for round in 0..<20 {
            var reader: SegmentReader? = SegmentReader(path: path, segments: segments, bufferSize: 64 * 1024, readAhead: 4)
            var buffer = [UInt8](repeating: 0, count: 10_000)
            if round % 2 == 0 {
                _ = try buffer.withUnsafeMutableBytes { try reader!.read(into: $0) }
            }
            if round % 3 == 0 {
                reader!.close()
                XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { try reader!.read(into: $0) }) { error in
                    XCTAssertEqual((error as? FlashError)?.kind, .io)
                }
                reader!.close()
            }
            reader = nil
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "stopping should not wait for the whole 100 MiB")
        XCTAssertLessThanOrEqual(threadCount(), before, "reader threads were left running")
    }

    func testCloseFromAnotherThreadWakesAWaitingReader() throws {
        // A FIFO nobody writes to keeps the reading thread blocked in open(), so the consumer
        // waits for data; close() from another thread must end that wait at once.
        let dir = try F.temporaryDirectory(self)
        let fifo = dir.appendingPathComponent("fifo").path
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let reader = SegmentReader(path: fifo, segments: [.file(offset: 0, length: 10)])
        let finished = expectation(description: "read ends")
        let closed = expectation(description: "close returns")
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 10)
            do {
                _ = try buffer.withUnsafeMutableBytes { try reader.read(into: $0) }
                XCTFail("read after close should throw")
            } catch {
                XCTAssertEqual((error as? FlashError)?.kind, .io)
            }
            finished.fulfill()
        }
        Thread.sleep(forTimeInterval: 0.2)
        Thread.detachNewThread {
            reader.close()
            closed.fulfill()
        }
        wait(for: [finished], timeout: 5)
        // Let the reading thread out of open(); close() then joins it.
        let writer = open(fifo, O_WRONLY | O_NONBLOCK)
        XCTAssertGreaterThanOrEqual(writer, 0)
        wait(for: [closed], timeout: 5)
        if writer >= 0 { close(writer) }
    }
}
