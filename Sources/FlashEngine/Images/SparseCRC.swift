import CZlib

/// The running checksum an Android sparse image's CRC32 chunks are checked against, as libsparse
/// computes it: zlib's CRC-32 of every expanded byte before the chunk, DONT_CARE blocks counting
/// as zeros. A CRC32 chunk that does not match means the image is corrupt.
struct SparseCRC {
    private var value = crc32(0, nil, 0)
    private static let zeros = [UInt8](repeating: 0, count: 64 << 10)

    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var rest = bytes
        while !rest.isEmpty {
            let n = min(rest.count, Int(UInt32.max))
            value = crc32(value, rest.baseAddress!.assumingMemoryBound(to: Bytef.self), uInt(n))
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
    }

    mutating func addZeros(_ count: Int64) {
        var left = count
        while left > 0 {
            let n = Int(min(left, Int64(Self.zeros.count)))
            Self.zeros.withUnsafeBytes { add(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            left -= Int64(n)
        }
    }

    mutating func addFill(_ pattern: UInt32, count: Int64) {
        var block = [UInt8](repeating: 0, count: 64 << 10)
        var little = pattern.littleEndian
        withUnsafeBytes(of: &little) { four in
            for at in stride(from: 0, to: block.count, by: 4) { block[at..<(at + 4)] = ArraySlice(four) }
        }
        var left = count
        while left > 0 {
            let n = Int(min(left, Int64(block.count)))
            block.withUnsafeBytes { add(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            left -= Int64(n)
        }
    }

    /// The CRC32 of the data so far.
    var current: UInt32 { UInt32(truncatingIfNeeded: value) }

    /// Throws, naming the chunk, when `expected` (a CRC32 chunk's value) is not the data's CRC.
    func check(_ expected: UInt32, chunk number: Int, path: String) throws {
        let actual = current
        guard actual == expected else {
            throw FlashError(.image, "corrupt sparse image \(path): chunk \(number) (CRC32) says 0x\(sparseHex32(expected)), but the data before it has CRC32 0x\(sparseHex32(actual))")
        }
    }

    /// Reads the whole image once from `stream` (positioned at its start) and checks every CRC32
    /// chunk: for images that have them, before anything is written.
    static func verify(_ image: SparseImage, stream: SkippableStream) throws {
        var crc = SparseCRC()
        var position: Int64 = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        func skip(to offset: Int64) throws {
            if offset > position { position += try stream.skip(offset - position) }
            guard position == offset else { throw FlashError(.image, "corrupt sparse image \(image.path): its data ends at byte \(position) (truncated)") }
        }
        for (index, chunk) in image.chunks.enumerated() {
            let length = chunk.blockCount * image.blockSize
            switch chunk.kind {
            case .raw:
                try skip(to: chunk.dataOffset)
                var left = length
                while left > 0 {
                    let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(left, Int64(buffer.count)))])
                    let n = try stream.read(into: part)
                    guard n > 0 else { throw FlashError(.image, "corrupt sparse image \(image.path): its data ends at byte \(position) (truncated)") }
                    crc.add(UnsafeRawBufferPointer(rebasing: part[0..<n]))
                    position += Int64(n)
                    left -= Int64(n)
                }
            case .fill(let value):
                crc.addFill(value, count: length)
            case .dontCare:
                crc.addZeros(length)
            case .crc32(let expected):
                try crc.check(expected, chunk: index + 1, path: image.path)
            }
        }
    }
}

func sparseHex32(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}
