#if canImport(Glibc)
import Glibc
#endif

/// Which file an image was when a job checked it, and in what state: its device and inode, size
/// and modification time. A job plans its downloads or writes from what it read then (size,
/// sparse chunks, block map); a file replaced or rewritten before it is read for sending must
/// not be sent against that plan.
struct ImageIdentity: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64
    let size: Int64
    let modifiedSeconds: Int
    let modifiedNanoseconds: Int

    init(_ status: stat) {
        device = UInt64(status.st_dev)
        inode = UInt64(status.st_ino)
        size = Int64(status.st_size)
        modifiedSeconds = status.st_mtim.tv_sec
        modifiedNanoseconds = status.st_mtim.tv_nsec
    }

    /// Throws when the file opened as `descriptor` is not this one any more.
    func check(_ descriptor: ImageDescriptor) throws {
        guard ImageIdentity(try descriptor.status()) == self else { throw Self.changedError(path: descriptor.path) }
    }

    /// Throws when the file at `path` is not this one any more. Called just after a reader opened
    /// `path`, so that what it opened is what was checked.
    func check(path: String) throws {
        var status = stat()
        guard fstatat(AT_FDCWD, path, &status, 0) == 0 else { throw ImageDescriptor.openError(path: path, errno: errno) }
        guard ImageIdentity(status) == self else { throw Self.changedError(path: path) }
    }

    /// Makes a reader of the file at `path` and checks that it read the file the job checked.
    func opening<Reader>(_ path: String, _ makeReader: () throws -> Reader) throws -> Reader {
        let reader = try makeReader()
        try check(path: path)
        return reader
    }

    static func changedError(path: String) -> FlashError {
        FlashError(.image, "image \(path) changed after the job checked it (it was replaced or rewritten): start the job again to flash the new file")
    }
}
