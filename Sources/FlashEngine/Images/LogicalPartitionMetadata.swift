import Crypto

/// The logical partition metadata of a `super` partition (Android's liblp format, major version
/// 10), as a factory image's `super_empty.img` carries it: the geometry block, then the header and
/// its tables. Read to learn which logical partitions exist; every checksum is verified.
public struct LogicalPartitionMetadata: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var name: String
        public var group: String
    }

    public var partitions: [Partition]
    public var groups: [String]

    static let geometryMagic: UInt32 = 0x616C_4467
    static let headerMagic: UInt32 = 0x414C_5030
    static let geometrySize = 4096

    /// `bytes`: the image, geometry first (`super_empty.img`). `source` names it in errors.
    public init(parsing bytes: [UInt8], source: String) throws {
        func corrupt(_ why: String) -> FlashError { FlashError(.image, "\(source) is not logical partition metadata: \(why)") }
        guard bytes.count >= Self.geometrySize + 128 else { throw corrupt("\(bytes.count) bytes is too short") }
        guard Self.uint32(bytes, 0) == Self.geometryMagic else { throw corrupt("no geometry magic") }
        let geometrySize = Int(Self.uint32(bytes, 4))
        guard geometrySize >= 52, geometrySize <= Self.geometrySize else { throw corrupt("a geometry of \(geometrySize) bytes") }
        guard Self.checksum(bytes, range: 0..<geometrySize, checksumAt: 8) else { throw corrupt("the geometry's checksum is wrong") }

        let header = Self.geometrySize
        guard Self.uint32(bytes, header) == Self.headerMagic else { throw corrupt("no header magic") }
        guard Self.uint16(bytes, header + 4) == 10 else { throw corrupt("major version \(Self.uint16(bytes, header + 4)), not 10") }
        let headerSize = Int(Self.uint32(bytes, header + 8))
        let tablesSize = Int(Self.uint32(bytes, header + 44))
        let tables = header + headerSize
        guard headerSize >= 128, tables + tablesSize <= bytes.count else { throw corrupt("its tables go past its end") }
        guard Self.checksum(bytes, range: header..<tables, checksumAt: header + 12) else { throw corrupt("the header's checksum is wrong") }
        guard Array(SHA256.hash(data: bytes[tables..<(tables + tablesSize)])) == Array(bytes[(header + 48)..<(header + 80)]) else {
            throw corrupt("the tables' checksum is wrong")
        }

        /// (offset, count, entry size) of table `index` (partitions, extents, groups, block devices).
        func table(_ index: Int, minimumEntry: Int) throws -> (offset: Int, count: Int, size: Int) {
            let at = header + 80 + index * 12
            let offset = Int(Self.uint32(bytes, at)), count = Int(Self.uint32(bytes, at + 4)), size = Int(Self.uint32(bytes, at + 8))
            guard size >= minimumEntry, offset + count * size <= tablesSize else { throw corrupt("table \(index) does not fit") }
            return (tables + offset, count, size)
        }
        let groupTable = try table(2, minimumEntry: 48)
        let groupNames = (0..<groupTable.count).map { Self.name(bytes, groupTable.offset + $0 * groupTable.size) }
        let partitionTable = try table(0, minimumEntry: 52)
        partitions = try (0..<partitionTable.count).map { index in
            let at = partitionTable.offset + index * partitionTable.size
            let group = Int(Self.uint32(bytes, at + 48))
            guard group < groupNames.count else { throw corrupt("a partition in group \(group) of \(groupNames.count)") }
            return Partition(name: Self.name(bytes, at), group: groupNames[group])
        }
        groups = groupNames
    }

    private static func checksum(_ bytes: [UInt8], range: Range<Int>, checksumAt: Int) -> Bool {
        var copy = Array(bytes[range])
        let stored = Array(bytes[checksumAt..<(checksumAt + 32)])
        let offset = checksumAt - range.lowerBound
        for index in offset..<(offset + 32) { copy[index] = 0 }
        return Array(SHA256.hash(data: copy)) == stored
    }

    private static func name(_ bytes: [UInt8], _ at: Int) -> String {
        String(decoding: bytes[at..<(at + 36)].prefix { $0 != 0 }, as: UTF8.self)
    }

    private static func uint32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) }
    }

    private static func uint16(_ bytes: [UInt8], _ at: Int) -> UInt16 {
        UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8
    }
}
