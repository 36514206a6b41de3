#if canImport(Glibc)
import Glibc
#endif

/// An image file held open for every download of a job, with its size and modification time
/// when it was opened: every piece reads the same file even if the path is given another file
/// meanwhile, and a file rewritten in place is noticed instead of reaching the device as a mix
/// of old and new bytes.
final class HeldImageFile: @unchecked Sendable {
    let path: String
    let descriptor: ImageDescriptor
    private let size: Int64
    private let modified: timespec

    init(path: String) throws {
        self.path = path
        descriptor = try ImageDescriptor.open(path: path)
        let status = try descriptor.status()
        size = Int64(status.st_size)
        modified = status.st_mtim
    }

    /// Throws when the file's size or modification time changed since it was opened.
    func checkUnchanged() throws {
        let now = try descriptor.status()
        guard Int64(now.st_size) == size, now.st_mtim.tv_sec == modified.tv_sec, now.st_mtim.tv_nsec == modified.tv_nsec else {
            throw FlashError(.image, "image \(path) changed while it was being sent: the device may have a mix of old and new bytes; flash it again")
        }
    }
}
