#if canImport(Glibc)
import Glibc
#endif

/// Writes an image's pieces to one target (a block device, or a regular file standing in for
/// one), the way a careful tool does:
///
/// - The device is opened exclusively (`O_EXCL`: the kernel refuses while it is mounted or
///   claimed by another program) and written with `O_DIRECT`, so the page cache neither slows
///   the copy nor hides a failing write; pieces that are not block-aligned go through a second,
///   buffered descriptor.
/// - The first MiB (partition table, boot sector) is held back and written last, after
///   everything else is on the device: a write that fails halfway never leaves a disk that looks
///   bootable.
/// - `finish()` flushes the device before the job may say it is done, and returns the XXH3-128
///   of everything written, in order, for read-back verification (nil when not asked to digest).
///   XXH3 runs at memory speed, so digesting each piece as it is written costs this thread next to
///   nothing; it proves equality, which is all a read-back needs (the SHA-256 a person compares is
///   the batch's `StreamHasher`'s).
final class DiskWriter {
    static let headSize = 1 << 20

    let path: String
    let alignment: Int
    /// Pieces written, in order, merged when adjacent: what verification reads back.
    private(set) var extents: [(offset: Int64, count: Int64)] = []
    private(set) var bytesWritten: Int64 = 0
    private let directFD: Int32
    private let bufferedFD: Int32
    private let head: UnsafeMutableRawBufferPointer
    private var headPieces: [(offset: Int, count: Int)] = []
    private let digest: XXH128Digest?

    init(path: String, isBlockDevice: Bool, alignment: Int, digestsWrites: Bool) throws {
        digest = digestsWrites ? XXH128Digest() : nil
        self.path = path
        self.alignment = max(512, alignment)
        let exclusive = isBlockDevice ? O_EXCL : 0
        let direct = open(path, O_WRONLY | O_CLOEXEC | openDirect | exclusive)
        var fd = direct
        if fd < 0, errno == EINVAL {
            // Some filesystems (tmpfs) have no direct I/O: a regular-file target is then buffered.
            fd = open(path, O_WRONLY | O_CLOEXEC | exclusive)
        }
        guard fd >= 0 else { throw Self.openError(path: path, errno: errno) }
        directFD = direct >= 0 ? direct : -1
        let buffered = direct >= 0 ? open(path, O_WRONLY | O_CLOEXEC) : fd
        guard buffered >= 0 else {
            let code = errno
            close(fd)
            throw Self.openError(path: path, errno: code)
        }
        bufferedFD = buffered
        head = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.headSize, alignment: 4096)
    }

    deinit {
        if directFD >= 0 { close(directFD) }
        close(bufferedFD)
        head.deallocate()
    }

    static func openError(path: String, errno code: Int32) -> FlashError {
        switch code {
        case EBUSY: return FlashError(.io, "\(path) is in use (mounted, or open in another program): nothing was written")
        case EACCES, EPERM: return FlashError(.noPermission, "no permission to write \(path): run as root or as a member of the 'disk' group")
        case EROFS: return FlashError(.io, "\(path) is read-only (write-protect switch?)")
        default: return FlashError(.io, "cannot open \(path) for writing: \(errnoText(code))")
        }
    }

    /// Writes `bytes` (from a 4096-aligned buffer) at `offset`.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        guard bytes.count > 0 else { return }
        digest?.update(bytes)
        record(offset: offset, count: Int64(bytes.count))
        var rest = bytes
        var at = offset
        if at < Int64(Self.headSize) {
            let n = min(rest.count, Self.headSize - Int(at))
            (head.baseAddress! + Int(at)).copyMemory(from: rest.baseAddress!, byteCount: n)
            headPieces.append((Int(at), n))
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
            at += Int64(n)
        }
        if !rest.isEmpty { try put(rest, at: at) }
        bytesWritten += Int64(bytes.count)
    }

    /// Flushes everything, then writes the first MiB and flushes again. Returns the XXH3-128 (hex)
    /// of all bytes written, in the order they were given.
    func finish() throws -> String? {
        try flush()
        for piece in headPieces {
            try put(UnsafeRawBufferPointer(rebasing: head[piece.offset..<(piece.offset + piece.count)]), at: Int64(piece.offset))
        }
        try flush()
        return digest?.finalizeHex()
    }

    private func put(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        let aligned = directFD >= 0 && offset % Int64(alignment) == 0 && bytes.count % alignment == 0
            && Int(bitPattern: bytes.baseAddress) % alignment == 0
        let fd = aligned ? directFD : bufferedFD
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + Int64(done)))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == ENOSPC || errno == EFBIG {
                    throw FlashError(.io, "the image does not fit on \(path): writing at byte \(offset + Int64(done)) failed (\(errnoText(errno)))")
                }
                throw FlashError(.io, "cannot write \(path) at byte \(offset + Int64(done)): \(errnoText(errno))")
            }
            if n == 0 {
                throw FlashError(.io, "the image does not fit on \(path): it ends before byte \(offset + Int64(done))")
            }
            done += n
        }
    }

    private func flush() throws {
        for fd in [bufferedFD, directFD] where fd >= 0 {
            guard fsync(fd) == 0 else {
                throw FlashError(.io, "flushing \(path) failed: \(errnoText(errno)); what was written may not be on the device")
            }
        }
    }

    private func record(offset: Int64, count: Int64) {
        if let last = extents.last, last.offset + last.count == offset {
            extents[extents.count - 1].count += count
        } else {
            extents.append((offset, count))
        }
    }
}
