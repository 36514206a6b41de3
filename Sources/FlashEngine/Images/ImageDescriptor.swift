#if canImport(Glibc)
import Glibc
#endif

/// The text of an errno value, as `strerror` gives it ("Permission denied").
func errnoText(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "error \(code)" }
    return String(cString: text)
}

/// A file opened read-only for image data: positioned reads that either deliver every byte
/// asked for or throw a `FlashError` that names the file.
final class ImageDescriptor: @unchecked Sendable {
    let path: String
    let fd: Int32

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    deinit {
        close(fd)
    }

    /// Opens `path` for reading; failures become `.image` errors a person understands.
    static func open(path: String) throws -> ImageDescriptor {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw openError(path: path, errno: errno)
        }
        return ImageDescriptor(path: path, fd: fd)
    }

    static func openError(path: String, errno code: Int32) -> FlashError {
        switch code {
        case ENOENT:
            return FlashError(.image, "image not found: \(path)")
        case EISDIR:
            return FlashError(.image, "image is a directory, not a file: \(path)")
        default:
            return FlashError(.image, "cannot read image \(path): \(errnoText(code))")
        }
    }

    /// File status; `.io` error when the system call fails.
    func status() throws -> stat {
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw FlashError(.io, "cannot read image \(path): \(errnoText(errno))")
        }
        return info
    }

    /// Reads as many bytes as the file has at `offset`, up to `buffer.count`; returns how many
    /// (fewer only at the end of the file).
    func readAvailable(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        var done = 0
        while done < buffer.count {
            let n = pread(fd, base + done, buffer.count - done, off_t(offset + Int64(done)))
            if n < 0 {
                if errno == EINTR { continue }
                throw FlashError(.io, "cannot read image \(path) at offset \(offset + Int64(done)): \(errnoText(errno))")
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads exactly `buffer.count` bytes at `offset`, or throws an `.image` error when the file
    /// is shorter than that.
    func readExactly(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws {
        let n = try readAvailable(into: buffer, at: offset)
        guard n == buffer.count else {
            throw FlashError(.image, "image \(path) ended early: expected \(buffer.count) bytes at offset \(offset), found \(n) (was the file changed or truncated?)")
        }
    }

    /// Reads exactly `count` bytes at `offset` into a new array.
    func readBytes(_ count: Int, at offset: Int64) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try readExactly(into: $0, at: offset) }
        return bytes
    }
}

/// Little-endian field access for image headers.
enum ImageBytes {
    static func le16(_ bytes: [UInt8], _ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    static func le32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
    }

    static func appendLE16(_ value: UInt16, to bytes: inout [UInt8]) {
        bytes.append(UInt8(truncatingIfNeeded: value))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
    }

    static func appendLE32(_ value: UInt32, to bytes: inout [UInt8]) {
        for shift in stride(from: 0, to: 32, by: 8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift)))
        }
    }
}
