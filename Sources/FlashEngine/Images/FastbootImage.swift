import Foundation
import Synchronization

/// An image opened for a fastboot device: its format found by content, a block map given or
/// found beside it, a zip entry chosen. Raw and Android sparse files are read where they lie;
/// compressed images and images with a block map are read once, in order, and streamed into the
/// downloads (sparse pieces when they do not fit in one, unmapped blocks as DONT_CARE).
///
/// Everything that can be wrong with the image and its map beforehand is found by `open`.
public final class FastbootImage: @unchecked Sendable {
    enum Content {
        /// A raw or Android sparse file sent from where it lies.
        case file(ImageFile)
        /// A raw image read in order: decompressed, or a file checked against its block map.
        /// `size` nil: only reading it all can tell.
        case rawStream(size: Int64?, map: BlockMap?, open: @Sendable () throws -> SkippableStream)
        /// An Android sparse image inside a compressed file.
        case sparseStream(open: @Sendable () throws -> SkippableStream)
    }

    public let path: String
    public let format: ImageFormat
    public let blockMap: BlockMap?
    /// The zip entry read, for a zip.
    public let entry: String?
    /// True when the image inside a compressed file is an Android sparse image.
    public let isCompressedSparse: Bool
    let content: Content
    /// A raw file's chunks once read for FILL blocks.
    private let scannedChunks = Mutex<[SparsePlanner.PlanChunk]?>(nil)

    private init(path: String, format: ImageFormat, blockMap: BlockMap?, entry: String?, content: Content) {
        self.path = path
        self.format = format
        self.blockMap = blockMap
        self.entry = entry
        self.content = content
        if case .sparseStream = content { isCompressedSparse = true } else { isCompressedSparse = false }
    }

    /// `bmapPath` nil: a block map beside the image is used if there is one (as bmaptool looks);
    /// `noBmap` ignores it. `entry` names a file inside a zip.
    public static func open(path: String, bmapPath: String? = nil, noBmap: Bool = false, entry: String? = nil) throws -> FastbootImage {
        let image = try OpenedImage.open(path: path, bmapPath: bmapPath, noBmap: noBmap, entry: entry)
        let content: Content
        switch image.content {
        case .sparseFile(let file), .rawFile(let file, map: .none):
            content = .file(file)
        case .rawFile(let file, let map):
            content = .rawStream(size: file.size, map: map) { try image.identity.opening(path) { try FileStream(path: path) } }
        case .compressedRaw(let size, let map, let open):
            content = .rawStream(size: map?.imageSize ?? size, map: map, open: open)
        case .compressedSparse(let open):
            content = .sparseStream(open: open)
        }
        return FastbootImage(path: path, format: image.format, blockMap: image.blockMap, entry: image.entry, content: content)
    }

    /// The last part of `path`: "system.img".
    public var fileName: String { path.split(separator: "/").last.map(String.init) ?? path }

    /// Bytes the job will send, as far as is known before planning (for early progress).
    public var estimatedBytes: Int64 {
        switch content {
        case .file(let file): return file.size
        case .rawStream(let size, let map, _): return map?.mappedBytes ?? size ?? compressedSize
        case .sparseStream: return compressedSize
        }
    }

    /// True when the image must be read once before anything can be sent, to learn its size
    /// (or its chunks, for a sparse image inside a compressed file).
    public var needsMeasuring: Bool {
        switch content {
        case .file: return false
        case .rawStream(let size, _, _): return size == nil
        case .sparseStream: return true
        }
    }

    private var compressedSize: Int64 {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : 0
    }

    /// Reads the image once when `needsMeasuring`, calling `checkCancelled` as it goes, and
    /// returns the layout the downloads are planned over.
    func layout(checkCancelled: () throws -> Void) throws -> SparsePlanner.BlockLayout {
        switch content {
        case .file(let file):
            return try SparsePlanner.layout(of: file)
        case .rawStream(let size, let map, let open):
            if let map { return try SparsePlanner.blockMapLayout(map) }
            if let size { return try SparsePlanner.rawLayout(size: size, path: path) }
            // Read once to learn its size; its empty blocks are found on the way, for when it
            // has to be cut into sparse pieces.
            let found = try RawFillScanner.chunks(of: try open(), blockSize: SparsePlanner.rawBlockSize, checkCancelled: checkCancelled)
            scannedChunks.withLock { $0 = found.chunks }
            return try SparsePlanner.rawLayout(size: found.size, path: path)
        case .sparseStream(let open):
            let sparse = try SparseStreamScanner.scan(try open(), path: path, checkCancelled: checkCancelled)
            // Its CRC32 chunks are checked in a second pass, before anything is sent.
            if sparse.hasCRCChunks { try SparseCRC.verify(sparse, stream: open()) }
            return SparsePlanner.sparseLayout(sparse, wholeSize: sparse.fileSize)
        }
    }

