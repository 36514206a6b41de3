/// The decompressed size of an `.xz` file, read from the index at the end of each of its streams
/// (xz records every block's sizes there), so a fastboot download can announce it without
/// decompressing first. Concatenated streams and stream padding are summed as `xz -l` does.
enum XZIndexSize {
    /// nil when the file does not end the way the xz format says (then only decompressing can tell).
    static func of(_ file: ImageDescriptor, fileSize: Int64) -> Int64? {
        var end = fileSize
        var total: Int64 = 0
        while end > 0 {
            // Stream padding: zero bytes, in fours, after a stream.
            while end >= 4, let word = try? file.readBytes(4, at: end - 4), word == [0, 0, 0, 0] { end -= 4 }
            guard end >= 24, let footer = try? file.readBytes(12, at: end - 12), footer[10] == 0x59, footer[11] == 0x5A else { return nil }
            let indexSize = (Int64(ImageBytes.le32(footer, 4)) + 1) * 4
            let indexStart = end - 12 - indexSize
            guard indexStart >= 12, indexSize <= 1 << 30, let index = try? file.readBytes(Int(indexSize), at: indexStart),
                  let records = parseIndex(index) else { return nil }
            let blocks = records.reduce(Int64(0)) { $0 + ($1.unpadded + 3) / 4 * 4 }
            let start = indexStart - blocks - 12
            guard start >= 0, let header = try? file.readBytes(6, at: start), header == streamMagic else { return nil }
            total += records.reduce(Int64(0)) { $0 + $1.uncompressed }
            end = start
        }
        return total
    }

    private static let streamMagic: [UInt8] = [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]

    /// Index: indicator 0, record count, (unpadded size, uncompressed size) per block, padding
    /// and CRC-32; sizes are xz's variable-length integers.
    private static func parseIndex(_ bytes: [UInt8]) -> [(unpadded: Int64, uncompressed: Int64)]? {
        guard bytes.first == 0 else { return nil }
        var at = 1
        func number() -> Int64? {
            var value: Int64 = 0
            for shift in stride(from: 0, to: 63, by: 7) {
                guard at < bytes.count - 4 else { return nil }
                let byte = bytes[at]
                at += 1
                value |= Int64(byte & 0x7F) << Int64(shift)
                if byte & 0x80 == 0 { return value }
            }
            return nil
        }
        guard let count = number(), count >= 0, count <= Int64(bytes.count) else { return nil }
        var records: [(Int64, Int64)] = []
        for _ in 0..<count {
            guard let unpadded = number(), let uncompressed = number(), unpadded > 0, uncompressed >= 0 else { return nil }
            records.append((unpadded, uncompressed))
        }
        return records
    }
}
