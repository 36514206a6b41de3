#if canImport(Glibc)
import Glibc
#endif

/// Constants and header encoders of the Android sparse image format (all fields little-endian).
///
/// A file header (28 bytes in version 1.0) is followed by chunks; each chunk is a 12-byte header
/// (type, reserved, chunk_sz in output blocks, total_sz in bytes including the header) and its data.
public enum SparseFormat {
    public static let magic: UInt32 = 0xED26_FF3A
    public static let majorVersion: UInt16 = 1
    public static let minorVersion: UInt16 = 0
    public static let fileHeaderSize = 28
    public static let chunkHeaderSize = 12

    public static let chunkTypeRaw: UInt16 = 0xCAC1
    public static let chunkTypeFill: UInt16 = 0xCAC2
    public static let chunkTypeDontCare: UInt16 = 0xCAC3
    public static let chunkTypeCRC32: UInt16 = 0xCAC4

    /// A version 1.0 file header with 28-byte file and 12-byte chunk headers.
    public static func fileHeader(blockSize: UInt32, totalBlocks: UInt32, totalChunks: UInt32, checksum: UInt32 = 0) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(fileHeaderSize)
        ImageBytes.appendLE32(magic, to: &bytes)
        ImageBytes.appendLE16(majorVersion, to: &bytes)
        ImageBytes.appendLE16(minorVersion, to: &bytes)
        ImageBytes.appendLE16(UInt16(fileHeaderSize), to: &bytes)
        ImageBytes.appendLE16(UInt16(chunkHeaderSize), to: &bytes)
        ImageBytes.appendLE32(blockSize, to: &bytes)
        ImageBytes.appendLE32(totalBlocks, to: &bytes)
        ImageBytes.appendLE32(totalChunks, to: &bytes)
        ImageBytes.appendLE32(checksum, to: &bytes)
        return bytes
    }

    /// A 12-byte chunk header.
    public static func chunkHeader(type: UInt16, blocks: UInt32, totalSize: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(chunkHeaderSize)
        ImageBytes.appendLE16(type, to: &bytes)
        ImageBytes.appendLE16(0, to: &bytes)
        ImageBytes.appendLE32(blocks, to: &bytes)
        ImageBytes.appendLE32(totalSize, to: &bytes)
        return bytes
    }
}

/// The file header of a sparse image, as read.
public struct SparseHeader: Equatable, Sendable {
    public var majorVersion: UInt16
    public var minorVersion: UInt16
    /// Bytes of the file header (28 or more; extra bytes are skipped).
    public var fileHeaderSize: UInt16
    /// Bytes of each chunk header (12 or more; extra bytes are skipped).
    public var chunkHeaderSize: UInt16
    /// Output block size in bytes: non-zero, a multiple of 4.
    public var blockSize: UInt32
    /// Output blocks the image describes.
    public var totalBlocks: UInt32
    /// Chunks in the file.
    public var totalChunks: UInt32
    /// CRC32 of the expanded data as the header states it (0 when not given); not verified.
    public var checksum: UInt32
}

extension SparseImage {
    /// Whether any chunk is a CRC32 chunk, which must then be checked against the data.
    var hasCRCChunks: Bool {
        chunks.contains { if case .crc32 = $0.kind { return true } else { return false } }
    }
}

/// One chunk of a sparse image.
public struct SparseChunk: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// `blockCount` blocks of data stored in the file at `dataOffset`.
        case raw
        /// `blockCount` blocks filled with this 32-bit value (stored little-endian, as in the file).
        case fill(UInt32)
        /// `blockCount` blocks the image says nothing about: the target keeps what it has.
        case dontCare
        /// A CRC32 of the data so far; covers no blocks.
        case crc32(UInt32)
    }

    public var kind: Kind
    /// Output block where the chunk starts.
    public var firstBlock: Int64
    /// Output blocks the chunk covers (0 for CRC32 chunks).
    public var blockCount: Int64
    /// File offset of the chunk header.
    public var headerOffset: Int64
    /// File offset of the chunk's data, just past its header (for RAW: where its blocks are).
    public var dataOffset: Int64

    public init(kind: Kind, firstBlock: Int64, blockCount: Int64, headerOffset: Int64, dataOffset: Int64) {
        self.kind = kind
        self.firstBlock = firstBlock
        self.blockCount = blockCount
        self.headerOffset = headerOffset
        self.dataOffset = dataOffset
    }

    /// Output block just past the chunk.
    public var endBlock: Int64 { firstBlock + blockCount }
}

