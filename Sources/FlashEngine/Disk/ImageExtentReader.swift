import Crypto

/// The bytes an image puts on a disk, as pieces (target offset, bytes) in increasing offset
/// order. Gaps between pieces are left as they are on the disk (bmap-unmapped ranges, sparse
/// DONT_CARE chunks).
public protocol ImageExtentReader: AnyObject {
    /// Fills the start of `buffer` with the next piece; nil at the end. A piece never crosses a
    /// block-map range, so each range's checksum is checked before its last piece is handed on.
    func next(into buffer: UnsafeMutableRawBufferPointer) throws -> (offset: Int64, count: Int)?
    /// Bytes that will be written in all, when known beforehand.
    var totalBytes: Int64? { get }
    /// Share of the input read so far (0...1): progress when `totalBytes` is unknown.
    var inputFraction: Double { get }
    /// Size of the image on the disk (the end of its last byte), when known beforehand.
    var imageSize: Int64? { get }
}

/// A raw image read in order (from a file or a decompressor), all of it or only the ranges of a
/// block map, whose checksums are checked as the bytes go by.
///
/// With a block map, the ranges ahead are announced to the stream (`willRead`): the system's own
/// read-ahead stops at each hole, so without it a file's next range would be fetched only once
/// the current one is hashed, and the disk would wait for the CPU and the CPU for the disk.
public final class StreamExtentReader: ImageExtentReader {
    /// Mapped bytes announced ahead of those read, in steps of `announceStep`.
    static let announceAhead: Int64 = 16 << 20
    static let announceStep: Int64 = 4 << 20

    private let stream: SkippableStream
    private let map: BlockMap?
    private let knownSize: Int64?
    private var position: Int64 = 0
    private var rangeIndex = 0
    private var rangeHash: RangeHasher?
    private let checksRanges: Bool
    private var mappedRead: Int64 = 0
    private var mappedAnnounced: Int64 = 0
    private var announcedRange = 0
    private var announcedThrough: Int64 = 0

    /// `size` is the raw image's size when known (file size, zip entry size). `checksRanges`
    /// false skips the block map's per-range checksums (bmaptool's `--no-verify`).
    public init(stream: SkippableStream, size: Int64?, map: BlockMap?, checksRanges: Bool = true) {
        self.stream = stream
        self.map = map
        knownSize = size
        self.checksRanges = checksRanges
    }

    public var totalBytes: Int64? { map?.mappedBytes ?? knownSize }
    public var imageSize: Int64? { map?.imageSize ?? knownSize }
    public var inputFraction: Double { stream.inputFraction }

    public func next(into buffer: UnsafeMutableRawBufferPointer) throws -> (offset: Int64, count: Int)? {
        guard let map else {
            let n = try stream.read(into: buffer)
            guard n > 0 else { return nil }
            defer { position += Int64(n) }
            return (position, n)
        }
        guard rangeIndex < map.ranges.count else { return nil }
        announceAhead(map)
        let range = map.ranges[rangeIndex]
        let (start, length) = map.byteRange(of: range)
        if position < start {
            let skipped = try stream.skip(start - position)
            position += skipped
            guard position == start else { throw endedEarly(map) }
        }
        if rangeHash == nil, checksRanges { rangeHash = RangeHasher(map.checksumType) }
        let want = Int(min(Int64(buffer.count), start + length - position))
        let n = try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
        guard n == want else { throw endedEarly(map) }
        rangeHash?.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        let offset = position
        position += Int64(n)
        mappedRead += Int64(n)
        if position == start + length {
            if let expected = range.checksum, let actual = rangeHash?.finalize(), actual != expected {
                throw FlashError(.image, "the image does not match its block map \(map.path): blocks \(range.first)-\(range.last) have checksum \(actual), the map says \(expected)")
            }
            rangeHash = nil
            rangeIndex += 1
        }
        return (offset, n)
    }

    private func announceAhead(_ map: BlockMap) {
        while announcedRange < map.ranges.count, mappedAnnounced < mappedRead + Self.announceAhead {
            let (start, length) = map.byteRange(of: map.ranges[announcedRange])
            let from = max(start, announcedThrough)
            let count = max(0, min(start + length - from, Self.announceStep))
            if count > 0 { stream.willRead(from: from, count: count) }
            mappedAnnounced += count
            announcedThrough = from + count
            if announcedThrough >= start + length { announcedRange += 1 }
        }
    }

    private func endedEarly(_ map: BlockMap) -> FlashError {
        FlashError(.image, "the image ended at byte \(position), before the end of its block map \(map.path) (\(map.imageSize) bytes)")
    }
}

/// The SHA-256 or SHA-1 of one block-map range.
private struct RangeHasher {
    private var sha256: SHA256?
    private var sha1: Insecure.SHA1?

    init(_ type: BlockMap.ChecksumType) {
        switch type {
        case .sha256: sha256 = SHA256()
        case .sha1: sha1 = Insecure.SHA1()
        }
    }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        sha256?.update(bufferPointer: bytes)
        sha1?.update(bufferPointer: bytes)
    }

    func finalize() -> String {
        if let sha256 { return sha256.finalize().map { byteHex($0) }.joined() }
        return sha1.map { $0.finalize().map { byteHex($0) }.joined() } ?? ""
    }
}

func byteHex(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
}

/// An Android sparse image expanded: RAW chunks from the file, FILL chunks as their pattern,
/// DONT_CARE chunks left alone.
public final class SparseExtentReader: ImageExtentReader {
    private let image: SparseImage
    private let file: ImageDescriptor
    private var chunkIndex = 0
    private var doneInChunk: Int64 = 0
    private var consumed: Int64 = 0

    public init(_ image: SparseImage) throws {
        self.image = image
        file = try ImageDescriptor.open(path: image.path)
    }

    public var totalBytes: Int64? {
        image.chunks.reduce(0) { sum, chunk in
            switch chunk.kind {
            case .raw, .fill: return sum + chunk.blockCount * image.blockSize
            case .dontCare, .crc32: return sum
            }
        }
    }

    public var imageSize: Int64? { image.expandedSize }
    public var inputFraction: Double { image.expandedSize > 0 ? Double(consumed) / Double(image.expandedSize) : 1 }

    public func next(into buffer: UnsafeMutableRawBufferPointer) throws -> (offset: Int64, count: Int)? {
        while chunkIndex < image.chunks.count {
            let chunk = image.chunks[chunkIndex]
            let length = chunk.blockCount * image.blockSize
            let start = chunk.firstBlock * image.blockSize
            guard doneInChunk < length, chunk.kind != .dontCare, !isCRC(chunk) else {
                consumed = start + length
                chunkIndex += 1
                doneInChunk = 0
                continue
            }
            let n = Int(min(Int64(buffer.count), length - doneInChunk))
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
            switch chunk.kind {
            case .raw:
                try file.readExactly(into: part, at: chunk.dataOffset + doneInChunk)
            case .fill(let value):
                // Block sizes are multiples of 4, so the pattern stays aligned.
                var pattern = value.littleEndian
                for at in stride(from: 0, to: n, by: 4) {
                    withUnsafeBytes(of: &pattern) { part.baseAddress!.advanced(by: at).copyMemory(from: $0.baseAddress!, byteCount: 4) }
                }
            case .dontCare, .crc32:
                break
            }
            let offset = start + doneInChunk
            doneInChunk += Int64(n)
            consumed = offset + Int64(n)
            return (offset, n)
        }
        return nil
    }

    private func isCRC(_ chunk: SparseChunk) -> Bool {
        if case .crc32 = chunk.kind { return true }
        return false
    }
}
