#if canImport(Glibc)
import Glibc
#endif

/// An image file held open for every download of a job: every piece reads the same file even if
/// the path is given another file meanwhile, and a file rewritten in place is noticed instead of
/// reaching the device as a mix of old and new bytes.
final class HeldImageFile: @unchecked Sendable {
    let path: String
    let descriptor: ImageDescriptor
    /// The file as the job checked it, or as it was opened here when the job has no record.
    private let identity: ImageIdentity

    /// `expected`: the file as the job checked it; opening another file, or this one changed
    /// since, throws.
    init(path: String, expected: ImageIdentity?) throws {
        self.path = path
        descriptor = try ImageDescriptor.open(path: path)
        if let expected {
            try expected.check(descriptor)
            identity = expected
        } else {
            identity = ImageIdentity(try descriptor.status())
        }
    }

    /// Throws when the file's size or modification time changed since it was checked.
    func checkUnchanged() throws {
        guard ImageIdentity(try descriptor.status()) == identity else {
            throw FlashError(.image, "image \(path) changed while it was being sent: the device may have a mix of old and new bytes; flash it again")
        }
    }
}
