#if canImport(Glibc)
import Glibc
#endif

/// Finds the blocks of a raw image that hold one 32-bit value over and over (zeros, mostly: the
/// free space of a file system image), so that an image cut into sparse pieces carries them as
/// FILL chunks of 16 bytes instead of every byte, as AOSP fastboot does. The image is read once
/// for this before anything is sent: a file where it lies (its holes, found by `SEEK_HOLE`, are
/// zeros without being read), or a decompressed stream from its start.
enum RawFillScanner {
    /// Past this many chunks the rest of the image stays one RAW chunk: the plan stays small
    /// (and the device's chunk list short) for an image that alternates data and empty blocks.
    static let chunkLimit = 1 << 18
    private static let bufferSize = 1 << 20
    /// Linux's `lseek` whences, which Glibc's module leaves out (they need _GNU_SOURCE).
    private static let seekData: Int32 = 3
    private static let seekHole: Int32 = 4

    /// The chunks of the raw image in `file` (`size` bytes, cut in `blockSize` blocks): RAW where
    /// blocks differ, FILL where they repeat a value. A last partial block is RAW (padded).
    static func chunks(of file: ImageDescriptor, size: Int64, blockSize: Int64, checkCancelled: () throws -> Void) throws -> [SparsePlanner.PlanChunk] {
        var builder = ChunkBuilder(blockSize: blockSize)
        let fullBlocks = size / blockSize
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bufferSize, Int(blockSize)), alignment: 64)
        defer { buffer.deallocate() }
        var block: Int64 = 0
        while block < fullBlocks, builder.count < chunkLimit {
            try checkCancelled()
            let (dataStart, dataEnd) = nextData(in: file, from: block * blockSize, size: size)
            // Blocks wholly inside a hole are zeros.
            let firstDataBlock = min(fullBlocks, dataStart / blockSize)
            if firstDataBlock > block {
                builder.add(.fill(0), blocks: firstDataBlock - block)
                block = firstDataBlock
            }
            // At least one block, so a file system that reports an empty run still moves on.
            let endBlock = min(fullBlocks, max(block + 1, (dataEnd + blockSize - 1) / blockSize))
            while block < endBlock, builder.count < chunkLimit {
                try checkCancelled()
                let count = min(endBlock - block, Int64(buffer.count) / blockSize)
                let bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(count * blockSize)])
                try file.readExactly(into: bytes, at: block * blockSize)
                builder.addBlocks(of: UnsafeRawBufferPointer(bytes), at: block)
                block += count
            }
        }
        let totalBlocks = (size + blockSize - 1) / blockSize
        if block < totalBlocks {
            builder.add(.raw(dataOffset: 0, dataEnd: 0), blocks: totalBlocks - block, at: block)
        }
        return builder.finish(size: size)
    }

    /// The chunks of a raw image read in order from `stream`, to its end, and its size.
    static func chunks(of stream: ByteStream, blockSize: Int64, checkCancelled: () throws -> Void) throws -> (chunks: [SparsePlanner.PlanChunk], size: Int64) {
        var builder = ChunkBuilder(blockSize: blockSize)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bufferSize, Int(blockSize)) / Int(blockSize) * Int(blockSize), alignment: 64)
        defer { buffer.deallocate() }
        var size: Int64 = 0
        var block: Int64 = 0
        while true {
            try checkCancelled()
            // A short read is the end of the stream.
            let n = try stream.read(into: buffer)
            builder.addBlocks(of: UnsafeRawBufferPointer(rebasing: buffer[0..<n]), at: block)
            block += (Int64(n) + blockSize - 1) / blockSize
            size += Int64(n)
            if n < buffer.count { break }
        }
        return (builder.finish(size: size), size)
    }

    /// The 32-bit value a block repeats, or nil. Equal to itself shifted by 4 bytes means every
    /// 4-byte word is the same; memcmp does that comparison at memory speed.
    static func repeatedValue(_ block: UnsafeRawBufferPointer) -> UInt32? {
        guard let base = block.baseAddress, block.count >= 4, block.count % 4 == 0 else { return nil }
        guard memcmp(base, base + 4, block.count - 4) == 0 else { return nil }
        return UInt32(littleEndian: base.loadUnaligned(as: UInt32.self))
    }

    /// The next run of data at or after `offset`: (start, end); start is `size` when only a hole
    /// is left. A file system without `SEEK_DATA` is all data.
    private static func nextData(in file: ImageDescriptor, from offset: Int64, size: Int64) -> (Int64, Int64) {
        let start = lseek(file.fd, off_t(offset), seekData)
        if start < 0 { return errno == ENXIO ? (size, size) : (offset, size) }
        let end = lseek(file.fd, start, seekHole)
        return (Int64(start), end < 0 ? size : min(size, Int64(end)))
    }

    /// Appends runs of blocks, merging a run into the chunk before it when it continues it. RAW
    /// chunks get their offsets from their first block, and their end from `finish(size:)`.
    private struct ChunkBuilder {
        let blockSize: Int64
        private(set) var chunks: [SparsePlanner.PlanChunk] = []
        var count: Int { chunks.count }
        private var next: Int64 = 0

        init(blockSize: Int64) {
            self.blockSize = blockSize
        }

        mutating func add(_ kind: SparsePlanner.PlanChunk.Kind, blocks: Int64, at first: Int64? = nil) {
            let first = first ?? next
            next = first + blocks
            if var last = chunks.last, last.end == first {
                switch (last.kind, kind) {
                case (.raw, .raw):
                    last.count += blocks
                    chunks[chunks.count - 1] = last
                    return
                case (.fill(let a), .fill(let b)) where a == b:
                    last.count += blocks
                    chunks[chunks.count - 1] = last
                    return
                default:
                    break
                }
            }
            chunks.append(SparsePlanner.PlanChunk(kind: kind, first: first, count: blocks))
        }

        /// Adds the blocks in `bytes`, the first one numbered `first`: FILL for one that repeats
        /// a value, RAW for the rest, a last partial block, and every block past `chunkLimit`.
        mutating func addBlocks(of bytes: UnsafeRawBufferPointer, at first: Int64) {
            let size = Int(blockSize)
            for (index, start) in stride(from: 0, to: bytes.count, by: size).enumerated() {
                let end = start + size
                let value = end <= bytes.count && count < chunkLimit ? repeatedValue(UnsafeRawBufferPointer(rebasing: bytes[start..<end])) : nil
                add(value.map { .fill($0) } ?? .raw(dataOffset: 0, dataEnd: 0), blocks: 1, at: first + Int64(index))
            }
        }

        /// The chunks, RAW ones reading from their first block's offset up to `size` (past it,
        /// the last block is padded with zeros).
        func finish(size: Int64) -> [SparsePlanner.PlanChunk] {
            chunks.map { chunk in
                guard case .raw = chunk.kind else { return chunk }
                return SparsePlanner.PlanChunk(kind: .raw(dataOffset: chunk.first * blockSize, dataEnd: size), first: chunk.first, count: chunk.count)
            }
        }
    }
}
