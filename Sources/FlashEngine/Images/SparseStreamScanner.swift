/// Reads an Android sparse image's headers from a stream that can only go forward (a sparse
/// image inside a compressed file), passing over the chunks' data, to learn its chunks and size.
enum SparseStreamScanner {
    /// `checkCancelled` is called between chunks, so a long pass can be stopped.
    static func scan(_ stream: SkippableStream, path: String, checkCancelled: () throws -> Void) throws -> SparseImage {
        var position: Int64 = 0
        func truncated() -> FlashError {
            FlashError(.image, "corrupt sparse image \(path): its data ends at byte \(position), before the end of its chunks (truncated)")
        }
        func move(to offset: Int64) throws {
            precondition(offset >= position, "sparse headers are read in order")
            let skipped = try stream.skip(offset - position)
            position += skipped
            guard position == offset else { throw truncated() }
        }
        let image = try SparseImage.parse(path: path, fileSize: SparseImage.unknownFileSize) { count, offset in
            try checkCancelled()
            try move(to: offset)
            var bytes = [UInt8](repeating: 0, count: count)
            let n = try bytes.withUnsafeMutableBytes { try stream.read(into: $0) }
            position += Int64(n)
            guard n == count else { throw truncated() }
            return bytes
        }
        try move(to: image.fileSize)
        var extra: UInt8 = 0
        guard try withUnsafeMutableBytes(of: &extra, { try stream.read(into: $0) }) == 0 else {
            throw FlashError(.image, "corrupt sparse image \(path): trailing data after its last chunk (offset \(image.fileSize))")
        }
        return image
    }
}
