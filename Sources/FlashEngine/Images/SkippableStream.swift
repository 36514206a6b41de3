#if canImport(Glibc)
import Glibc
#endif

/// A byte stream that can also pass over bytes: a file seeks, a decompressor reads and drops.
public protocol SkippableStream: ByteStream {
    /// Moves `count` bytes on; returns how many there were (fewer only at the end).
    func skip(_ count: Int64) throws -> Int64
    /// Input consumed so far as a fraction of the whole (0...1), for progress when the output
    /// size is unknown.
    var inputFraction: Double { get }
    /// Says that the `count` bytes from `offset` (from the stream's start) will be read soon, so
    /// the system can fetch them while the reader works on what it has.
    func willRead(from offset: Int64, count: Int64)
}

extension SkippableStream {
    /// A decompressor produces its bytes as they are read: nothing to fetch ahead.
    public func willRead(from offset: Int64, count: Int64) {}
}

/// A file read from start to end.
public final class FileStream: SkippableStream {
    private let file: ImageDescriptor
    private let size: Int64
    private var position: Int64 = 0

    public init(path: String) throws {
        file = try ImageDescriptor.open(path: path)
        size = Int64(try file.status().st_size)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try file.readAvailable(into: buffer, at: position)
        position += Int64(n)
        return n
    }

    public func skip(_ count: Int64) throws -> Int64 {
        let n = max(0, min(count, size - position))
        position += n
        return n
    }

    public var inputFraction: Double { size > 0 ? Double(position) / Double(size) : 1 }

    public func willRead(from offset: Int64, count: Int64) {
        posix_fadvise(file.fd, off_t(offset), off_t(count), POSIX_FADV_WILLNEED)
    }
}

extension DecompressedStream: SkippableStream {
    public func skip(_ count: Int64) throws -> Int64 {
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { scratch.deallocate() }
        var done: Int64 = 0
        while done < count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: scratch[0..<Int(min(Int64(scratch.count), count - done))]))
            if n == 0 { break }
            done += Int64(n)
        }
        return done
    }

    public var inputFraction: Double {
        compressedSize > 0 ? min(1, Double(compressedBytesRead) / Double(compressedSize)) : 1
    }
}
