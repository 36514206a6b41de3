#if canImport(Glibc)
import Glibc
#endif

/// Reads back what was written, past the page cache (`O_DIRECT`), and compares its XXH3-128 with
/// the XXH3-128 of what was written (`DiskWriter`): a digest at memory speed, so the read-back
/// costs the reading and next to no CPU.
enum DiskVerifier {
    static let bufferSize = 2 << 20

    /// `onBytes` gets the cumulative bytes checked; `checkCancelled` may throw to stop.
    static func verify(
        path: String, extents: [(offset: Int64, count: Int64)], expected: String, alignment: Int,
        onBytes: (Int64) -> Void, checkCancelled: () throws -> Void
    ) throws {
        var fd = open(path, O_RDONLY | O_CLOEXEC | openDirect)
        let direct = fd >= 0
        if !direct { fd = open(path, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { throw FlashError(.io, "cannot open \(path) to verify it: \(errnoText(errno))") }
        defer { close(fd) }
        if !direct {
            // No direct I/O here (tmpfs): at least drop what the cache holds, where it can be dropped.
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        }
        let align = Int64(max(512, alignment))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 4096)
        defer { buffer.deallocate() }
        let digest = XXH128Digest()
        var checked: Int64 = 0
        for extent in extents {
            var position = extent.offset
            let end = extent.offset + extent.count
            while position < end {
                try checkCancelled()
                // Read whole aligned blocks around what is wanted; hash only the wanted bytes.
                let start = position / align * align
                let wanted = min(Int64(bufferSize) - (position - start), end - position)
                let length = Int(((position - start + wanted) + align - 1) / align * align)
                let got = try readFully(fd, buffer, count: length, at: start, path: path)
                let skip = Int(position - start)
                guard got >= skip + Int(wanted) else {
                    throw FlashError(.verification, "verification of \(path) failed: the device ended at byte \(start + Int64(got)), before byte \(end)")
                }
                digest.update(UnsafeRawBufferPointer(rebasing: buffer[skip..<(skip + Int(wanted))]))
                position += wanted
                checked += wanted
                onBytes(checked)
            }
        }
        let actual = digest.finalizeHex()
        guard actual == expected else {
            throw FlashError(.verification, "verification of \(path) failed: the data read back (XXH3-128 \(actual)) differs from what was written (\(expected)); the medium may be failing or counterfeit")
        }
    }

    private static func readFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, count: Int, at offset: Int64, path: String) throws -> Int {
        var done = 0
        while done < count {
            let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset + Int64(done)))
            if n < 0 {
                if errno == EINTR { continue }
                throw FlashError(.verification, "verification of \(path) failed: reading byte \(offset + Int64(done)): \(errnoText(errno))")
            }
            if n == 0 { break }
            done += n
        }
        return done
    }
}
