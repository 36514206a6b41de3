/// The downloads that carry one image to a fastboot device, each no larger than the device's
/// `max-download-size`. A collection of pieces; each piece is the segments of one download.
public struct DownloadPlan: RandomAccessCollection, CustomStringConvertible, Equatable, Sendable {
    /// One entry per download, in the order they must be sent and flashed.
    public let pieces: [[ByteSegment]]
    /// True when the image was cut into sparse pieces; false when the file is sent unchanged.
    public let isResparsed: Bool

    public init(pieces: [[ByteSegment]], isResparsed: Bool) {
        self.pieces = pieces
        self.isResparsed = isResparsed
    }

    public var startIndex: Int { pieces.startIndex }
    public var endIndex: Int { pieces.endIndex }
    public subscript(position: Int) -> [ByteSegment] { pieces[position] }

    /// Bytes of all downloads together.
    public var totalLength: Int64 { pieces.reduce(0) { $0 + $1.totalLength } }

    /// "1 piece", "3 pieces".
    public var description: String { pieces.count == 1 ? "1 piece" : "\(pieces.count) pieces" }
}

/// Cuts an image into downloads that fit the device's `max-download-size`, as AOSP fastboot does:
/// an image that fits is sent as it is; a larger one is sent as several complete sparse images,
/// each covering the full block range (DONT_CARE before and after the blocks it carries), so
/// flashing them in order writes the whole image.
public enum SparsePlanner {
    /// Block size used when a raw image must be cut into sparse pieces.
    public static let rawBlockSize: Int64 = 4096

    /// Plans the downloads for `image`. `maxDownloadBytes` is capped at 4 GiB - 1, the most a
    /// fastboot `download` command can announce.
    public static func downloads(for image: ImageFile, maxDownloadBytes: Int64) throws -> DownloadPlan {
        try downloads(for: layout(of: image), maxDownloadBytes: maxDownloadBytes, path: image.path)
    }

    /// How an image's blocks are laid out in the bytes it is read from: what the planner cuts.
    /// `.file` segments of the plan are offsets in those bytes.
    struct BlockLayout {
        var blockSize: Int64
        var totalBlocks: Int64
        /// Consecutive chunks covering all `totalBlocks`.
        var chunks: [PlanChunk]
        /// Bytes of the image when it may be sent unchanged (a raw or sparse image); nil when it
        /// must always be cut into sparse pieces (a block map leaves blocks out).
        var wholeSize: Int64?
        var expandedSize: Int64 { totalBlocks * blockSize }
    }

    static func layout(of image: ImageFile) throws -> BlockLayout {
        guard let sparse = image.sparse else { return try rawLayout(size: image.size, path: image.path) }
        return sparseLayout(sparse, wholeSize: image.size)
    }

    /// A sparse image's chunks; their data offsets are where the image is read from.
    static func sparseLayout(_ sparse: SparseImage, wholeSize: Int64) -> BlockLayout {
        let blockSize = sparse.blockSize
        let chunks: [PlanChunk] = sparse.chunks.compactMap { chunk in
            switch chunk.kind {
            case .raw:
                return PlanChunk(kind: .raw(dataOffset: chunk.dataOffset, dataEnd: chunk.dataOffset + chunk.blockCount * blockSize), first: chunk.firstBlock, count: chunk.blockCount)
            case .fill(let value):
                return PlanChunk(kind: .fill(value), first: chunk.firstBlock, count: chunk.blockCount)
            case .dontCare:
                return PlanChunk(kind: .dontCare, first: chunk.firstBlock, count: chunk.blockCount)
            case .crc32:
                return nil
            }
        }
        return BlockLayout(blockSize: blockSize, totalBlocks: Int64(sparse.header.totalBlocks), chunks: chunks, wholeSize: wholeSize)
    }

    /// A raw image of `size` bytes: one RAW chunk, its last block padded with zeros.
    static func rawLayout(size: Int64, path: String) throws -> BlockLayout {
        let totalBlocks = (size + rawBlockSize - 1) / rawBlockSize
        guard totalBlocks <= Int64(UInt32.max) else {
            throw FlashError(.image, "cannot send image \(path): \(size) bytes is more than a sparse image can describe")
        }
        return BlockLayout(blockSize: rawBlockSize, totalBlocks: totalBlocks, chunks: [PlanChunk(kind: .raw(dataOffset: 0, dataEnd: size), first: 0, count: totalBlocks)], wholeSize: size)
    }

