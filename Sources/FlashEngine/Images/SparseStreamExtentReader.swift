/// An Android sparse image expanded as it is read from a stream that only goes forward (a
/// sparse image inside a compressed file), in one pass: RAW chunks' data as it arrives, FILL
/// chunks as their pattern, DONT_CARE chunks left alone. Headers are checked as they come; a
/// corrupt or truncated image fails at the first bad byte, naming it.
public final class SparseStreamExtentReader: ImageExtentReader {
    private let stream: SkippableStream
    private let path: String
    public let header: SparseHeader
    private var chunksLeft: Int
    private var block: Int64 = 0
    private var position: Int64
    // The chunk being expanded.
    private var kind: SparseChunk.Kind?
    private var chunkStart: Int64 = 0
    private var chunkLength: Int64 = 0
    private var doneInChunk: Int64 = 0
    /// Every expanded byte so far, for the CRC32 chunks.
    private var crc = SparseCRC()

    /// Reads and checks the file header.
    public init(stream: SkippableStream, path: String) throws {
        self.stream = stream
        self.path = path
        var bytes = [UInt8](repeating: 0, count: SparseFormat.fileHeaderSize)
        let n = try bytes.withUnsafeMutableBytes { try stream.read(into: $0) }
        guard n == bytes.count, ImageBytes.le32(bytes, 0) == SparseFormat.magic else {
            throw FlashError(.image, "corrupt sparse image \(path): no complete sparse header")
        }
        header = SparseHeader(
            majorVersion: ImageBytes.le16(bytes, 4), minorVersion: ImageBytes.le16(bytes, 6),
            fileHeaderSize: ImageBytes.le16(bytes, 8), chunkHeaderSize: ImageBytes.le16(bytes, 10),
            blockSize: ImageBytes.le32(bytes, 12), totalBlocks: ImageBytes.le32(bytes, 16),
            totalChunks: ImageBytes.le32(bytes, 20), checksum: ImageBytes.le32(bytes, 24)
        )
        guard header.majorVersion == SparseFormat.majorVersion, Int(header.fileHeaderSize) >= SparseFormat.fileHeaderSize,
              Int(header.chunkHeaderSize) >= SparseFormat.chunkHeaderSize, header.blockSize != 0, header.blockSize % 4 == 0 else {
            throw FlashError(.image, "corrupt sparse image \(path): unsupported header (version \(header.majorVersion).\(header.minorVersion), block size \(header.blockSize))")
        }
        position = Int64(n)
        chunksLeft = Int(header.totalChunks)
        try skip(to: Int64(header.fileHeaderSize))
    }

    public var totalBytes: Int64? { nil }
    public var imageSize: Int64? { Int64(header.totalBlocks) * Int64(header.blockSize) }
    public var inputFraction: Double { stream.inputFraction }

    public func next(into buffer: UnsafeMutableRawBufferPointer) throws -> (offset: Int64, count: Int)? {
        while true {
            if let kind, doneInChunk < chunkLength {
                let n = Int(min(Int64(buffer.count), chunkLength - doneInChunk))
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
                if case .fill(let value) = kind {
                    var pattern = value.littleEndian
                    for at in stride(from: 0, to: n, by: 4) {
                        withUnsafeBytes(of: &pattern) { part.baseAddress!.advanced(by: at).copyMemory(from: $0.baseAddress!, byteCount: 4) }
                    }
                } else {
                    try readExactly(part)
                }
                crc.add(UnsafeRawBufferPointer(part))
                let offset = chunkStart + doneInChunk
                doneInChunk += Int64(n)
                return (offset, n)
            }
            kind = nil
            guard chunksLeft > 0 else {
                guard block == Int64(header.totalBlocks) else { throw corrupt("its chunks cover \(block) blocks but the header says \(header.totalBlocks)") }
                var extra: UInt8 = 0
                guard try withUnsafeMutableBytes(of: &extra, { try stream.read(into: $0) }) == 0 else {
                    throw corrupt("trailing data after its last chunk (offset \(position))")
                }
                return nil
            }
            try startChunk()
        }
    }

    private func startChunk() throws {
        let number = Int(header.totalChunks) - chunksLeft + 1
        chunksLeft -= 1
        var bytes = [UInt8](repeating: 0, count: Int(header.chunkHeaderSize))
        try bytes.withUnsafeMutableBytes { try readExactly($0) }
        let type = ImageBytes.le16(bytes, 0)
        let blocks = Int64(ImageBytes.le32(bytes, 4))
        let dataSize = Int64(ImageBytes.le32(bytes, 8)) - Int64(header.chunkHeaderSize)
        let blockSize = Int64(header.blockSize)
        var covered = blocks
        switch type {
        case SparseFormat.chunkTypeRaw:
            guard dataSize == blocks * blockSize else { throw corrupt("chunk \(number) (RAW, \(blocks) blocks) has \(dataSize) bytes of data") }
            kind = .raw
        case SparseFormat.chunkTypeFill:
            guard dataSize == 4 else { throw corrupt("chunk \(number) (FILL) has \(dataSize) bytes of data, not 4") }
            var value = [UInt8](repeating: 0, count: 4)
            try value.withUnsafeMutableBytes { try readExactly($0) }
            kind = .fill(ImageBytes.le32(value, 0))
        case SparseFormat.chunkTypeDontCare:
            guard dataSize == 0 else { throw corrupt("chunk \(number) (DONT_CARE) has \(dataSize) bytes of data") }
            kind = .dontCare
            crc.addZeros(blocks * blockSize)
        case SparseFormat.chunkTypeCRC32:
            guard dataSize == 4 else { throw corrupt("chunk \(number) (CRC32) has \(dataSize) bytes of data, not 4") }
            var value = [UInt8](repeating: 0, count: 4)
            try value.withUnsafeMutableBytes { try readExactly($0) }
            // Everything before it has been handed out, in order: check it now.
            try crc.check(ImageBytes.le32(value, 0), chunk: number, path: path)
            kind = .crc32(ImageBytes.le32(value, 0))
            covered = 0
        default:
            throw corrupt("chunk \(number) at offset \(position - Int64(header.chunkHeaderSize)) has unknown type 0x\(String(type, radix: 16))")
        }
        guard block + covered <= Int64(header.totalBlocks) else {
            throw corrupt("chunk \(number) (\(covered) blocks from block \(block)) goes past the image's \(header.totalBlocks) blocks")
        }
        chunkStart = block * blockSize
        // Only RAW and FILL chunks put bytes on the disk.
        switch kind {
        case .raw?, .fill?: chunkLength = covered * blockSize
        default: chunkLength = 0
        }
        doneInChunk = 0
        block += covered
    }

    private func readExactly(_ buffer: UnsafeMutableRawBufferPointer) throws {
        let n = try stream.read(into: buffer)
        position += Int64(n)
        guard n == buffer.count else { throw corrupt("its data ends at byte \(position), in the middle of a chunk (truncated)") }
    }

    private func skip(to offset: Int64) throws {
        guard offset > position else { return }
        let skipped = try stream.skip(offset - position)
        position += skipped
        guard position == offset else { throw corrupt("its data ends at byte \(position) (truncated)") }
    }

    private func corrupt(_ what: String) -> FlashError {
        FlashError(.image, "corrupt sparse image \(path): \(what)")
    }
}
