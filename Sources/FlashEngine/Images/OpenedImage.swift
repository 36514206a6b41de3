import Foundation

/// An image file found out once, the same way for every target (a fastboot partition, a disk):
/// its format by content (not by name), the block map given or found beside it (as bmaptool
/// looks), the zip entry, and what it holds. Everything that can be wrong with the image and its
/// map before a byte is read for writing is found here.
struct OpenedImage {
    enum Content {
        /// An Android sparse file, read where it lies.
        case sparseFile(ImageFile)
        /// A raw file, with the block map that limits what is written.
        case rawFile(ImageFile, map: BlockMap?)
        /// A raw image inside a compressed file; `size` nil when only reading it all can tell.
        case compressedRaw(size: Int64?, map: BlockMap?, open: @Sendable () throws -> SkippableStream)
        /// An Android sparse image inside a compressed file, expanded as it is read.
        case compressedSparse(open: @Sendable () throws -> SkippableStream)
    }

    let path: String
    /// The file as it was checked: every reader made later opens this file or throws.
    let identity: ImageIdentity
    let format: ImageFormat
    /// The zip entry read, for a zip.
    let entry: String?
    let content: Content

    var blockMap: BlockMap? {
        switch content {
        case .rawFile(_, let map), .compressedRaw(_, let map, _): return map
        case .sparseFile, .compressedSparse: return nil
        }
    }

    /// `bmapPath` nil: a block map beside the image is used if there is one (`os.img.xz.bmap`,
    /// `os.img.bmap`, `os.bmap`); `noBmap` ignores it. `entry` names a file inside a zip.
    static func open(path: String, bmapPath: String?, noBmap: Bool, entry: String?) throws -> OpenedImage {
        let checked = try ImageFile.open(path: path)
        let format = ImageFormat.detect(try ImageDescriptor.open(path: path).readBytesAvailable(6))
        if entry != nil, format != .zip {
            throw FlashError(.image, "--entry names a file inside a zip, and \(path) is \(format.rawValue), not a zip")
        }
        let mapPath = noBmap ? nil : (bmapPath ?? findBlockMap(beside: path))
        let map = try mapPath.map { try BlockMap.load(path: $0) }
        // A sparse image maps its own blocks: a map found beside it is ignored, one given is an error.
        let refuseGivenMap = {
            if let mapPath, bmapPath != nil {
                throw FlashError(.image, "\(path) is an Android sparse image, which maps its own blocks: a block map (\(mapPath)) does not apply")
            }
        }

        switch format {
        case .androidSparse:
            try refuseGivenMap()
            if let sparse = checked.sparse, sparse.hasCRCChunks {
                try SparseCRC.verify(sparse, stream: FileStream(path: path))
            }
            return OpenedImage(path: path, identity: checked.identity, format: format, entry: nil, content: .sparseFile(checked))
        case .raw:
            try check(map, against: checked.size, path: path)
            return OpenedImage(path: path, identity: checked.identity, format: format, entry: nil, content: .rawFile(checked, map: map))
        default:
            let probe = try DecompressedStream(path: path, format: format, entry: entry)
            let chosen = probe.entryName
            let identity = checked.identity
            let open: @Sendable () throws -> SkippableStream = { try identity.opening(path) { try DecompressedStream(path: path, format: format, entry: chosen) } }
            var head = [UInt8](repeating: 0, count: 4)
            if try head.withUnsafeMutableBytes({ try probe.read(into: $0) }) == 4, ImageBytes.le32(head, 0) == SparseFormat.magic {
                try refuseGivenMap()
                return OpenedImage(path: path, identity: checked.identity, format: format, entry: chosen, content: .compressedSparse(open: open))
            }
            if let known = probe.knownSize { try check(map, against: known, path: path) }
            return OpenedImage(path: path, identity: checked.identity, format: format, entry: chosen, content: .compressedRaw(size: probe.knownSize, map: map, open: open))
        }
    }

    private static func check(_ map: BlockMap?, against size: Int64, path: String) throws {
        guard let map, map.imageSize != size else { return }
        throw FlashError(.image, "the block map \(map.path) describes an image of \(map.imageSize) bytes, but \(path) holds \(size) bytes: it belongs to another image")
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
