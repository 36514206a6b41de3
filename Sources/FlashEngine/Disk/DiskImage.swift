import Foundation

/// An image opened for writing to disks: its format found by content, the block map given or
/// found beside it, and a reader of the pieces to write. Everything that can be wrong with the
/// image and its map is found here, before any target is opened.
public struct DiskImage {
    public let path: String
    public let format: ImageFormat
    public let blockMap: BlockMap?
    /// The zip entry read, for a zip.
    public let entry: String?
    let makeReader: () throws -> ImageExtentReader
    /// Bytes to write (mapped bytes with a block map), when known beforehand.
    public let totalBytes: Int64?
    /// The size the image needs on the disk, when known beforehand.
    public let imageSize: Int64?
    /// True for an Android sparse image inside a compressed file (expanded as it is read).
    public var isCompressedSparse = false

    /// `bmapPath` nil: a block map beside the image is used if there is one (as bmaptool looks:
    /// `os.img.xz.bmap`, `os.img.bmap`, `os.bmap`); `noBmap` ignores it. `checksRanges` false
    /// skips the map's per-range checksums (with `--no-verify`, as bmaptool's `--no-verify` does).
    public static func open(path: String, bmapPath: String? = nil, noBmap: Bool = false, entry: String? = nil, checksRanges: Bool = true) throws -> DiskImage {
        let checked = try ImageFile.open(path: path)
        let head = try ImageDescriptor.open(path: path).readBytesAvailable(6)
        let format = ImageFormat.detect(head)
        let mapPath = noBmap ? nil : (bmapPath ?? findBlockMap(beside: path))
        let map = try mapPath.map { try BlockMap.load(path: $0) }
        if entry != nil, format != .zip {
            throw FlashError(.image, "--entry names a file inside a zip, and \(path) is \(format.rawValue), not a zip")
        }

        switch format {
        case .androidSparse:
            guard let sparse = checked.sparse else { throw FlashError(.image, "\(path) is not a valid Android sparse image") }
            if let mapPath, bmapPath != nil { throw sparseWithMapError(path, mapPath) }
            let reader = try SparseExtentReader(sparse)
            return DiskImage(path: path, format: format, blockMap: nil, entry: nil, makeReader: { try SparseExtentReader(sparse) }, totalBytes: reader.totalBytes, imageSize: sparse.expandedSize)
        case .raw:
            try check(map, against: checked.size, path: path)
            let size = checked.size
            return DiskImage(path: path, format: format, blockMap: map, entry: nil,
                             makeReader: { StreamExtentReader(stream: try FileStream(path: path), size: size, map: map, checksRanges: checksRanges) },
                             totalBytes: map?.mappedBytes ?? size, imageSize: map?.imageSize ?? size)
        default:
            let probe = try DecompressedStream(path: path, format: format, entry: entry)
            let chosen = probe.entryName
            var head = [UInt8](repeating: 0, count: 4)
            if try head.withUnsafeMutableBytes({ try probe.read(into: $0) }) == 4, ImageBytes.le32(head, 0) == SparseFormat.magic {
                // An Android sparse image inside the compressed file: expanded as it is read.
                if let mapPath, bmapPath != nil { throw sparseWithMapError(path, mapPath) }
                let sparse = try SparseStreamExtentReader(stream: DecompressedStream(path: path, format: format, entry: chosen), path: path)
                return DiskImage(path: path, format: format, blockMap: nil, entry: chosen,
                                 makeReader: { try SparseStreamExtentReader(stream: DecompressedStream(path: path, format: format, entry: chosen), path: path) },
                                 totalBytes: nil, imageSize: sparse.imageSize, isCompressedSparse: true)
            }
            if let known = probe.knownSize { try check(map, against: known, path: path) }
            let size = probe.knownSize
            return DiskImage(path: path, format: format, blockMap: map, entry: chosen,
                             makeReader: { StreamExtentReader(stream: try DecompressedStream(path: path, format: format, entry: chosen), size: size, map: map, checksRanges: checksRanges) },
                             totalBytes: map?.mappedBytes ?? size, imageSize: map?.imageSize ?? size)
        }
    }

    static func check(_ map: BlockMap?, against size: Int64, path: String) throws {
        guard let map, map.imageSize != size else { return }
        throw FlashError(.image, "the block map \(map.path) describes an image of \(map.imageSize) bytes, but \(path) holds \(size) bytes: it belongs to another image")
    }

    static func sparseWithMapError(_ path: String, _ mapPath: String) -> FlashError {
        FlashError(.image, "\(path) is an Android sparse image, which maps its own blocks: a block map (\(mapPath)) does not apply")
    }

    static func findBlockMap(beside path: String) -> String? {
        var base = path
        while true {
            let candidate = base + ".bmap"
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            let trimmed = (base as NSString).deletingPathExtension
            if trimmed == base || trimmed.isEmpty || trimmed.hasSuffix("/") { return nil }
            base = trimmed
        }
    }
}

extension ImageDescriptor {
    /// Up to `count` bytes from the start of the file.
    func readBytesAvailable(_ count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { try readAvailable(into: $0, at: 0) }
        return Array(bytes.prefix(n))
    }
}
