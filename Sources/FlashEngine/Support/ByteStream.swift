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
