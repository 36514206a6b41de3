import FlashEngine
import Foundation

/// A transport that answers from a script and records what the host sent: the seam where the
/// fastboot client is tested without a device.
final class ScriptedTransport: FastbootTransport, @unchecked Sendable {
    let peerDescription = "scripted"
    private var answers: [[UInt8]]
    private(set) var commands: [String] = []
    private(set) var downloaded: [UInt8] = []
    /// The sending thread's time slice (`ThreadTimeSlice.current`) at each command, and while
    /// download data went out.
    private(set) var slicesAtCommands: [UInt64?] = []
    private(set) var sliceDuringData: UInt64?
    var acknowledgeEvery = 1 << 20

    init(answers: [String]) {
        self.answers = answers.map { Array($0.utf8) }
    }

    func write(_ bytes: [UInt8], timeoutMs: Int) throws {
        commands.append(String(decoding: bytes, as: UTF8.self))
        slicesAtCommands.append(ThreadTimeSlice.current)
    }

    func read(maxLength: Int, timeoutMs: Int, cutShortOnCancel: Bool) throws -> [UInt8] {
        guard !answers.isEmpty else { throw FlashError(.timeout, "no answer scripted") }
        return answers.removeFirst()
    }

    func writeStream(_ source: ByteStream, totalBytes: Int64, timeoutMs: Int, onAcknowledged: (Int64) -> Void) throws {
        sliceDuringData = ThreadTimeSlice.current
        var buffer = [UInt8](repeating: 0, count: acknowledgeEvery)
        var sent: Int64 = 0
        while sent < totalBytes {
            let want = Int(min(Int64(buffer.count), totalBytes - sent))
            let n = try buffer.withUnsafeMutableBytes { try source.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<want])) }
            guard n > 0 else { throw FlashError(.image, "source ended early") }
            downloaded += buffer[0..<n]
            sent += Int64(n)
            onAcknowledged(sent)
        }
    }

    func close() {}
}

/// A byte stream over an array, for feeding downloads in tests.
final class ArrayStream: ByteStream {
    private let bytes: [UInt8]
    private var position = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let count = min(buffer.count, bytes.count - position)
        guard count > 0 else { return 0 }
        bytes.withUnsafeBytes { source in
            buffer.baseAddress!.copyMemory(from: source.baseAddress!.advanced(by: position), byteCount: count)
        }
        position += count
        return count
    }
}