/// An Android sparse image, parsed and validated from its headers alone (data is never read).
public struct SparseImage: Equatable, Sendable {
    public let path: String
    /// Size of the sparse file itself.
    public let fileSize: Int64
    public let header: SparseHeader
    public let chunks: [SparseChunk]

    /// Block size in bytes.
    public var blockSize: Int64 { Int64(header.blockSize) }
    /// Size of the image once expanded: total_blks * blk_sz.
    public var expandedSize: Int64 { Int64(header.totalBlocks) * Int64(header.blockSize) }

    /// True when the file starts with the sparse magic. Any failure to read means false.
    public static func isSparse(path: String) -> Bool {
        guard let file = try? ImageDescriptor.open(path: path),
              let bytes = try? file.readBytes(4, at: 0) else { return false }
        return ImageBytes.le32(bytes, 0) == SparseFormat.magic
    }

    /// Parses and fully validates the sparse image at `path`.
    /// Throws `FlashError(.image, ...)` when it is missing, unreadable or corrupt.
    public static func open(path: String) throws -> SparseImage {
        let file = try ImageDescriptor.open(path: path)
        let info = try file.status()
        if (info.st_mode & S_IFMT) == S_IFDIR {
            throw FlashError(.image, "image is a directory, not a file: \(path)")
        }
        let size = Int64(info.st_size)
        return try parse(file, fileSize: size)
    }

    static func parse(_ file: ImageDescriptor, fileSize: Int64) throws -> SparseImage {
        try parse(path: file.path, fileSize: fileSize) { try file.readBytes($0, at: $1) }
    }

    /// `fileSize` for a stream whose end is not known beforehand: truncation is then found by
    /// `readBytes`, and trailing data by the caller.
    static let unknownFileSize = Int64.max

