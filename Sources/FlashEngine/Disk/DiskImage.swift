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
        let image = try OpenedImage.open(path: path, bmapPath: bmapPath, noBmap: noBmap, entry: entry)
        let map = image.blockMap
        switch image.content {
        case .sparseFile(let file):
            guard let sparse = file.sparse else { throw FlashError(.image, "\(path) is not a valid Android sparse image") }
            let reader = try SparseExtentReader(sparse)
            return DiskImage(path: path, format: image.format, blockMap: nil, entry: nil, makeReader: { try image.identity.opening(path) { try SparseExtentReader(sparse) } },
                             totalBytes: reader.totalBytes, imageSize: sparse.expandedSize)
        case .rawFile(let file, _):
            let size = file.size
            return DiskImage(path: path, format: image.format, blockMap: map, entry: nil,
                             makeReader: { StreamExtentReader(stream: try image.identity.opening(path) { try FileStream(path: path) }, size: size, map: map, checksRanges: checksRanges) },
                             totalBytes: map?.mappedBytes ?? size, imageSize: map?.imageSize ?? size)
        case .compressedSparse(let open):
            let sparse = try SparseStreamExtentReader(stream: open(), path: path)
            return DiskImage(path: path, format: image.format, blockMap: nil, entry: image.entry,
                             makeReader: { try SparseStreamExtentReader(stream: open(), path: path) },
                             totalBytes: nil, imageSize: sparse.imageSize, isCompressedSparse: true)
        case .compressedRaw(let size, _, let open):
            return DiskImage(path: path, format: image.format, blockMap: map, entry: image.entry,
                             makeReader: { StreamExtentReader(stream: try open(), size: size, map: map, checksRanges: checksRanges) },
                             totalBytes: map?.mappedBytes ?? size, imageSize: map?.imageSize ?? size)
        }
    }
}
