import CLZMA
import Foundation

/// An `.xz` file decompressed by liblzma's multi-threaded decoder: the blocks of a file written
/// by a multi-threaded `xz` (as `xz -T0` and most image builders write them) are decompressed on
/// several cores at once, which libarchive's single-threaded xz reader cannot do. Concatenated
/// streams and stream padding are read as `xz -d` reads them; integrity checks are liblzma's.
final class XZDecoder {
    private let path: String
    private let file: ImageDescriptor
    private var stream = lzma_stream()
    private let input: UnsafeMutableRawBufferPointer
    private var fileOffset: Int64 = 0
    private var inputEnded = false
    private var finished = false

    /// `threads` nil: one per core.
    init(path: String, threads: Int? = nil) throws {
        self.path = path
        file = try ImageDescriptor.open(path: path)
        input = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        var options = lzma_mt()
        options.threads = UInt32(max(1, min(threads ?? ProcessInfo.processInfo.activeProcessorCount, 16)))
        // Up to 256 MiB for the threads' buffers (enough for two threads on the blocks `xz -T0`
        // writes, up to -9), else one thread, so a bench flashing many .xz images at once stays
        // bounded; never a hard stop.
        options.memlimit_threading = 256 << 20
        options.memlimit_stop = UInt64.max
        options.flags = Self.concatenated
        let status = lzma_stream_decoder_mt(&stream, &options)
        guard status == LZMA_OK else {
            input.deallocate()
            throw FlashError(.io, "liblzma could not start decoding \(path) (error \(status.rawValue))")
        }
    }

    deinit {
        lzma_end(&stream)
        input.deallocate()
    }

    /// LZMA_CONCATENATED (a macro Swift does not import): read every stream in the file.
    private static let concatenated: UInt32 = 0x08

    /// Compressed bytes consumed so far.
    var compressedBytesRead: Int64 { Int64(stream.total_in) }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard !finished, let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        stream.next_out = base.assumingMemoryBound(to: UInt8.self)
        stream.avail_out = buffer.count
        while stream.avail_out > 0 {
            if stream.avail_in == 0, !inputEnded {
                let n = try file.readAvailable(into: input, at: fileOffset)
                fileOffset += Int64(n)
                if n == 0 { inputEnded = true }
                stream.next_in = UnsafePointer(input.baseAddress!.assumingMemoryBound(to: UInt8.self))
                stream.avail_in = n
            }
            let status = lzma_code(&stream, inputEnded ? LZMA_FINISH : LZMA_RUN)
            if status == LZMA_STREAM_END {
                finished = true
                break
            }
            guard status == LZMA_OK else { throw failure(status) }
        }
        return buffer.count - stream.avail_out
    }

    private func failure(_ status: lzma_ret) -> FlashError {
        let what: String
        switch status {
        case LZMA_BUF_ERROR: what = "is truncated: the xz data ends early"
        case LZMA_FORMAT_ERROR: what = "is not an xz file"
        case LZMA_DATA_ERROR: what = "is corrupt: the xz data is damaged"
        case LZMA_OPTIONS_ERROR: what = "uses xz options this decoder does not support"
        case LZMA_MEM_ERROR, LZMA_MEMLIMIT_ERROR: what = "needs more memory to decompress than there is"
        default: what = "is corrupt or truncated (xz error \(status.rawValue))"
        }
        return FlashError(.image, "image \(path) \(what)")
    }
}
