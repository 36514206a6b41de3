import CLibArchive
import CZlib
#if canImport(Glibc)
import Glibc
#endif

/// The decompressed bytes of a gzip, xz, zstd or bzip2 file, or of one file inside a zip, read
/// in order through libarchive.
///
/// Errors name the image and say what is wrong with it (truncated, corrupt), as `.image` errors.
/// xz, zstd and bzip2 check their own integrity as they decompress; libarchive does not check a
/// gzip file's CRC-32, so this stream does, against the trailer, at the end.
public final class DecompressedStream: ByteStream {
    public let path: String
    public let format: ImageFormat
    /// The zip entry being read.
    public let entryName: String?
    /// The decompressed size when the file records it (zip entry, xz index, zstd frame headers);
    /// nil when only reading to the end can tell.
    public let knownSize: Int64?
    /// Size of the compressed file.
    public let compressedSize: Int64
    /// libarchive for every format but xz, which liblzma decodes on several cores.
    private let archive: OpaquePointer?
    private let xz: XZDecoder?
    private var finished = false
    private var crc = crc32(0, nil, 0)
    private var produced: Int64 = 0

    /// Opens `path` (of `format`, one of the compressed ones); `entry` picks a file in a zip.
    public init(path: String, format: ImageFormat, entry: String? = nil) throws {
        precondition(format.isCompressed)
        var info = stat()
        guard stat(path, &info) == 0 else { throw ImageDescriptor.openError(path: path, errno: errno) }
        self.path = path
        self.format = format
        compressedSize = Int64(info.st_size)
        if format == .xz {
            archive = nil
            xz = try XZDecoder(path: path)
            entryName = nil
            knownSize = Self.recordedSize(path: path, format: format)
            return
        }
        guard let archive = archive_read_new() else { throw FlashError(.io, "libarchive could not start") }
        self.archive = archive
        xz = nil
        if format == .zip {
            archive_read_support_format_zip(archive)
        } else {
            archive_read_support_filter_all(archive)
            archive_read_support_format_raw(archive)
        }
        do {
            guard archive_read_open_filename(archive, path, 1 << 20) == ARCHIVE_OK else {
                throw Self.corrupt(path, archive, "cannot be opened")
            }
            let found = try Self.selectEntry(archive, path: path, format: format, wanted: entry)
            entryName = found.name
            knownSize = found.size ?? Self.recordedSize(path: path, format: format)
        } catch {
            archive_read_free(archive)
            throw error
        }
    }

    deinit {
        if let archive { archive_read_free(archive) }
    }

    /// Compressed bytes consumed so far: progress for images whose decompressed size is unknown.
    public var compressedBytesRead: Int64 {
        guard let archive else { return xz?.compressedBytesRead ?? 0 }
        return Int64(archive_filter_bytes(archive, -1))
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard !finished, let base = buffer.baseAddress else { return 0 }
        guard let archive else {
            let n = try xz?.read(into: buffer) ?? 0
            produced += Int64(n)
            return n
        }
        var done = 0
        while done < buffer.count {
            let n = archive_read_data(archive, base + done, buffer.count - done)
            if n < 0 { throw Self.corrupt(path, archive, "is corrupt or truncated") }
            if n == 0 {
                finished = true
                if format == .gzip { try checkGzipTrailer() }
                break
            }
            if format == .gzip { crc = crc32(crc, (base + done).assumingMemoryBound(to: Bytef.self), uInt(n)) }
            produced += Int64(n)
            done += n
        }
        return done
    }

    /// The last 8 bytes of a gzip file: CRC-32 and size (mod 2^32) of the data (of its last
    /// member; files made by concatenating several gzip files are checked by their last part only
    /// when it is the whole, which is what gzip, pigz and zopfli write).
    private func checkGzipTrailer() throws {
        let file = try ImageDescriptor.open(path: path)
        guard compressedSize >= 18 else { return }
        let trailer = try file.readBytes(8, at: compressedSize - 8)
        let expectedCRC = ImageBytes.le32(trailer, 0)
        let expectedSize = ImageBytes.le32(trailer, 4)
        guard expectedCRC == UInt32(crc), expectedSize == UInt32(truncatingIfNeeded: produced) else {
            throw FlashError(.image, "image \(path) is corrupt: the data's CRC-32 does not match the gzip trailer")
        }
    }

