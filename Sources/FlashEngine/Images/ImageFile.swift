#if canImport(Glibc)
import Glibc
#endif

/// An image chosen for flashing, checked before anything is sent: it exists, is readable and
/// not empty, and when it is an Android sparse image its headers are fully valid.
public struct ImageFile: Equatable, Sendable {
    /// The path as given.
    public let path: String
    /// Size of the file in bytes (for a sparse image: the sparse file, not its expanded size).
    public let size: Int64
    /// The parsed headers when the file is an Android sparse image.
    public let sparse: SparseImage?
    /// The file as it was checked.
    let identity: ImageIdentity

    public var isSparse: Bool { sparse != nil }

    /// Bytes the image describes once written: the expanded size for sparse images.
    public var expandedSize: Int64 { sparse?.expandedSize ?? size }

    init(path: String, size: Int64, sparse: SparseImage?, identity: ImageIdentity) {
        self.path = path
        self.size = size
        self.sparse = sparse
        self.identity = identity
    }

    /// Opens and checks the image at `path`: regular files and block devices are accepted.
    /// Throws `FlashError(.image, ...)` naming the path when it is missing, a directory,
    /// unreadable, empty, or a corrupt sparse image.
    public static func open(path: String) throws -> ImageFile {
        guard !path.isEmpty else {
            throw FlashError(.image, "no image path given")
        }
        var info = stat()
        if stat(path, &info) != 0 {
            throw ImageDescriptor.openError(path: path, errno: errno)
        }
        let type = info.st_mode & S_IFMT
        if type == S_IFDIR {
            throw FlashError(.image, "image is a directory, not a file: \(path)")
        }
        guard type == S_IFREG || type == S_IFBLK else {
            throw FlashError(.image, "image is not a regular file: \(path)")
        }
        do {
            return try check(path: path, isBlockDevice: type == S_IFBLK)
        } catch let error as FlashError where error.kind == .io {
            // Whatever fails while looking at the image is the image's problem for the user.
            throw FlashError(.image, error.message)
        }
    }

    private static func check(path: String, isBlockDevice: Bool) throws -> ImageFile {
        let file = try ImageDescriptor.open(path: path)
        let identity = ImageIdentity(try file.status())
        let size: Int64
        if isBlockDevice {
            let end = lseek(file.fd, 0, SEEK_END)
            guard end >= 0 else {
                throw FlashError(.image, "cannot read image \(path): \(errnoText(errno))")
            }
            size = Int64(end)
        } else {
            size = identity.size
        }
        guard size > 0 else {
            throw FlashError(.image, "image is empty: \(path)")
        }
        // Reading the first bytes also proves the file is really readable.
        var head = [UInt8](repeating: 0, count: 4)
        let got = try head.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: 0) }
        guard got > 0 else {
            throw FlashError(.image, "image is empty: \(path)")
        }
        if got == 4, ImageBytes.le32(head, 0) == SparseFormat.magic {
            let sparse = try SparseImage.parse(file, fileSize: size)
            return ImageFile(path: path, size: size, sparse: sparse, identity: identity)
        }
        return ImageFile(path: path, size: size, sparse: nil, identity: identity)
    }
}