    /// Parses the headers through `readBytes(count, offset)`, which is only ever asked for
    /// offsets past the bytes it gave last, so a forward-only stream can serve it.
    static func parse(path: String, fileSize: Int64, readBytes: (Int, Int64) throws -> [UInt8]) throws -> SparseImage {
        func corrupt(_ what: String) -> FlashError {
            FlashError(.image, "corrupt sparse image \(path): \(what)")
        }

        guard fileSize >= Int64(SparseFormat.fileHeaderSize) else {
            if fileSize >= 4, (try? readBytes(4, 0)).map({ ImageBytes.le32($0, 0) }) == SparseFormat.magic {
                throw corrupt("file is \(fileSize) bytes, shorter than the \(SparseFormat.fileHeaderSize)-byte sparse header (truncated)")
            }
            throw corrupt("file is \(fileSize) bytes, too short for a sparse image header (\(SparseFormat.fileHeaderSize) bytes)")
        }
        let raw = try readBytes(SparseFormat.fileHeaderSize, 0)
        let magic = ImageBytes.le32(raw, 0)
        guard magic == SparseFormat.magic else {
            throw corrupt("bad magic 0x\(sparseHex(magic)) (expected 0x\(sparseHex(SparseFormat.magic)))")
        }
        let header = SparseHeader(
            majorVersion: ImageBytes.le16(raw, 4),
            minorVersion: ImageBytes.le16(raw, 6),
            fileHeaderSize: ImageBytes.le16(raw, 8),
            chunkHeaderSize: ImageBytes.le16(raw, 10),
            blockSize: ImageBytes.le32(raw, 12),
            totalBlocks: ImageBytes.le32(raw, 16),
            totalChunks: ImageBytes.le32(raw, 20),
            checksum: ImageBytes.le32(raw, 24)
        )
        guard header.majorVersion == SparseFormat.majorVersion else {
            throw corrupt("unsupported major version \(header.majorVersion).\(header.minorVersion) (only version 1 is known)")
        }
        guard Int(header.fileHeaderSize) >= SparseFormat.fileHeaderSize else {
            throw corrupt("file header size \(header.fileHeaderSize) is smaller than \(SparseFormat.fileHeaderSize)")
        }
        guard Int(header.chunkHeaderSize) >= SparseFormat.chunkHeaderSize else {
            throw corrupt("chunk header size \(header.chunkHeaderSize) is smaller than \(SparseFormat.chunkHeaderSize)")
        }
        guard header.blockSize != 0, header.blockSize % 4 == 0 else {
            throw corrupt("block size \(header.blockSize) is not a non-zero multiple of 4")
        }
        guard Int64(header.fileHeaderSize) <= fileSize else {
            throw corrupt("file header size \(header.fileHeaderSize) is larger than the file (\(fileSize) bytes, truncated)")
        }

        guard !Int64(header.totalBlocks).multipliedReportingOverflow(by: Int64(header.blockSize)).overflow else {
            throw corrupt("total_blks \(header.totalBlocks) x block size \(header.blockSize) is too large")
        }

        let blockSize = Int64(header.blockSize)
        let totalBlocks = Int64(header.totalBlocks)
        let chunkHeaderSize = Int64(header.chunkHeaderSize)
        let totalChunks = Int(header.totalChunks)
        var chunks: [SparseChunk] = []
        // The count comes from the file: reserve no more than the file could hold.
        chunks.reserveCapacity(min(totalChunks, Int((fileSize - Int64(header.fileHeaderSize)) / chunkHeaderSize), 1 << 20))

        var offset = Int64(header.fileHeaderSize)
        var block: Int64 = 0
        for index in 0..<totalChunks {
            let number = index + 1
            if offset == fileSize {
                throw corrupt("header says total_chunks = \(totalChunks) but the file ends after \(index) chunks (truncated)")
            }
            guard offset + chunkHeaderSize <= fileSize else {
                throw corrupt("chunk \(number) of \(totalChunks): header at offset \(offset) runs past the end of the file (\(fileSize) bytes, truncated)")
            }
            let chunkHeader = try readBytes(SparseFormat.chunkHeaderSize, offset)
            let type = ImageBytes.le16(chunkHeader, 0)
            let chunkBlocks = Int64(ImageBytes.le32(chunkHeader, 4))
            let totalSize = Int64(ImageBytes.le32(chunkHeader, 8))
            let dataOffset = offset + chunkHeaderSize
            let dataSize = totalSize - chunkHeaderSize

            let name: String
            let expectedData: Int64
            switch type {
            case SparseFormat.chunkTypeRaw:
                name = "RAW"
                let (bytes, overflow) = chunkBlocks.multipliedReportingOverflow(by: blockSize)
                expectedData = overflow ? Int64.max : bytes
            case SparseFormat.chunkTypeFill:
                name = "FILL"
                expectedData = 4
            case SparseFormat.chunkTypeDontCare:
                name = "DONT_CARE"
                expectedData = 0
            case SparseFormat.chunkTypeCRC32:
                name = "CRC32"
                expectedData = 4
            default:
                throw corrupt("chunk \(number) of \(totalChunks) at offset \(offset) has unknown type 0x\(sparseHex(type))")
            }
            guard dataSize == expectedData else {
                throw corrupt("chunk \(number) of \(totalChunks) (\(name), \(chunkBlocks) blocks) at offset \(offset) has total_sz \(totalSize), expected \(expectedData == Int64.max ? "more than fits" : String(chunkHeaderSize + expectedData))")
            }
            let end = dataOffset + dataSize
            guard end <= fileSize else {
                throw corrupt("chunk \(number) of \(totalChunks) (\(name)) at offset \(offset): its data ends at offset \(end), past the end of the file (\(fileSize) bytes, truncated)")
            }

            let kind: SparseChunk.Kind
            var covered = chunkBlocks
            switch type {
            case SparseFormat.chunkTypeRaw:
                kind = .raw
            case SparseFormat.chunkTypeFill:
                kind = .fill(ImageBytes.le32(try readBytes(4, dataOffset), 0))
            case SparseFormat.chunkTypeDontCare:
                kind = .dontCare
            default:
                kind = .crc32(ImageBytes.le32(try readBytes(4, dataOffset), 0))
                covered = 0
            }
            guard block + covered <= totalBlocks else {
                throw corrupt("chunk \(number) of \(totalChunks) (\(name), \(covered) blocks from block \(block)) goes past total_blks = \(totalBlocks)")
            }
            chunks.append(SparseChunk(kind: kind, firstBlock: block, blockCount: covered, headerOffset: offset, dataOffset: dataOffset))
            block += covered
            offset = end
        }
        guard offset == fileSize || fileSize == unknownFileSize else {
            throw corrupt("\(fileSize - offset) bytes of trailing data after the last of \(totalChunks) chunks (offset \(offset))")
        }
        guard block == totalBlocks else {
            throw corrupt("chunks cover \(block) blocks but the header says total_blks = \(totalBlocks)")
        }
        return SparseImage(path: path, fileSize: fileSize == unknownFileSize ? offset : fileSize, header: header, chunks: chunks)
    }
}

/// Upper-case hexadecimal padded to the type's width: 4 digits for 16-bit, 8 for 32-bit.
private func sparseHex<T: FixedWidthInteger>(_ value: T) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    let width = T.bitWidth / 4
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
}