    /// The decompressed size an xz or zstd file records, or nil.
    private static func recordedSize(path: String, format: ImageFormat) -> Int64? {
        guard let file = try? ImageDescriptor.open(path: path), let size = try? file.status().st_size else { return nil }
        switch format {
        case .xz: return XZIndexSize.of(file, fileSize: Int64(size))
        case .zstd: return ZstdContentSize.of(file, fileSize: Int64(size))
        default: return nil
        }
    }

    /// Moves `archive` to the start of the data to read: the only entry of a compressed file, or
    /// the chosen file of a zip (`wanted`, or the only file there is).
    private static func selectEntry(_ archive: OpaquePointer, path: String, format: ImageFormat, wanted: String?) throws -> (name: String?, size: Int64?) {
        guard format == .zip else {
            try nextHeader(archive, path: path)
            return (nil, nil)
        }
        let files = try zipFiles(path)
        let pick: (name: String, size: Int64?)
        if let wanted {
            guard let match = files.first(where: { $0.name == wanted }) ?? files.first(where: { $0.name.split(separator: "/").last.map(String.init) == wanted }) else {
                throw FlashError(.image, "\(path) has no file '\(wanted)'; it holds: \(files.map(\.name).joined(separator: ", "))")
            }
            pick = match
        } else {
            guard files.count == 1, let only = files.first else {
                if files.isEmpty { throw FlashError(.image, "\(path) holds no file") }
                throw FlashError(.image, "\(path) holds several files (\(files.map(\.name).joined(separator: ", "))): name the image with --entry NAME")
            }
            pick = only
        }
        while true {
            let entry = try nextHeader(archive, path: path)
            if archive_entry_pathname(entry).map({ String(cString: $0) }) == pick.name { return pick }
            archive_read_data_skip(archive)
        }
    }

    /// The regular files in a zip, with their sizes when recorded.
    static func zipFiles(_ path: String) throws -> [(name: String, size: Int64?)] {
        guard let archive = archive_read_new() else { throw FlashError(.io, "libarchive could not start") }
        defer { archive_read_free(archive) }
        archive_read_support_format_zip(archive)
        guard archive_read_open_filename(archive, path, 1 << 16) == ARCHIVE_OK else {
            throw corrupt(path, archive, "cannot be opened")
        }
        var files: [(name: String, size: Int64?)] = []
        while let entry = try nextHeader(archive, path: path, allowEnd: true) {
            if archive_entry_filetype(entry) == S_IFREG {
                let name = archive_entry_pathname(entry).map { String(cString: $0) } ?? ""
                files.append((name, archive_entry_size_is_set(entry) != 0 ? Int64(archive_entry_size(entry)) : nil))
            }
            archive_read_data_skip(archive)
        }
        return files
    }

    @discardableResult
    private static func nextHeader(_ archive: OpaquePointer, path: String) throws -> OpaquePointer {
        guard let entry = try nextHeader(archive, path: path, allowEnd: false) else {
            throw FlashError(.image, "image \(path) holds no data")
        }
        return entry
    }

    private static func nextHeader(_ archive: OpaquePointer, path: String, allowEnd: Bool) throws -> OpaquePointer? {
        var entry: OpaquePointer?
        let status = archive_read_next_header(archive, &entry)
        if status == ARCHIVE_EOF, allowEnd { return nil }
        guard status == ARCHIVE_OK || status == ARCHIVE_WARN, let entry else {
            throw corrupt(path, archive, "is corrupt or truncated")
        }
        return entry
    }

    static func corrupt(_ path: String, _ archive: OpaquePointer, _ what: String) -> FlashError {
        let detail = archive_error_string(archive).map { String(cString: $0) } ?? "unknown error"
        return FlashError(.image, "image \(path) \(what): \(detail)")
    }
}
