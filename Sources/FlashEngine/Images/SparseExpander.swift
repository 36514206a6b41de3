#if canImport(Glibc)
import Glibc
#endif

/// Applies an Android sparse image to a file (or block device): RAW blocks are written at their
/// offset, FILL blocks as the repeated 32-bit value, DONT_CARE blocks are left as they are.
/// The image is validated completely before the output is opened, so a corrupt image changes
/// nothing. Memory is bounded by one buffer of `bufferSize` bytes.
public enum SparseExpander {
    public static let bufferSize = 1 << 20

    /// Parses `sparseFileAt`, then writes it into `outputPath`, which is created if missing and
    /// extended to at least the expanded size (never shrunk).
    public static func expand(sparseFileAt path: String, into outputPath: String) throws {
        let image = try SparseImage.open(path: path)
        try expand(image, into: outputPath)
    }

    /// Writes an already parsed sparse image into `outputPath`.
    public static func expand(_ image: SparseImage, into outputPath: String) throws {
        let input = try ImageDescriptor.open(path: image.path)
        let output = Glibc.open(outputPath, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard output >= 0 else {
            throw FlashError(.io, "cannot open \(outputPath) for writing: \(errnoText(errno))")
        }
        defer { Glibc.close(output) }

        var info = stat()
        guard fstat(output, &info) == 0 else {
            throw FlashError(.io, "cannot inspect \(outputPath): \(errnoText(errno))")
        }
        if (info.st_mode & S_IFMT) == S_IFREG, Int64(info.st_size) < image.expandedSize {
            guard ftruncate(output, off_t(image.expandedSize)) == 0 else {
                throw FlashError(.io, "cannot extend \(outputPath) to \(image.expandedSize) bytes: \(errnoText(errno))")
            }
        }

        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 4096)
        defer { buffer.deallocate() }
        // The buffer's first `fillPrepared` bytes repeat `fillPattern` (until RAW data reuses it).
        var fillPattern: UInt32?
        var fillPrepared = 0

        for chunk in image.chunks {
            let start = chunk.firstBlock * image.blockSize
            let length = chunk.blockCount * image.blockSize
            switch chunk.kind {
            case .raw:
                fillPattern = nil
                var done: Int64 = 0
                while done < length {
                    let n = Int(min(Int64(bufferSize), length - done))
                    let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
                    try input.readExactly(into: part, at: chunk.dataOffset + done)
                    try writeAll(output, UnsafeRawBufferPointer(part), at: start + done, path: outputPath)
                    done += Int64(n)
                }
            case .fill(let value):
                guard length > 0 else { continue }
                let needed = Int(min(Int64(bufferSize), length))
                if fillPattern != value {
                    buffer.storeBytes(of: value.littleEndian, toByteOffset: 0, as: UInt32.self)
                    fillPattern = value
                    fillPrepared = 4
                }
                // Block sizes and the buffer are multiples of 4, so doubling keeps the pattern aligned.
                while fillPrepared < needed {
                    let n = min(fillPrepared, needed - fillPrepared)
                    (buffer.baseAddress! + fillPrepared).copyMemory(from: buffer.baseAddress!, byteCount: n)
                    fillPrepared += n
                }
                var done: Int64 = 0
                while done < length {
                    let n = Int(min(Int64(bufferSize), length - done))
                    try writeAll(output, UnsafeRawBufferPointer(rebasing: buffer[0..<n]), at: start + done, path: outputPath)
                    done += Int64(n)
                }
            case .dontCare, .crc32:
                continue
            }
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + Int64(done)))
            if n < 0 {
                if errno == EINTR { continue }
                throw FlashError(.io, "cannot write \(path) at offset \(offset + Int64(done)): \(errnoText(errno))")
            }
            if n == 0 {
                throw FlashError(.io, "cannot write \(path) at offset \(offset + Int64(done)): no progress")
            }
            done += n
        }
    }
}