    /// The downloads of this image for a device that takes `maxDownloadBytes` at a time, over
    /// `layout` (from `layout(checkCancelled:)`). An image that fits is sent unchanged. A raw image
    /// that does not (a file, or decompressed) is cut into sparse pieces with its blocks of one
    /// repeated value as FILL chunks: it is read once for that first (`scanning` is called
    /// before), and only once per image whatever the number of partitions or plans.
    func downloads(for layout: SparsePlanner.BlockLayout, maxDownloadBytes: Int64, checkCancelled: () throws -> Void, scanning: () -> Void) throws -> DownloadPlan {
        var layout = layout
        if let whole = layout.wholeSize, whole > min(maxDownloadBytes, Int64(UInt32.max)),
           let chunks = try fillChunks(blockSize: layout.blockSize, checkCancelled: checkCancelled, scanning: scanning) {
            layout.chunks = chunks
        }
        return try SparsePlanner.downloads(for: layout, maxDownloadBytes: maxDownloadBytes, path: path)
    }

    /// A raw image's RAW and FILL chunks, read once and kept; nil for an image that is not plain
    /// raw (an Android sparse image has its own chunks; a block map says what to leave out).
    private func fillChunks(blockSize: Int64, checkCancelled: () throws -> Void, scanning: () -> Void) throws -> [SparsePlanner.PlanChunk]? {
        if let known = scannedChunks.withLock({ $0 }) { return known }
        let chunks: [SparsePlanner.PlanChunk]
        switch content {
        case .file(let file) where file.sparse == nil:
            scanning()
            let held = try HeldImageFile(path: file.path, expected: file.identity)
            chunks = try RawFillScanner.chunks(of: held.descriptor, size: file.size, blockSize: blockSize, checkCancelled: checkCancelled)
        case .rawStream(let size, nil, let open):
            scanning()
            let found = try RawFillScanner.chunks(of: try open(), blockSize: blockSize, checkCancelled: checkCancelled)
            if let size, found.size != size {
                throw FlashError(.image, "image \(path) holds \(found.size) bytes once decompressed, not the \(size) bytes its header says: the file is damaged")
            }
            chunks = found.chunks
        default:
            return nil
        }
        scannedChunks.withLock { $0 = chunks }
        return chunks
    }

    /// What the downloads' `.file` segments are read from, for one job.
    func openSource() -> ImagePieceSource {
        switch content {
        case .file(let file):
            // Held for all of the job's downloads of this image; when it cannot be opened now (or
            // is not the file checked), each reader tries and says why.
            return .file(path: file.path, expected: file.identity, held: try? HeldImageFile(path: file.path, expected: file.identity))
        case .rawStream(let size, let map, let open):
            return .stream(StreamedImageSource(path: path) { StreamExtentReader(stream: try open(), size: size, map: map) })
        case .sparseStream(let open):
            return .stream(StreamedImageSource(path: path) { StreamExtentReader(stream: try open(), size: nil, map: nil) })
        }
    }
}

/// Where one job's downloads read their image data from.
enum ImagePieceSource {
    /// The file itself, held open for the job and read ahead by a `SegmentReader` per download.
    case file(path: String, expected: ImageIdentity?, held: HeldImageFile?)
    /// One in-order stream shared by all downloads.
    case stream(StreamedImageSource)

    func reader(for segments: [ByteSegment]) -> (stream: ByteStream, close: () -> Void) {
        switch self {
        case .file(let path, let expected, let held):
            let reader = SegmentReader(path: path, segments: segments, file: held, expected: expected)
            return (reader, reader.close)
        case .stream(let source):
            return (PlannedPieceStream(segments: segments, source: source), {})
        }
    }

    func close() {
        if case .stream(let source) = self { source.close() }
    }
}
