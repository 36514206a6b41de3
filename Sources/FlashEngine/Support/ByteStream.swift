/// A source of bytes pulled in order, for example the bytes of one download.
///
/// `read(into:)` fills as much of the buffer as it can and returns how many bytes it wrote;
/// it returns fewer than the buffer holds only at the end of the stream, and 0 after the end.
public protocol ByteStream: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// One piece of a byte stream: bytes held in memory (headers) or a range of a file (image data).
public enum ByteSegment: Equatable, Sendable {
    case bytes([UInt8])
    case file(offset: Int64, length: Int64)

    public var length: Int64 {
        switch self {
        case .bytes(let bytes): return Int64(bytes.count)
        case .file(_, let length): return length
        }
    }
}

extension Array where Element == ByteSegment {
    public var totalLength: Int64 { reduce(0) { $0 + $1.length } }
}

/// A stream that can lend its next bytes where they already are (its read-ahead buffers) instead
/// of copying them into the caller's buffer: a transport sends them, and a digest reads them, in
/// place.
public protocol LendingByteStream: ByteStream {
    /// The next bytes, at most `maxLength` (fewer at a buffer boundary, not only at the end);
    /// nil at the end of the stream. They stay valid until the next call on the stream.
    func borrow(maxLength: Int) throws -> UnsafeRawBufferPointer?
}

/// Lends what a stream that cannot lend (a decompressor, say) reads into a buffer of its own.
public final class CopyingLender: LendingByteStream {
    private let stream: ByteStream
    private var buffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    public init(_ stream: ByteStream) {
        self.stream = stream
    }

    deinit {
        buffer.deallocate()
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try stream.read(into: buffer)
    }

    public func borrow(maxLength: Int) throws -> UnsafeRawBufferPointer? {
        if buffer.count < maxLength {
            buffer.deallocate()
            buffer = .allocate(byteCount: maxLength, alignment: 16)
        }
        let count = try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<maxLength]))
        return count > 0 ? UnsafeRawBufferPointer(rebasing: buffer[0..<count]) : nil
    }
}