    /// A raw image with a block map: mapped ranges as RAW chunks, the rest DONT_CARE, so the
    /// device writes only the mapped blocks.
    static func blockMapLayout(_ map: BlockMap) throws -> BlockLayout {
        let blockSize = map.blockSize
        guard blockSize > 0, blockSize % 4 == 0, blockSize <= 1 << 24 else {
            throw FlashError(.image, "the block map \(map.path) has block size \(blockSize), which a sparse image cannot use (a multiple of 4 is needed)")
        }
        let totalBlocks = (map.imageSize + blockSize - 1) / blockSize
        guard totalBlocks <= Int64(UInt32.max) else {
            throw FlashError(.image, "cannot send the image of \(map.path): \(map.imageSize) bytes is more than a sparse image can describe")
        }
        var chunks: [PlanChunk] = []
        var position: Int64 = 0
        for range in map.ranges {
            let last = min(range.last, totalBlocks - 1)
            guard range.first >= position, last >= range.first else { continue }
            if range.first > position {
                chunks.append(PlanChunk(kind: .dontCare, first: position, count: range.first - position))
            }
            chunks.append(PlanChunk(kind: .raw(dataOffset: range.first * blockSize, dataEnd: map.imageSize), first: range.first, count: last - range.first + 1))
            position = last + 1
        }
        if position < totalBlocks {
            chunks.append(PlanChunk(kind: .dontCare, first: position, count: totalBlocks - position))
        }
        return BlockLayout(blockSize: blockSize, totalBlocks: totalBlocks, chunks: chunks, wholeSize: nil)
    }

    static func downloads(for layout: BlockLayout, maxDownloadBytes: Int64, path: String) throws -> DownloadPlan {
        let limit = min(maxDownloadBytes, Int64(UInt32.max))
        guard limit > 0 else {
            throw FlashError(.image, "cannot send image \(path): max-download-size \(maxDownloadBytes) is not positive")
        }
        if let whole = layout.wholeSize, whole <= limit {
            return DownloadPlan(pieces: [[.file(offset: 0, length: whole)]], isResparsed: false)
        }
        let blockSize = layout.blockSize
        // The smallest useful piece: file header, leading skip, one RAW block, trailing skip.
        let minimum = Int64(SparseFormat.fileHeaderSize) + 3 * Int64(SparseFormat.chunkHeaderSize) + blockSize
        guard limit >= minimum else {
            throw FlashError(.image, "cannot send image \(path) (\(layout.wholeSize ?? layout.expandedSize) bytes) in pieces of max-download-size \(maxDownloadBytes) bytes: a piece needs at least \(minimum) bytes (one \(blockSize)-byte block plus sparse headers)")
        }
        let pieces = try split(layout.chunks, blockSize: blockSize, totalBlocks: layout.totalBlocks, limit: limit, path: path)
        return DownloadPlan(pieces: pieces, isResparsed: true)
    }

    // MARK: - Splitting

    struct PlanChunk {
        enum Kind {
            /// Blocks read from the file from `dataOffset`; bytes at or past `dataEnd` are zeros
            /// (the padded last block of a raw image).
            case raw(dataOffset: Int64, dataEnd: Int64)
            case fill(UInt32)
            case dontCare
        }

        var kind: Kind
        var first: Int64
        var count: Int64
        var end: Int64 { first + count }
        var isDontCare: Bool {
            if case .dontCare = kind { return true }
            return false
        }
    }

    /// A chunk placed in a piece: all or part (`first..<first+count`) of a source chunk.
    private struct Placed {
        var source: PlanChunk
        var first: Int64
        var count: Int64
    }

    private static let chunkHeader = Int64(SparseFormat.chunkHeaderSize)

    private static func cost(of chunk: PlanChunk, blocks: Int64, blockSize: Int64) -> Int64 {
        switch chunk.kind {
        case .raw: return chunkHeader + blocks * blockSize
        case .fill: return chunkHeader + 4
        case .dontCare: return chunkHeader
        }
    }

