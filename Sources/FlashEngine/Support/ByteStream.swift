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

/// A stream that can lend its next bytes in place instead of copying them out, and say which
/// range of a file they were read from: a transport can then send that range with `sendfile`
/// (no copy through user memory) while a digest reads the lent bytes.
public protocol LendingByteStream: ByteStream {
    /// The next bytes, at most `maxLength` (fewer at a piece boundary, not only at the end); nil
    /// at the end of the stream. They stay valid until the next call on the stream.
    func borrow(maxLength: Int) throws -> BorrowedBytes?
    /// The file that `BorrowedBytes.fileOffset` refers to, while the stream is open.
    var fileDescriptor: Int32? { get }
}

/// Bytes lent by a `LendingByteStream`; `fileOffset` is where they are in its file (nil for bytes
/// that exist only in memory, such as sparse headers).
public struct BorrowedBytes {
    public let bytes: UnsafeRawBufferPointer
    public let fileOffset: Int64?
}