    static func split(_ chunks: [PlanChunk], blockSize: Int64, totalBlocks: Int64, limit: Int64, path: String) throws -> [[ByteSegment]] {
        var pieces: [[ByteSegment]] = []
        var index = 0
        var position: Int64 = 0
        while true {
            // What a piece would start with and carries nothing is folded into its leading skip.
            while index < chunks.count, chunks[index].isDontCare || chunks[index].end <= position {
                position = max(position, chunks[index].end)
                index += 1
            }
            if index == chunks.count { break }

            var placed: [Placed] = []
            var size = Int64(SparseFormat.fileHeaderSize) + (position > 0 ? chunkHeader : 0)
            let start = position
            var carried = false
            while index < chunks.count {
                let chunk = chunks[index]
                let blocks = chunk.end - position
                if blocks <= 0 {
                    index += 1
                    continue
                }
                let trailing = chunk.end == totalBlocks ? 0 : chunkHeader
                let whole = cost(of: chunk, blocks: blocks, blockSize: blockSize)
                if size + whole + trailing <= limit {
                    placed.append(Placed(source: chunk, first: position, count: blocks))
                    size += whole
                    position = chunk.end
                    index += 1
                    if !chunk.isDontCare { carried = true }
                    continue
                }
                if case .raw = chunk.kind {
                    // A part of a RAW chunk never reaches the end, so a trailing skip is needed.
                    let fitting = (limit - size - chunkHeader - chunkHeader) / blockSize
                    if fitting >= 1 {
                        placed.append(Placed(source: chunk, first: position, count: fitting))
                        size += cost(of: chunk, blocks: fitting, blockSize: blockSize)
                        position += fitting
                        carried = true
                    }
                }
                break
            }
            guard carried else {
                throw FlashError(.image, "cannot send image \(path) in pieces of max-download-size \(limit) bytes: nothing fits in a piece starting at block \(start)")
            }
            pieces.append(encode(placed, start: start, blockSize: blockSize, totalBlocks: totalBlocks))
        }
        if pieces.isEmpty {
            // Only DONT_CARE chunks: one piece that says so keeps the device's view consistent.
            pieces.append(encode([], start: totalBlocks, blockSize: blockSize, totalBlocks: totalBlocks))
        }
        return pieces
    }

    /// One complete sparse image: header, skip to `start`, the placed chunks, skip to the end.
    /// Neighbouring DONT_CARE chunks are merged.
    private static func encode(_ placed: [Placed], start: Int64, blockSize: Int64, totalBlocks: Int64) -> [ByteSegment] {
        var body: [ByteSegment] = []
        var chunkCount: UInt32 = 0
        var pendingSkip: Int64 = start
        var position = start

        func flushSkip() {
            guard pendingSkip > 0 else { return }
            body.append(.bytes(SparseFormat.chunkHeader(type: SparseFormat.chunkTypeDontCare, blocks: UInt32(pendingSkip), totalSize: UInt32(chunkHeader))))
            chunkCount += 1
            pendingSkip = 0
        }

        for part in placed {
            position = part.first + part.count
            switch part.source.kind {
            case .dontCare:
                pendingSkip += part.count
            case .fill(let value):
                flushSkip()
                var header = SparseFormat.chunkHeader(type: SparseFormat.chunkTypeFill, blocks: UInt32(part.count), totalSize: UInt32(chunkHeader + 4))
                ImageBytes.appendLE32(value, to: &header)
                body.append(.bytes(header))
                chunkCount += 1
            case .raw(let dataOffset, let dataEnd):
                flushSkip()
                let length = part.count * blockSize
                body.append(.bytes(SparseFormat.chunkHeader(type: SparseFormat.chunkTypeRaw, blocks: UInt32(part.count), totalSize: UInt32(chunkHeader + length))))
                chunkCount += 1
                let from = dataOffset + (part.first - part.source.first) * blockSize
                let inFile = max(0, min(length, dataEnd - from))
                if inFile > 0 {
                    body.append(.file(offset: from, length: inFile))
                }
                if inFile < length {
                    body.append(.bytes([UInt8](repeating: 0, count: Int(length - inFile))))
                }
            }
        }
        pendingSkip += totalBlocks - position
        flushSkip()
        let header = SparseFormat.fileHeader(blockSize: UInt32(blockSize), totalBlocks: UInt32(totalBlocks), totalChunks: chunkCount)
        return [.bytes(header)] + body
    }
}
